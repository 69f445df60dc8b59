package live

import (
	"context"
	"errors"
	"time"

	"github.com/ledgerd/ledgerd/projections"
)

// Request is what a new connection asks for.
type Request struct {
	// AccountID is the customer account to follow; Staff asks for the
	// platform stream instead.
	AccountID string
	Staff     bool
	// Resume, with LastEventID, asks for what came after that id.
	Resume      bool
	LastEventID uint64
	// OnDrop, if set, is called (once, on its own goroutine) when the hub
	// drops the subscription for not keeping up, so a write blocked on
	// the client can be cut short.
	OnDrop func()
}

// Subscription is one connection's feed.
type Subscription struct {
	h       *Hub
	account string
	staff   bool
	ch      chan []*Message
	done    chan struct{}
	onDrop  func()
	// initial is sent before anything from ch: a snapshot, or the replay
	// of what the client missed.
	initial []*Message
	// walletPos: wallet messages from batches at or below it are older
	// than the snapshot's wallet and are not sent.
	walletPos uint64

	// Guarded by h.mu.
	ended, dropped bool
	last           uint64
}

// Subscribe registers a subscriber. A customer gets a snapshot first
// unless its resume can be filled from the replay ring; staff get the
// platform totals at once.
func (h *Hub) Subscribe(ctx context.Context, req Request) (*Subscription, error) {
	s := &Subscription{h: h, account: req.AccountID, staff: req.Staff, onDrop: req.OnDrop,
		ch: make(chan []*Message, h.cfg.Buffer), done: make(chan struct{})}
	if req.Staff {
		m, err := h.platformMessage(ctx)
		if err != nil {
			return nil, err
		}
		h.mu.Lock()
		m.ID = h.emitted
		s.initial, s.last = []*Message{m}, m.ID
		h.staff[s] = struct{}{}
		h.mu.Unlock()
		return s, nil
	}
	if req.AccountID == "" {
		return nil, errors.New("live: a subscription needs an account")
	}
	h.mu.Lock()
	if req.Resume && h.floor != noFloor && req.LastEventID >= h.floor && req.LastEventID <= h.emitted {
		s.initial = h.replay(req.AccountID, req.LastEventID)
		s.last = h.emitted
		h.add(s)
		h.stats.Resumed++
		h.mu.Unlock()
		return s, nil
	}
	// From here on the subscriber gets every message after id; the
	// snapshot's totals are exactly those at id, its wallet at least.
	id := h.emitted
	today, month := h.totals[req.AccountID].at(h.cfg.Now())
	s.last = id
	h.add(s)
	h.stats.Snapshots++
	h.mu.Unlock()

	w, err := h.cfg.Loader.LiveWallet(ctx, req.AccountID)
	if errors.Is(err, projections.ErrNotFound) {
		// Opened but not yet projected: nothing in it yet.
		w, err = projections.LiveWallet{Currency: h.cfg.Currency}, nil
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	s.walletPos = w.Position
	d := snapshotData{AccountID: req.AccountID, Currency: w.Currency, Today: today, Month: month, Lag: h.lag(),
		Wallet: renderWallet(w.Available, w.Held, w.Credits, w.HeldCredits)}
	if d.Currency == "" {
		d.Currency = h.cfg.Currency
	}
	s.initial = []*Message{{ID: id, Type: "snapshot", AccountID: req.AccountID, data: d}}
	return s, nil
}

func (h *Hub) add(s *Subscription) {
	set := h.subs[s.account]
	if set == nil {
		set = map[*Subscription]struct{}{}
		h.subs[s.account] = set
	}
	set[s] = struct{}{}
}

// replay returns the account's messages after id still in the ring, in
// order. Called with h.mu held.
func (h *Hub) replay(account string, after uint64) []*Message {
	out := []*Message{}
	n := h.head
	start := 0
	if h.full {
		n, start = len(h.ring), h.head
	}
	for i := range n {
		m := h.ring[(start+i)%len(h.ring)]
		if m.ID > after && m.AccountID == account {
			out = append(out, m)
		}
	}
	return out
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	s.h.remove(s, false)
}

// Dropped tells whether the hub dropped the subscriber for not keeping up.
func (s *Subscription) Dropped() bool {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	return s.dropped
}

// ErrDropped ends a subscription that did not keep up.
var ErrDropped = errors.New("live: subscriber dropped for not keeping up")

// Serve writes the subscription to a client until ctx ends, the hub ends
// it, or a write fails: the initial messages, then each delivery as it
// comes, with a keep-alive when nothing else was written for keepAlive.
// write gets one delivery and should flush it as a whole.
func (s *Subscription) Serve(ctx context.Context, keepAlive time.Duration, write func([]*Message) error, ping func() error) error {
	defer s.Close()
	if len(s.initial) > 0 {
		if err := write(s.initial); err != nil {
			return err
		}
	}
	t := time.NewTimer(keepAlive)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			if s.Dropped() {
				return ErrDropped
			}
			return ErrClosed
		case <-t.C:
			if err := ping(); err != nil {
				return err
			}
		case g := <-s.ch:
			if g = s.fresh(g); len(g) > 0 {
				if err := write(g); err != nil {
					return err
				}
			}
		}
		t.Reset(keepAlive)
	}
}

// fresh leaves out wallet messages older than the snapshot's wallet.
func (s *Subscription) fresh(g []*Message) []*Message {
	if s.walletPos == 0 {
		return g
	}
	for i, m := range g {
		if m.Type == "wallet" && m.pos <= s.walletPos {
			out := append([]*Message{}, g[:i]...)
			for _, m := range g[i+1:] {
				if m.Type != "wallet" || m.pos > s.walletPos {
					out = append(out, m)
				}
			}
			return out
		}
	}
	return g
}
