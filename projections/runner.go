package projections

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
)

// Projector builds one read model from the ledger. The Runner calls Apply
// with the next events in ledger order inside the transaction that also
// moves the projector's checkpoint, so whatever Apply writes in tx is
// committed exactly once with it, or not at all.
type Projector interface {
	// Name is the projector's stable name: its checkpoint row and lock.
	Name() string
	// Types lists the event types the projector reads; nil means all.
	Types() []string
	// Apply applies events (the next ones in ledger order, possibly none)
	// inside tx. It returns the events it could not apply and skipped
	// (poison events, e.g. a user.updated whose data does not decode);
	// the Runner records them in the same transaction. An error means the
	// batch is not applied. When it is PostgreSQL refusing what Apply
	// writes (schema.Refused: a data error caused by the rows), the Runner
	// rolls back to a savepoint, applies smaller runs of the batch to find
	// the events whose rows are refused and records those as poison (see
	// applyIsolated); any other error rolls the whole batch back and the
	// Runner retries it later. So Apply must give the same read model for
	// any split of the ledger into batches.
	Apply(ctx context.Context, tx *sqlx.Tx, events []domain.Event) ([]Failure, error)
}

// gapless is implemented by a projector whose read model must cover every
// event, so that the Runner never skips one as poison (the tree sealer):
// every error of its batches is retried, refused rows included.
type gapless interface{ gapless() }

// leafReader is implemented by a projector that reads every event for its
// leaf or its metadata only (the tree sealer, the workspace's counts): the
// Runner reads its batches with schema.ReadLeafBatch, so no sealed body is
// read or opened for it.
type leafReader interface{ leavesOnly() }

// batchReader is implemented by a projector that reads its batches itself
// (the users projector, taking the bodies its process just stored).
type batchReader interface {
	readBatch(ctx context.Context, tx *sqlx.Tx, cp schema.Cursor, limit int) (schema.Batch, error)
}

// readBatch reads p's next batch after cp: its types, only the leaves of a
// leafReader, or as a batchReader reads it.
func readBatch(ctx context.Context, tx *sqlx.Tx, p Projector, cp schema.Cursor, limit int) (schema.Batch, error) {
	if r, ok := p.(batchReader); ok {
		return r.readBatch(ctx, tx, cp, limit)
	}
	if _, ok := p.(leafReader); ok {
		return schema.ReadLeafBatch(ctx, tx, cp, limit)
	}
	return schema.ReadBatch(ctx, tx, cp, p.Types(), limit)
}

// Failure is a poison event a projector skipped.
type Failure struct {
	Position   int64
	DeliveryID string
	Err        error
}

// Runner runs projectors against the ledger, each in its own goroutine, one
// batch per transaction:
//
//	BEGIN; pg_try_advisory_xact_lock('projector:'||name); read checkpoint;
//	read next events (xid8 gate); Apply (in a savepoint: applyIsolated);
//	record poison events; move checkpoint (compare-and-set); COMMIT
//
// A poison event (one the projector cannot decode, or whose row PostgreSQL
// refuses) is recorded and skipped, and the rest of its batch commits; any
// other error rolls the batch back and it is retried with backoff.
//
// A batch commits whole or not at all, so an event is applied exactly once
// also across crashes, and any number of Runners (processes) may run the
// same projectors on one database: the advisory lock lets one work at a time
// and the compare-and-set on the checkpoint rejects a batch that raced. An
// advisory lock takes no transaction id, so an idle projector never holds
// back the xid8 gate of other readers.
type Runner struct {
	db         *sqlx.DB
	log        *slog.Logger
	projectors []Projector

	// BatchSize is the most events one batch reads (default 2000).
	BatchSize int
	// Idle is how long a caught-up projector waits before polling again
	// (default 100 ms). A full batch is followed by the next at once.
	Idle time.Duration
	// MaxBackoff caps the wait after a failed batch (default 5 s); the wait
	// doubles from Idle on each failure in a row.
	MaxBackoff time.Duration
}

// NewRunner returns a Runner for projectors on db. log may be nil.
func NewRunner(db *sqlx.DB, log *slog.Logger, projectors ...Projector) *Runner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{db: db, log: log, projectors: projectors, BatchSize: 2000, Idle: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}
}

// Projectors returns the projectors the Runner runs.
func (r *Runner) Projectors() []Projector { return r.projectors }

