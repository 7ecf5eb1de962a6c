package audit

import (
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"golang.org/x/mod/sumdb/tlog"
)

// LogStatus is where the Merkle tree stands, its latest signed checkpoint,
// the frozen hash chain's head (ledgers from before the tree) and how the
// last verification ended.
type LogStatus struct {
	TreeSize int64
	Latest   *schema.LogCheckpoint // nil: none signed yet
	// Chain is the frozen hash chain's head (nil: this ledger never had one).
	Chain         *domain.Digest
	ChainSealedAt time.Time
	Last          *schema.Verification // nil: never verified
}

// LogStatus reads the tree's size, the latest checkpoint, the frozen chain's
// head and the last verification. It is the workspace's status box and is
// not recorded (it shows no event).
func (s *Service) LogStatus(ctx context.Context) (LogStatus, error) {
	var st LogStatus
	var err error
	if st.TreeSize, err = schema.TreeSize(ctx, s.db); err != nil {
		return st, err
	}
	cp, err := schema.LatestCheckpoint(ctx, s.db)
	switch {
	case domain.ErrorCode(err) == domain.ENOTFOUND:
	case err != nil:
		return st, err
	default:
		st.Latest = &cp
	}
	d, at, err := schema.ChainHead(ctx, s.db)
	switch {
	case domain.ErrorCode(err) == domain.ENOTFOUND:
	case err != nil:
		return st, err
	default:
		st.Chain, st.ChainSealedAt = &d, at
	}
	v, err := schema.LastVerification(ctx, s.db)
	switch {
	case domain.ErrorCode(err) == domain.ENOTFOUND:
	case err != nil:
		return st, err
	default:
		st.Last = &v
	}
	return st, nil
}

// checkpoint returns the kept checkpoint of that tree size (0: the latest).
func checkpoint(ctx context.Context, q schema.Queryer, size int64) (schema.LogCheckpoint, error) {
	if size < 0 {
		return schema.LogCheckpoint{}, domain.Errorf(domain.EINVALID, "tree size %d is negative", size)
	}
	if size == 0 {
		return schema.LatestCheckpoint(ctx, q)
	}
	return schema.CheckpointOfSize(ctx, q, size)
}

// Checkpoint returns the kept signed checkpoint of that tree size (0: the
// latest) and records the read. Errors: ENOTFOUND when none is kept (for
// that size).
func (s *Service) Checkpoint(ctx context.Context, a Actor, size int64) (schema.LogCheckpoint, error) {
	cp, err := checkpoint(ctx, s.db, size)
	if err != nil {
		return cp, err
	}
	f := map[string]string{"tree_size": strconv.FormatInt(cp.Size, 10)}
	if err := s.record(ctx, a, schema.ActionCheckpoint, f, 1); err != nil {
		return schema.LogCheckpoint{}, err
	}
	return cp, nil
}

// InclusionProof proves one event's leaf is in the tree of a signed
// checkpoint: check it with tlog.CheckRecord(Proof, TreeSize, root of
// Checkpoint, LeafIndex, RecordHash(Leaf)).
type InclusionProof struct {
	Position   int64    `json:"position"`
	LeafIndex  int64    `json:"leaf_index"`
	TreeSize   int64    `json:"tree_size"`
	Leaf       string   `json:"leaf"`      // base64 of the encoded leaf (domain.Leaf.Encode)
	LeafHash   string   `json:"leaf_hash"` // base64 of SHA-256(0x00 || leaf)
	Proof      []string `json:"proof"`     // base64 hashes, bottom up (tlog.RecordProof)
	Checkpoint string   `json:"checkpoint"`
}

// Proof returns the inclusion proof of the event at position in the tree of
// the kept checkpoint of tree size size (0: the latest), reading O(log n)
// stored hashes, and records the access. Errors: ENOTFOUND when there is no
// such event or checkpoint, or the event is not in that tree (yet).
func (s *Service) Proof(ctx context.Context, a Actor, position, size int64) (InclusionProof, error) {
	release, err := s.slots.acquire(ctx, 1)
	if err != nil {
		return InclusionProof{}, err
	}
	defer release()
	// No transaction: the tree is append-only, so the checkpoint, the leaf
	// and the hashes below its size agree however they are read. Two round
	// trips: the checkpoint with the leaf and its event, then the proof's
	// hashes with the access record (one statement).
	cp, e, err := schema.ProofTarget(ctx, s.db, position, size)
	if err != nil {
		return InclusionProof{}, err
	}
	f := map[string]string{"position": strconv.FormatInt(position, 10), "tree_size": strconv.FormatInt(cp.Size, 10)}
	proofs, err := proveAll(cp.Size, []int64{e.Leaf}, func(need []int64) ([]tlog.Hash, error) {
		return s.readRecorded(ctx, need, a, schema.ActionProof, f, 1)
	})
	if err != nil {
		return InclusionProof{}, err
	}
	// The leaf as the tree holds it: a sealed or erased event's leaf
	// commits to its stored commitment (salted), not to a hash of the body.
	enc := e.Event.Leaf().Encode(nil)
	h := tlog.RecordHash(enc)
	return InclusionProof{Position: position, LeafIndex: e.Leaf, TreeSize: cp.Size, Checkpoint: cp.Note,
		Leaf: base64.StdEncoding.EncodeToString(enc), LeafHash: base64.StdEncoding.EncodeToString(h[:]), Proof: b64s(proofs[0])}, nil
}

