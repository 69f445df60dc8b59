package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
)

var topupCommand = &command{
	name:     "topup",
	synopsis: "ACC AMOUNT --reference REF",
	summary:  "Credit an account with a top-up",
	text: `Credits AMOUNT (a decimal such as 25.00; ledgerd's minimum is 10.00) to the
account's wallet. REF is the payment's own reference (bank transfer or invoice
number): the same reference twice credits the account once, so re-running a
top-up is safe.`,
	examples: []string{
		"ledgerctl topup acc_123 25.00 --reference wire-2026-0042",
		"ledgerctl topup acc_123 100 --reference INV-1009 --json",
	},
	run: runTopup,
}

var adjustCommand = &command{
	name:     "adjust",
	synopsis: "ACC AMOUNT --reason TEXT",
	summary:  "Correct a balance with a signed adjustment",
	text: `Records a manual adjustment of AMOUNT, positive (credit) or negative (debit),
with the reason kept in the audit trail. A negative amount can be written
directly (-5.00) or after "--".`,
	examples: []string{
		`ledgerctl adjust acc_123 -5.00 --reason "refund of duplicate charge, ticket 4711"`,
		`ledgerctl adjust acc_123 2.50 --reason "goodwill credit"`,
		`ledgerctl adjust --reason "correction" -- acc_123 -1.00`,
	},
	run: runAdjust,
}

var decimalArg = regexp.MustCompile(`^[+-]?[0-9]+(\.[0-9]+)?$`)

func idempotencyFlag(fs *flagSet) *string {
	return fs.String("idempotency-key", "", "Idempotency-Key to send (default: a random one); re-running with the same `KEY` is applied at most once")
}

func checkAmount(cmd, s string) (string, error) {
	s = strings.TrimSpace(s)
	if !decimalArg.MatchString(s) {
		return "", usagef(cmd, "AMOUNT %q is not a decimal amount such as 25.00", s)
	}
	return strings.TrimPrefix(s, "+"), nil
}

func runTopup(ctx context.Context, c *cli, args []string) error {
	raw, hdr, done, err := postMovement(ctx, c, "topup", args, "reference",
		"the payment reference `REF` (bank transfer, invoice); the same one twice credits once (required)", "topups")
	if err != nil || done {
		return err
	}
	var out struct {
		ID        string `json:"id"`
		AccountID string `json:"account_id"`
		Amount    amount `json:"amount"`
		Currency  string `json:"currency"`
		Reference string `json:"reference"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return fmt.Errorf("reading the top-up: %w", err)
	}
	if hdr.Get("Idempotent-Replayed") == "true" {
		fmt.Fprintf(c.stdout, "Already credited: top-up %s of %s %s to %s (reference %s) was recorded before; nothing new was credited.\n",
			out.ID, out.Amount, out.Currency, out.AccountID, out.Reference)
		return nil
	}
	fmt.Fprintf(c.stdout, "Credited %s %s to %s (top-up %s, reference %s).\n", out.Amount, out.Currency, out.AccountID, out.ID, out.Reference)
	return nil
}

func runAdjust(ctx context.Context, c *cli, args []string) error {
	raw, hdr, done, err := postMovement(ctx, c, "adjust", args, "reason",
		"why, in `TEXT` kept in the audit trail (required)", "adjustments")
	if err != nil || done {
		return err
	}
	var out struct {
		ID        string `json:"id"`
		AccountID string `json:"account_id"`
		Amount    amount `json:"amount"`
		Reason    string `json:"reason"`
		Actor     string `json:"actor"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return fmt.Errorf("reading the adjustment: %w", err)
	}
	again := ""
	if hdr.Get("Idempotent-Replayed") == "true" {
		again = " (already recorded by an earlier run with this idempotency key; not applied again)"
	}
	fmt.Fprintf(c.stdout, "Adjusted %s by %s (adjustment %s by %s: %s)%s.\n", out.AccountID, out.Amount, out.ID, out.Actor, out.Reason, again)
	return nil
}

// postMovement is what topup and adjust share: ACC AMOUNT, one required
// text flag sent as the body field of the same name, an idempotency key,
// and a POST to the account's collection. done is true when --json has
// already printed the answer.
func postMovement(ctx context.Context, c *cli, cmd string, args []string, field, help, collection string) (raw []byte, hdr http.Header, done bool, err error) {
	fs := c.flags(cmd)
	text := fs.String(field, "", help)
	key := idempotencyFlag(fs)
	pos, err := fs.parse(args, 2, 2)
	if err != nil {
		return nil, nil, false, err
	}
	amt, err := checkAmount(cmd, pos[1])
	if err != nil {
		return nil, nil, false, err
	}
	if strings.TrimSpace(*text) == "" {
		return nil, nil, false, usagef(cmd, "--%s is required", field)
	}
	cl, err := c.postClient(*key)
	if err != nil {
		return nil, nil, false, err
	}
	hdr, err = cl.doHeader(ctx, "POST", "/api/admin/accounts/"+esc(pos[0])+"/"+collection,
		map[string]string{"amount": amt, field: *text}, &raw)
	if err != nil {
		return nil, nil, false, err
	}
	if c.jsonOut {
		return nil, nil, true, writeRaw(c.stdout, raw)
	}
	return raw, hdr, false, nil
}
