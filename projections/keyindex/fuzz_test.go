package keyindex

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/apikey"
)

// wellFormed is the key format written out again, independently of
// apikey.WellFormed: the prefix, then exactly 32 characters of the URL-safe
// base64 alphabet.
func wellFormed(s string) bool {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok || len(rest) != 32 {
		return false
	}
	// 32 characters are exactly 24 bytes, so a valid text survives the
	// round trip unchanged (the decoder alone skips CR and LF).
	b, err := base64.RawURLEncoding.Strict().DecodeString(rest)
	return err == nil && base64.RawURLEncoding.EncodeToString(b) == rest
}

// FuzzKeyParse presents arbitrary strings to the key index. To see which
// strings reach the lookup, the index also holds an entry under the hash
// of the presented string itself: only a string of the exact key format
// may then verify. A key minted from the fuzzer's bytes the way ledgerd
// mints them always verifies.
func FuzzKeyParse(f *testing.F) {
	for _, s := range []string{
		"", prefix, secret(1), secret(1) + "x", secret(1)[:len(secret(1))-1], " " + secret(1), secret(1) + "\n",
		"NX_LIVE_" + strings.Repeat("a", 32), prefix + strings.Repeat("+", 32), prefix + strings.Repeat("=", 32),
		prefix + strings.Repeat("a", 31) + "\x00", prefix + strings.Repeat("é", 16), prefix + strings.Repeat("a", 10000),
		"Bearer " + secret(1), "eyJhbGciOiJIUzI1NiJ9.e30.sig", "\xff\xfe" + secret(1)[2:],
	} {
		f.Add(s, []byte("0123456789abcdefghijklmn"))
	}
	f.Fuzz(func(t *testing.T, presented string, random []byte) {
		// A key minted from 24 random bytes: 32 base64url characters.
		var raw [24]byte
		copy(raw[:], random)
		minted := prefix + base64.RawURLEncoding.EncodeToString(raw[:])
		x := New(prefix)
		x.Apply("acc_1", 1, account.Opened{AccountID: "acc_1", Plan: account.PlanAPI})
		x.Apply("acc_1", 2, account.KeyCreated{KeyID: "key_minted", Name: "m", Hash: apikey.HashOf(minted), Prefix: prefix, Scopes: apikey.DefaultScopes})
		x.Apply("acc_1", 3, account.KeyCreated{KeyID: "key_presented", Name: "p", Hash: apikey.HashOf(presented), Prefix: prefix, Scopes: apikey.DefaultScopes})

		if got, want := apikey.WellFormed(prefix, presented), wellFormed(presented); got != want {
			t.Fatalf("WellFormed(%q) = %v, want %v", presented, got, want)
		}
		k, err := x.Verify(presented, home, now)
		switch {
		case wellFormed(presented) && err != nil:
			t.Fatalf("well-formed %q not verified: %v", presented, err)
		case !wellFormed(presented) && err == nil:
			t.Fatalf("malformed %q reached the lookup and verified as %s", presented, k.ID)
		case err != nil && !errors.Is(err, ErrUnknown):
			t.Fatalf("malformed %q: got %v, want ErrUnknown", presented, err)
		case err == nil && k.ID != "key_presented" && presented != minted:
			t.Fatalf("%q verified as %s", presented, k.ID)
		}
		if k, err := x.Verify(minted, home, now); err != nil || (k.ID != "key_minted" && minted != presented) {
			t.Fatalf("minted key %q: got %v %v, want key_minted", minted, k.ID, err)
		}
	})
}
