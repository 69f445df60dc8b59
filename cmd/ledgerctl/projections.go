package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

var projectionsCommand = &command{
	name:     "projections",
	synopsis: "",
	summary:  "Show the read models' status and lag",
	text: `Lists every projection (read model) with its stream position, how far it lags
behind the event stream (in events and milliseconds) and, if it stopped on an
event it could not apply, the error and that event's sequence.`,
	examples: []string{
		"ledgerctl projections",
		"ledgerctl projections --json | jq '.projections[] | select(.lag_events > 0)'",
	},
	run: runProjections,
}

var replayCommand = &command{
	name:     "replay",
	synopsis: "[--idempotency-key KEY]",
	summary:  "Rebuild every read model from the events and compare",
	text: `Rebuilds every read model from the first event into fresh tables while live
traffic goes on, compares them with the live ones and swaps the rebuilt ones
in if they differ. Progress is drawn on standard error (stream position
reached / target, events applied, rate, phase); the result goes to standard
output. Exits with status 1 if the replay failed.

Ctrl-C stops watching, not the replay: follow it with 'ledgerctl replay status'.`,
	examples: []string{
		"ledgerctl replay",
		"ledgerctl replay --json 2>/dev/null",
		"ledgerctl replay status",
	},
	run: runReplay,
}

var replayStatusCommand = &command{
	name:     "replay status",
	synopsis: "",
	summary:  "Show the progress of the running (or last) replay",
	examples: []string{"ledgerctl replay status"},
	run:      runReplayStatus,
}

type projectionStatus struct {
	Name          string `json:"name"`
	Status        string `json:"status"`
	Position      uint64 `json:"position"`
	EventsApplied uint64 `json:"events_applied"`
	LagEvents     uint64 `json:"lag_events"`
	LagMS         int64  `json:"lag_ms"`
	LastEventAt   string `json:"last_event_at"`
	Error         string `json:"error"`
	ErrorSeq      uint64 `json:"error_seq"`
}

