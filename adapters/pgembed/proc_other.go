//go:build !linux

package pgembed

import (
	"errors"
	"os"
	"syscall"
)

// The embedded server relies on Linux process control (parent-death
// signal, /proc); elsewhere the package compiles but Start fails.
var errUnsupported = errors.New("pgembed: the embedded PostgreSQL server is supported on Linux only; set DATABASE_URL to use an external server")

type unprivUser struct {
	name     string
	uid, gid uint32
}

func lookupRunAs(string) (*unprivUser, error)                      { return nil, nil }
func sysProcAttr(*unprivUser, syscall.Signal) *syscall.SysProcAttr { return nil }
func checkTraversable(string, *unprivUser) error                   { return nil }
func chownTree(string, *unprivUser) error                          { return nil }
func lockDir(string) (*os.File, error)                             { return nil, errUnsupported }
func postmasterAlive(int, string) bool                             { return false }
func signalPid(int, syscall.Signal) error                          { return errUnsupported }
func killGroup(int, syscall.Signal) error                          { return errUnsupported }
