//go:build linux || darwin || freebsd || netbsd || dragonfly

package main

import (
	"syscall"
	"unsafe"
)

func getTermios(fd uintptr) (syscall.Termios, error) {
	var t syscall.Termios
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, uintptr(ioctlGetTermios), uintptr(unsafe.Pointer(&t))); e != 0 {
		return t, e
	}
	return t, nil
}

func setTermios(fd uintptr, t *syscall.Termios) error {
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, uintptr(ioctlSetTermios), uintptr(unsafe.Pointer(t))); e != 0 {
		return e
	}
	return nil
}

func isTerminalFd(fd uintptr) bool {
	_, err := getTermios(fd)
	return err == nil
}

// echoOff stops the terminal echoing what is typed (lines and Ctrl-C still
// work) until restore is called.
func echoOff(fd uintptr) (restore func(), err error) {
	old, err := getTermios(fd)
	if err != nil {
		return nil, err
	}
	t := old
	t.Lflag &^= syscall.ECHO
	t.Lflag |= syscall.ICANON | syscall.ISIG
	t.Iflag |= syscall.ICRNL
	if err := setTermios(fd, &t); err != nil {
		return nil, err
	}
	return func() { _ = setTermios(fd, &old) }, nil
}
