// Package audit is the auditors' application: history queries and exports,
// a user's state at any instant (the projection's own fold), verification
// of the ledger, and who may audit. HTTP handlers and the CLI call the same
// Service with typed inputs; each operation records its own entry in the
// audit access log (or the verification log) before its answer is given, so
// no channel can forget one. A query that cannot be recorded is not
// answered.
package audit

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/svixsig"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"github.com/jmoiron/sqlx"
)

// Actor is who asks and through which channel (schema.ChannelAPI,
// ChannelPage or ChannelCLI), as the access log records it.
type Actor struct {
	ID      string
	Channel string
}

// Config configures a Service.
type Config struct {
	// DB is the ledger database.
	DB *sqlx.DB
	// Verifier re-checks stored Svix signatures (Verify with Signatures);
	// nil: that check is refused.
	Verifier *svixsig.Verifier
	// LogKey checks the log's signed checkpoints (the verifier key of
	// LEDGER_LOG_KEY); nil: Verify checks the checkpoints' roots but not
	// their signatures, and VerifyCheckpoint is refused.
	LogKey *translog.Verifier
	// Auditors are the Clerk user ids allowed to audit (LEDGER_AUDITORS),
	// besides users whose projected public_metadata.role is "auditor".
	Auditors []string
	// Conns bounds the database connections the audit reads hold at once
	// (exports, verifications, history pages, user views), so that the
	// pool keeps connections for everything else; 0: DefaultConns, at most
	// half of DB's pool. QueueWait is how long a read waits for one before
	// it is refused with EUNAVAILABLE (default 2 s).
	Conns     int
	QueueWait time.Duration
}

// Service is the audit application. It is safe for concurrent use; one
// verification runs at a time.
type Service struct {
	db       *sqlx.DB
	verifier *svixsig.Verifier
	logKey   *translog.Verifier
	auditors map[string]bool
	slots    *slots
	verifyMu sync.Mutex
	hashes   hashCache // the upper tree's stored hashes, for proofs
}

// New returns a Service for c.
func New(c Config) *Service {
	s := &Service{db: c.DB, verifier: c.Verifier, logKey: c.LogKey, auditors: map[string]bool{}}
	for _, id := range c.Auditors {
		if id = strings.TrimSpace(id); id != "" {
			s.auditors[id] = true
		}
	}
	n := c.Conns
	if n <= 0 {
		n = DefaultConns
		if c.DB != nil {
			if open := c.DB.Stats().MaxOpenConnections; open > 0 {
				n = min(n, max(1, open/2))
			}
		}
	}
	wait := c.QueueWait
	if wait <= 0 {
		wait = defaultQueueWait
	}
	s.slots = newSlots(n, wait)
	return s
}

// DB is the ledger database the service reads.
func (s *Service) DB() *sqlx.DB { return s.db }

// record appends one access entry, also when ctx has ended (the answer was
// computed; whether it is shown depends on the record).
func (s *Service) record(ctx context.Context, a Actor, action string, filters map[string]string, rows int64) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return schema.RecordAccess(ctx, s.db, schema.Access{Actor: a.ID, Channel: a.Channel, Action: action, Filters: filters, RowCount: rows})
}

// AccessLog lists access log entries older than id before (0: the newest),
// newest first, at most limit.
func (s *Service) AccessLog(ctx context.Context, before int64, limit int) ([]schema.Access, error) {
	return schema.ListAccess(ctx, s.db, before, limit)
}
