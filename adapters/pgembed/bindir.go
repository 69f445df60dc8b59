package pgembed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FindBinDir locates a directory holding the Postgres server binaries
// (initdb and postgres). It tries, in order: $LEDGER_PG_BINDIR,
// `pg_config --bindir`, /usr/lib/postgresql/*/bin (highest version first),
// and the directory of initdb on PATH.
func FindBinDir() (string, error) {
	return findBinDir("")
}

// findBinDir is FindBinDir, preferring the Debian directory of the given
// major version so that installing a newer postgresql package alongside
// does not strand an existing cluster.
func findBinDir(preferMajor string) (string, error) {
	// An explicit setting that is wrong should fail loudly, not be
	// replaced by whatever else happens to be installed.
	if d := os.Getenv("LEDGER_PG_BINDIR"); d != "" {
		if err := checkBinDir(d); err != nil {
			return "", fmt.Errorf("pgembed: LEDGER_PG_BINDIR: %w", err)
		}
		return d, nil
	}

	var tried []string
	try := func(what, dir string) bool {
		err := checkBinDir(dir)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", what, err))
		}
		return err == nil
	}

	if preferMajor != "" {
		d := filepath.Join("/usr/lib/postgresql", preferMajor, "bin")
		if try("cluster version "+preferMajor, d) {
			return d, nil
		}
	}

	// On Debian, pg_config may come from the client-only package and name
	// a directory without initdb, hence the check.
	if pgConfig, err := exec.LookPath("pg_config"); err != nil {
		tried = append(tried, "pg_config: not on PATH")
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := exec.CommandContext(ctx, pgConfig, "--bindir").Output()
		cancel()
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s --bindir: %v", pgConfig, err))
		} else if d := strings.TrimSpace(string(out)); try(pgConfig+" --bindir", d) {
			return d, nil
		}
	}

	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		return compareVersions(filepath.Base(filepath.Dir(b)), filepath.Base(filepath.Dir(a)))
	})
	for _, d := range dirs {
		if try("/usr/lib/postgresql/*/bin", d) {
			return d, nil
		}
	}
	if len(dirs) == 0 {
		tried = append(tried, "/usr/lib/postgresql/*/bin: none")
	}

	if initdb, err := exec.LookPath("initdb"); err != nil {
		tried = append(tried, "initdb: not on PATH")
	} else {
		d := filepath.Dir(initdb)
		if try("PATH", d) {
			return d, nil
		}
		// A symlinked initdb may live apart from its postgres.
		if real, err := filepath.EvalSymlinks(initdb); err == nil && filepath.Dir(real) != d {
			if try("PATH (resolved)", filepath.Dir(real)) {
				return filepath.Dir(real), nil
			}
		}
	}

	return "", fmt.Errorf("pgembed: no PostgreSQL server binaries (initdb, postgres) found; tried:\n  %s\ninstall them with `apt-get install postgresql`, set LEDGER_PG_BINDIR, or set DATABASE_URL to use an external server",
		strings.Join(tried, "\n  "))
}

// checkBinDir reports why dir cannot run a cluster, or nil if it can.
func checkBinDir(dir string) error {
	for _, name := range []string{"initdb", "postgres"} {
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%s has no %s", dir, name)
			}
			return err
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s is not an executable file", p)
		}
	}
	return nil
}

// compareVersions orders directory names like "9.6", "15" and "16"
// numerically; non-numeric parts sort first.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(as), len(bs)); i++ {
		var x, y int = -1, -1
		if i < len(as) {
			if n, err := strconv.Atoi(as[i]); err == nil {
				x = n
			}
		}
		if i < len(bs) {
			if n, err := strconv.Atoi(bs[i]); err == nil {
				y = n
			}
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return strings.Compare(a, b)
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("pgembed: generating password: %w", err)
	}
	return hex.EncodeToString(b), nil
}
