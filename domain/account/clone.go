package account

import (
	"maps"
	"slices"
)

// Clone returns a deep copy of the aggregate that shares nothing mutable
// with it. The command side keeps one of a contended account's last
// stored state: after losing a race it catches that copy up with what the
// other writer appended instead of folding the account's whole history
// again, which for a hot account grows by thousands of events a minute.
func (a *Account) Clone() *Account {
	c := *a
	c.grants = cloneEach(a.grants, func(g *Grant) *Grant { x := *g; return &x })
	if a.sub != nil {
		s := *a.sub
		c.sub = &s
	}
	c.topUps = maps.Clone(a.topUps)
	c.keys = cloneEach(a.keys, cloneKey)
	c.keyOrder = slices.Clone(a.keyOrder)
	c.holds = cloneEach(a.holds, cloneHold)
	c.idem = maps.Clone(a.idem)
	c.idemOrder = slices.Clone(a.idemOrder)
	// An open key names one of the holds: the copy names the copy's.
	if a.openKeys != nil {
		c.openKeys = make(map[string]*Hold, len(a.openKeys))
		for k, h := range a.openKeys {
			if a.holds[h.TaskID] == h {
				c.openKeys[k] = c.holds[h.TaskID]
			} else {
				c.openKeys[k] = cloneHold(h)
			}
		}
	}
	c.usage = cloneEach(a.usage, func(u *keyUsage) *keyUsage { x := *u; return &x })
	if a.alerts.threshold != nil {
		t := *a.alerts.threshold
		c.alerts.threshold = &t
	}
	return &c
}

func cloneEach[V any](m map[string]V, clone func(V) V) map[string]V {
	if m == nil {
		return nil
	}
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[k] = clone(v)
	}
	return out
}

func cloneKey(k *Key) *Key {
	x := *k
	x.Scopes = slices.Clone(k.Scopes)
	x.Allowlist = slices.Clone(k.Allowlist)
	if k.Quota.Spend != nil {
		s := *k.Quota.Spend
		x.Quota.Spend = &s
	}
	if k.ExpiresAt != nil {
		t := *k.ExpiresAt
		x.ExpiresAt = &t
	}
	return &x
}

func cloneHold(h *Hold) *Hold {
	x := *h
	x.Grants = slices.Clone(h.Grants)
	return &x
}
