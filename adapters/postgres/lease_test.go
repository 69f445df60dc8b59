package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/adapters/pgembed/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// A lease says it is lost when the session holding the lock dies (as in a
// Postgres restart), and only then; after that the lock is free for
// another instance.
func TestLeaseLostWhenItsSessionDies(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	a, err := Open(ctx, dsn, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(ctx, dsn, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	lease, ok, err := TryLock(ctx, a, "callbacks")
	if err != nil || !ok {
		t.Fatalf("first TryLock: ok=%v err=%v", ok, err)
	}
	if _, ok, err := TryLock(ctx, b, "callbacks"); err != nil || ok {
		t.Fatalf("second instance took a held lock: ok=%v err=%v", ok, err)
	}
	select {
	case <-lease.Lost():
		t.Fatal("a healthy lease reported lost")
	case <-time.After(3 * leaseCheck):
	}

	// Kill the session that holds the lock, from the other instance.
	var killed bool
	if err := b.NewRaw(`SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()`).Scan(ctx, &killed); err != nil || !killed {
		t.Fatalf("terminating the holder: killed=%v err=%v", killed, err)
	}
	select {
	case <-lease.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the lease did not notice its session died")
	}
	lease.Release() // the session is gone: must not hang or panic
	taken, ok, err := TryLock(ctx, b, "callbacks")
	if err != nil || !ok {
		t.Fatalf("lock not free after its holder died: ok=%v err=%v", ok, err)
	}
	taken.Release()
	if again, ok, err := TryLock(ctx, a, "callbacks"); err != nil || !ok {
		t.Fatalf("lock not free after release: ok=%v err=%v", ok, err)
	} else {
		again.Release()
	}
}
