package app

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ledgerd/ledgerd/adapters/callbacks"
	"github.com/ledgerd/ledgerd/adapters/postgres"
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/ledger/tasks"
	"github.com/ledgerd/ledgerd/projections"
)

// instanceID is this ledgerd's identity, kept in the data dir so that a
// restarted instance recognises (and resumes) the tasks it owned.
func instanceID(dir string) (string, error) {
	path := filepath.Join(dir, "instance-id")
	if b, err := os.ReadFile(path); err == nil {
		if id := strings.TrimSpace(string(b)); strings.HasPrefix(id, "inst_") {
			return id, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	id := "inst_" + strings.ToLower(rand.Text()[:16])
	return id, os.WriteFile(path, []byte(id+"\n"), 0o644)
}

// heartbeats records which instances are alive in a JetStream KV bucket
// whose entries expire: an instance that stops beating is gone, and the
// sweepers of the others adopt its tasks.
type heartbeats struct {
	kv  jetstream.KeyValue
	ttl time.Duration
}

const heartbeatTTL = 15 * time.Second

func newHeartbeats(ctx context.Context, js jetstream.JetStream, replicas int) (*heartbeats, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: "ledger_instances", Description: "ledgerd instance heartbeats",
		TTL: heartbeatTTL, History: 1, Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("heartbeats: %w", err)
	}
	return &heartbeats{kv: kv, ttl: heartbeatTTL}, nil
}

func (h *heartbeats) beat(ctx context.Context, id string) error {
	_, err := h.kv.Put(ctx, id, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
	return err
}

func (h *heartbeats) run(ctx context.Context, id string, log func(error)) {
	for {
		if err := h.beat(ctx, id); err != nil && ctx.Err() == nil {
			log(err)
		}
		select {
		case <-ctx.Done():
			// Leaving on purpose: say so at once instead of waiting out
			// the TTL, so others may adopt what is left.
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = h.kv.Delete(dctx, id)
			cancel()
			return
		case <-time.After(h.ttl / 5):
		}
	}
}

func (h *heartbeats) alive(ctx context.Context, id string) (bool, error) {
	e, err := h.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if e.Operation() != jetstream.KeyValuePut {
		return false, nil
	}
	return time.Since(e.Created()) < h.ttl, nil
}

// openTasks adapts the tasks read model for the sweeper.
func openTasks(r *projections.Reader) func(ctx context.Context, limit int) ([]tasks.OpenTask, error) {
	return func(ctx context.Context, limit int) ([]tasks.OpenTask, error) {
		rows, err := r.OpenTasks(ctx, limit)
		if err != nil {
			return nil, err
		}
		out := make([]tasks.OpenTask, 0, len(rows))
		for _, row := range rows {
			var in account.TaskInput
			_ = json.Unmarshal(row.Input, &in)
			out = append(out, tasks.OpenTask{ID: row.ID, AccountID: row.AccountID, Owner: row.Owner, Model: row.Model,
				Type: pricing.Type(row.Type), Provider: row.Provider, ProviderModel: row.ProviderModel,
				ProviderRef: row.ProviderRef, Input: in, HoldExpiresAt: row.HoldExpiresAt})
		}
		return out, nil
	}
}

// dueCallbacks adapts the tasks read model for the callback dispatcher:
// the body is the task as GET /api/v1/tasks/{id} renders it.
func dueCallbacks(r *projections.Reader) func(ctx context.Context, now time.Time, limit int) ([]callbacks.Due, error) {
	return func(ctx context.Context, now time.Time, limit int) ([]callbacks.Due, error) {
		rows, err := r.DueCallbacks(ctx, now, limit)
		if err != nil {
			return nil, err
		}
		out := make([]callbacks.Due, 0, len(rows))
		for _, row := range rows {
			body, err := json.Marshal(taskPayload(row))
			if err != nil {
				return nil, err
			}
			out = append(out, callbacks.Due{TaskID: row.ID, AccountID: row.AccountID, URL: row.CallbackURL,
				Attempts: row.CallbackAttempts, Body: body})
		}
		return out, nil
	}
}

func taskPayload(row projections.TaskRow) map[string]any {
	out := map[string]any{"taskId": row.ID, "model": row.Model, "status": row.Status, "cost": row.Cost.StringFixed(2),
		"output": json.RawMessage(orEmpty(row.Output)), "created_at": row.RequestedAt.UTC().Format(time.RFC3339Nano)}
	if row.CompletedAt != nil {
		out["completed_at"] = row.CompletedAt.UTC().Format(time.RFC3339Nano)
	}
	if row.ErrorCode != "" {
		out["error"] = map[string]string{"code": row.ErrorCode, "message": row.ErrorMessage}
	}
	return out
}

func orEmpty(b []byte) []byte {
	if len(b) == 0 {
		return []byte("{}")
	}
	return b
}

// webhookSecrets derives each account's callback signing secret from one
// master key, so no secret is stored per account and every instance
// configured with the same key signs alike.
func webhookSecrets(configured, dir string) (func(string) string, error) {
	key := []byte(configured)
	if configured == "" {
		path := filepath.Join(dir, "webhook.key")
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			key = []byte(strings.TrimSpace(string(b)))
		case errors.Is(err, os.ErrNotExist):
			key = []byte(rand.Text() + rand.Text())
			if err := os.WriteFile(path, append(key, '\n'), 0o600); err != nil {
				return nil, err
			}
		default:
			return nil, err
		}
	}
	if len(key) < 32 {
		return nil, errors.New("LEDGER_WEBHOOK_KEY must be at least 32 characters")
	}
	return func(accountID string) string {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte("ledgerd webhook secret\x00" + accountID))
		return "whsec_" + hex.EncodeToString(mac.Sum(nil))
	}, nil
}

// leading runs fn only while this instance holds the named Postgres
// advisory lock, so work that must happen once (callback delivery, grant
// expiry, renewals, alerts) runs on one instance; the others wait to take
// over. If the lock's session dies (a Postgres restart), fn is stopped and
// the lock taken again, by this instance or another.
func (a *App) leading(ctx context.Context, name string, fn func(context.Context)) {
	for ctx.Err() == nil {
		lease, ok, err := postgres.TryLock(ctx, a.db, name)
		if err == nil && ok {
			lctx, cancel := context.WithCancel(ctx)
			go func() {
				select {
				case <-lease.Lost():
					a.log.Warn("lost the lock of a once-only loop; stopping it until the lock is taken again", "loop", name)
					cancel()
				case <-lctx.Done():
				}
			}()
			fn(lctx)
			cancel()
			lease.Release()
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}