func b64s(hs []tlog.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = base64.StdEncoding.EncodeToString(h[:])
	}
	return out
}

// ConsistencyProof proves that the tree of a kept checkpoint extends the
// tree of From leaves: check it with tlog.CheckTree(Proof, To, root of
// Checkpoint, From, root of the From checkpoint you hold).
type ConsistencyProof struct {
	From       int64    `json:"from"`
	To         int64    `json:"to"`
	Proof      []string `json:"proof"` // base64 hashes (tlog.TreeProof)
	Checkpoint string   `json:"checkpoint"`
}

// Consistency returns the consistency proof from a tree of from leaves to
// the kept checkpoint of tree size to (0: the latest), what a witness needs
// to co-sign a checkpoint, reading O(log n) stored hashes, and records the
// access. Errors: EINVALID unless 1 <= from <= to; ENOTFOUND when no
// checkpoint of that size is kept.
func (s *Service) Consistency(ctx context.Context, a Actor, from, to int64) (ConsistencyProof, error) {
	cp, err := checkpoint(ctx, s.db, to)
	if err != nil {
		return ConsistencyProof{}, err
	}
	if from < 1 || from > cp.Size {
		return ConsistencyProof{}, domain.Errorf(domain.EINVALID, "from %d is not a tree size from 1 to %d", from, cp.Size)
	}
	var proof tlog.TreeProof
	if from < cp.Size {
		if proof, err = tlog.ProveTree(cp.Size, from, schema.HashReader(ctx, s.db)); err != nil {
			return ConsistencyProof{}, fmt.Errorf("prove %d -> %d: %w", from, cp.Size, err)
		}
	}
	f := map[string]string{"from": strconv.FormatInt(from, 10), "tree_size": strconv.FormatInt(cp.Size, 10)}
	if err := s.record(ctx, a, schema.ActionProof, f, 1); err != nil {
		return ConsistencyProof{}, err
	}
	return ConsistencyProof{From: from, To: cp.Size, Proof: b64s(proof), Checkpoint: cp.Note}, nil
}

// MaxBundleBytes is the most body bytes one proof bundle carries.
const MaxBundleBytes = 64 << 20

// UserProof builds the proof bundle of user (translog.Bundle) against the
// latest signed checkpoint: every event about the user in that checkpoint's
// tree, with its exact body and inclusion proof. All the proofs' hashes are
// read in one query. (No snapshot is needed: the tree is append-only, and
// the checkpoint fixes which leaves the bundle holds.) Events sealed after the checkpoint
// are not in it (the next checkpoint, a few seconds later, has them). The
// access is recorded with the events it holds. Errors: EINVALID for a bad
// id; ENOTFOUND when no checkpoint is signed yet or the user has no event in
// its tree; ETOOLARGE past MaxBundleBytes of bodies.
func (s *Service) UserProof(ctx context.Context, a Actor, userID string) (translog.Bundle, error) {
	if userID == "" || len(userID) > 200 {
		return translog.Bundle{}, domain.Errorf(domain.EINVALID, "user id must be 1 to 200 characters")
	}
	release, err := s.slots.acquire(ctx, 1)
	if err != nil {
		return translog.Bundle{}, err
	}
	defer release()
	cp, err := schema.LatestCheckpoint(ctx, s.db)
	if err != nil {
		return translog.Bundle{}, err
	}
	var events []schema.LeafEvent
	var bytes int64
	if _, err := schema.UserLeaves(ctx, s.db, userID, cp.Size, func(e schema.LeafEvent) error {
		if bytes += int64(len(e.Body)); bytes > MaxBundleBytes {
			return domain.Errorf(domain.ETOOLARGE, "user %s has more than %d MiB of bodies in the tree: too many for one bundle", userID, MaxBundleBytes>>20)
		}
		e.Body = slices.Clone(e.Body)
		events = append(events, e)
		return nil
	}); err != nil {
		return translog.Bundle{}, err
	}
	if len(events) == 0 {
		return translog.Bundle{}, domain.Errorf(domain.ENOTFOUND, "the ledger has no event about user %s in the tree of the latest checkpoint (size %d)", userID, cp.Size)
	}
	leaves := make([]int64, len(events))
	for i, e := range events {
		leaves[i] = e.Leaf
	}
	f := map[string]string{"user_id": userID, "tree_size": strconv.FormatInt(cp.Size, 10)}
	proofs, err := proveAll(cp.Size, leaves, func(need []int64) ([]tlog.Hash, error) {
		return s.readRecorded(ctx, need, a, schema.ActionUserProof, f, int64(len(events)))
	})
	if err != nil {
		return translog.Bundle{}, err
	}
	b := translog.Bundle{Format: translog.BundleFormat, UserID: userID, Checkpoint: cp.Note, Events: make([]translog.BundleEvent, len(events))}
	for i, e := range events {
		b.Events[i] = translog.NewBundleEvent(e.Leaf, e.Event, nil, proofs[i])
	}
	return b, nil
}

