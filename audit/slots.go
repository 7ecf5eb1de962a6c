package audit

import (
	"context"
	"runtime"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"golang.org/x/sync/semaphore"
)

// DefaultConns is how many database connections the audit reads may hold
// at once unless Config.Conns says otherwise.
const DefaultConns = 8

// defaultQueueWait is how long an audit read waits for a free slot before
// it is refused with EUNAVAILABLE (503 + Retry-After over HTTP).
const defaultQueueWait = 2 * time.Second

// slots bounds the connections the audit reads hold at once: exports and
// verifications (which last as long as the ledger, or the client, makes
// them), history pages and per-user views. The pool's other connections stay
// free for sessions, /api/me, the signed-in page and the auditors' role
// look-ups, however many audit reads are waiting or stalled. (Ingest and the
// projectors have a pool of their own.) It is safe for concurrent use.
type slots struct {
	sem  *semaphore.Weighted
	size int64
	wait time.Duration
}

// newSlots returns n slots (at least 1) that a reader waits for at most
// `wait`.
func newSlots(n int, wait time.Duration) *slots {
	n = max(1, n)
	return &slots{sem: semaphore.NewWeighted(int64(n)), size: int64(n), wait: wait}
}

// acquire takes n slots (capped at all of them) for one read and returns
// the function that gives them back. It waits at most s.wait: then it
// returns EUNAVAILABLE (the client tries again later); when ctx ends first
// it returns ctx's error.
func (s *slots) acquire(ctx context.Context, n int64) (release func(), err error) {
	n = min(max(1, n), s.size)
	wctx, cancel := context.WithTimeout(ctx, s.wait)
	defer cancel()
	if err := s.sem.Acquire(wctx, n); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, domain.Errorf(domain.EUNAVAILABLE, "%d audit reads are running (exports, verifications, history); try again shortly", s.size)
	}
	return func() { s.sem.Release(n) }, nil
}

// verifyParts is how many ranges a verification checks at once within the
// slots (at most half of them, so exports and history pages still run
// beside it), and how many slots (connections) it takes: one range runs on
// the snapshot's own connection, more take one connection each besides it.
func (s *slots) verifyParts() (parts int, weight int64) {
	parts = min(runtime.GOMAXPROCS(0), int(s.size)/2)
	if parts < 2 {
		return 1, 1
	}
	return parts, int64(parts) + 1
}
