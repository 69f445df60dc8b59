package ids

import (
	"strings"
	"testing"
	"time"
)

func TestNewIsPrefixedSortableAndUnique(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g := Generator{Now: func() time.Time { return now }}
	seen := map[string]bool{}
	prev := ""
	for i := range 1000 {
		if i%100 == 0 {
			now = now.Add(time.Millisecond)
		}
		id := g.New("acc")
		if !strings.HasPrefix(id, "acc_") || len(id) != 4+26 {
			t.Fatalf("id %q: want acc_ + 26 chars", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %s", id)
		}
		seen[id] = true
		if i%100 == 0 && id[:14] <= prev[:min(len(prev), 14)] {
			t.Fatalf("id %s does not sort after %s though created later", id, prev)
		}
		prev = id
	}
}
