package app

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/ledgerd/ledgerd/projections/live"
)

// streamEvent is one message of a live stream, as a client parses it.
type streamEvent struct {
	ID   uint64
	Type string
	Data map[string]any
}

func (e streamEvent) str(k string) string { s, _ := e.Data[k].(string); return s }

func (e streamEvent) obj(k string) map[string]any { m, _ := e.Data[k].(map[string]any); return m }

// sseStream is an open Server-Sent Events connection.
type sseStream struct {
	t      testing.TB
	res    *http.Response
	events chan streamEvent
	cancel context.CancelFunc
	pings  chan struct{}
}

// openSSE connects to path; a status other than 200 is returned with no
// stream.
func openSSE(t testing.TB, base, path, token string, hdr ...string) (*sseStream, int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", base+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		res.Body.Close()
		cancel()
		return nil, res.StatusCode
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	s := &sseStream{t: t, res: res, events: make(chan streamEvent, 10_000), cancel: cancel, pings: make(chan struct{}, 100)}
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev streamEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.Type != "" {
					s.events <- ev
				}
				ev = streamEvent{}
			case line == ": ping":
				select {
				case s.pings <- struct{}{}:
				default:
				}
			case strings.HasPrefix(line, "id: "):
				ev.ID, _ = strconv.ParseUint(line[4:], 10, 64)
			case strings.HasPrefix(line, "event: "):
				ev.Type = line[7:]
			case strings.HasPrefix(line, "data: "):
				if err := json.Unmarshal([]byte(line[6:]), &ev.Data); err != nil {
					t.Errorf("data is not one line of JSON: %q", line)
				}
			}
		}
	}()
	t.Cleanup(s.close)
	return s, http.StatusOK
}

func (s *sseStream) close() { s.cancel(); s.res.Body.Close() }

// next returns the next event, failing the test after bound.
func nextEvent(t testing.TB, ch <-chan streamEvent, bound time.Duration) streamEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatalf("stream ended")
		}
		return ev
	case <-time.After(bound):
		t.Fatalf("no event within %s", bound)
	}
	return streamEvent{}
}

// until collects events until done says so, checking ids never go
// backwards.
func until(t testing.TB, ch <-chan streamEvent, after uint64, bound time.Duration, done func(streamEvent) bool) []streamEvent {
	t.Helper()
	deadline := time.After(bound)
	var got []streamEvent
	last := after
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("stream ended after %d events", len(got))
			}
			if ev.ID < last {
				t.Fatalf("id went backwards: %d after %d (%s)", ev.ID, last, ev.Type)
			}
			last = ev.ID
			got = append(got, ev)
			if done(ev) {
				return got
			}
		case <-deadline:
			t.Fatalf("condition not met within %s; got %d events, last %+v", bound, len(got), lastOf(got))
		}
	}
}

func lastOf(evs []streamEvent) any {
	if len(evs) == 0 {
		return nil
	}
	return evs[len(evs)-1]
}

// openWS connects to the WebSocket stream.
func openWS(t testing.TB, base, query string) (chan streamEvent, *websocket.Conn, int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, res, err := websocket.Dial(ctx, strings.Replace(base, "http://", "ws://", 1)+"/api/ws/usage?"+query, nil)
	if err != nil {
		cancel()
		if res != nil {
			return nil, nil, res.StatusCode
		}
		t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	ch := make(chan streamEvent, 10_000)
	go func() {
		defer close(ch)
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			var m struct {
				ID   string         `json:"id"`
				Type string         `json:"type"`
				Data map[string]any `json:"data"`
			}
			if err := json.Unmarshal(b, &m); err != nil {
				t.Errorf("websocket message is not JSON: %q", b)
				return
			}
			id, err := strconv.ParseUint(m.ID, 10, 64)
			if err != nil {
				t.Errorf("id %q is not a decimal string", m.ID)
			}
			ch <- streamEvent{ID: id, Type: m.Type, Data: m.Data}
		}
	}()
	t.Cleanup(func() { cancel(); c.CloseNow() })
	return ch, c, http.StatusSwitchingProtocols
}

// call makes one image call and returns its task id.
func call(t testing.TB, c client, prompt string) string {
	t.Helper()
	r := c.do("POST", "/api/v1/image/generate", image(prompt))
	if r.Status != http.StatusOK {
		t.Fatalf("generate: %d %s", r.Status, r.Raw)
	}
	return r.Body["taskId"].(string)
}

