//go:build linux

package pgembed

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// unprivUser is who postgres runs as when ledgerd is root, since initdb and
// postgres refuse to run as root.
type unprivUser struct {
	name   string
	uid    uint32
	gid    uint32
	groups []uint32
}

// lookupRunAs returns nil when ledgerd is not root: postgres then simply
// runs as the same user.
func lookupRunAs(name string) (*unprivUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	candidates := []string{"postgres", "nobody"}
	if name != "" {
		candidates = []string{name}
	}
	for _, n := range candidates {
		u, err := user.Lookup(n)
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) && name == "" {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("pgembed: user %q to run postgres as: %w", n, err)
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("pgembed: user %q has non-numeric ids %s:%s", n, u.Uid, u.Gid)
		}
		if uid == 0 {
			return nil, fmt.Errorf("pgembed: user %q has uid 0; postgres needs an unprivileged user", n)
		}
		pu := &unprivUser{name: n, uid: uint32(uid), gid: uint32(gid)}
		ids, _ := u.GroupIds() // supplementary groups are a nicety
		for _, id := range ids {
			if g, err := strconv.ParseUint(id, 10, 32); err == nil {
				pu.groups = append(pu.groups, uint32(g))
			}
		}
		return pu, nil
	}
	return nil, fmt.Errorf("pgembed: running as root, but neither user %q exists to run postgres as; create one or set Config.RunAs", candidates)
}

func sysProcAttr(u *unprivUser, deathSig syscall.Signal) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Pdeathsig: deathSig, Setpgid: true}
	if u != nil {
		attr.Credential = &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}
	}
	return attr
}

func (u *unprivUser) inGroup(gid uint32) bool {
	if gid == u.gid {
		return true
	}
	for _, g := range u.groups {
		if g == gid {
			return true
		}
	}
	return false
}

// checkTraversable reports the first directory on the way to dir that u
// cannot enter. Fixing it is the operator's call, not ours.
func checkTraversable(dir string, u *unprivUser) error {
	for p := dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("pgembed: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		var bit uint32 = 0o001
		switch {
		case st.Uid == u.uid:
			bit = 0o100
		case u.inGroup(st.Gid):
			bit = 0o010
		}
		if st.Mode&bit == 0 {
			return fmt.Errorf("pgembed: directory %s is not traversable by user %s (uid %d), who runs the embedded postgres because ledgerd runs as root; allow it (e.g. chmod o+x %s) or put the data directory elsewhere",
				p, u.name, u.uid, p)
		}
		if filepath.Dir(p) == p {
			return nil
		}
	}
}

// chownTree hands root's files in the cluster to u, touching only what
// needs it.
func chownTree(root string, u *unprivUser) error {
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == u.uid && st.Gid == u.gid {
			return nil
		}
		return os.Lchown(path, int(u.uid), int(u.gid))
	})
	if err != nil {
		return fmt.Errorf("pgembed: handing %s to user %s: %w", root, u.name, err)
	}
	return nil
}

// lockDir takes an exclusive flock that the kernel drops when ledgerd dies,
// however it dies. flock (unlike fcntl locks) also excludes a second Server
// in the same process.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pgembed: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("pgembed: %s is in use by another embedded postgres (another ledgerd, or a second Start in this process)", filepath.Dir(path))
		}
		return nil, fmt.Errorf("pgembed: lock %s: %w", path, err)
	}
	return f, nil
}

// postmasterAlive reports whether pid is a live postgres whose working
// directory is dataDir (postgres chdirs into its data directory), so that a
// recycled pid is never mistaken for our server.
func postmasterAlive(pid int, dataDir string) bool {
	proc := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(proc + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may itself
	// contain parentheses.
	if i := strings.LastIndexByte(string(stat), ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' {
		return false
	}
	comm, err := os.ReadFile(proc + "/comm")
	if err != nil {
		return false
	}
	if c := strings.TrimSpace(string(comm)); c != "postgres" && c != "postmaster" {
		return false
	}
	cwd, err := os.Readlink(proc + "/cwd")
	if err != nil {
		return false
	}
	want, err := filepath.EvalSymlinks(dataDir)
	if err != nil {
		want = dataDir
	}
	return cwd == want
}

func signalPid(pid int, sig syscall.Signal) error {
	return syscall.Kill(pid, sig)
}

// killGroup signals the process group led by pid (see Setpgid).
func killGroup(pid int, sig syscall.Signal) error {
	return syscall.Kill(-pid, sig)
}
