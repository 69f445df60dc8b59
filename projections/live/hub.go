// Package live holds what the live usage streams push: the hub that takes
// each projection batch once it has committed, merges the projections'
// batches into one order by stream sequence, keeps running totals (per
// account today and this month, platform totals) and a bounded replay
// ring, and fans messages out to subscribers without ever waiting on one.
package live

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/shopspring/decimal"

	"github.com/ledgerd/ledgerd/projections"
)

// Loader reads what the hub cannot know from the events it sees: the
// state before it started, and each new customer connection's wallet.
type Loader interface {
	// LiveTotals reads usage per account for day and month (and the
	// platform's held total) with the positions they include.
	LiveTotals(ctx context.Context, day, month time.Time) (projections.LiveTotals, error)
	// LiveWallet reads a wallet with the accounts projection's position.
	LiveWallet(ctx context.Context, accountID string) (projections.LiveWallet, error)
	// Emails names accounts.
	Emails(ctx context.Context, ids []string) (map[string]string, error)
}

// Provider is a provider's circuit state.
type Provider struct{ Provider, State string }

// Config of a hub.
type Config struct {
	// Sources are the projections whose batches are merged: a message is
	// pushed once every source has passed its sequence (or MaxHold has
	// passed), so ids never go backwards.
	Sources []string
	Loader  Loader
	// Statuses and Providers report projections and provider circuits.
	Statuses  func() []projections.Status
	Providers func() []Provider
	Currency  string
	// Buffer is each subscriber's queue, in deliveries; a subscriber whose
	// queue is full is dropped.
	Buffer int
	// Replay is how many messages are kept for resuming.
	Replay int
	// MaxHold bounds how long a message waits for a lagging projection.
	MaxHold time.Duration
	// PlatformEvery and LagEvery pace the periodic messages.
	PlatformEvery, LagEvery time.Duration
	Logger                  *slog.Logger
	Now                     func() time.Time
}

// Stats are the hub's counters.
type Stats struct {
	Subscribers, Staff  int
	Dropped             uint64
	Resumed, Snapshots  uint64
	Messages            uint64
	ReplayFloor, LastID uint64
}

// Hub fans projection changes out to subscribers.
type Hub struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	positions map[string]uint64
	queues    map[string][]item
	emitted   uint64 // id of the last message pushed
	// ring holds the last cfg.Replay customer messages; floor is the id
	// at or after which it still holds every message.
	ring  []*Message
	head  int
	full  bool
	floor uint64

	subs  map[string]map[*Subscription]struct{} // by account
	staff map[*Subscription]struct{}

	totals   map[string]*totals
	platform totals
	usagePos uint64 // the loaded totals include usage batches up to here
	heldPos  uint64
	held     decimal.Decimal
	perSec   [8]struct {
		sec   int64
		calls int64
	}
	emails map[string]string

	stats Stats
}

// item is one change waiting for the other sources.
type item struct {
	seq, pos uint64
	source   int
	at       time.Time
	wallet   *projections.WalletChange
	usage    *projections.UsageChange
	task     *projections.TaskChange
	key      *projections.KeyChange
	plan     *projections.PlanChange
}

// totals are calls and spend in a UTC day and calendar month.
type totals struct {
	day, month             time.Time
	dayCalls, monthCalls   int64
	daySpend, monthSpend   decimal.Decimal
	dayFailed, monthFailed int64
}

