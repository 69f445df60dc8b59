package app

import (
	"net/http"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
	"github.com/ledgerd/ledgerd/ledger/eventstore/storetest"
)

// A call answered 503 whose reservation was stored after all (its answer
// lost, as a stream without quorum does) is retried by its client with the
// same Idempotency-Key, as the 503 asks. The retry is a new call and is
// charged once; the refused call is released and never run, whether the
// sweeper released it before the retry came or the retry finds it still
// held. A later retry with the key answers the retry's call. TestQuorumLoss
// reaches this only when the stream happens to store the refused append.
func TestRetryOfARefusedCallOverHTTP(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sweep string
	}{
		// The retry finds the refused call pending in the read model and
		// in doubt: it releases it, then reserves anew.
		{"the refused call still held", "1h"},
		// The sweeper released it first: its key is free.
		{"the refused call released by the sweeper", "100ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, store := lossyChargingEnv(t, map[string]string{"LEDGER_SWEEP_INTERVAL": tc.sweep})
			e.topUp("10.00", "fund")
			key, _ := newKey(t, e.cust, map[string]any{"name": "k"})
			c := withKey(e.anon, key)
			call := func() response {
				return c.do("POST", "/api/v1/image/generate", image("refused"), "Idempotency-Key", "idem-refused")
			}

			store.Lose.Store(true)
			r := call()
			store.Lose.Store(false)
			if r.Status != http.StatusServiceUnavailable || errCode(r) != "unavailable" {
				t.Fatalf("call with its answer lost: %d %s, want 503 unavailable", r.Status, r.Raw)
			}
			// The refused reservation is in the read models: its price is
			// held, and (until released) its task is listed.
			var refused map[string]any
			waitUntil(t, 10*time.Second, func() bool {
				tasks, _ := e.cust.do("GET", "/api/v1/tasks?limit=10", nil).Body["tasks"].([]any)
				if len(tasks) != 1 {
					return false
				}
				refused = tasks[0].(map[string]any)
				return tc.sweep == "1h" || refused["status"] == "failed"
			})
			if tc.sweep == "1h" && (refused["status"] != "pending" || e.wallet() != "10.00/0.80/9.20") {
				t.Fatalf("before the retry: task %v, wallet %s; want it pending and 0.80 held", refused, e.wallet())
			}

			r = call()
			if r.Status != http.StatusOK || r.Body["imageUrl"] == nil || r.Body["taskId"] == refused["taskId"] {
				t.Fatalf("retry: %d %s; want a new call, succeeded (the refused one was %v)", r.Status, r.Raw, refused["taskId"])
			}
			retry := r.Body["taskId"]
			if again := call(); again.Status != http.StatusOK || again.Body["taskId"] != retry {
				t.Fatalf("second retry: %d %s; want the first retry's call %v", again.Status, again.Raw, retry)
			}
			// One charge: the retry's. The refused call is failed, released,
			// and was never run.
			waitUntil(t, 10*time.Second, func() bool { return e.wallet() == "9.20/0.00/9.20" })
			task := e.cust.do("GET", "/api/v1/tasks/"+refused["taskId"].(string), nil)
			failure, _ := task.Body["error"].(map[string]any)
			if task.Body["status"] != "failed" || task.Body["cost"] != "0.00" || failure["code"] != "unavailable" {
				t.Fatalf("the refused call: %s; want failed, unavailable, nothing charged", task.Raw)
			}
			if listed, _ := e.cust.do("GET", "/api/v1/tasks?limit=10", nil).Body["tasks"].([]any); len(listed) != 2 {
				t.Fatalf("tasks listed: %v; want the refused call and its retry", listed)
			}
		})
	}
}

