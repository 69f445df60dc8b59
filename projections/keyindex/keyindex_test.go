package keyindex

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/apikey"
)

const prefix = "nx_live_"

var (
	now  = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	home = netip.MustParseAddr("203.0.113.9")
)

func secret(i int) string { return fmt.Sprintf("%s%032d", prefix, i) }

func created(id string, i int, mut ...func(*account.KeyCreated)) account.KeyCreated {
	e := account.KeyCreated{KeyID: id, Name: id, Hash: apikey.HashOf(secret(i)), Prefix: prefix, Scopes: apikey.DefaultScopes, RateLimit: 60}
	for _, m := range mut {
		m(&e)
	}
	return e
}

func newIndex() *Index {
	x := New(prefix)
	x.Apply("acc_1", 1, account.Opened{AccountID: "acc_1", Plan: account.PlanStandard})
	x.Apply("acc_free", 1, account.Opened{AccountID: "acc_free", Plan: account.PlanFree})
	return x
}

func TestVerify(t *testing.T) {
	past := now.Add(-time.Second)
	x := newIndex()
	x.Apply("acc_1", 2, created("key_ok", 1))
	x.Apply("acc_1", 3, created("key_rev", 2))
	x.Apply("acc_1", 4, account.KeyRevoked{KeyID: "key_rev"})
	x.Apply("acc_1", 5, created("key_rot", 3))
	x.Apply("acc_1", 6, account.KeyRotated{KeyID: "key_rot", Hash: apikey.HashOf(secret(4))})
	x.Apply("acc_1", 7, created("key_exp", 5, func(e *account.KeyCreated) { e.ExpiresAt = &past }))
	x.Apply("acc_1", 8, created("key_ip", 6, func(e *account.KeyCreated) { e.Allowlist = []string{"198.51.100.0/24"} }))
	x.Apply("acc_free", 2, created("key_free", 7))

	tests := []struct {
		name    string
		key     string
		wantID  string
		wantErr error
	}{
		{"active", secret(1), "key_ok", nil},
		{"unknown", secret(99), "", ErrUnknown},
		{"malformed", "nx_live_short", "", ErrUnknown},
		{"wrong prefix", "sk_test_" + secret(1)[len(prefix):], "", ErrUnknown},
		{"revoked", secret(2), "", ErrUnknown},
		{"rotated away", secret(3), "", ErrUnknown},
		{"rotated in", secret(4), "key_rot", nil},
		{"expired", secret(5), "", ErrExpired},
		{"ip outside allowlist", secret(6), "", ErrIPNotAllowed},
		{"free plan", secret(7), "", ErrPlanRequired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := x.Verify(tt.key, home, now)
			if !errors.Is(err, tt.wantErr) || k.ID != tt.wantID {
				t.Fatalf("Verify = %+v, %v; want %s, %v", k, err, tt.wantID, tt.wantErr)
			}
		})
	}

	x.Apply("acc_1", 9, account.StatusChanged{Status: account.StatusSuspended})
	if _, err := x.Verify(secret(1), home, now); !errors.Is(err, ErrAccountInactive) {
		t.Fatalf("suspended account: %v, want ErrAccountInactive", err)
	}
}

// TestApplyIsIdempotent: the instance that revokes applies the event
// locally, then again from the stream, in either order relative to older
// events; the newest change always wins.
func TestApplyIsIdempotent(t *testing.T) {
	x := newIndex()
	x.Apply("acc_1", 2, created("key_a", 1))
	x.Apply("acc_1", 3, account.KeyRevoked{KeyID: "key_a"}) // local, ahead of the stream
	x.Apply("acc_1", 2, created("key_a", 1))                // stream redelivers the creation
	if _, err := x.Verify(secret(1), home, now); !errors.Is(err, ErrUnknown) {
		t.Fatalf("revoked key verified after a late replay of its creation: %v", err)
	}
	x.Apply("acc_1", 3, account.KeyRevoked{KeyID: "key_a"})
	if x.Len() != 1 {
		t.Fatalf("Len = %d, want 1", x.Len())
	}
}

func TestRateLimit(t *testing.T) {
	x := newIndex()
	x.Apply("acc_1", 2, created("key_a", 1, func(e *account.KeyCreated) { e.RateLimit = 3 }))
	for i := range 3 {
		if ok, _ := x.Allow("key_a", now); !ok {
			t.Fatalf("request %d refused within the limit", i)
		}
	}
	ok, wait := x.Allow("key_a", now)
	if ok || wait <= 0 || RetryAfterSeconds(wait) != 20 {
		t.Fatalf("4th request: ok=%v wait=%v, want refused with 20s", ok, wait)
	}
	// Rotating keeps the bucket: a new secret is not a new allowance.
	x.Apply("acc_1", 3, account.KeyRotated{KeyID: "key_a", Hash: apikey.HashOf(secret(2))})
	if ok, _ := x.Allow("key_a", now); ok {
		t.Fatal("rotation reset the rate limit")
	}
	if ok, _ := x.Allow("key_a", now.Add(20*time.Second)); !ok {
		t.Fatal("bucket did not refill")
	}
}

func TestLastUsedIsBatchedPerSecond(t *testing.T) {
	x := newIndex()
	x.Apply("acc_1", 2, created("key_a", 1))
	for range 100 {
		if _, err := x.Verify(secret(1), home, now); err != nil {
			t.Fatal(err)
		}
	}
	if used := x.TakeUsed(); len(used) != 1 || !used["key_a"].Equal(now) {
		t.Fatalf("used = %v, want key_a once", used)
	}
	x.Verify(secret(1), home, now.Add(500*time.Millisecond))
	if used := x.TakeUsed(); len(used) != 0 {
		t.Fatalf("second use in the same second flushed again: %v", used)
	}
	x.Verify(secret(1), home, now.Add(time.Second))
	if used := x.TakeUsed(); len(used) != 1 {
		t.Fatalf("use a second later not flushed: %v", used)
	}
}

func loadIndex(n int) *Index {
	x := New(prefix)
	keys := make([]Loaded, n)
	for i := range keys {
		keys[i] = Loaded{KeyID: fmt.Sprintf("key_%d", i), AccountID: "acc_1", Hash: apikey.HashOf(secret(i)),
			Scopes: apikey.DefaultScopes, RateLimit: 600, Version: 2}
	}
	x.Load(keys, []LoadedAccount{{ID: "acc_1", Plan: account.PlanAPI, Status: account.StatusActive, Version: 1}})
	return x
}

// BenchmarkVerify measures the hot path with 1k and 100k keys loaded. Its
// allocations must not grow with the number of keys.
func BenchmarkVerify(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			x := loadIndex(n)
			presented := make([]string, 1024)
			for i := range presented {
				presented[i] = secret(i * (n / 1024))
			}
			lat := make([]time.Duration, 0, min(b.N, 1_000_000))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if _, err := x.Verify(presented[i%len(presented)], home, now); err != nil {
					b.Fatal(err)
				}
				if len(lat) < cap(lat) {
					lat = append(lat, time.Since(start))
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifies/s")
		})
	}
}

func TestVerifyDoesNotAllocateMoreWithMoreKeys(t *testing.T) {
	per := func(n int) float64 {
		x := loadIndex(n)
		k := secret(n / 2)
		return testing.AllocsPerRun(1000, func() { _, _ = x.Verify(k, home, now) })
	}
	small, large := per(1_000), per(100_000)
	if large > small {
		t.Fatalf("allocs per verify: %v with 1k keys, %v with 100k", small, large)
	}
}