// readRecorded reads the stored hashes at need (those of the upper tree
// from s.hashes once read) and records the access, in one statement
// (schema.ReadHashesRecorded), with the record's timeout.
func (s *Service) readRecorded(ctx context.Context, need []int64, a Actor, action string, filters map[string]string, rows int64) ([]tlog.Hash, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return s.hashes.read(need, func(missing []int64) ([]tlog.Hash, error) {
		return schema.ReadHashesRecorded(ctx, s.db, missing, schema.Access{Actor: a.ID, Channel: a.Channel, Action: action, Filters: filters, RowCount: rows})
	})
}

// proveAll returns the inclusion proof of each leaf in the tree of size
// leaves, with one call of read for every hash they need: a first pass
// asks tlog which hashes each proof needs, the second builds them.
func proveAll(size int64, leaves []int64, read func(need []int64) ([]tlog.Hash, error)) ([]tlog.RecordProof, error) {
	var need []int64
	ask := tlog.HashReaderFunc(func(ix []int64) ([]tlog.Hash, error) {
		need = append(need, ix...)
		return make([]tlog.Hash, len(ix)), nil
	})
	for _, l := range leaves {
		if _, err := tlog.ProveRecord(size, l, ask); err != nil {
			return nil, fmt.Errorf("prove leaf %d in %d: %w", l, size, err)
		}
	}
	slices.Sort(need)
	need = slices.Compact(need)
	hs, err := read(need)
	if err != nil {
		return nil, err
	}
	have := make(map[int64]tlog.Hash, len(need))
	for i, idx := range need {
		have[idx] = hs[i]
	}
	got := tlog.HashReaderFunc(func(ix []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(ix))
		for i, idx := range ix {
			out[i] = have[idx]
		}
		return out, nil
	})
	out := make([]tlog.RecordProof, len(leaves))
	for i, l := range leaves {
		if out[i], err = tlog.ProveRecord(size, l, got); err != nil {
			return nil, fmt.Errorf("prove leaf %d in %d: %w", l, size, err)
		}
	}
	return out, nil
}

// ConsistencyResult is the outcome of VerifyCheckpoint.
type ConsistencyResult struct {
	OK       bool
	Kept     translog.Checkpoint   // the checkpoint the auditor kept
	Latest   *schema.LogCheckpoint // the latest kept here, proven to extend it
	Problem  string
	Duration time.Duration
}

// Message returns "OK ..." or the problem, for people.
func (r ConsistencyResult) Message() string {
	if !r.OK {
		return "FAIL: " + r.Problem
	}
	return fmt.Sprintf("OK: the log today (checkpoint of tree size %d, signed %s) extends the kept checkpoint of tree size %d: nothing before it was changed or removed",
		r.Latest.Size, r.Latest.SignedAt.Format(time.RFC3339), r.Kept.Size)
}

