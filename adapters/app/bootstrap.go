package app

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/user"
	"github.com/ledgerd/ledgerd/ledger"
)

// Bootstrap is what start-up prints for a person to log in with.
type Bootstrap struct {
	AdminEmail    string
	AdminPassword string // empty when configured (the operator knows it)
	AdminCreated  bool
	DemoEmail     string
	DemoPassword  string
	DemoAccountID string
	DemoBalance   money.Amount
	DemoKey       string // a fresh secret for the demo key, printed once
}

// devCredentials are generated logins kept in the data dir (mode 0600) so a
// second start can print them again.
type devCredentials struct {
	AdminEmail    string `json:"admin_email"`
	AdminPassword string `json:"admin_password"`
	DemoEmail     string `json:"demo_email"`
	DemoPassword  string `json:"demo_password"`
	DemoAccountID string `json:"demo_account_id"`
}

const (
	devAdminEmail = "admin@ledgerd.local"
	demoEmail     = "demo@ledgerd.local"
	// demoTopUpRef makes the demo credit idempotent across restarts.
	demoTopUpRef = "demo-initial-credit"
)

var demoCredit = money.MustParse("25.00")

func (a *App) bootstrap(ctx context.Context) (Bootstrap, error) {
	credsPath := filepath.Join(a.cfg.DataDir, "dev-credentials.json")
	creds, err := loadCreds(credsPath)
	if err != nil {
		return Bootstrap{}, err
	}
	var b Bootstrap
	if a.cfg.AdminEmail != "" {
		b.AdminEmail = a.cfg.AdminEmail
		if b.AdminCreated, err = a.Ledger.EnsureAdmin(ctx, a.cfg.AdminEmail, a.cfg.AdminPassword); err != nil {
			return b, fmt.Errorf("bootstrap admin: %w", err)
		}
	} else {
		if creds.AdminEmail == "" {
			creds.AdminEmail, creds.AdminPassword = devAdminEmail, randomPassword()
		}
		b.AdminEmail, b.AdminPassword = creds.AdminEmail, creds.AdminPassword
		if b.AdminCreated, err = a.Ledger.EnsureAdmin(ctx, creds.AdminEmail, creds.AdminPassword); err != nil {
			return b, fmt.Errorf("bootstrap admin: %w", err)
		}
	}
	if a.cfg.Demo {
		if err := a.demo(ctx, &creds, credsPath); err != nil {
			return b, fmt.Errorf("demo customer: %w", err)
		}
		b.DemoEmail, b.DemoPassword, b.DemoAccountID = creds.DemoEmail, creds.DemoPassword, creds.DemoAccountID
		if _, w, err := a.Ledger.Account(ctx, creds.DemoAccountID); err == nil {
			b.DemoBalance = w.Available.Add(w.Held)
		}
		if b.DemoKey, err = a.demoKey(ctx, creds.DemoAccountID); err != nil {
			return b, fmt.Errorf("demo key: %w", err)
		}
	}
	return b, saveCreds(credsPath, creds)
}

// demo makes sure the demo customer exists with its initial credit.
func (a *App) demo(ctx context.Context, creds *devCredentials, credsPath string) error {
	meta := ledger.Meta{Actor: "system:demo", CausationID: a.Ledger.NewID("cmd")}
	if creds.DemoAccountID == "" {
		creds.DemoEmail, creds.DemoPassword = demoEmail, randomPassword()
		v, err := a.Ledger.CreateAccount(ctx, meta, creds.DemoEmail, creds.DemoPassword, account.PlanAPI)
		if errors.Is(err, user.ErrEmailTaken) {
			// Created by an earlier run whose credentials file was lost.
			return fmt.Errorf("%s exists but its password is not in %s", demoEmail, credsPath)
		}
		if err != nil {
			return err
		}
		creds.DemoAccountID = v.ID
		// Keep the login before anything else can fail.
		if err := saveCreds(credsPath, *creds); err != nil {
			return err
		}
	}
	_, err := a.Ledger.TopUp(ctx, meta, creds.DemoAccountID, demoCredit, demoTopUpRef)
	return err
}

// demoKey creates the demo account's key on the first start and rotates it
// on every later one: each start prints a working key, shown once, without
// ever nearing the account's key limit.
func (a *App) demoKey(ctx context.Context, accountID string) (string, error) {
	meta := ledger.Meta{Actor: "system:demo", CausationID: a.Ledger.NewID("cmd")}
	keys, err := a.Ledger.AccountKeys(ctx, accountID)
	if err != nil {
		return "", err
	}
	for _, k := range keys {
		if k.Name == demoKeyName && k.ActiveAt(time.Now()) {
			issued, err := a.Ledger.RotateKey(ctx, meta, accountID, k.ID)
			return issued.Secret, err
		}
	}
	issued, err := a.Ledger.CreateKey(ctx, meta, accountID, apikey.SpecInput{Name: demoKeyName})
	return issued.Secret, err
}

const demoKeyName = "demo"

func randomPassword() string {
	return rand.Text()[:20]
}

func loadCreds(path string) (devCredentials, error) {
	var c devCredentials
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func saveCreds(path string, c devCredentials) error {
	if c == (devCredentials{}) {
		return nil
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}
