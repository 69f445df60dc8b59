package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
)

var accountsCommand = &command{
	name:     "accounts",
	synopsis: "[--limit N] [--all] [--cursor C]",
	summary:  "List customer accounts",
	text: `Lists accounts in pages of --limit (1-1000). With --all it follows the
pages to the end; otherwise, when there are more, it says how to get the
next page.`,
	examples: []string{
		"ledgerctl accounts",
		"ledgerctl accounts --limit 20",
		"ledgerctl accounts --all --json | jq -r '.accounts[].email'",
		"ledgerctl accounts show acc_123",
	},
	run: runAccounts,
}

var accountsShowCommand = &command{
	name:     "accounts show",
	synopsis: "ACC",
	summary:  "Show one account and its wallet",
	examples: []string{
		"ledgerctl accounts show acc_123",
		"ledgerctl accounts show acc_123 --json",
	},
	run: runAccountsShow,
}

type accountOut struct {
	ID        string `json:"id"`
	Email     string `json:"email"`
	Plan      string `json:"plan"`
	Status    string `json:"status"`
	Currency  string `json:"currency"`
	CreatedAt string `json:"created_at"`
}

func runAccounts(ctx context.Context, c *cli, args []string) error {
	fs := c.flags("accounts")
	limit := fs.Int("limit", 100, "accounts per page, 1-1000")
	all := fs.Bool("all", false, "follow next_cursor to list every account")
	cursor := fs.String("cursor", "", "start after this `CURSOR` (the next_cursor of a previous page)")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	if *limit < 1 || *limit > 1000 {
		return usagef("accounts", "--limit must be from 1 to 1000")
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	var (
		rows []json.RawMessage
		next = *cursor
		raw  []byte
	)
	for {
		raw = nil
		if err := cl.do(ctx, "GET", "/api/admin/accounts"+query("limit", strconv.Itoa(*limit), "cursor", next), nil, &raw); err != nil {
			return err
		}
		var page struct {
			Accounts   []json.RawMessage `json:"accounts"`
			NextCursor *string           `json:"next_cursor"`
		}
		if err := json.Unmarshal(raw, &page); err != nil {
			return fmt.Errorf("reading the accounts: %w", err)
		}
		rows = append(rows, page.Accounts...)
		next = ""
		if page.NextCursor != nil {
			next = *page.NextCursor
		}
		if !*all || next == "" {
			break
		}
	}
	if c.jsonOut {
		if !*all {
			return writeRaw(c.stdout, raw)
		}
		if rows == nil {
			rows = []json.RawMessage{}
		}
		b, err := json.Marshal(map[string]any{"accounts": rows, "next_cursor": nil})
		if err != nil {
			return err
		}
		return writeRaw(c.stdout, b)
	}
	if len(rows) == 0 {
		fmt.Fprintln(c.stdout, "No accounts.")
		return nil
	}
	t := newTable(c.stdout, "ID", "EMAIL", "PLAN", "STATUS")
	for _, r := range rows {
		var a accountOut
		if err := json.Unmarshal(r, &a); err != nil {
			return fmt.Errorf("reading an account: %w", err)
		}
		t.row(a.ID, a.Email, a.Plan, a.Status)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if next != "" {
		fmt.Fprintf(c.stderr, "More accounts: run 'ledgerctl accounts --cursor %s' for the next page, or --all.\n", next)
	}
	return nil
}

func runAccountsShow(ctx context.Context, c *cli, args []string) error {
	fs := c.flags("accounts show")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	var raw []byte
	if err := cl.do(ctx, "GET", "/api/admin/accounts/"+esc(pos[0]), nil, &raw); err != nil {
		return err
	}
	if c.jsonOut {
		return writeRaw(c.stdout, raw)
	}
	var out struct {
		Account accountOut `json:"account"`
		Wallet  struct {
			Currency  string  `json:"currency"`
			Balance   amount  `json:"balance"`
			Held      amount  `json:"held"`
			Available amount  `json:"available"`
			Credits   *amount `json:"credits"`
		} `json:"wallet"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return fmt.Errorf("reading the account: %w", err)
	}
	a, w := out.Account, out.Wallet
	t := newTable(c.stdout)
	t.row("Account", a.ID)
	t.row("Email", a.Email)
	t.row("Plan", a.Plan)
	t.row("Status", a.Status)
	t.row("Created", a.CreatedAt)
	t.row("Currency", w.Currency)
	t.row("Balance", w.Balance.String())
	t.row("Held", w.Held.String())
	if w.Credits != nil {
		t.row("Credits", w.Credits.String())
	}
	t.row("Available", w.Available.String())
	return t.flush()
}
