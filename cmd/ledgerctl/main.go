// Command ledgerctl is the command-line tool for ledgerd's finance and admin
// staff. It talks to a running ledgerd over its admin HTTP API only.
//
// Everything a command does goes through run, which takes its arguments,
// standard streams and environment as parameters so that tests can drive
// the tool in-process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const defaultURL = "http://127.0.0.1:8080"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// cli is one invocation of ledgerctl.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	// Global flags; every command accepts them too.
	url     string
	jsonOut bool
}

// run executes ledgerctl with args (without the program name) and returns
// the process exit status: 0 success, 1 failure (API error, failed check),
// 2 usage error, 130 interrupted.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	return c.exitStatus(ctx, c.main(ctx, args))
}

func (c *cli) main(ctx context.Context, args []string) error {
	root := flag.NewFlagSet("ledgerctl", flag.ContinueOnError)
	root.SetOutput(io.Discard)
	root.Usage = func() {}
	c.globalFlags(root)
	if err := root.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.rootUsage(c.stdout)
			return nil
		}
		return usagef("", "%v", err)
	}
	rest := root.Args()
	if len(rest) == 0 {
		c.rootUsage(c.stderr)
		return errQuietUsage
	}
	name, rest := rest[0], rest[1:]
	if name == "help" {
		return c.help(ctx, rest)
	}
	if g, ok := groups[name]; ok {
		if len(rest) > 0 {
			if cmd, ok := commands[name+" "+rest[0]]; ok {
				return cmd.run(ctx, c, rest[1:])
			}
		}
		if cmd, ok := commands[name]; ok {
			return cmd.run(ctx, c, rest)
		}
		if len(rest) > 0 && isHelpArg(rest[0]) {
			c.groupUsage(c.stdout, name, g)
			return nil
		}
		c.groupUsage(c.stderr, name, g)
		if len(rest) == 0 {
			return errQuietUsage
		}
		return usagef(name, "unknown command %q", name+" "+rest[0])
	}
	cmd, ok := commands[name]
	if !ok {
		return usagef("", "unknown command %q", name)
	}
	return cmd.run(ctx, c, rest)
}

// help is "ledgerctl help [COMMAND...]": the same as COMMAND --help.
func (c *cli) help(ctx context.Context, args []string) error {
	name := strings.Join(args, " ")
	if name == "" {
		c.rootUsage(c.stdout)
		return nil
	}
	if cmd, ok := commands[name]; ok {
		return cmd.run(ctx, c, []string{"--help"})
	}
	if g, ok := groups[name]; ok {
		c.groupUsage(c.stdout, name, g)
		return nil
	}
	return usagef("", "unknown command %q", name)
}

func isHelpArg(s string) bool {
	return s == "-h" || s == "-help" || s == "--help" || s == "help"
}

// exitStatus prints err the way a user needs to read it and maps it to the
// exit status.
func (c *cli) exitStatus(ctx context.Context, err error) int {
	if err == nil {
		return 0
	}
	var (
		ue   *usageError
		ae   *apiError
		te   *transportError
		code exitCode
	)
	switch {
	case errors.Is(err, errHelpShown):
		return 0
	case errors.Is(err, errQuietUsage):
		return 2
	case errors.As(err, &code):
		return int(code)
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "error: %s\n", ue.msg)
		fmt.Fprintf(c.stderr, "Run '%s --help' for usage.\n", strings.TrimSpace("ledgerctl "+ue.cmd))
		return 2
	case errors.As(err, &ae):
		c.printAPIError(ae)
		return 1
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		fmt.Fprintln(c.stderr, "interrupted")
		return 130
	case errors.As(err, &te):
		fmt.Fprintf(c.stderr, "error: %v\n", te)
		if te.idemKey != "" {
			fmt.Fprintf(c.stderr, "The request may or may not have been applied. Re-run the same command with\n"+
				"  --idempotency-key %s\nto retry it safely: it is then applied at most once.\n", te.idemKey)
		} else {
			fmt.Fprintln(c.stderr, "Is ledgerd running there? Set LEDGER_URL or --url to point at it.")
		}
		return 1
	default:
		fmt.Fprintf(c.stderr, "error: %v\n", err)
		return 1
	}
}

func (c *cli) printAPIError(ae *apiError) {
	fmt.Fprintf(c.stderr, "error: %s: %s\n", ae.Code, ae.Message)
	for _, d := range ae.Details {
		fmt.Fprintf(c.stderr, "  %s: %s\n", d.Field, d.Message)
	}
	if ae.RequestID != "" {
		fmt.Fprintf(c.stderr, "  (request %s)\n", ae.RequestID)
	}
	switch ae.Status {
	case 401:
		fmt.Fprintln(c.stderr, "Your session is missing, invalid or expired: run 'ledgerctl login' to sign in again.")
	case 403:
		if ae.Code == "forbidden" {
			fmt.Fprintln(c.stderr, "Your role does not allow this: it needs a staff user with role admin (or finance for read-only commands).")
		}
	}
}

// usageError is a command line ledgerctl cannot act on: exit status 2.
type usageError struct {
	cmd string // the command whose help to point at, "" for the root
	msg string
}

func (e *usageError) Error() string { return e.msg }

func usagef(cmd, format string, args ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, args...)}
}

var (
	// errQuietUsage: usage was already printed; exit 2.
	errQuietUsage = errors.New("usage")
	// errHelpShown: --help was asked for and printed; exit 0.
	errHelpShown = errors.New("help shown")
)

// exitCode ends the command with a status and no further message (what
// went wrong was printed already).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