// TestUsageStream: the snapshot, then wallet, usage and task messages
// following calls made one after another, in order; the same over a
// WebSocket; and the recent tasks list.
func TestUsageStream(t *testing.T) {
	e := newChargingEnv(t, nil)
	e.topUp("20.00", "stream")
	s, status := openSSE(t, e.a.URL(), "/api/v1/usage/stream", e.cust.token)
	if status != http.StatusOK {
		t.Fatalf("stream: %d", status)
	}
	snap := nextEvent(t, s.events, 10*time.Second)
	if snap.Type != "snapshot" || snap.str("account_id") != e.acc || snap.str("currency") != "USD" {
		t.Fatalf("first message %+v, want the account's snapshot", snap)
	}
	if w := snap.obj("wallet"); w["balance"] != "20.00" || w["held"] != "0.00" || w["available"] != "20.00" {
		t.Fatalf("snapshot wallet %v, want 20.00/0.00/20.00", w)
	}
	if today := snap.obj("today"); today["calls"] != 0.0 || today["spend"] != "0.00" {
		t.Fatalf("snapshot today %v, want no calls", today)
	}
	ws, _, _ := openWS(t, e.a.URL(), "token="+e.cust.token)
	if m := nextEvent(t, ws, 10*time.Second); m.Type != "snapshot" || m.obj("wallet")["balance"] != "20.00" {
		t.Fatalf("websocket first message %+v", m)
	}

	const calls = 5
	var taskIDs []string
	for i := range calls {
		taskIDs = append(taskIDs, call(t, e.cust, "stream "+strconv.Itoa(i)))
	}
	check := func(name string, ch <-chan streamEvent, after uint64) {
		t.Helper()
		succeeded := map[string]bool{}
		var balances []string
		var lastTaskID uint64
		var usageDone bool
		ended := map[string]bool{}
		evs := until(t, ch, after, 15*time.Second, func(ev streamEvent) bool {
			usageDone = usageDone || ev.Type == "usage" && ev.obj("today")["calls"] == float64(calls)
			if ev.Type == "task" && ev.str("status") == "succeeded" {
				ended[ev.str("task_id")] = true
			}
			return usageDone && len(ended) == calls
		})
		for _, ev := range evs {
			if ev.str("account_id") != e.acc && ev.Type != "lag" {
				t.Fatalf("%s: message for another account: %+v", name, ev)
			}
			switch ev.Type {
			case "wallet":
				balances = append(balances, ev.str("balance")+"/"+ev.str("held")+"/"+ev.str("available"))
			case "task":
				if ev.str("status") == "succeeded" {
					succeeded[ev.str("task_id")] = true
					if ev.str("cost") != "0.80" || ev.str("model") != "nano-banana-2" || ev.Data["completed_at"] == nil {
						t.Fatalf("%s: task message %v", name, ev.Data)
					}
					// Calls made one after another finish in order, at
					// strictly increasing ids.
					if ev.ID <= lastTaskID {
						t.Fatalf("%s: task id %d after %d", name, ev.ID, lastTaskID)
					}
					lastTaskID = ev.ID
				}
			case "usage":
				if ev.str("model") != "nano-banana-2" || ev.str("bucket") == "" || ev.Data["key_id"] != nil {
					t.Fatalf("%s: usage message %v", name, ev.Data)
				}
			}
		}
		for _, id := range taskIDs {
			if !succeeded[id] {
				t.Fatalf("%s: no succeeded message for %s", name, id)
			}
		}
		// Each call reserves then captures: balances step down by 0.80,
		// never up.
		if got := balances[len(balances)-1]; got != "16.00/0.00/16.00" {
			t.Fatalf("%s: last wallet %s, want 16.00/0.00/16.00 (all: %v)", name, got, balances)
		}
		prev := "20.00"
		for _, b := range balances {
			bal := strings.Split(b, "/")[0]
			if num(t, bal) > num(t, prev) {
				t.Fatalf("%s: balance went up: %v", name, balances)
			}
			prev = bal
		}
		var last streamEvent
		for _, ev := range evs {
			if ev.Type == "usage" {
				last = ev
			}
		}
		if m := last.obj("month"); m["calls"] != float64(calls) || m["spend"] != "4.00" || last.obj("today")["spend"] != "4.00" {
			t.Fatalf("%s: running totals %v", name, last.Data)
		}
	}
	check("sse", s.events, snap.ID)
	check("websocket", ws, snap.ID)
	if got := e.wallet(); got != "16.00/0.00/16.00" {
		t.Fatalf("wallet %s", got)
	}

	// The recent tasks, newest first, two to a page.
	var listed []string
	cursor := ""
	for page := 0; page < 5; page++ {
		r := e.cust.do("GET", "/api/v1/tasks?limit=2"+cursor, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("tasks: %d %s", r.Status, r.Raw)
		}
		for _, it := range r.Body["tasks"].([]any) {
			task := it.(map[string]any)
			if task["status"] != "succeeded" || task["cost"] != "0.80" {
				t.Fatalf("listed task %v", task)
			}
			listed = append(listed, task["taskId"].(string))
		}
		next, _ := r.Body["next_cursor"].(string)
		if next == "" {
			break
		}
		cursor = "&cursor=" + next
	}
	if len(listed) != calls {
		t.Fatalf("listed %v, want %d tasks", listed, calls)
	}
	for i, id := range listed {
		if id != taskIDs[calls-1-i] {
			t.Fatalf("listed %v, want newest first %v", listed, taskIDs)
		}
	}
	if r := e.cust.do("GET", "/api/v1/tasks?cursor=nope", nil); r.Status != 422 {
		t.Fatalf("bad cursor: %d %s", r.Status, r.Raw)
	}
	if r := e.cust.do("GET", "/api/v1/tasks?limit=0", nil); r.Status != 422 {
		t.Fatalf("limit 0: %d %s", r.Status, r.Raw)
	}
}

