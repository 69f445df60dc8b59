package httpapi

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/adapters/session"
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/projections/keyindex"
)

// fuzzKey is a key of the issued shape: the prefix and 32 base64url characters.
const fuzzKey = "nx_live_Ab0-_zZ9Ab0-_zZ9Ab0-_zZ9Ab0-_zZ9"

// FuzzCredential sends arbitrary Authorization and x-api-key headers and
// query strings through the real credential extraction and
// authentication (a real key index and session issuer). Whatever arrives,
// nothing panics; a caller is let in only with exactly the issued key or
// a session token the issuer signed, under a header form the contract
// names (the query form only when allowed); every refusal is a 401 in the
// contract's error table.
func FuzzCredential(f *testing.F) {
	iss, err := session.NewIssuer([]byte(strings.Repeat("k", 32)), time.Hour, nil)
	if err != nil {
		f.Fatal(err)
	}
	tok, _, err := iss.Issue(session.Claims{UserID: "usr_1", Email: "a@example.com", Role: "customer", AccountID: "acc_1"})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range [][3]string{
		{"Bearer " + fuzzKey, "", ""}, {"bearer   " + fuzzKey + " \t", "", ""}, {"", fuzzKey, ""}, {"", "", "api_key=" + fuzzKey},
		{"Bearer " + tok, "", ""}, {"Bearer " + tok + "x", "", ""}, {"Basic " + fuzzKey, "", ""}, {"Bearer", "", ""},
		{"Bearer " + fuzzKey + "\x00", "", ""}, {"Bearer eyJ.a.b", "", ""}, {"Bearer " + strings.Repeat("a", 10000), "", ""},
		{"Bearer " + fuzzKey[:len(fuzzKey)-1] + "é", "", ""}, {"", " " + fuzzKey + " ", ""}, {"", "", "api_key=%00"},
	} {
		f.Add(s[0], s[1], s[2], true)
		f.Add(s[0], s[1], s[2], false)
	}
	f.Fuzz(func(t *testing.T, authorization, xAPIKey, query string, allowQuery bool) {
		x := keyindex.New("nx_live_")
		x.Apply("acc_1", 1, account.Opened{AccountID: "acc_1", Plan: account.PlanAPI})
		x.Apply("acc_1", 2, account.KeyCreated{KeyID: "key_1", Name: "k", Hash: apikey.HashOf(fuzzKey), Prefix: "nx_live_", Scopes: apikey.DefaultScopes})
		s := &Server{cfg: Config{Keys: x, Sessions: iss, AllowQueryKey: allowQuery}, log: slog.New(slog.DiscardHandler)}

		r := httptest.NewRequest("GET", "/api/v1/wallet", nil)
		r.URL.RawQuery = query
		r.Header["Authorization"] = []string{authorization}
		r.Header["X-Api-Key"] = []string{xAPIKey}
		p, err := s.authenticate(httptest.NewRecorder(), r)

		// What the contract lets in, worked out independently.
		var presented []string
		if len(authorization) > 7 && strings.EqualFold(authorization[:7], "bearer ") && strings.TrimSpace(authorization[7:]) != "" {
			presented = append(presented, strings.TrimSpace(authorization[7:]))
		} else if k := strings.TrimSpace(xAPIKey); k != "" {
			presented = append(presented, k)
		} else if k := r.URL.Query().Get("api_key"); allowQuery && k != "" {
			presented = append(presented, k)
		}
		valid := len(presented) == 1 && (presented[0] == fuzzKey || presented[0] == tok)
		switch {
		case err == nil && !valid:
			t.Fatalf("let in as %+v with Authorization %q, x-api-key %q, query %q (allowed %v)", p, authorization, xAPIKey, query, allowQuery)
		case err != nil && valid:
			t.Fatalf("refused %q: %v", presented[0], err)
		case err == nil && p.AccountID != "acc_1":
			t.Fatalf("let in for account %q", p.AccountID)
		case err != nil:
			ae, known := toAPIError(err)
			if !known || ae.Status != http.StatusUnauthorized || ae.Code != "unauthorized" {
				t.Fatalf("refusal mapped to %d %s (known %v), want 401 unauthorized", ae.Status, ae.Code, known)
			}
		}
	})
}