// lossyChargingEnv is a charging environment whose command side's appends
// can have their answers lost on cue.
func lossyChargingEnv(t *testing.T, extra map[string]string) (chargingEnv, *storetest.LostAnswers) {
	t.Helper()
	var store *storetest.LostAnswers
	e := newChargingEnvWith(t, extra, func(c *Config) {
		c.wrapStore = func(s eventstore.Store) eventstore.Store {
			store = &storetest.LostAnswers{Store: s}
			return store
		}
	})
	return e, store
}

// When the answer to a call's capture or release is lost (stored, but its
// runner hears "unavailable", and so does the reload that would have found
// it), the runner tries again, finds the task ended, and the caller gets
// what the call came to: its image and one charge, or its provider's
// failure and nothing charged. Never a 503, which says nothing was
// charged, and never a second capture.
func TestLostOutcomeAnswerAnswersTheOutcome(t *testing.T) {
	e, store := lossyChargingEnv(t, nil)
	e.topUp("10.00", "fund")
	e.model("fails", map[string]any{"type": "image", "price": "1.00", "provider": "local", "options": map[string]any{"failure_rate": 1}})
	key, _ := newKey(t, e.cust, map[string]any{"name": "k"})
	c := withKey(e.anon, key)

	store.LoseNext(account.EventTaskSucceeded)
	r := c.do("POST", "/api/v1/image/generate", image("captured"))
	if r.Status != http.StatusOK || r.Body["imageUrl"] == nil || r.Body["cost"] != "0.80" {
		t.Fatalf("call whose capture's answer was lost: %d %s, want 200 with its image", r.Status, r.Raw)
	}
	if store.Lost() != 2 {
		t.Fatalf("%d answers lost, want the capture's and its reload's", store.Lost())
	}
	waitUntil(t, 10*time.Second, func() bool { return e.wallet() == "9.20/0.00/9.20" })

	store.LoseNext(account.EventTaskFailed)
	r = c.do("POST", "/api/v1/image/generate", map[string]string{"prompt": "released", "model": "fails"})
	if r.Status != http.StatusBadGateway || errCode(r) != "provider_error" {
		t.Fatalf("failed call whose release's answer was lost: %d %s, want 502 provider_error", r.Status, r.Raw)
	}
	if store.Lost() != 4 {
		t.Fatalf("%d answers lost, want the capture's, the release's and their reloads'", store.Lost())
	}
	waitUntil(t, 10*time.Second, func() bool { return e.wallet() == "9.20/0.00/9.20" })
	if got := e.wallet(); got != "9.20/0.00/9.20" {
		t.Fatalf("wallet %s, want 9.20 with nothing held: one capture, one release", got)
	}
}

// A top-up whose answer is lost is answered 503 although it was stored;
// the operator retries it with the same reference and it credits once.
func TestLostTopUpAnswerCreditsOnce(t *testing.T) {
	e, store := lossyChargingEnv(t, nil)
	topUp := func() response {
		return e.admin.do("POST", "/api/admin/accounts/"+e.acc+"/topups", map[string]string{"amount": "25.00", "reference": "wire-7"})
	}
	store.LoseNext(account.EventToppedUp)
	if r := topUp(); r.Status != http.StatusServiceUnavailable || store.Lost() != 2 {
		t.Fatalf("top-up with its answer lost: %d %s (%d answers lost), want 503", r.Status, r.Raw, store.Lost())
	}
	// The retry finds the top-up the lost answer belonged to.
	r := topUp()
	if r.Status != http.StatusCreated || r.Body["id"] == nil || r.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry with the same reference: %d %s (replayed %q), want 201 replaying the stored top-up",
			r.Status, r.Raw, r.Header.Get("Idempotent-Replayed"))
	}
	if again := topUp(); again.Status != http.StatusCreated || again.Body["id"] != r.Body["id"] {
		t.Fatalf("second retry: %d %s, want the same top-up %v", again.Status, again.Raw, r.Body["id"])
	}
	if got := e.wallet(); got != "25.00/0.00/25.00" {
		t.Fatalf("wallet %s, want 25.00: credited once", got)
	}
}
