package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

var auditExportCommand = &command{
	name:     "audit export",
	synopsis: "--account ACC [--from T] [--to T] [--format jsonl|csv] [--out FILE]",
	summary:  "Export an account's hash-chained events",
	text: `Streams the account's events in order, as JSON lines or CSV, to FILE or to
standard output. Each event carries prev_hash and hash: the SHA-256 chain
proves nothing was altered or dropped. --from and --to (RFC 3339, or a date
YYYY-MM-DD meaning midnight UTC) filter what is written; --to is exclusive.

The export is streamed, never held in memory. A file is written under a
temporary name and renamed into place only when the export is complete.`,
	examples: []string{
		"ledgerctl audit export --account acc_123 --out acc_123.jsonl",
		"ledgerctl audit export --account acc_123 --format csv --from 2026-01-01 --to 2026-02-01 > january.csv",
	},
	run: runAuditExport,
}

var balanceCommand = &command{
	name:     "balance",
	synopsis: "ACC [--as-of T]",
	summary:  "Show an account's balance as it stood at a time",
	text: `Computes the balance from the account's events up to --as-of (RFC 3339, or a
date YYYY-MM-DD meaning midnight UTC; default: now), independently of the
read models.`,
	examples: []string{
		"ledgerctl balance acc_123",
		"ledgerctl balance acc_123 --as-of 2026-01-31T23:59:59Z",
	},
	run: runBalance,
}

var verifyCommand = &command{
	name:     "verify",
	synopsis: "[--account ACC]",
	summary:  "Verify the ledger's integrity",
	text: `Checks that the hash chains are intact, every transaction balances, no balance
went below zero, and the read models and the command side's account snapshots
equal a fold of the events, for every account or for one. Exits with status 1
if any check fails.`,
	examples: []string{
		"ledgerctl verify",
		"ledgerctl verify --account acc_123",
		"ledgerctl verify --json || alert-finance",
	},
	run: runVerify,
}

// parseTimeArg accepts RFC 3339 or a date (midnight UTC) and returns it
// in RFC 3339 for the API.
func parseTimeArg(cmd, flagName, s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC().Format(time.RFC3339Nano), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t.UTC().Format(time.RFC3339), nil
	}
	return "", usagef(cmd, "--%s %q is not a time: use RFC 3339 (2026-01-31T12:00:00Z) or a date (2026-01-31)", flagName, s)
}

func runAuditExport(ctx context.Context, c *cli, args []string) error {
	fs := c.flags("audit export")
	acc := fs.String("account", "", "the account `ACC` to export (required)")
	from := fs.String("from", "", "only events at or after `T`")
	to := fs.String("to", "", "only events before `T`")
	format := fs.String("format", "jsonl", "`jsonl` or csv")
	out := fs.String("out", "", "write to `FILE` instead of standard output")
	pos, err := fs.parse(args, 0, 1)
	if err != nil {
		return err
	}
	if *acc == "" && len(pos) == 1 {
		*acc = pos[0]
	}
	if *acc == "" {
		return usagef("audit export", "--account is required")
	}
	if *format != "jsonl" && *format != "csv" {
		return usagef("audit export", "--format must be jsonl or csv")
	}
	fromQ, err := parseTimeArg("audit export", "from", *from)
	if err != nil {
		return err
	}
	toQ, err := parseTimeArg("audit export", "to", *to)
	if err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	resp, err := cl.stream(ctx, "/api/admin/audit"+query("account", *acc, "from", fromQ, "to", toQ, "format", *format), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()

	if *out == "" || *out == "-" {
		_, err := io.Copy(c.stdout, resp.Body)
		if err != nil {
			return fmt.Errorf("the export was interrupted: %w", err)
		}
		return nil
	}
	// Into a temporary file next to FILE, renamed when complete, so that
	// FILE never holds a truncated export.
	f, err := os.CreateTemp(filepath.Dir(*out), "."+filepath.Base(*out)+".partial-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // no-op once renamed
	lc := &lineCounter{}
	n, err := io.Copy(io.MultiWriter(f, lc), resp.Body)
	if err != nil {
		f.Close()
		return fmt.Errorf("the export was interrupted after %d bytes (%s not written): %w", n, *out, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), *out); err != nil {
		return err
	}
	what := strconv.Itoa(lc.lines) + " events"
	if *format == "csv" {
		what = strconv.Itoa(max(lc.lines-1, 0)) + " rows"
	}
	fmt.Fprintf(c.stderr, "Exported %s of %s to %s (%d bytes).\n", what, *acc, *out, n)
	return nil
}

type lineCounter struct{ lines int }

func (l *lineCounter) Write(p []byte) (int, error) {
	l.lines += bytes.Count(p, []byte{'\n'})
	return len(p), nil
}

func runBalance(ctx context.Context, c *cli, args []string) error {
	fs := c.flags("balance")
	asOf := fs.String("as-of", "", "the balance as it stood at `T` (default: now)")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	asOfQ, err := parseTimeArg("balance", "as-of", *asOf)
	if err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	var raw []byte
	if err := cl.do(ctx, "GET", "/api/admin/accounts/"+esc(pos[0])+"/balance"+query("as_of", asOfQ), nil, &raw); err != nil {
		return err
	}
	if c.jsonOut {
		return writeRaw(c.stdout, raw)
	}
	var b struct {
		AccountID string      `json:"account_id"`
		Balance   amount      `json:"balance"`
		Held      amount      `json:"held"`
		Available amount      `json:"available"`
		AsOf      string      `json:"as_of"`
		Events    json.Number `json:"events"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		return fmt.Errorf("reading the balance: %w", err)
	}
	t := newTable(c.stdout)
	t.row("Account", b.AccountID)
	t.row("As of", b.AsOf)
	t.row("Balance", b.Balance.String())
	t.row("Held", b.Held.String())
	t.row("Available", b.Available.String())
	t.row("Events", b.Events.String())
	return t.flush()
}

func runVerify(ctx context.Context, c *cli, args []string) error {
	fs := c.flags("verify")
	acc := fs.String("account", "", "verify only the account `ACC`")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	var raw []byte
	if err := cl.do(ctx, "GET", "/api/admin/verify"+query("account", *acc), nil, &raw); err != nil {
		return err
	}
	var rep struct {
		OK       bool `json:"ok"`
		Events   int  `json:"events"`
		Accounts int  `json:"accounts"`
		Checks   []struct {
			Name   string `json:"name"`
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		return fmt.Errorf("reading the report: %w", err)
	}
	if c.jsonOut {
		if err := writeRaw(c.stdout, raw); err != nil {
			return err
		}
	} else {
		t := newTable(c.stdout, "CHECK", "RESULT", "DETAIL")
		failed := 0
		for _, ch := range rep.Checks {
			res := "ok"
			if !ch.OK {
				res, failed = "FAILED", failed+1
			}
			t.row(ch.Name, res, ch.Detail)
		}
		if err := t.flush(); err != nil {
			return err
		}
		scope := "the whole ledger"
		if *acc != "" {
			scope = *acc
		}
		counts := plural(rep.Events, "event") + ", " + plural(rep.Accounts, "account")
		if rep.OK {
			fmt.Fprintf(c.stdout, "\nOK: %s passed over %s (%s).\n", plural(len(rep.Checks), "check"), scope, counts)
		} else {
			fmt.Fprintf(c.stdout, "\nFAILED: %d of %s failed over %s (%s).\n", failed, plural(len(rep.Checks), "check"), scope, counts)
		}
	}
	if !rep.OK {
		return exitCode(1)
	}
	return nil
}