func num(t testing.TB, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("%q is not a number", s)
	}
	return f
}

// TestUsageStreamResume: a client that reconnects with Last-Event-ID gets
// what it missed, in order, and no snapshot; one whose id is too old (or
// unknown) gets a fresh snapshot.
func TestUsageStreamResume(t *testing.T) {
	e := newChargingEnv(t, map[string]string{"LEDGER_STREAM_REPLAY": "40"})
	e.topUp("50.00", "resume")
	s, _ := openSSE(t, e.a.URL(), "/api/v1/usage/stream", e.cust.token)
	snap := nextEvent(t, s.events, 10*time.Second)
	first := call(t, e.cust, "before")
	evs := until(t, s.events, snap.ID, 10*time.Second, func(ev streamEvent) bool {
		return ev.Type == "task" && ev.str("task_id") == first && ev.str("status") == "succeeded"
	})
	seen := evs[len(evs)-1].ID
	s.close()

	// Missed while away.
	missed := []string{call(t, e.cust, "away 1"), call(t, e.cust, "away 2")}
	waitUntil(t, 10*time.Second, func() bool { return e.wallet() == "47.60/0.00/47.60" })

	for _, how := range []struct {
		name, path string
		hdr        []string
	}{
		{"header", "/api/v1/usage/stream", []string{"Last-Event-ID", strconv.FormatUint(seen, 10)}},
		{"query", "/api/v1/usage/stream?last_event_id=" + strconv.FormatUint(seen, 10), nil},
	} {
		r, status := openSSE(t, e.a.URL(), how.path, e.cust.token, how.hdr...)
		if status != http.StatusOK {
			t.Fatalf("%s: resume: %d", how.name, status)
		}
		done := map[string]bool{}
		got := until(t, r.events, seen, 10*time.Second, func(ev streamEvent) bool {
			if ev.Type == "snapshot" {
				t.Fatalf("%s: resume within the replay ring sent a snapshot", how.name)
			}
			if ev.ID <= seen {
				t.Fatalf("%s: replayed id %d, not after %d", how.name, ev.ID, seen)
			}
			if ev.Type == "task" && ev.str("status") == "succeeded" {
				done[ev.str("task_id")] = true
			}
			return done[missed[0]] && done[missed[1]]
		})
		var order []string
		for _, ev := range got {
			if ev.Type == "task" && ev.str("status") == "succeeded" {
				order = append(order, ev.str("task_id"))
			}
		}
		if strings.Join(order, ",") != strings.Join(missed, ",") {
			t.Fatalf("%s: replayed completions %v, want %v in order", how.name, order, missed)
		}
		var wallet string
		for _, ev := range got {
			if ev.Type == "wallet" {
				wallet = ev.str("balance")
			}
		}
		if wallet != "47.60" {
			t.Fatalf("%s: replayed wallet ends at %q, want 47.60", how.name, wallet)
		}
		r.close()
	}

	// Enough traffic to push the missed messages out of a 40-message ring.
	for i := range 12 {
		call(t, e.cust, "flood "+strconv.Itoa(i))
	}
	waitUntil(t, 10*time.Second, func() bool { return e.wallet() == "38.00/0.00/38.00" })
	for _, last := range []string{strconv.FormatUint(seen, 10), "999999999"} {
		r, _ := openSSE(t, e.a.URL(), "/api/v1/usage/stream", e.cust.token, "Last-Event-ID", last)
		ev := nextEvent(t, r.events, 10*time.Second)
		if ev.Type != "snapshot" {
			t.Fatalf("resume from %s: first message %s, want a fresh snapshot", last, ev.Type)
		}
		if ev.obj("wallet")["balance"] != "38.00" {
			t.Fatalf("resume from %s: snapshot %v", last, ev.Data)
		}
		r.close()
	}
	if _, status := openSSE(t, e.a.URL(), "/api/v1/usage/stream?last_event_id=abc", e.cust.token); status != 422 {
		t.Fatalf("bad last_event_id: %d, want 422", status)
	}
	// The WebSocket resumes the same way.
	ws, _, _ := openWS(t, e.a.URL(), "token="+e.cust.token+"&last_event_id=999999999")
	if ev := nextEvent(t, ws, 10*time.Second); ev.Type != "snapshot" {
		t.Fatalf("websocket resume from an unknown id: %s, want snapshot", ev.Type)
	}
}