func dayOf(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

func monthOf(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// add counts calls made at t. A call from an earlier day than the one
// held is not today's; one from a later day starts a new day.
func (t *totals) add(at time.Time, calls int64, spend decimal.Decimal) {
	d, m := dayOf(at), monthOf(at)
	switch {
	case d.Equal(t.day):
		t.dayCalls, t.daySpend = t.dayCalls+calls, t.daySpend.Add(spend)
	case d.After(t.day):
		t.day, t.dayCalls, t.daySpend = d, calls, spend
	}
	switch {
	case m.Equal(t.month):
		t.monthCalls, t.monthSpend = t.monthCalls+calls, t.monthSpend.Add(spend)
	case m.After(t.month):
		t.month, t.monthCalls, t.monthSpend = m, calls, spend
	}
}

// at reports the totals as of now: a day or month that has ended counts
// nothing.
func (t *totals) at(now time.Time) (today, month countSpend) {
	today = countSpend{Spend: money(decimal.Zero)}
	month = today
	if t == nil {
		return today, month
	}
	if !dayOf(now).After(t.day) {
		today = countSpend{Calls: t.dayCalls, Spend: money(t.daySpend)}
	}
	if !monthOf(now).After(t.month) {
		month = countSpend{Calls: t.monthCalls, Spend: money(t.monthSpend)}
	}
	return today, month
}

// New returns a hub; Start loads its totals.
func New(cfg Config) *Hub {
	if cfg.Buffer <= 0 {
		cfg.Buffer = 64
	}
	if cfg.Replay <= 0 {
		cfg.Replay = 10_000
	}
	if cfg.MaxHold <= 0 {
		cfg.MaxHold = time.Second
	}
	if cfg.PlatformEvery <= 0 {
		cfg.PlatformEvery = time.Second
	}
	if cfg.LagEvery <= 0 {
		cfg.LagEvery = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Statuses == nil {
		cfg.Statuses = func() []projections.Status { return nil }
	}
	if cfg.Providers == nil {
		cfg.Providers = func() []Provider { return nil }
	}
	return &Hub{
		cfg: cfg, log: cfg.Logger,
		positions: map[string]uint64{}, queues: map[string][]item{},
		ring: make([]*Message, cfg.Replay),
		subs: map[string]map[*Subscription]struct{}{}, staff: map[*Subscription]struct{}{},
		totals: map[string]*totals{}, emails: map[string]string{}, floor: noFloor,
	}
}

// Start loads today's and this month's totals. Call it before the
// projections run: every batch applied after it is then counted once.
func (h *Hub) Start(ctx context.Context) error {
	now := h.cfg.Now()
	t, err := h.cfg.Loader.LiveTotals(ctx, dayOf(now), monthOf(now))
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.usagePos, h.heldPos, h.held = t.UsagePosition, t.AccountsPosition, t.Held
	h.platform = totals{day: dayOf(now), month: monthOf(now)}
	for id, a := range t.Accounts {
		h.totals[id] = &totals{day: dayOf(now), month: monthOf(now), dayCalls: a.DayCalls, daySpend: a.DaySpend,
			monthCalls: a.MonthCalls, monthSpend: a.MonthSpend}
		h.platform.dayCalls += a.DayCalls
		h.platform.daySpend = h.platform.daySpend.Add(a.DaySpend)
	}
	return nil
}

// Run sends the periodic messages and releases changes held too long,
// until ctx ends; then every subscription ends.
func (h *Hub) Run(ctx context.Context) {
	tick := time.NewTicker(min(h.cfg.MaxHold/4, 250*time.Millisecond))
	defer tick.Stop()
	lastPlatform, lastLag := time.Time{}, h.cfg.Now()
	for {
		select {
		case <-ctx.Done():
			h.closeAll()
			return
		case <-tick.C:
		}
		now := h.cfg.Now()
		h.mu.Lock()
		h.release(now, true)
		staff := len(h.staff)
		h.mu.Unlock()
		if staff > 0 && now.Sub(lastPlatform) >= h.cfg.PlatformEvery-10*time.Millisecond {
			lastPlatform = now
			if m, err := h.platformMessage(ctx); err == nil {
				h.broadcast(m, true)
			} else if ctx.Err() == nil {
				h.log.Warn("platform totals", "err", err)
			}
		}
		if now.Sub(lastLag) >= h.cfg.LagEvery {
			lastLag = now
			h.broadcast(h.lagMessage(), false)
		}
	}
}

// Applied implements projections.Live.
func (h *Hub) Applied(c projections.Changes) {
	src := slices.Index(h.cfg.Sources, c.Projection)
	if src < 0 {
		return
	}
	now := h.cfg.Now()
	items := make([]item, 0, len(c.Wallets)+len(c.Usage)+len(c.Tasks)+len(c.Keys)+len(c.Plans))
	for i := range c.Plans {
		items = append(items, item{seq: c.Plans[i].Seq, plan: &c.Plans[i]})
	}
	for i := range c.Wallets {
		items = append(items, item{seq: c.Wallets[i].Seq, wallet: &c.Wallets[i]})
	}
	for i := range c.Keys {
		items = append(items, item{seq: c.Keys[i].Seq, key: &c.Keys[i]})
	}
	for i := range c.Usage {
		items = append(items, item{seq: c.Usage[i].Seq, usage: &c.Usage[i]})
	}
	for i := range c.Tasks {
		items = append(items, item{seq: c.Tasks[i].Seq, task: &c.Tasks[i]})
	}
	for i := range items {
		items[i].pos, items[i].source, items[i].at = c.Position, src, now
	}
	slices.SortStableFunc(items, func(a, b item) int { return cmp.Compare(a.seq, b.seq) })
	h.mu.Lock()
	defer h.mu.Unlock()
	h.positions[c.Projection] = max(h.positions[c.Projection], c.Position)
	h.queues[c.Projection] = append(h.queues[c.Projection], items...)
	h.release(now, false)
}

// watermark is the position every source has passed; ok is false until
// every source has reported.
func (h *Hub) watermark() (w uint64, ok bool) {
	for i, s := range h.cfg.Sources {
		p, ok := h.positions[s]
		if !ok {
			return 0, false
		}
		if i == 0 || p < w {
			w = p
		}
	}
	return w, true
}

// release pushes, in sequence order, every waiting change all sources
// have passed, and (when timed) those that waited longer than MaxHold.
func (h *Hub) release(now time.Time, timed bool) {
	upTo, ok := h.watermark()
	if ok && h.floor == noFloor {
		// Where the projections started: what came before was pushed by
		// an earlier process, if at all, and cannot be replayed here.
		h.floor, h.emitted = upTo, max(h.emitted, upTo)
	}
	if timed {
		for _, q := range h.queues {
			for _, it := range q {
				if now.Sub(it.at) < h.cfg.MaxHold {
					break
				}
				upTo = max(upTo, it.seq)
			}
		}
	}
	var out []item
	for name, q := range h.queues {
		n := 0
		for n < len(q) && q[n].seq <= upTo {
			n++
		}
		if n == 0 {
			continue
		}
		out = append(out, q[:n]...)
		h.queues[name] = slices.Delete(q, 0, n)
	}
	if len(out) == 0 {
		return
	}
	slices.SortStableFunc(out, func(a, b item) int {
		if c := cmp.Compare(a.seq, b.seq); c != 0 {
			return c
		}
		return cmp.Compare(a.source, b.source)
	})
	h.emit(now, out)
}

// emit turns released changes into messages, updates the totals, keeps
// them for resuming and hands each account's share to its subscribers.
func (h *Hub) emit(now time.Time, out []item) {
	groups := map[string][]*Message{}
	for _, it := range out {
		// A change held back past MaxHold arrives behind later ones: it
		// takes the last id, so ids never go backwards.
		id := max(it.seq, h.emitted)
		h.emitted = id
		m := &Message{ID: id, pos: it.pos}
		switch {
		case it.wallet != nil:
			w := it.wallet
			if it.pos > h.heldPos {
				h.held = h.held.Add(w.HeldDelta)
			}
			m.Type, m.AccountID = "wallet", w.AccountID
			b := renderWallet(w.Available, w.Held, w.Credits, w.HeldCredits)
			m.data = walletData{AccountID: w.AccountID, Balance: b.Balance, Held: b.Held, Available: b.Available, Credits: b.Credits}
		case it.usage != nil:
			u := it.usage
			t := h.totals[u.AccountID]
			if t == nil {
				t = &totals{}
				h.totals[u.AccountID] = t
			}
			if it.pos > h.usagePos {
				t.add(u.Bucket, u.AddedCalls, u.AddedSpend)
				h.platform.add(u.Bucket, u.AddedCalls, u.AddedSpend)
				if now.Sub(u.Bucket) < 2*time.Minute {
					h.countCalls(now, u.AddedCalls)
				}
			}
			today, month := t.at(now)
			m.Type, m.AccountID = "usage", u.AccountID
			m.data = usageData{AccountID: u.AccountID, Model: u.Model, KeyID: optional(u.KeyID), Bucket: rfc3339(u.Bucket),
				Calls: u.Calls, Spend: money(u.Spend), Failures: u.Failures, Today: today, Month: month}
		case it.task != nil:
			k := it.task
			d := taskData{AccountID: k.AccountID, TaskID: k.TaskID, Model: k.Model, KeyID: optional(k.KeyID), Status: k.Status,
				Cost: money(k.Cost), CreatedAt: k.CreatedAt.UTC().Format(time.RFC3339Nano)}
			if k.CompletedAt != nil {
				s := k.CompletedAt.UTC().Format(time.RFC3339Nano)
				d.CompletedAt = &s
			}
			m.Type, m.AccountID, m.data = "task", k.AccountID, d
		case it.key != nil:
			m.Type, m.AccountID = "key", it.key.AccountID
			m.data = keyData{AccountID: it.key.AccountID, KeyID: it.key.KeyID, Action: it.key.Action}
		case it.plan != nil:
			p := it.plan
			d := planData{AccountID: p.AccountID, Plan: p.Plan, Previous: p.Previous, Event: p.Event, Reason: p.Reason}
			if p.Event != "changed" {
				fee := money(p.Fee)
				d.Fee = &fee
			}
			if p.PeriodEnd != nil {
				s := p.PeriodEnd.UTC().Format(time.RFC3339)
				d.PeriodEnd = &s
			}
			m.Type, m.AccountID, m.data = "plan", p.AccountID, d
		}
		h.keep(m)
		h.stats.Messages++
		if _, ok := h.subs[m.AccountID]; ok {
			groups[m.AccountID] = append(groups[m.AccountID], m)
		}
	}
	for acc, g := range groups {
		for s := range h.subs[acc] {
			h.deliver(s, g)
		}
	}
}

func (h *Hub) countCalls(now time.Time, n int64) {
	sec := now.Unix()
	b := &h.perSec[sec%int64(len(h.perSec))]
	if b.sec != sec {
		b.sec, b.calls = sec, 0
	}
	b.calls += n
}

// keep puts m in the replay ring.
func (h *Hub) keep(m *Message) {
	if h.full {
		// The oldest message goes: only ids from its own on are complete.
		h.floor = max(h.floor, h.ring[h.head].ID)
	}
	h.ring[h.head] = m
	h.head++
	if h.head == len(h.ring) {
		h.head, h.full = 0, true
	}
}

// deliver hands s a group of messages, or drops s if its queue is full.
// Called with h.mu held.
func (h *Hub) deliver(s *Subscription, g []*Message) {
	if s.ended {
		return
	}
	select {
	case s.ch <- g:
		s.last = g[len(g)-1].ID
	default:
		h.stats.Dropped++
		h.remove(s, true)
	}
}

// remove ends s. Called with h.mu held.
func (h *Hub) remove(s *Subscription, dropped bool) {
	if s.ended {
		return
	}
	s.ended, s.dropped = true, dropped
	if s.staff {
		delete(h.staff, s)
	} else if set := h.subs[s.account]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(h.subs, s.account)
		}
	}
	close(s.done)
	if dropped && s.onDrop != nil {
		go s.onDrop()
	}
}

// broadcast sends m to staff subscribers, or to everyone.
func (h *Hub) broadcast(m *Message, staffOnly bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m.ID = h.emitted
	g := []*Message{m}
	for s := range h.staff {
		h.deliver(s, g)
	}
	if staffOnly {
		return
	}
	for _, set := range h.subs {
		for s := range set {
			h.deliver(s, g)
		}
	}
}

func (h *Hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.staff {
		h.remove(s, false)
	}
	for _, set := range h.subs {
		for s := range set {
			h.remove(s, false)
		}
	}
}

// lag is how far behind the merged sources are.
func (h *Hub) lag() lagData {
	var l lagData
	for _, st := range h.cfg.Statuses() {
		if slices.Contains(h.cfg.Sources, st.Name) {
			l.Events = max(l.Events, st.LagEvents)
			l.MS = max(l.MS, st.LagMillis)
		}
	}
	return l
}

func (h *Hub) lagMessage() *Message { return &Message{Type: "lag", data: h.lag()} }

// platformMessage builds the staff totals. Emails of top accounts not yet
// known are read once (outside the hub's lock).
func (h *Hub) platformMessage(ctx context.Context) (*Message, error) {
	now := h.cfg.Now()
	h.mu.Lock()
	today, _ := h.platform.at(now)
	d := platformData{CallsToday: today.Calls, RevenueToday: today.Spend, HeldTotal: money(h.held)}
	var calls int64
	for _, b := range h.perSec {
		if b.sec < now.Unix() && b.sec >= now.Unix()-5 {
			calls += b.calls
		}
	}
	d.CallsPerSecond = float64(calls) / 5
	top := h.top(now, 10)
	var missing []string
	for i := range top {
		if e, ok := h.emails[top[i].AccountID]; ok {
			top[i].Email = e
		} else {
			missing = append(missing, top[i].AccountID)
		}
	}
	h.mu.Unlock()
	if len(missing) > 0 {
		found, err := h.cfg.Loader.Emails(ctx, missing)
		if err != nil {
			return nil, err
		}
		h.mu.Lock()
		for id, e := range found {
			h.emails[id] = e
		}
		for i := range top {
			if top[i].Email == "" {
				top[i].Email = h.emails[top[i].AccountID]
			}
		}
		h.mu.Unlock()
	}
	d.TopAccounts = top
	d.Projections = []projectionData{}
	for _, st := range h.cfg.Statuses() {
		d.Projections = append(d.Projections, projectionData{Name: st.Name, Position: st.Position, LagEvents: st.LagEvents,
			LagMS: st.LagMillis, Status: st.State})
	}
	d.Providers = []providerData{}
	for _, p := range h.cfg.Providers() {
		d.Providers = append(d.Providers, providerData{Provider: p.Provider, State: p.State})
	}
	return &Message{Type: "platform", data: d}, nil
}

// top returns the n accounts with the most spend today (then calls).
// Called with h.mu held.
func (h *Hub) top(now time.Time, n int) []topAccount {
	out := make([]topAccount, 0, n+1)
	less := func(a, b topAccount) bool {
		if c := decimal.Decimal(a.SpendToday).Cmp(decimal.Decimal(b.SpendToday)); c != 0 {
			return c > 0
		}
		if a.CallsToday != b.CallsToday {
			return a.CallsToday > b.CallsToday
		}
		return a.AccountID < b.AccountID
	}
	for id, t := range h.totals {
		today, _ := t.at(now)
		if today.Calls == 0 {
			continue
		}
		a := topAccount{AccountID: id, CallsToday: today.Calls, SpendToday: today.Spend}
		if len(out) == n && !less(a, out[n-1]) {
			continue
		}
		i, _ := slices.BinarySearchFunc(out, a, func(x, y topAccount) int {
			if less(x, y) {
				return -1
			}
			return 1
		})
		out = slices.Insert(out, i, a)
		if len(out) > n {
			out = out[:n]
		}
	}
	return out
}

// Stats reports the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.stats
	for _, set := range h.subs {
		s.Subscribers += len(set)
	}
	s.Staff = len(h.staff)
	s.ReplayFloor, s.LastID = h.floor, h.emitted
	return s
}

// noFloor: the hub does not yet know where its history starts.
const noFloor = math.MaxUint64

// ErrClosed: the hub has stopped.
var ErrClosed = errors.New("live streams have ended")
