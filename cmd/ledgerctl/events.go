package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

var eventsTailCommand = &command{
	name:     "events tail",
	synopsis: "[--account ACC] [--type T,...] [--after SEQ]",
	summary:  "Follow the ledger's events live",
	text: `Follows the event stream as events are stored, one line per event:

  SEQ  TIME  TYPE  ACCOUNT  DATA

where SEQ is the stream sequence. With --json each line is the event's JSON as
the API sends it. A dropped connection is resumed where it stopped (with
Last-Event-ID), retrying with backoff; Ctrl-C stops. --after SEQ starts just
after that stream sequence instead of at the live end.`,
	examples: []string{
		"ledgerctl events tail",
		"ledgerctl events tail --account acc_123 --type account.topped_up,account.adjusted",
		"ledgerctl events tail --json | jq -c 'select(.type | startswith(\"task.\"))'",
		"ledgerctl events tail --after 41230",
	},
	run: runEventsTail,
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	id, event string
	data      []byte
}

// streamLine is an event as the stream carries it.
type streamLine struct {
	Seq        uint64          `json:"seq"`
	Type       string          `json:"type"`
	AccountID  string          `json:"account_id"`
	OccurredAt string          `json:"occurred_at"`
	Data       json.RawMessage `json:"data"`
	StreamSeq  uint64          `json:"stream_seq"`
}

const (
	tailMinBackoff = 500 * time.Millisecond
	tailMaxBackoff = 15 * time.Second
)

func runEventsTail(ctx context.Context, c *cli, args []string) error {
	fs := c.flags("events tail")
	acc := fs.String("account", "", "only the account `ACC`'s events")
	var types listFlag
	fs.Var(&types, "type", "only events of these `TYPES` (comma-separated, repeatable)")
	after := fs.String("after", "", "start after stream sequence `SEQ` (default: from now)")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	if *after != "" {
		if n, err := strconv.ParseUint(*after, 10, 64); err != nil || n == 0 {
			return usagef("events tail", "--after must be a stream sequence number (the stream starts at 1)")
		}
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	path := "/api/admin/events/stream" + query("account", *acc, "type", strings.Join(types, ","))
	lastID := *after
	backoff := tailMinBackoff
	for {
		connected := time.Now()
		got, err := c.tailOnce(ctx, cl, path, &lastID)
		if ctx.Err() != nil {
			return nil // Ctrl-C: a clean stop
		}
		var ae *apiError
		if errors.As(err, &ae) && ae.Status < 500 && ae.Status != http.StatusTooManyRequests {
			return err // retrying will not help
		}
		if got > 0 || time.Since(connected) > 30*time.Second {
			backoff = tailMinBackoff
		}
		reason := "the stream ended"
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			reason = err.Error()
		}
		fmt.Fprintf(c.stderr, "ledgerctl: %s; reconnecting in %s", reason, backoff)
		if lastID != "" {
			fmt.Fprintf(c.stderr, " (resuming after seq %s)", lastID)
		}
		fmt.Fprintln(c.stderr)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, tailMaxBackoff)
	}
}

// tailOnce follows the stream until it ends, printing each event and
// keeping lastID current; it returns how many events it got.
func (c *cli) tailOnce(ctx context.Context, cl *client, path string, lastID *string) (int, error) {
	hdr := http.Header{"Accept": {"text/event-stream"}}
	if *lastID != "" {
		hdr.Set("Last-Event-ID", *lastID)
	}
	resp, err := cl.stream(ctx, path, hdr)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return 0, fmt.Errorf("the server answered %q, not an event stream", ct)
	}
	fmt.Fprintf(c.stderr, "ledgerctl: following events at %s (Ctrl-C to stop)\n", cl.base)
	n := 0
	err = readSSE(resp.Body, func(ev sseEvent) error {
		if ev.event == "error" {
			var msg string
			if json.Unmarshal(ev.data, &msg) != nil {
				msg = string(ev.data)
			}
			return fmt.Errorf("server: %s", msg)
		}
		if ev.id != "" {
			*lastID = ev.id
		}
		n++
		return c.printEvent(ev)
	})
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (c *cli) printEvent(ev sseEvent) error {
	if c.jsonOut {
		return writeRaw(c.stdout, ev.data)
	}
	var e streamLine
	if err := json.Unmarshal(ev.data, &e); err != nil {
		// Not what this version knows: show it as it came.
		_, err := fmt.Fprintf(c.stdout, "%-8s %-24s %-28s %s\n", ev.id, "-", ev.event, oneLine(string(ev.data), 200))
		return err
	}
	seq := ev.id
	if seq == "" {
		seq = strconv.FormatUint(e.StreamSeq, 10)
	}
	typ := e.Type
	if typ == "" {
		typ = ev.event
	}
	_, err := fmt.Fprintf(c.stdout, "%-8s %-24s %-28s %-26s %s\n", seq, shortTime(e.OccurredAt), typ, e.AccountID, summarize(e.Data, 120))
	return err
}

// readSSE calls fn with each event of a text/event-stream.
func readSSE(r io.Reader, fn func(sseEvent) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		ev      sseEvent
		hasData bool
	)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if hasData {
				if err := fn(ev); err != nil {
					return err
				}
			}
			ev, hasData = sseEvent{}, false
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue // a comment
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			ev.id = value
		case "event":
			ev.event = value
		case "data":
			if hasData {
				ev.data = append(ev.data, '\n')
			}
			ev.data = append(ev.data, value...)
			hasData = true
		}
	}
}

// shortTime drops the sub-second part of an RFC 3339 time.
func shortTime(s string) string {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC().Format("2006-01-02T15:04:05Z")
	}
	if s == "" {
		return "-"
	}
	return s
}

// summarize renders an event's data as key=value pairs in the order they
// came, nested values abbreviated, cut to at most n characters.
func summarize(data json.RawMessage, n int) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if d, ok := tok.(json.Delim); err != nil || !ok || d != '{' {
		return oneLine(string(data), n)
	}
	var parts []string
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			break
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			break
		}
		parts = append(parts, fmt.Sprintf("%v=%s", kt, valueSummary(v)))
	}
	return oneLine(strings.Join(parts, " "), n)
}

func valueSummary(v json.RawMessage) string {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return ""
	}
	switch v[0] {
	case '{':
		return "{…}"
	case '[':
		if string(v) == "[]" {
			return "[]"
		}
		return "[…]"
	case '"':
		var s string
		if json.Unmarshal(v, &s) == nil {
			if s == "" || strings.ContainsAny(s, " \t\"=") {
				return strconv.Quote(s)
			}
			return s
		}
	}
	return string(v)
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