func runProjections(ctx context.Context, c *cli, args []string) error {
	fs := c.flags("projections")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	var raw []byte
	if err := cl.do(ctx, "GET", "/api/admin/projections", nil, &raw); err != nil {
		return err
	}
	if c.jsonOut {
		return writeRaw(c.stdout, raw)
	}
	var out struct {
		Projections []projectionStatus `json:"projections"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return fmt.Errorf("reading the projections: %w", err)
	}
	t := newTable(c.stdout, "NAME", "STATUS", "POSITION", "LAG EVENTS", "LAG MS", "ERROR")
	for _, p := range out.Projections {
		errText := p.Error
		if p.ErrorSeq != 0 {
			errText += " (at event seq " + strconv.FormatUint(p.ErrorSeq, 10) + ")"
		}
		t.row(p.Name, p.Status, strconv.FormatUint(p.Position, 10), strconv.FormatUint(p.LagEvents, 10),
			strconv.FormatInt(p.LagMS, 10), errText)
	}
	return t.flush()
}

type replayProgress struct {
	Running   bool              `json:"running"`
	Phase     string            `json:"phase"`
	Target    uint64            `json:"target"`
	Positions map[string]uint64 `json:"positions"`
	Events    uint64            `json:"events"`
	StartedAt string            `json:"started_at"`
	Error     string            `json:"error"`
}

const replayPath = "/api/admin/projections/replay"

func runReplay(ctx context.Context, c *cli, args []string) error {
	fs := c.flags("replay")
	key := idempotencyFlag(fs)
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	cl, err := c.postClient(*key)
	if err != nil {
		return err
	}
	poller := *cl
	poller.attempts = 1 // a missed poll is simply skipped

	type result struct {
		raw []byte
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		var raw []byte
		err := cl.do(ctx, "POST", replayPath, nil, &raw)
		done <- result{raw, err}
	}()
	_, tty := terminal(c.stderr)
	bar := &replayBar{w: c.stderr, tty: tty, start: start}
	bar.update(replayProgress{Phase: "starting"}, false)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var res result
wait:
	for {
		select {
		case res = <-done:
			break wait
		case <-tick.C:
			var p replayProgress
			if err := poller.do(ctx, "GET", replayPath, nil, &p); err == nil {
				bar.update(p, false)
			}
		}
	}
	if ctx.Err() != nil {
		bar.finish()
		fmt.Fprintln(c.stderr, "Stopped watching: the replay goes on in ledgerd; follow it with 'ledgerctl replay status'.")
		return ctx.Err()
	}
	// The final state, whatever the last poll saw.
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	var p replayProgress
	if err := poller.do(fctx, "GET", replayPath, nil, &p); err == nil {
		bar.update(p, true)
	}
	cancel()
	bar.finish()
	if res.err != nil {
		if p.Error != "" {
			fmt.Fprintf(c.stderr, "replay failed in phase %s: %s\n", p.Phase, p.Error)
		}
		return res.err
	}
	if c.jsonOut {
		return writeRaw(c.stdout, res.raw)
	}
	var out struct {
		Events      uint64   `json:"events"`
		DurationMS  int64    `json:"duration_ms"`
		Identical   bool     `json:"identical"`
		Swapped     bool     `json:"swapped"`
		Differences []string `json:"differences"`
	}
	if err := json.Unmarshal(res.raw, &out); err != nil {
		return fmt.Errorf("reading the replay result: %w", err)
	}
	fmt.Fprintf(c.stdout, "Replay done in %d ms: %d events applied.\n", out.DurationMS, out.Events)
	t := newTable(c.stdout)
	t.row("Identical", yesNo(out.Identical))
	t.row("Swapped", yesNo(out.Swapped))
	if err := t.flush(); err != nil {
		return err
	}
	if len(out.Differences) > 0 {
		fmt.Fprintln(c.stdout, "Differences found (the rebuilt read models were swapped in):")
		for _, d := range out.Differences {
			fmt.Fprintf(c.stdout, "  %s\n", d)
		}
	}
	return nil
}

// replayBar draws a replay's progress: redrawn in place on a terminal, a
// line per phase (or every few seconds) otherwise.
type replayBar struct {
	w           io.Writer
	tty         bool
	start       time.Time
	seenRunning bool
	drawn       bool
	last        string
	lastPhase   string
	lastAt      time.Time
}

const barWidth = 24

func (b *replayBar) update(p replayProgress, final bool) {
	if p.Running {
		b.seenRunning = true
	} else if !b.seenRunning && !final {
		// What the server reports before our replay begins is the
		// previous one's end.
		p = replayProgress{Phase: "starting"}
	}
	line := b.render(p)
	now := time.Now()
	if b.tty {
		fmt.Fprintf(b.w, "\r%s\x1b[K", line)
		b.drawn = true
	} else if line != b.last && (final || p.Phase != b.lastPhase || now.Sub(b.lastAt) >= 2*time.Second) {
		fmt.Fprintln(b.w, line)
		b.lastAt = now
	}
	b.last, b.lastPhase = line, p.Phase
}

func (b *replayBar) render(p replayProgress) string {
	// How far the rebuild has read the stream. Not the slowest
	// projection: one that only takes some event types (users) stays at
	// the last of those.
	var reached uint64
	if len(p.Positions) > 0 {
		reached = slices.Max(mapValues(p.Positions))
	}
	if p.Phase == "done" || p.Phase == "comparing" || p.Phase == "swapping" {
		reached = max(reached, p.Target)
	}
	frac := 0.0
	if p.Target > 0 {
		frac = float64(reached) / float64(p.Target)
	}
	frac = min(max(frac, 0), 1)
	n := int(frac * barWidth)
	target := "?"
	if p.Target > 0 {
		target = strconv.FormatUint(p.Target, 10)
	}
	elapsed := time.Since(b.start)
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(p.Events) / s
	}
	phase := p.Phase
	if phase == "" {
		phase = "starting"
	}
	return fmt.Sprintf("replay [%s%s] %3.0f%%  seq %d/%s  %d events  %.0f ev/s  %-11s %s",
		strings.Repeat("#", n), strings.Repeat("-", barWidth-n), frac*100, reached, target,
		p.Events, rate, phase, elapsed.Round(100*time.Millisecond))
}

func (b *replayBar) finish() {
	if b.tty && b.drawn {
		fmt.Fprintln(b.w)
		b.drawn = false
	}
}

func mapValues(m map[string]uint64) []uint64 {
	out := make([]uint64, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func runReplayStatus(ctx context.Context, c *cli, args []string) error {
	fs := c.flags("replay status")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	var raw []byte
	if err := cl.do(ctx, "GET", replayPath, nil, &raw); err != nil {
		return err
	}
	if c.jsonOut {
		return writeRaw(c.stdout, raw)
	}
	var p replayProgress
	if err := json.Unmarshal(raw, &p); err != nil {
		return fmt.Errorf("reading the replay progress: %w", err)
	}
	if p.Phase == "" && !p.Running {
		fmt.Fprintln(c.stdout, "No replay has run since ledgerd started.")
		return nil
	}
	t := newTable(c.stdout)
	t.row("Running", yesNo(p.Running))
	t.row("Phase", p.Phase)
	t.row("Started", p.StartedAt)
	t.row("Target seq", strconv.FormatUint(p.Target, 10))
	t.row("Events", strconv.FormatUint(p.Events, 10))
	if p.Error != "" {
		t.row("Error", p.Error)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(p.Positions) > 0 {
		fmt.Fprintln(c.stdout)
		t := newTable(c.stdout, "PROJECTION", "POSITION")
		names := make([]string, 0, len(p.Positions))
		for name := range p.Positions {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			t.row(name, strconv.FormatUint(p.Positions[name], 10))
		}
		return t.flush()
	}
	return nil
}
