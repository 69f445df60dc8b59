package httpapi

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/user"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/projections"
)

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var in credentialsBody
	if err := decodeBody(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	id, err := s.cfg.Commands.Login(r.Context(), in.Email, in.Password)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	tok, exp, err := s.cfg.Sessions.Issue(sessionClaims(id))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok, "token_type": "bearer",
		"expires_in": int(time.Until(exp).Round(time.Second).Seconds()),
		"role":       id.Role, "account_id": nullable(id.AccountID),
	})
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

type accountOut struct {
	ID        string `json:"id"`
	Email     string `json:"email"`
	Plan      string `json:"plan"`
	Status    string `json:"status"`
	Currency  string `json:"currency"`
	CreatedAt string `json:"created_at,omitempty"`
}

func viewOut(v ledger.AccountView) accountOut {
	return accountOut{ID: v.ID, Email: v.Email, Plan: string(v.Plan), Status: string(v.Status), Currency: string(v.Currency)}
}

func (s *Server) createAccount(w http.ResponseWriter, r *http.Request, p Principal) error {
	var in createAccountBody
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	v, err := s.cfg.Commands.CreateAccount(r.Context(), s.meta(r, p), in.Email, in.Password, in.plan)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, viewOut(v))
	return nil
}

func (s *Server) updateAccount(w http.ResponseWriter, r *http.Request, p Principal) error {
	var in updateAccountBody
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	v, err := s.cfg.Commands.UpdateAccount(r.Context(), s.meta(r, p), r.PathValue("id"), in.plan, in.status)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewOut(v))
	return nil
}

func (s *Server) topUp(w http.ResponseWriter, r *http.Request, p Principal) error {
	var in topUpBody
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	res, err := s.cfg.Commands.TopUp(r.Context(), s.meta(r, p), r.PathValue("id"), in.amount, in.Reference)
	if err != nil {
		return err
	}
	if res.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, http.StatusCreated, map[string]any{
		"id": res.ID, "account_id": res.AccountID, "amount": res.Amount,
		"currency": s.cfg.Currency, "reference": res.Reference,
	})
	return nil
}

func (s *Server) createStaff(w http.ResponseWriter, r *http.Request, p Principal) error {
	var in staffBody
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	role := in.role
	id, err := s.cfg.Commands.RegisterStaff(r.Context(), s.meta(r, p), in.Email, in.Password, role)
	if err != nil {
		return err
	}
	email, _ := user.NormalizeEmail(in.Email)
	writeJSON(w, http.StatusCreated, map[string]any{"id": id, "email": email, "role": role})
	return nil
}

type walletOut struct {
	AccountID string       `json:"account_id,omitempty"`
	Currency  string       `json:"currency"`
	Balance   money.Amount `json:"balance"`
	Held      money.Amount `json:"held"`
	Available money.Amount `json:"available"`
	// Credits is what unexpired grants hold (reserved part included);
	// balance is paid money. available = balance + credits - held.
	Credits money.Amount `json:"credits"`
	// Owed is what a refund of already spent money left to pay; calls
	// are refused while it is above zero.
	Owed money.Amount `json:"owed"`
}

// readWallet reads the wallet from the read model once it shows this
// instance's writes to the account (bounded; a read that times out is
// served with the lag stated in a header rather than failed).
func (s *Server) readWallet(ctx context.Context, w http.ResponseWriter, accountID string) (walletOut, error) {
	s.awaitOwnWrites(ctx, w, "accounts", s.cfg.Commands.AccountSeq(accountID))
	row, err := s.cfg.Reads.Wallet(ctx, accountID)
	if err != nil {
		return walletOut{}, readErr(err)
	}
	avail, err1 := money.FromDecimal(row.Available)
	held, err2 := money.FromDecimal(row.Held)
	credits, err3 := money.FromDecimal(row.Credits)
	heldCredits, err4 := money.FromDecimal(row.HeldCredits)
	owed, err5 := money.FromDecimal(row.Owed)
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return walletOut{}, err
	}
	return walletOut{Currency: row.Currency, Balance: avail.Add(held), Held: held.Add(heldCredits),
		Available: avail.Add(credits), Credits: credits.Add(heldCredits), Owed: owed}, nil
}

// readErr keeps "not found" and marks any other read failure as the
// database being unavailable.
func readErr(err error) error {
	if errors.Is(err, projections.ErrNotFound) || errors.Is(err, context.Canceled) {
		return err
	}
	return errors.Join(errDatabase, err)
}

func (s *Server) awaitOwnWrites(ctx context.Context, w http.ResponseWriter, projection string, seq uint64) {
	if seq == 0 {
		return
	}
	runner := s.cfg.Projections.Runner(projection)
	if runner == nil {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.ReadYourWritesWait)
	defer cancel()
	if err := runner.WaitFor(wctx, seq); err != nil {
		w.Header().Set("X-Ledger-Stale", "true")
		w.Header().Set("X-Ledger-Projection-Lag-Ms", itoa(int(runner.Status().LagMillis)))
	}
}

func (s *Server) wallet(w http.ResponseWriter, r *http.Request, p Principal) error {
	out, err := s.readWallet(r.Context(), w, p.AccountID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getAccount(w http.ResponseWriter, r *http.Request, _ Principal) error {
	id := r.PathValue("id")
	wal, err := s.readWallet(r.Context(), w, id)
	if err != nil {
		return err
	}
	a, err := s.cfg.Reads.Account(r.Context(), id)
	if err != nil {
		return readErr(err)
	}
	out := accountOut{ID: a.ID, Email: a.Email, Plan: a.Plan, Status: a.Status, Currency: a.Currency,
		CreatedAt: a.CreatedAt.UTC().Format(time.RFC3339)}
	writeJSON(w, http.StatusOK, map[string]any{"account": out, "wallet": wal})
	return nil
}

func (s *Server) projectionsStatus(w http.ResponseWriter, _ *http.Request, _ Principal) error {
	writeJSON(w, http.StatusOK, map[string]any{"projections": s.cfg.Projections.Statuses()})
	return nil
}
