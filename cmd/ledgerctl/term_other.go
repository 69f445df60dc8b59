//go:build !linux && !darwin && !freebsd && !netbsd && !dragonfly && !windows

package main

import "errors"

// Elsewhere ledgerctl cannot turn echo off, so it never prompts for a
// password: login then needs --password-stdin.
func isTerminalFd(uintptr) bool { return false }

func echoOff(uintptr) (func(), error) { return nil, errors.New("cannot turn terminal echo off here") }