// VerifyCheckpoint proves that the ledger today extends a checkpoint an
// auditor kept (its signed note): the note's signature with the log's
// verifier key, the latest checkpoint's signature and origin, the stored
// tree's root at both sizes, and the consistency proof between them
// (tlog.ProveTree, checked with tlog.CheckTree) — O(log n) stored hashes,
// no event read. The outcome is recorded in the verification log. Errors
// mean the check could not run (EINVALID without a verifier key); a
// checkpoint that does not verify or is not extended is an OK=false result.
func (s *Service) VerifyCheckpoint(ctx context.Context, a Actor, note []byte) (ConsistencyResult, error) {
	start := time.Now()
	if s.logKey == nil {
		return ConsistencyResult{}, domain.Errorf(domain.EINVALID, "no verifier key: set LEDGER_LOG_KEY (or give --key)")
	}
	release, err := s.slots.acquire(ctx, 1)
	if err != nil {
		return ConsistencyResult{}, err
	}
	defer release()
	res, err := s.consistency(ctx, note)
	if err != nil {
		return res, err
	}
	res.Duration = time.Since(start)
	rec := schema.Verification{Actor: a.ID, Channel: a.Channel, Kind: schema.KindConsistency, OK: res.OK, Problem: res.Problem,
		TreeSize: res.Kept.Size, Root: res.Kept.Root, Duration: res.Duration}
	if res.Latest != nil {
		rec.Checked = res.Latest.Size
	}
	if err := schema.RecordVerification(context.WithoutCancel(ctx), s.db, rec); err != nil {
		return res, err
	}
	return res, nil
}

func (s *Service) consistency(ctx context.Context, note []byte) (ConsistencyResult, error) {
	var res ConsistencyResult
	fail := func(format string, args ...any) (ConsistencyResult, error) {
		res.OK, res.Problem = false, fmt.Sprintf(format, args...)
		return res, nil
	}
	kept, err := s.logKey.Open(note)
	if err != nil {
		return fail("the kept checkpoint: %s", domain.ErrorMessage(err))
	}
	res.Kept = kept
	tx, err := s.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return res, fmt.Errorf("consistency: %w", schema.Classify(err))
	}
	defer tx.Rollback()
	latest, err := schema.LatestCheckpoint(ctx, tx)
	if err != nil {
		if domain.ErrorCode(err) == domain.ENOTFOUND {
			return fail("the ledger keeps no checkpoint, but one of tree size %d was signed: its checkpoints were removed", kept.Size)
		}
		return res, err
	}
	res.Latest = &latest
	now, err := s.logKey.Open([]byte(latest.Note))
	if err != nil {
		return fail("the ledger's latest checkpoint (tree size %d): %s", latest.Size, domain.ErrorMessage(err))
	}
	if now.Size != latest.Size || now.Root != latest.Root {
		return fail("the ledger's latest checkpoint states tree size %d in its note and %d in its row", now.Size, latest.Size)
	}
	if now.Origin != kept.Origin {
		return fail("the kept checkpoint is of the log %q, this ledger's is %q", kept.Origin, now.Origin)
	}
	if latest.Size < kept.Size {
		return fail("the ledger's latest checkpoint (tree size %d) is smaller than the kept one (%d): leaves were removed", latest.Size, kept.Size)
	}
	r := schema.HashReader(ctx, tx)
	root, err := tlog.TreeHash(latest.Size, r)
	if err != nil {
		return fail("the stored tree cannot give the root of %d leaves: %v", latest.Size, err)
	}
	if root != latest.Root {
		return fail("the stored tree's root at %d leaves is not the latest checkpoint's: the tree's table was changed", latest.Size)
	}
	if kept.Size > 0 {
		old, err := tlog.TreeHash(kept.Size, r)
		if err != nil {
			return fail("the stored tree cannot give the root of %d leaves: %v", kept.Size, err)
		}
		if old != kept.Root {
			return fail("the ledger's tree of %d leaves is not the kept checkpoint's: the ledger before it was rewritten", kept.Size)
		}
		if kept.Size < latest.Size {
			proof, err := tlog.ProveTree(latest.Size, kept.Size, r)
			if err != nil {
				return fail("no consistency proof from %d to %d: %v", kept.Size, latest.Size, err)
			}
			if err := tlog.CheckTree(proof, latest.Size, latest.Root, kept.Size, kept.Root); err != nil {
				return fail("the latest checkpoint (tree size %d) does not extend the kept one (%d): %v", latest.Size, kept.Size, err)
			}
		}
	}
	res.OK = true
	return res, tx.Commit()
}

// openCheckpoint opens a kept checkpoint's note for VerifyLog: with the
// verifier key, or, without one, reading what it states unchecked.
func (s *Service) openCheckpoint(note []byte) (translog.Checkpoint, error) {
	if s.logKey != nil {
		return s.logKey.Open(note)
	}
	return translog.ParseCheckpoint(translog.NoteBody(note))
}
