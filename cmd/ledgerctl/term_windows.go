//go:build windows

package main

import "syscall"

const enableEchoInput = 0x0004

var setConsoleMode = syscall.NewLazyDLL("kernel32.dll").NewProc("SetConsoleMode")

func isTerminalFd(fd uintptr) bool {
	var mode uint32
	return syscall.GetConsoleMode(syscall.Handle(fd), &mode) == nil
}

// echoOff stops the console echoing what is typed until restore is called.
func echoOff(fd uintptr) (restore func(), err error) {
	var mode uint32
	if err := syscall.GetConsoleMode(syscall.Handle(fd), &mode); err != nil {
		return nil, err
	}
	if r, _, e := setConsoleMode.Call(fd, uintptr(mode&^enableEchoInput)); r == 0 {
		return nil, e
	}
	return func() { _, _, _ = setConsoleMode.Call(fd, uintptr(mode)) }, nil
}
