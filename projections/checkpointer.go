package projections

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"github.com/jmoiron/sqlx"
)

// DefaultCheckpointInterval is how often a Checkpointer signs a new tree head
// while the tree grows, unless told otherwise.
const DefaultCheckpointInterval = 5 * time.Second

// Checkpointer signs the tree head as a C2SP tlog-checkpoint note with the
// log's key and keeps it in log_checkpoints (append-only), at most once per
// Interval and only when the tree has grown since the latest one; with Dir
// set it also writes each one there (Dir/<tree size>.checkpoint, and
// Dir/latest replaced atomically), for syncing outside the operator's
// reach. Any number may run against one database (one signs at a time).
type Checkpointer struct {
	db     *sqlx.DB
	log    *slog.Logger
	signer *translog.Signer
	origin string
	// Dir, when not empty, receives a copy of each checkpoint kept.
	Dir string
	// Interval is how often Run looks (default DefaultCheckpointInterval).
	Interval time.Duration
}

// NewCheckpointer returns a Checkpointer signing with signer checkpoints of
// the log named origin (signer.Name() when empty). log may be nil.
func NewCheckpointer(db *sqlx.DB, log *slog.Logger, signer *translog.Signer, origin string) *Checkpointer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if origin == "" {
		origin = signer.Name()
	}
	return &Checkpointer{db: db, log: log, signer: signer, origin: origin, Interval: DefaultCheckpointInterval}
}

// Origin is the origin line of the checkpoints it signs.
func (c *Checkpointer) Origin() string { return c.origin }

// Sign signs and keeps a checkpoint of the tree as it is now, unless the
// tree is empty, has not grown since the latest kept checkpoint, or another
// signer is at it: then it returns the latest kept one (if any) and added
// false. Errors: EUNAVAILABLE when the database is down.
func (c *Checkpointer) Sign(ctx context.Context) (cp schema.LogCheckpoint, added bool, err error) {
	tx, err := c.db.BeginTxx(ctx, nil)
	if err != nil {
		return cp, false, fmt.Errorf("sign checkpoint: %w", schema.Classify(err))
	}
	defer tx.Rollback()
	locked, err := schema.LockCheckpoints(ctx, tx)
	if err != nil {
		return cp, false, err
	}
	latest, err := schema.LatestCheckpoint(ctx, tx)
	if err != nil && domain.ErrorCode(err) != domain.ENOTFOUND {
		return cp, false, err
	}
	if !locked {
		return latest, false, nil
	}
	head, err := schema.ReadTreeHead(ctx, tx)
	if err != nil {
		return cp, false, fmt.Errorf("sign checkpoint: %w", err)
	}
	if head.Size == 0 || head.Size <= latest.Size {
		return latest, false, nil
	}
	note, err := c.signer.Sign(translog.Checkpoint{Origin: c.origin, Size: head.Size, Root: head.Root})
	if err != nil {
		return cp, false, err
	}
	cp = schema.LogCheckpoint{Size: head.Size, Root: head.Root, Note: string(note)}
	if added, err = schema.AddCheckpoint(ctx, tx, cp); err != nil {
		return cp, false, err
	}
	if err := tx.Commit(); err != nil {
		return cp, false, fmt.Errorf("sign checkpoint: commit: %w", schema.Classify(err))
	}
	if added && c.Dir != "" {
		if err := c.write(cp); err != nil {
			return cp, true, err
		}
	}
	return cp, added, nil
}

// write puts cp in Dir as <size>.checkpoint and replaces Dir/latest.
func (c *Checkpointer) write(cp schema.LogCheckpoint) error {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return fmt.Errorf("LEDGER_CHECKPOINT_DIR: %w", err)
	}
	for _, name := range []string{strconv.FormatInt(cp.Size, 10) + ".checkpoint", "latest"} {
		if err := translog.WriteFile(filepath.Join(c.Dir, name), []byte(cp.Note)); err != nil {
			return fmt.Errorf("LEDGER_CHECKPOINT_DIR: write checkpoint %d: %w", cp.Size, err)
		}
	}
	return nil
}

// Run signs a checkpoint every Interval while the tree grows, until ctx
// ends. Failures are logged and retried at the next tick.
func (c *Checkpointer) Run(ctx context.Context) {
	every := c.Interval
	if every <= 0 {
		every = DefaultCheckpointInterval
	}
	c.log.Info("checkpoint signer started", "origin", c.origin, "interval_s", every.Seconds(), "dir", c.Dir)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		cp, added, err := c.Sign(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			c.log.Error("signing a checkpoint failed; retrying", "err", err)
		case added:
			c.log.Debug("checkpoint signed", "tree_size", cp.Size)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
