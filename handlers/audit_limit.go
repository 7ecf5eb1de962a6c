package handlers

import (
	"context"
	"errors"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"golang.org/x/sync/semaphore"
)

// DefaultAuditConns is how many database connections the audit reads may
// hold at once unless Deps.AuditConns says otherwise.
const DefaultAuditConns = 8

// DefaultExportIdleTimeout is how long an export may go without its client
// taking a byte before it is aborted, unless Deps.ExportIdleTimeout says
// otherwise.
const DefaultExportIdleTimeout = 30 * time.Second

// auditQueueWait is how long an audit read waits for a free slot before it
// is refused with 503 + Retry-After.
const auditQueueWait = 2 * time.Second

// auditSlots bounds the connections of the web pool that the audit reads
// hold at once: exports and verifications (which last as long as the
// ledger, or the client, makes them), history pages and per-user audit
// views. The pool's other connections stay free for sessions, /api/me, the
// signed-in page and the auditors' role look-ups, however many audit reads
// are waiting or stalled. (Ingest and the projectors have a pool of their
// own.) It is safe for concurrent use.
type auditSlots struct {
	sem  *semaphore.Weighted
	size int64
	wait time.Duration
}

// newAuditSlots returns n slots (at least 1) that a reader waits for at
// most `wait`.
func newAuditSlots(n int, wait time.Duration) *auditSlots {
	n = max(1, n)
	return &auditSlots{sem: semaphore.NewWeighted(int64(n)), size: int64(n), wait: wait}
}

// auditConns is the slot count for d: d.AuditConns, or DefaultAuditConns
// but at most half of the pool's connections.
func auditConns(d Deps) int {
	if d.AuditConns > 0 {
		return d.AuditConns
	}
	n := DefaultAuditConns
	if d.DB != nil {
		if open := d.DB.Stats().MaxOpenConnections; open > 0 {
			n = min(n, max(1, open/2))
		}
	}
	return n
}

// acquire takes n slots (capped at all of them) for one read and returns
// the function that gives them back. It waits at most s.wait: then it
// returns EUNAVAILABLE (503 + Retry-After, the client tries again later);
// when ctx ends first it returns ctx's error.
func (s *auditSlots) acquire(ctx context.Context, n int64) (release func(), err error) {
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

// verifyParts is how many ranges a verification checks at once within
// slots (at most half of them, so exports and history pages still run
// beside it), and how many slots (connections) it takes: one range runs on
// the snapshot's own connection, more take one connection each besides it.
func verifyParts(slots *auditSlots) (parts int, weight int64) {
	parts = min(runtime.GOMAXPROCS(0), int(slots.size)/2)
	if parts < 2 {
		return 1, 1
	}
	return parts, int64(parts) + 1
}

// progressWriter writes a streamed response with a write deadline renewed
// before each piece of at most progressChunk bytes: a client that takes no
// bytes for idle fails the write (which also cancels the request's
// context), so a stalled reader cannot hold the stream's transaction and
// connection for longer than that.
type progressWriter struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

const progressChunk = 16 << 10

func newProgressWriter(w http.ResponseWriter, idle time.Duration) *progressWriter {
	return &progressWriter{w: w, rc: http.NewResponseController(w), idle: idle}
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		piece := b[:min(len(b), progressChunk)]
		// ErrNotSupported (a ResponseWriter without a connection, as in
		// in-process tests) leaves the write without a deadline.
		_ = p.rc.SetWriteDeadline(time.Now().Add(p.idle))
		m, err := p.w.Write(piece)
		n += m
		if err != nil {
			return n, err
		}
		b = b[m:]
	}
	return n, nil
}

// stalled reports whether err is a write that hit its deadline: the client
// stopped taking bytes.
func stalled(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
