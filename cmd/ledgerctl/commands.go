package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"
	"text/tabwriter"
)

// command is one ledgerctl command: its help and what it does.
type command struct {
	name     string // "topup", "audit export"
	synopsis string // what follows the name in the usage line
	summary  string
	text     string
	examples []string
	run      func(ctx context.Context, c *cli, args []string) error
}

// commands by full name; filled in init (their run functions refer back to
// this table for their help).
var commands map[string]*command

// order is how the root help lists the commands.
var order = []string{
	"login", "logout",
	"accounts", "accounts show", "topup", "adjust", "balance",
	"audit export", "verify",
	"projections", "replay", "replay status",
	"events tail",
}

// groups are first words that take a subcommand; a group may also be a
// command of its own (accounts, replay).
var groups = map[string][]string{
	"accounts": {"show"},
	"audit":    {"export"},
	"events":   {"tail"},
	"replay":   {"status"},
}

func init() {
	commands = map[string]*command{}
	for _, cmd := range []*command{
		loginCommand, logoutCommand,
		accountsCommand, accountsShowCommand, topupCommand, adjustCommand, balanceCommand,
		auditExportCommand, verifyCommand,
		projectionsCommand, replayCommand, replayStatusCommand,
		eventsTailCommand,
	} {
		commands[cmd.name] = cmd
	}
}

// globalFlags are accepted before the command and by every command.
var globalFlags = map[string]bool{"url": true, "json": true}

func (c *cli) globalFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "url", c.url, "ledgerd base `URL` (default $LEDGER_URL, else the URL you logged in to, else "+defaultURL+")")
	fs.BoolVar(&c.jsonOut, "json", c.jsonOut, "print the API's JSON as is, for scripts")
}

// flagSet is a command's flags.
type flagSet struct {
	*flag.FlagSet
	c   *cli
	cmd *command
}

func (c *cli) flags(name string) *flagSet {
	fs := flag.NewFlagSet("ledgerctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	c.globalFlags(fs)
	return &flagSet{FlagSet: fs, c: c, cmd: commands[name]}
}

// parse parses args, where flags may come before, between or after the
// positional arguments; "--" ends the flags, and a negative number such
// as -5.00 is a positional argument, not a flag. It checks that there are
// between minArgs and maxArgs positional arguments (maxArgs < 0: any).
func (f *flagSet) parse(args []string, minArgs, maxArgs int) ([]string, error) {
	flags, pos := splitArgs(f.FlagSet, args)
	if err := f.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.c.commandUsage(f.c.stdout, f.cmd, f.FlagSet)
			return nil, errHelpShown
		}
		return nil, usagef(f.cmd.name, "%v", err)
	}
	pos = append(pos, f.Args()...)
	switch {
	case len(pos) < minArgs:
		return nil, usagef(f.cmd.name, "missing arguments: usage: ledgerctl %s %s", f.cmd.name, f.cmd.synopsis)
	case maxArgs >= 0 && len(pos) > maxArgs:
		return nil, usagef(f.cmd.name, "unexpected argument %q", pos[maxArgs])
	}
	return pos, nil
}

var negativeNumber = regexp.MustCompile(`^-\.?[0-9]`)

// splitArgs separates flags (with their values) from positional arguments.
func splitArgs(fs *flag.FlagSet, args []string) (flags, pos []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return flags, append(pos, args[i+1:]...)
		case a == "-" || !strings.HasPrefix(a, "-") || negativeNumber.MatchString(a):
			pos = append(pos, a)
		default:
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if strings.Contains(name, "=") {
				continue
			}
			f := fs.Lookup(name)
			if f == nil || isBoolFlag(f) {
				continue
			}
			if i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		}
	}
	return flags, pos
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// listFlag collects a repeatable, comma-separated flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func (c *cli) rootUsage(w io.Writer) {
	fmt.Fprint(w, `ledgerctl is the command-line tool for ledgerd finance and admin staff.
It talks to a running ledgerd over its admin HTTP API.

Usage:
  ledgerctl [--url URL] [--json] COMMAND [ARGS] [FLAGS]

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	for _, name := range order {
		fmt.Fprintf(tw, "  %s\t%s\n", name, commands[name].summary)
	}
	tw.Flush()
	fmt.Fprint(w, `
Global flags (also accepted after the command):
  --url URL   ledgerd base URL (default $LEDGER_URL, else the URL you logged
              in to, else `+defaultURL+`)
  --json      print the API's JSON as is, for scripts
  -h, --help  show help; every command has its own

Environment:
  LEDGER_URL       ledgerd base URL
  LEDGER_TOKEN     bearer token to use instead of the stored credentials
  XDG_CONFIG_HOME  credentials live in $XDG_CONFIG_HOME/ledgerctl/credentials.json
                   (default: your user config directory)

Exit status: 0 success, 1 failure (API error, failed check), 2 usage error,
130 interrupted.

Examples:
  ledgerctl login --email finance@example.com
  ledgerctl accounts --all
  ledgerctl topup acc_123 25.00 --reference wire-2026-0042
  ledgerctl verify

Run 'ledgerctl COMMAND --help' for a command's flags and examples.
`)
}

func (c *cli) groupUsage(w io.Writer, group string, subs []string) {
	fmt.Fprintf(w, "Usage:\n")
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	if cmd, ok := commands[group]; ok {
		fmt.Fprintf(tw, "  ledgerctl %s %s\t%s\n", group, cmd.synopsis, cmd.summary)
	}
	for _, s := range subs {
		cmd := commands[group+" "+s]
		fmt.Fprintf(tw, "  ledgerctl %s %s\t%s\n", cmd.name, cmd.synopsis, cmd.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nRun 'ledgerctl %s SUBCOMMAND --help' for flags and examples.\n", group)
}

func (c *cli) commandUsage(w io.Writer, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage:\n  ledgerctl %s %s\n\n%s.\n", cmd.name, cmd.synopsis, cmd.summary)
	if cmd.text != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(cmd.text))
	}
	if subs, ok := groups[cmd.name]; ok {
		fmt.Fprintln(w, "\nSubcommands:")
		for _, s := range subs {
			sub := commands[cmd.name+" "+s]
			fmt.Fprintf(w, "  ledgerctl %s %s  %s\n", sub.name, sub.synopsis, sub.summary)
		}
	}
	printFlags := func(title string, global bool) {
		var lines [][2]string
		fs.VisitAll(func(f *flag.Flag) {
			if globalFlags[f.Name] != global {
				return
			}
			name, usage := flag.UnquoteUsage(f)
			left := "--" + f.Name
			if name != "" && !isBoolFlag(f) {
				left += " " + name
			}
			if f.DefValue != "" && f.DefValue != "false" && !global {
				usage += fmt.Sprintf(" (default %s)", f.DefValue)
			}
			lines = append(lines, [2]string{left, usage})
		})
		if global {
			lines = append(lines, [2]string{"-h, --help", "show this help"})
		}
		if len(lines) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s:\n", title)
		tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
		for _, l := range lines {
			fmt.Fprintf(tw, "  %s\t%s\n", l[0], l[1])
		}
		tw.Flush()
	}
	printFlags("Flags", false)
	printFlags("Global flags", true)
	if len(cmd.examples) > 0 {
		fmt.Fprintln(w, "\nExamples:")
		for _, e := range cmd.examples {
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
}