// TestUsageStreamAuth: who may open which stream, and that one account's
// stream never carries another's data while both make calls at once. The
// token in the query string never reaches the log.
func TestUsageStreamAuth(t *testing.T) {
	var logs syncBuffer
	a := startAppWithLog(t, testConfig(t, testDir(t)), &logs)
	defer stopApp(t, a)
	admin := client{t: t, base: a.URL()}.login("root@example.com", "root-password")
	alice, accA := customer(t, admin, "alice@example.com", "api")
	bob, accB := customer(t, admin, "bob@example.com", "api")
	for _, acc := range []string{accA, accB} {
		if r := admin.do("POST", "/api/admin/accounts/"+acc+"/topups", map[string]string{"amount": "100.00", "reference": "auth-" + acc}); r.Status != 201 {
			t.Fatalf("top-up: %d %s", r.Status, r.Raw)
		}
	}
	readKey, _ := newKey(t, alice, map[string]any{"name": "reader", "scopes": []string{"usage:read"}})
	genKey, _ := newKey(t, alice, map[string]any{"name": "generator", "scopes": []string{"image:generate"}})
	if r := admin.do("POST", "/api/admin/users", map[string]string{"email": "fin@example.com", "password": "fin-password", "role": "finance"}); r.Status != 201 {
		t.Fatalf("finance user: %d %s", r.Status, r.Raw)
	}
	fin := client{t: t, base: a.URL()}.login("fin@example.com", "fin-password")

	for _, tc := range []struct {
		name, path, token string
		want              int
	}{
		{"no credential", "/api/v1/usage/stream", "", 401},
		{"bad token in query", "/api/v1/usage/stream?token=nx_live_nope", "", 401},
		{"bad session", "/api/v1/usage/stream?token=eyJ.eyJ.sig", "", 401},
		{"key without usage:read", "/api/v1/usage/stream?token=" + genKey, "", 403},
		{"staff on the customer stream", "/api/v1/usage/stream", admin.token, 403},
		{"customer on the platform stream", "/api/admin/usage/stream?token=" + alice.token, "", 403},
		{"key on the platform stream", "/api/admin/usage/stream", readKey, 403},
		{"no credential, platform", "/api/admin/usage/stream", "", 401},
		{"key with usage:read", "/api/v1/usage/stream?token=" + readKey, "", 200},
		{"key in the header", "/api/v1/usage/stream", readKey, 200},
		{"session in the query", "/api/v1/usage/stream?token=" + alice.token, "", 200},
		{"finance on the platform stream", "/api/admin/usage/stream?token=" + fin.token, "", 200},
	} {
		s, status := openSSE(t, a.URL(), tc.path, tc.token)
		if status != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, status, tc.want)
		}
		if s != nil {
			s.close()
		}
	}
	for _, tc := range []struct {
		name, query string
		want        int
	}{
		{"no token", "", 401},
		{"key without usage:read", "token=" + genKey, 403},
	} {
		if _, _, status := openWS(t, a.URL(), tc.query); status != tc.want {
			t.Errorf("websocket %s: %d, want %d", tc.name, status, tc.want)
		}
	}

	// Both accounts call at once; each stream carries its own account only.
	sa, _ := openSSE(t, a.URL(), "/api/v1/usage/stream?token="+readKey, "")
	sb, _ := openSSE(t, a.URL(), "/api/v1/usage/stream", bob.token)
	wsB, _, _ := openWS(t, a.URL(), "token="+bob.token)
	platform, _ := openSSE(t, a.URL(), "/api/admin/usage/stream", admin.token)
	wsStaff, _, _ := openWS(t, a.URL(), "token="+fin.token)
	const calls = 6
	tasks := map[string][]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range []struct {
		acc string
		cl  client
	}{{accA, alice}, {accB, bob}} {
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range calls / 2 {
					r := c.cl.do("POST", "/api/v1/image/generate", image("auth "+strconv.Itoa(w)+strconv.Itoa(i)))
					if r.Status != 200 {
						t.Errorf("generate: %d %s", r.Status, r.Raw)
						return
					}
					mu.Lock()
					tasks[c.acc] = append(tasks[c.acc], r.Body["taskId"].(string))
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	for _, st := range []struct {
		name, acc, other string
		ch               <-chan streamEvent
	}{{"alice", accA, accB, sa.events}, {"bob", accB, accA, sb.events}, {"bob websocket", accB, accA, wsB}} {
		done := map[string]bool{}
		evs := until(t, st.ch, 0, 15*time.Second, func(ev streamEvent) bool {
			if ev.Type == "task" && ev.str("status") == "succeeded" {
				done[ev.str("task_id")] = true
			}
			return len(done) == calls
		})
		for _, ev := range evs {
			raw, _ := json.Marshal(ev.Data)
			if ev.Type != "lag" && ev.str("account_id") != st.acc || strings.Contains(string(raw), st.other) {
				t.Fatalf("%s's stream carried %s", st.name, raw)
			}
			if ev.Type == "task" && !slicesContains(tasks[st.acc], ev.str("task_id")) {
				t.Fatalf("%s's stream carried a task not its own: %s", st.name, raw)
			}
		}
	}

	// Staff see the platform: 12 calls at 0.80 today, both accounts on top.
	for name, ch := range map[string]<-chan streamEvent{"sse": platform.events, "websocket": wsStaff} {
		ev := until(t, ch, 0, 15*time.Second, func(ev streamEvent) bool {
			if ev.Type != "platform" && ev.Type != "lag" {
				t.Fatalf("%s: staff stream carried %s", name, ev.Type)
			}
			return ev.Type == "platform" && ev.Data["calls_today"] == float64(2*calls)
		})
		last := ev[len(ev)-1]
		if last.str("revenue_today") != "9.60" || last.str("held_total") != "0.00" {
			t.Fatalf("%s: platform %v", name, last.Data)
		}
		top, _ := last.Data["top_accounts"].([]any)
		emails := map[string]bool{}
		for _, it := range top {
			m := it.(map[string]any)
			emails[m["email"].(string)] = m["spend_today"] == "4.80" && m["calls_today"] == float64(calls)
		}
		if len(top) != 2 || !emails["alice@example.com"] || !emails["bob@example.com"] {
			t.Fatalf("%s: top accounts %v", name, top)
		}
		if p, _ := last.Data["projections"].([]any); len(p) < 3 {
			t.Fatalf("%s: projections %v", name, last.Data["projections"])
		}
		if p, _ := last.Data["providers"].([]any); len(p) == 0 || !strings.Contains(mustJSON(p), `"provider":"local"`) {
			t.Fatalf("%s: providers %v", name, last.Data["providers"])
		}
	}
	// The lag message comes at least every 5 s.
	until(t, platform.events, 0, 8*time.Second, func(ev streamEvent) bool { return ev.Type == "lag" && ev.Data["events"] != nil })

	for _, secret := range []string{readKey, genKey, alice.token, bob.token, fin.token} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("a stream credential reached the log")
		}
	}
}