// Run runs every projector until ctx ends, retrying failed batches (and a
// database that is down) with backoff; it returns when ctx ends.
func (r *Runner) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range r.projectors {
		wg.Go(func() { r.loop(ctx, p) })
	}
	wg.Wait()
}

func (r *Runner) loop(ctx context.Context, p Projector) {
	log := r.log.With("projector", p.Name())
	log.Info("projector started")
	fails := 0
	ensured := false
	for {
		var res StepResult
		var err error
		if !ensured {
			err = EnsureCheckpoint(ctx, r.db, p.Name())
			ensured = err == nil
		}
		if ensured {
			res, err = r.Step(ctx, p)
		}
		wait := r.Idle
		switch {
		case ctx.Err() != nil:
			log.Info("projector stopped")
			return
		case err != nil:
			fails++
			wait = min(r.Idle<<min(fails, 10), r.MaxBackoff)
			log.Error("projector batch failed; retrying", "err", err, "failures_in_row", fails, "retry_in_ms", wait.Milliseconds())
			r.recordError(ctx, p.Name(), err)
		case res.Full:
			fails = 0
			continue
		default:
			fails = 0
		}
		select {
		case <-ctx.Done():
			log.Info("projector stopped")
			return
		case <-time.After(wait):
		}
	}
}

// recordError stores err as the projector's last error, for status. It is
// best effort: when the database is down this fails too.
func (r *Runner) recordError(ctx context.Context, name string, err error) {
	_ = schema.RecordProjectorError(ctx, r.db, name, errorText(err))
}

// maxErrorText is the most bytes of an error message stored for status.
const maxErrorText = 2000

// errorText is err's message as it is stored: storable text (an error may
// quote what an event holds, NUL included, and the record of a poison event
// must never fail itself), at most maxErrorText bytes.
func errorText(err error) string {
	s := err.Error()
	if len(s) > maxErrorText {
		s = s[:maxErrorText] + "…" // a cut rune becomes U+FFFD below
	}
	return domain.StorableText(s)
}

// applyIsolated applies events with p.Apply inside tx, isolating the events
// whose rows PostgreSQL refuses (schema.Refused): the batch runs inside a
// savepoint; when it is refused, it is rolled back to the savepoint and its
// two halves are applied the same way, one after the other in ledger order,
// down to single events. A single event still refused is returned as a
// Failure (a poison event, recorded like one that does not decode); every
// other event is applied, in runs as long as possible. With k poison events
// in a batch of n this takes O(k log n) extra Apply calls, and none when
// nothing is refused; a refusal that no single event causes (only events
// together) ends with every event applied in shorter runs. Any error that is not a refusal (the database down,
// a cancelled context, a bug) is returned as is, for the caller to roll the
// whole batch back and retry.
//
// Because the split only changes batch boundaries, which every projector
// must be indifferent to, the outcome equals applying the non-poison events
// in any batches. For the users projector, a rebuild and check use the same
// function (see Users.loadFolded), so they isolate the same rows. A gapless
// projector gets p.Apply as is: it never skips an event.
func applyIsolated(ctx context.Context, tx *sqlx.Tx, p Projector, events []domain.Event) ([]Failure, error) {
	if _, ok := p.(gapless); ok || len(events) == 0 {
		return p.Apply(ctx, tx, events)
	}
	if _, err := tx.ExecContext(ctx, `SAVEPOINT apply_isolated`); err != nil {
		return nil, fmt.Errorf("savepoint: %w", schema.Classify(err))
	}
	fs, err := p.Apply(ctx, tx, events)
	if err == nil {
		if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT apply_isolated`); err != nil {
			return nil, fmt.Errorf("release savepoint: %w", schema.Classify(err))
		}
		return fs, nil
	}
	if !schema.Refused(err) {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT apply_isolated; RELEASE SAVEPOINT apply_isolated`); err != nil {
		return nil, fmt.Errorf("roll back to savepoint: %w", schema.Classify(err))
	}
	if len(events) == 1 {
		e := events[0]
		return []Failure{{Position: e.Position, DeliveryID: e.DeliveryID,
			Err: fmt.Errorf("event %d (%s): the database refuses what it projects to: %w", e.Position, e.Type, err)}}, nil
	}
	mid := len(events) / 2
	left, err := applyIsolated(ctx, tx, p, events[:mid])
	if err != nil {
		return nil, err
	}
	right, err := applyIsolated(ctx, tx, p, events[mid:])
	if err != nil {
		return nil, err
	}
	return append(left, right...), nil
}

