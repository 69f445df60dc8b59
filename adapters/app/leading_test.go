package app

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/adapters/postgres"
)

// A once-only loop stops when its lock's session dies (a Postgres restart
// hands the lock to whoever asks next) and starts again once it holds the
// lock again, so two instances never both run it for longer than the
// lease check takes.
func TestLeadingStopsWhenItsLockIsLost(t *testing.T) {
	a := startApp(t, testConfig(t, testDir(t)))
	defer stopApp(t, a)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var runs atomic.Int32
	stopped := make(chan struct{}, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.leading(ctx, "test-loop", func(ctx context.Context) {
			runs.Add(1)
			<-ctx.Done()
			stopped <- struct{}{}
		})
	}()
	waitFor(t, 5*time.Second, func() bool { return runs.Load() == 1 })

	// Kill the session holding the loop's lock.
	var pid int
	if err := a.db.NewRaw(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
		AND (classid::bigint << 32 | objid::bigint) = ?`, postgres.LockKey("test-loop")).Scan(ctx, &pid); err != nil {
		t.Fatalf("the loop's lock is not in pg_locks: %v", err)
	}
	if _, err := a.db.ExecContext(ctx, "SELECT pg_terminate_backend(?)", pid); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the loop kept running after its lock was lost")
	}
	waitFor(t, 10*time.Second, func() bool { return runs.Load() == 2 })
	cancel()
	<-done
}

func waitFor(t *testing.T, bound time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
