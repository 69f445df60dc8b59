package app

import (
	"os"
	"runtime/debug"
)

// TuneRuntime sets the garbage collector for a ledger server: a larger
// heap target (GOGC=400) trades memory, which such a machine has, for less
// collection on the charge path, which was a sixth of its CPU. An operator's
// GOGC or GOMEMLIMIT wins, and the soft memory limit keeps the heap from
// growing without bound.
func TuneRuntime() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(4 << 30)
	}
}
