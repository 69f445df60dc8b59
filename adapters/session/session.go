// Package session issues and verifies the short-lived JWTs that logged-in
// users carry.
package session

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims is what a session token says about its holder.
type Claims struct {
	UserID    string
	Email     string
	Role      string
	AccountID string
	ExpiresAt time.Time
}

// Issuer signs and verifies tokens with one HMAC key.
type Issuer struct {
	key    []byte
	ttl    time.Duration
	issuer string
	now    func() time.Time
}

// ErrInvalid: the token is malformed, forged or expired.
var ErrInvalid = errors.New("invalid or expired session token")

// NewIssuer returns an issuer. The key must hold at least 32 bytes.
func NewIssuer(key []byte, ttl time.Duration, now func() time.Time) (*Issuer, error) {
	if len(key) < 32 {
		return nil, errors.New("session: signing key must be at least 32 bytes")
	}
	if now == nil {
		now = time.Now
	}
	return &Issuer{key: key, ttl: ttl, issuer: "ledgerd", now: now}, nil
}

// TTL is how long issued tokens live.
func (i *Issuer) TTL() time.Duration { return i.ttl }

type claims struct {
	jwt.RegisteredClaims
	Email     string `json:"email"`
	Role      string `json:"role"`
	AccountID string `json:"account_id,omitempty"`
}

// Issue returns a signed token for c.
func (i *Issuer) Issue(c Claims) (string, time.Time, error) {
	now := i.now()
	exp := now.Add(i.ttl)
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: i.issuer, Subject: c.UserID,
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-time.Second)),
			ExpiresAt: jwt.NewNumericDate(exp),
		},
		Email: c.Email, Role: c.Role, AccountID: c.AccountID,
	})
	s, err := tok.SignedString(i.key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("session: signing: %w", err)
	}
	return s, exp, nil
}

// Verify checks a token's signature, algorithm and expiry.
func (i *Issuer) Verify(token string) (Claims, error) {
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return i.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(i.issuer), jwt.WithExpirationRequired(), jwt.WithTimeFunc(i.now))
	if err != nil || c.Subject == "" {
		return Claims{}, ErrInvalid
	}
	return Claims{UserID: c.Subject, Email: c.Email, Role: c.Role, AccountID: c.AccountID, ExpiresAt: c.ExpiresAt.Time}, nil
}

// LooksLikeJWT reports whether a bearer credential has a JWT's shape, to
// route it to Verify rather than to API-key lookup.
func LooksLikeJWT(s string) bool { return strings.Count(s, ".") == 2 && strings.HasPrefix(s, "eyJ") }

// LoadOrCreateKey returns the signing key: hex from configured if set,
// else the key file in dir, created with 32 random bytes on first start.
func LoadOrCreateKey(configured, dir string) ([]byte, error) {
	if configured != "" {
		if k, err := hex.DecodeString(configured); err == nil && len(k) >= 32 {
			return k, nil
		}
		if len(configured) < 32 {
			return nil, errors.New("session: LEDGER_JWT_SECRET must be at least 32 characters")
		}
		return []byte(configured), nil
	}
	path := filepath.Join(dir, "jwt.key")
	if b, err := os.ReadFile(path); err == nil {
		k, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(k) < 32 {
			return nil, fmt.Errorf("session: %s is corrupt; delete it to rotate the key", path)
		}
		return k, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("session: reading key: %w", err)
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(k)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("session: writing key: %w", err)
	}
	return k, nil
}