func slicesContains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestSlowStreamSubscriberIsDropped: a subscriber that stops taking
// messages is dropped once its queue is full (and told so, so its
// connection can be closed), counted in /metrics, while another one on the
// same account keeps receiving every message. The slow one is taken
// straight from the hub: a client that stops reading over TCP only fills
// its queue after the kernel's socket buffers (hundreds of KB here).
func TestSlowStreamSubscriberIsDropped(t *testing.T) {
	e := newChargingEnv(t, map[string]string{"LEDGER_STREAM_BUFFER": "8"})
	e.topUp("1000.00", "slow")
	e.model("tiny", map[string]any{"type": "image", "price": "0.10", "provider": "local"})
	fast, _ := openSSE(t, e.a.URL(), "/api/v1/usage/stream", e.cust.token)
	nextEvent(t, fast.events, 10*time.Second) // snapshot
	told := make(chan struct{})
	slow, err := e.a.Hub.Subscribe(context.Background(), live.Request{AccountID: e.acc, OnDrop: func() { close(told) }})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if n := metric(t, e.a, `ledgerd_stream_subscribers{kind="customer"}`); n != 2 {
		t.Fatalf("%v subscribers, want 2", n)
	}

	const workers, perWorker = 4, 25
	var wg sync.WaitGroup
	var mu sync.Mutex
	var tasks []string
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				r := e.cust.do("POST", "/api/v1/image/generate", map[string]string{"prompt": "slow " + strconv.Itoa(w) + "-" + strconv.Itoa(i), "model": "tiny", "size": "16x16"})
				if r.Status != 200 {
					t.Errorf("generate: %d %s", r.Status, r.Raw)
					return
				}
				mu.Lock()
				tasks = append(tasks, r.Body["taskId"].(string))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(tasks) != workers*perWorker {
		t.Fatalf("%d calls made", len(tasks))
	}
	done := map[string]bool{}
	until(t, fast.events, 0, 30*time.Second, func(ev streamEvent) bool {
		if ev.Type == "task" && ev.str("status") == "succeeded" {
			done[ev.str("task_id")] = true
		}
		return len(done) == len(tasks)
	})
	select {
	case <-told:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow subscriber was not dropped")
	}
	if !slow.Dropped() {
		t.Fatal("Dropped() is false after the drop")
	}
	if n := metric(t, e.a, "ledgerd_stream_dropped_total"); n != 1 {
		t.Fatalf("ledgerd_stream_dropped_total %v, want 1", n)
	}
	if n := metric(t, e.a, `ledgerd_stream_subscribers{kind="customer"}`); n != 1 {
		t.Fatalf("%v customer subscribers after the drop, want 1 (the fast one)", n)
	}
}