// StepResult tells what one batch did.
type StepResult struct {
	Busy    bool // another process holds the projector's lock; nothing done
	Read    int  // events read and applied or skipped
	Failed  int  // poison events among them
	Full    bool // the batch was full: more events are probably waiting
	Advance bool // the checkpoint moved
}

// ErrCheckpointMoved is returned by Step when the checkpoint changed under
// the batch (a concurrent runner without the lock); the batch was rolled back.
var ErrCheckpointMoved = schema.ErrCheckpointMoved

// Step runs one batch of p in one transaction (see Runner) and reports what
// it did. On error nothing of the batch is committed.
func (r *Runner) Step(ctx context.Context, p Projector) (StepResult, error) {
	tx, err := r.db.BeginTxx(ctx, nil)
	if err != nil {
		return StepResult{}, fmt.Errorf("projector %s: begin: %w", p.Name(), schema.Classify(err))
	}
	defer tx.Rollback()
	locked, err := schema.TryProjectorLock(ctx, tx, p.Name())
	if err != nil {
		return StepResult{}, err
	}
	if !locked {
		return StepResult{Busy: true}, nil
	}
	// Shared with every other batch, exclusive to an erasure: no erasure
	// commits between this batch's read and its writes.
	if err := schema.LockErasuresShared(ctx, tx); err != nil {
		return StepResult{}, err
	}
	cp, found, err := schema.ReadCheckpoint(ctx, tx, p.Name())
	if err != nil {
		return StepResult{}, err
	}
	if !found {
		return StepResult{}, fmt.Errorf("projector %s has no checkpoint (EnsureCheckpoint first)", p.Name())
	}
	batch, err := readBatch(ctx, tx, p, cp, r.BatchSize)
	if err != nil {
		return StepResult{}, fmt.Errorf("projector %s: %w", p.Name(), err)
	}
	res := StepResult{Read: len(batch.Events), Full: batch.Full}
	if batch.Next == cp {
		return res, nil // nothing new: no write, no transaction id
	}
	failures, err := applyIsolated(ctx, tx, p, batch.Events)
	if err != nil {
		return StepResult{}, fmt.Errorf("projector %s: apply %d events after %s: %w", p.Name(), len(batch.Events), cp, err)
	}
	if err := recordFailures(ctx, tx, p.Name(), failures); err != nil {
		return StepResult{}, err
	}
	for _, f := range failures {
		r.log.Warn("poison event skipped", "projector", p.Name(), "position", f.Position, "delivery_id", f.DeliveryID, "err", f.Err)
	}
	res.Failed = len(failures)
	if err := schema.MoveCheckpoint(ctx, tx, p.Name(), cp, batch.Next, len(batch.Events)-len(failures), len(failures)); err != nil {
		return StepResult{}, err
	}
	if err := tx.Commit(); err != nil {
		return StepResult{}, fmt.Errorf("projector %s: commit: %w", p.Name(), schema.Classify(err))
	}
	res.Advance = true
	return res, nil
}

// CatchUp runs batches of every projector until each has applied every
// event below the gate as of its last batch. A projector busy in another
// process is waited for. It is for tools and tests; services use Run.
func (r *Runner) CatchUp(ctx context.Context) error {
	for _, p := range r.projectors {
		if err := EnsureCheckpoint(ctx, r.db, p.Name()); err != nil {
			return err
		}
		for {
			res, err := r.Step(ctx, p)
			if err != nil {
				return err
			}
			if res.Busy {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(10 * time.Millisecond):
				}
				continue
			}
			if !res.Full {
				break
			}
		}
	}
	return nil
}

// EnsureCheckpoint creates the checkpoint row of projector name (at the
// start of the ledger) when it does not exist.
func EnsureCheckpoint(ctx context.Context, db schema.Execer, name string) error {
	return schema.EnsureCheckpoint(ctx, db, name)
}

// recordFailures stores poison events in projection_failures; one already
// recorded (a rebuild finding it again) is kept as it is. Messages are
// stored as errorText, so recording cannot be refused itself.
func recordFailures(ctx context.Context, tx *sqlx.Tx, name string, fs []Failure) error {
	recs := make([]schema.FailureRecord, len(fs))
	for i, f := range fs {
		recs[i] = schema.FailureRecord{Position: f.Position, DeliveryID: domain.StorableText(f.DeliveryID), Error: errorText(f.Err)}
	}
	return schema.RecordFailures(ctx, tx, name, recs)
}
