package schema

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"golang.org/x/mod/sumdb/tlog"
)

// Execer runs a statement: a *sqlx.DB or a *sqlx.Tx.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Access channels and actions recorded in the audit access log.
const (
	ChannelAPI  = "api"
	ChannelPage = "page"
	ChannelCLI  = "cli"

	ActionEvents = "events" // a history query (one page)
	ActionExport = "export" // a streamed export
	ActionUser   = "user"   // a user's point-in-time state and events

	ActionOrganization      = "organization"       // an organization's point-in-time state, members and events
	ActionUserOrganizations = "user_organizations" // the organizations a user was in at a point in time
	ActionCheckpoint        = "checkpoint"         // a signed checkpoint read
	ActionProof             = "proof"              // an event's inclusion proof
	ActionUserProof         = "user_proof"         // a user's proof bundle

	// Kinds of verification in the verification log.
	KindTree        = "tree"        // the whole tree recomputed from the events
	KindConsistency = "consistency" // a kept checkpoint proven extended
	KindChain       = "chain"       // the frozen hash chain (before the tree)
)

// Access is one entry of the audit access log.
type Access struct {
	ID       int64             `json:"id"`
	At       time.Time         `json:"at"`
	Actor    string            `json:"actor"` // Clerk user id, or cli:<os user>
	Channel  string            `json:"channel"`
	Action   string            `json:"action"`
	Filters  map[string]string `json:"filters"`
	RowCount int64             `json:"row_count"`
}

// RecordAccess appends a to the access log (ID and At are set by the
// database). The log is append-only: the table's trigger refuses UPDATE,
// DELETE and TRUNCATE.
func RecordAccess(ctx context.Context, q Execer, a Access) error {
	filters, err := accessFilters(a)
	if err != nil {
		return err
	}
	_, err = q.ExecContext(ctx, `INSERT INTO audit_access (actor, channel, action, filters, row_count) VALUES ($1, $2, $3, $4, $5)`,
		a.Actor, a.Channel, a.Action, filters, a.RowCount)
	if err != nil {
		return fmt.Errorf("record audit access by %s: %w", a.Actor, Classify(err))
	}
	return nil
}

// accessFilters is a.Filters as the JSON object the access log stores.
func accessFilters(a Access) (string, error) {
	if a.Filters == nil {
		return `{}`, nil
	}
	b, err := json.Marshal(a.Filters)
	if err != nil {
		return "", fmt.Errorf("record audit access: %w", err)
	}
	return string(b), nil
}

// ListAccess returns up to limit access log entries, newest first, with ids
// below before (all when before is 0).
func ListAccess(ctx context.Context, q Queryer, before int64, limit int) ([]Access, error) {
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, err := q.QueryxContext(ctx, `SELECT id, at, actor, channel, action, filters, row_count FROM audit_access
WHERE id < $1 ORDER BY id DESC LIMIT $2`, before, limit)
	if err != nil {
		return nil, fmt.Errorf("list audit access: %w", Classify(err))
	}
	defer rows.Close()
	var out []Access
	for rows.Next() {
		var a Access
		var filters []byte
		if err := rows.Scan(&a.ID, &a.At, &a.Actor, &a.Channel, &a.Action, &filters, &a.RowCount); err != nil {
			return nil, fmt.Errorf("list audit access: %w", Classify(err))
		}
		a.At = a.At.UTC()
		if err := json.Unmarshal(filters, &a.Filters); err != nil {
			return nil, fmt.Errorf("list audit access %d: filters: %w", a.ID, err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit access: %w", Classify(err))
	}
	return out, nil
}

// Verification is one recorded run of the tamper-evidence check.
type Verification struct {
	ID                int64         `json:"id"`
	At                time.Time     `json:"at"`
	Actor             string        `json:"actor"`
	Channel           string        `json:"channel"`
	OK                bool          `json:"ok"`
	Checked           int64         `json:"checked"`
	Head              domain.Digest `json:"-"`
	Digest            string        `json:"digest,omitempty"` // the kept digest checked against
	SignaturesChecked int64         `json:"signatures_checked"`
	SignaturesFailed  int64         `json:"signatures_failed"`
	FirstBad          int64         `json:"first_bad_position,omitempty"`
	Problem           string        `json:"problem,omitempty"`
	Duration          time.Duration `json:"-"`
	// Kind is KindTree, KindConsistency (TreeSize is the kept
	// checkpoint's) or KindChain (runs before the tree).
	Kind     string    `json:"kind"`
	TreeSize int64     `json:"tree_size,omitempty"`
	Root     tlog.Hash `json:"-"`
}

// RecordVerification appends v to the verification log (append-only).
func RecordVerification(ctx context.Context, q Execer, v Verification) error {
	var head, root []byte
	if v.Head.Position > 0 {
		head = v.Head.Hash[:]
	}
	if v.TreeSize > 0 {
		root = v.Root[:]
	}
	kind := v.Kind
	if kind == "" {
		kind = KindTree
	}
	_, err := q.ExecContext(ctx, `INSERT INTO audit_verifications
(actor, channel, ok, checked, head_position, head_hash, digest, signatures_checked, signatures_failed, first_bad_position, problem, duration_ms, kind, tree_size, root)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
		v.Actor, v.Channel, v.OK, v.Checked, v.Head.Position, head, v.Digest, v.SignaturesChecked, v.SignaturesFailed, v.FirstBad, v.Problem, v.Duration.Milliseconds(),
		kind, v.TreeSize, root)
	if err != nil {
		return fmt.Errorf("record verification by %s: %w", v.Actor, Classify(err))
	}
	return nil
}

// LastVerification returns the newest recorded verification.
// Errors: ENOTFOUND when the chain was never verified.
func LastVerification(ctx context.Context, q Queryer) (Verification, error) {
	var v Verification
	var head, root []byte
	var ms int64
	err := q.QueryRowxContext(ctx, `SELECT id, at, actor, channel, ok, checked, head_position, head_hash, digest,
signatures_checked, signatures_failed, first_bad_position, problem, duration_ms, kind, tree_size, root
FROM audit_verifications ORDER BY id DESC LIMIT 1`).Scan(&v.ID, &v.At, &v.Actor, &v.Channel, &v.OK, &v.Checked,
		&v.Head.Position, &head, &v.Digest, &v.SignaturesChecked, &v.SignaturesFailed, &v.FirstBad, &v.Problem, &ms, &v.Kind, &v.TreeSize, &root)
	if errors.Is(err, sql.ErrNoRows) {
		return Verification{}, domain.Errorf(domain.ENOTFOUND, "the ledger was never verified")
	}
	if err != nil {
		return Verification{}, fmt.Errorf("read last verification: %w", Classify(err))
	}
	copy(v.Head.Hash[:], head)
	copy(v.Root[:], root)
	v.At = v.At.UTC()
	v.Duration = time.Duration(ms) * time.Millisecond
	return v, nil
}
