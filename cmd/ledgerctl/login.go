package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"
)

var loginCommand = &command{
	name:     "login",
	synopsis: "[--email EMAIL] [--password-stdin]",
	summary:  "Sign in as a staff user and store the session token",
	text: `Signs in to ledgerd with a staff user (role admin or finance) and stores the
session token, with the URL it is valid for, in
$XDG_CONFIG_HOME/ledgerctl/credentials.json (mode 0600). Later commands send
that token only to that URL.

On a terminal the password is prompted for without echo. In scripts, pass it
on standard input with --password-stdin. It is never accepted as a flag value,
where it would end up in the shell history and the process list.`,
	examples: []string{
		"ledgerctl login --email finance@example.com",
		"ledgerctl --url https://ledger.internal:8443 login --email root@example.com",
		`printf '%s\n' "$LEDGER_PASSWORD" | ledgerctl login --email root@example.com --password-stdin`,
	},
	run: runLogin,
}

var logoutCommand = &command{
	name:     "logout",
	synopsis: "",
	summary:  "Remove the stored session token",
	text: `Deletes the credentials file. The token itself stays valid on the server until
it expires; keep it out of reach meanwhile.`,
	examples: []string{"ledgerctl logout"},
	run:      runLogout,
}

func runLogin(ctx context.Context, c *cli, args []string) error {
	for _, a := range args {
		if name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); strings.HasPrefix(a, "-") && name == "password" {
			return usagef("login", "the password is never taken as a flag value (it would be kept in the shell history and be visible to other users): type it at the prompt or pipe it with --password-stdin")
		}
	}
	fs := c.flags("login")
	email := fs.String("email", "", "staff user `EMAIL` (default: prompt, or the one you last logged in with)")
	fromStdin := fs.Bool("password-stdin", false, "read the password from standard input (the first line)")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	prev, _, err := c.loadCredentials()
	if err != nil {
		prev = nil // a damaged file is replaced by this login
	}
	base, _, err := c.baseURL(prev)
	if err != nil {
		return err
	}
	tty, isTTY := terminal(c.stdin)

	if *email == "" {
		def := ""
		if prev != nil && prev.URL == base {
			def = prev.Email
		}
		switch {
		case isTTY && !*fromStdin:
			if def != "" {
				fmt.Fprintf(c.stderr, "Email [%s]: ", def)
			} else {
				fmt.Fprint(c.stderr, "Email: ")
			}
			line, err := readLine(tty)
			if err != nil {
				return fmt.Errorf("reading the email: %w", err)
			}
			if *email = strings.TrimSpace(line); *email == "" {
				*email = def
			}
		default:
			*email = def
		}
		if *email == "" {
			return usagef("login", "--email is required")
		}
	}

	var password string
	switch {
	case *fromStdin:
		b, err := io.ReadAll(io.LimitReader(c.stdin, 64<<10))
		if err != nil {
			return fmt.Errorf("reading the password from standard input: %w", err)
		}
		password, _, _ = strings.Cut(string(b), "\n")
		password = strings.TrimSuffix(password, "\r")
	case isTTY:
		if password, err = readPassword(ctx, tty, c.stderr); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("reading the password: %w", err)
		}
	default:
		return usagef("login", "standard input is not a terminal: pass the password on standard input with --password-stdin")
	}
	if password == "" {
		return usagef("login", "the password is empty")
	}
	if u, err := url.Parse(base); err == nil && u.Scheme == "http" && !isLoopback(u.Hostname()) {
		fmt.Fprintf(c.stderr, "warning: %s is plain http: the password and token cross the network unencrypted\n", u.Host)
	}

	cl := newClient(base, "")
	cl.idemKey = newIdempotencyKey()
	var out struct {
		AccessToken string  `json:"access_token"`
		TokenType   string  `json:"token_type"`
		ExpiresIn   int64   `json:"expires_in"`
		Role        string  `json:"role"`
		AccountID   *string `json:"account_id"`
	}
	if err := cl.do(ctx, "POST", "/api/auth/login", map[string]string{"email": *email, "password": password}, &out); err != nil {
		return err
	}
	if out.AccessToken == "" {
		return errors.New("ledgerd answered the login without a token")
	}
	if out.Role != "" && out.Role != "admin" && out.Role != "finance" {
		return fmt.Errorf("%s has role %q: ledgerctl needs a staff user (role admin or finance)", *email, out.Role)
	}
	cr := credentials{URL: base, Token: out.AccessToken, Email: *email, Role: out.Role}
	if out.ExpiresIn > 0 {
		cr.ExpiresAt = time.Now().Add(time.Duration(out.ExpiresIn) * time.Second).UTC().Truncate(time.Second)
	}
	path, err := c.saveCredentials(cr)
	if err != nil {
		return fmt.Errorf("storing the credentials: %w", err)
	}
	if c.jsonOut {
		// Never the token: the file holds it.
		return writeJSON(c.stdout, map[string]any{"url": cr.URL, "email": cr.Email, "role": cr.Role,
			"expires_at": cr.ExpiresAt, "credentials_file": path})
	}
	fmt.Fprintf(c.stdout, "Logged in to %s as %s (role %s).\n", base, *email, out.Role)
	if !cr.ExpiresAt.IsZero() {
		fmt.Fprintf(c.stdout, "The session expires at %s.\n", cr.ExpiresAt.Local().Format(time.DateTime+" MST"))
	}
	fmt.Fprintf(c.stdout, "Credentials saved in %s\n", path)
	return nil
}

func runLogout(_ context.Context, c *cli, args []string) error {
	fs := c.flags("logout")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	removed, path, err := c.removeCredentials()
	if err != nil {
		return err
	}
	if removed {
		fmt.Fprintf(c.stdout, "Logged out: removed %s\n", path)
	} else {
		fmt.Fprintln(c.stdout, "Not logged in.")
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
