package aggregates

import (
	"sync"
	"time"
)

// Turns for an aggregate written hard by several instances. Without them
// an instance that always has an append in flight wins every race for a
// hot account: the loser reloads what it missed, decides again, and by
// then the winner's next append is ahead of it, so its calls wait seconds
// and are then refused as "too many conflicts". With them, a loser asks
// the others for a turn (Turns.Ask); each holds its next append to that
// aggregate back (Yield) until the loser says it is done (Turns.Done,
// after its commit is stored or it gives up; TurnTaken here), until
// another writer's commit is seen, or for yieldWindow at most.

// Turns carries a repository's requests for a turn to the other
// instances. Both calls must not block: they are made while a batch is
// being committed.
type Turns interface {
	// Ask: this instance lost a race for id and asks the others to yield.
	Ask(id string)
	// Done: the batch that asked has been stored, or has given up.
	Done(id string)
}

// askAfter is how many races in a row a batch loses before it asks for a
// turn. Two writers of one account collide now and then and get through
// on the next try; asking at once made the other instance hold back far
// more often than anyone starved, and the calls of both waited for it.
const askAfter = 3

// yieldWindow bounds how long a writer holds an append back for one
// request: a reload and an append on a replicated stream, with room. The
// wait normally ends well before, when the asker is done.
const yieldWindow = 200 * time.Millisecond

// askers are the instances waiting for a turn at one aggregate, with when
// each request lapses.
type askers struct {
	mu    sync.Mutex
	until map[string]time.Time
	wake  chan struct{} // signalled when a request ends or a commit is seen
}

func (a *askers) add(who string, until time.Time) {
	a.mu.Lock()
	if a.until == nil {
		a.until = map[string]time.Time{}
	}
	a.until[who] = until
	a.mu.Unlock()
}

func (a *askers) remove(who string) {
	a.mu.Lock()
	delete(a.until, who)
	a.mu.Unlock()
	a.nudge()
}

func (a *askers) clear() {
	a.mu.Lock()
	clear(a.until)
	a.mu.Unlock()
}

// next is when the last live request lapses; false if none is live.
func (a *askers) next(now time.Time) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var last time.Time
	for who, until := range a.until {
		if !until.After(now) {
			delete(a.until, who)
		} else if until.After(last) {
			last = until
		}
	}
	return last, !last.IsZero()
}

func (a *askers) nudge() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Yield holds this repository's next append to id back: instance asker
// lost a race for id and asks for a turn. An aggregate this instance has
// not cached is not being written here; nothing to do.
func (r *Repo[S, E]) Yield(id, asker string) {
	if e := r.cached(id); e != nil {
		e.askers.add(asker, time.Now().Add(yieldWindow))
	}
}

// TurnTaken ends asker's request for a turn at id (see Yield).
func (r *Repo[S, E]) TurnTaken(id, asker string) {
	if e := r.cached(id); e != nil {
		e.askers.remove(asker)
	}
}

func (r *Repo[S, E]) cached(id string) *entry[S, E] {
	r.mu.Lock()
	defer r.mu.Unlock()
	if el, ok := r.entries[id]; ok {
		return el.Value.(*entry[S, E])
	}
	return nil
}

// holdBack waits while other instances wait for a turn at e, and tells
// whether another writer's commit was seen meanwhile (the state must then
// be reloaded). Only a batch's first try holds back: a batch that has
// lost a race needs a turn as much as the askers. e.mu is held: commands
// arriving meanwhile join the next batch.
func (r *Repo[S, E]) holdBack(e *entry[S, E]) bool {
	until, ok := e.askers.next(time.Now())
	if !ok {
		return false
	}
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	for !e.stale() {
		select {
		case <-e.askers.wake:
			if _, ok := e.askers.next(time.Now()); !ok {
				return e.stale()
			}
		case <-t.C:
			e.askers.clear()
			return e.stale()
		}
	}
	return true
}