// TestStreamsEndAtShutdown: open streams end when the server shuts down,
// rather than holding the shutdown up.
func TestStreamsEndAtShutdown(t *testing.T) {
	a := startApp(t, testConfig(t, testDir(t)))
	admin := client{t: t, base: a.URL()}.login("root@example.com", "root-password")
	cust, _ := customer(t, admin, "shut@example.com", "api")
	sse, _ := openSSE(t, a.URL(), "/api/v1/usage/stream", cust.token)
	nextEvent(t, sse.events, 10*time.Second)
	platform, _ := openSSE(t, a.URL(), "/api/admin/usage/stream", admin.token)
	nextEvent(t, platform.events, 10*time.Second)
	ws, _, _ := openWS(t, a.URL(), "token="+cust.token)
	nextEvent(t, ws, 10*time.Second)
	began := time.Now()
	stopApp(t, a)
	for name, ch := range map[string]<-chan streamEvent{"sse": sse.events, "platform": platform.events, "websocket": ws} {
		for open := true; open; {
			select {
			case _, open = <-ch:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s stream still open after shutdown", name)
			}
		}
	}
	if d := time.Since(began); d > 30*time.Second {
		t.Fatalf("shutdown took %s with streams open", d)
	}
}

// metric reads one sample from /metrics.
func metric(t testing.TB, a *App, name string) float64 {
	t.Helper()
	res, err := http.Get(a.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %q", name, v)
			}
			return f
		}
	}
	return -1
}
