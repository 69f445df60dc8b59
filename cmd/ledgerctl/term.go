package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// terminal returns r as a file if it is a terminal.
func terminal(r any) (*os.File, bool) {
	f, ok := r.(*os.File)
	if !ok || f == nil {
		return nil, false
	}
	return f, isTerminalFd(f.Fd())
}

// readLine reads up to a newline, a byte at a time, so that nothing past
// the line is consumed.
func readLine(r io.Reader) (string, error) {
	var sb strings.Builder
	b := make([]byte, 1)
	for {
		n, err := r.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				return strings.TrimSuffix(sb.String(), "\r"), nil
			}
			sb.WriteByte(b[0])
			if sb.Len() > 4096 {
				return "", errors.New("input line too long")
			}
		}
		if err == io.EOF {
			if sb.Len() == 0 {
				return "", io.ErrUnexpectedEOF
			}
			return strings.TrimSuffix(sb.String(), "\r"), nil
		}
		if err != nil {
			return "", err
		}
	}
}

// readPassword prompts on prompt and reads a line from the terminal tty
// without echoing it. Ctrl-C (ctx) restores the terminal and gives up.
func readPassword(ctx context.Context, tty *os.File, prompt io.Writer) (string, error) {
	fmt.Fprint(prompt, "Password: ")
	restore, err := echoOff(tty.Fd())
	if err != nil {
		return "", fmt.Errorf("turning terminal echo off: %w", err)
	}
	type line struct {
		s   string
		err error
	}
	done := make(chan line, 1)
	go func() {
		s, err := readLine(tty)
		done <- line{s, err}
	}()
	select {
	case l := <-done:
		restore()
		fmt.Fprintln(prompt)
		return l.s, l.err
	case <-ctx.Done():
		restore()
		fmt.Fprintln(prompt)
		return "", ctx.Err()
	}
}
