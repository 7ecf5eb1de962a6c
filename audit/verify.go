package audit

import (
	"context"
	"encoding/base64"
	"net/http"
	"strconv"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// VerifyOptions says what Verify checks.
type VerifyOptions struct {
	// Digest is a digest of the frozen hash chain (from before the tree)
	// the chain must still reach, if any.
	Digest     *domain.Digest
	Signatures bool // also re-check every stored delivery's Svix signature
}

// VerifyResult is the outcome of Verify.
type VerifyResult struct {
	OK         bool                    `json:"ok"`
	Tree       schema.LogReport        `json:"-"`
	Chain      *schema.ChainReport     `json:"-"` // with a digest only
	Signatures *schema.SignatureReport `json:"-"`
	// KeyChecked reports whether the checkpoints' signatures were checked
	// (a verifier key was configured).
	KeyChecked bool `json:"-"`
}

// Message returns "OK ..." or the first problem, for people.
func (r VerifyResult) Message() string {
	if !r.Tree.OK {
		return "FAIL: " + r.Tree.Problem
	}
	if r.Chain != nil && !r.Chain.OK {
		return "FAIL: " + r.Chain.Problem
	}
	if r.Signatures != nil && !r.Signatures.OK {
		return "FAIL: event at position " + strconv.FormatInt(r.Signatures.FirstBad, 10) + " does not carry a valid Svix signature for its stored bytes (" +
			strconv.FormatInt(r.Signatures.Failed, 10) + " of " + strconv.FormatInt(r.Signatures.Checked, 10) + " fail)"
	}
	t := r.Tree
	msg := "OK: " + strconv.FormatInt(t.Checked, 10) + " leaves match"
	if t.Tree.Size > 0 {
		msg += ", tree " + strconv.FormatInt(t.Tree.Size, 10) + " root " + base64.StdEncoding.EncodeToString(t.Tree.Root[:])
	}
	switch {
	case t.Latest == nil:
		msg += ", no checkpoint signed yet"
	case r.KeyChecked:
		msg += ", " + strconv.FormatInt(t.Checkpoints, 10) + " signed checkpoints match (latest: tree size " + strconv.FormatInt(t.Latest.Size, 10) + ")"
	default:
		msg += ", " + strconv.FormatInt(t.Checkpoints, 10) + " checkpoint roots match (signatures not checked: no LEDGER_LOG_KEY)"
	}
	if t.Unsealed > 0 {
		msg += ", " + strconv.FormatInt(t.Unsealed, 10) + " newer events not sealed yet"
	}
	if r.Chain != nil {
		msg += ", the frozen chain reaches the kept digest"
	}
	if r.Signatures != nil {
		msg += ", " + strconv.FormatInt(r.Signatures.Checked, 10) + " signatures valid"
		if r.Signatures.Erased > 0 {
			msg += " (" + strconv.FormatInt(r.Signatures.Erased, 10) + " events erased: their signatures cannot be re-checked)"
		}
		if r.Signatures.Unsigned > 0 {
			msg += " (" + strconv.FormatInt(r.Signatures.Unsigned, 10) + " events not from Svix, with no signature: Backend API snapshots and the ledger's own)"
		}
	}
	return msg
}

// FirstBad is the first position that does not match, 0 when OK (or when
// the problem is no one event's).
func (r VerifyResult) FirstBad() int64 {
	switch {
	case !r.Tree.OK:
		return r.Tree.FirstBad
	case r.Chain != nil && !r.Chain.OK:
		return r.Chain.FirstBad
	case r.Signatures != nil && !r.Signatures.OK:
		return r.Signatures.FirstBad
	}
	return 0
}

// Verify recomputes the whole Merkle tree from the stored events
// (schema.VerifyLog: every leaf, every stored hash, every kept checkpoint's
// root and signature), with a digest also the frozen hash chain up to it
// (schema.VerifyChainParts), optionally re-checks every stored delivery's
// signature ignoring its age, and records the outcome in the verification
// log as a's. One verification runs at a time: another is refused with
// ERATELIMIT. Errors mean the check could not run or could not be recorded
// (EINVALID for Signatures without a Verifier); a mismatch is an OK=false
// result.
func (s *Service) Verify(ctx context.Context, a Actor, o VerifyOptions) (VerifyResult, error) {
	if o.Signatures && s.verifier == nil {
		return VerifyResult{}, domain.Errorf(domain.EINVALID, "CLERK_WEBHOOK_SIGNING_SECRET is not set: cannot re-check signatures")
	}
	if !s.verifyMu.TryLock() {
		return VerifyResult{}, domain.Errorf(domain.ERATELIMIT, "a verification is already running; try again when it is done")
	}
	defer s.verifyMu.Unlock()
	parts, weight := s.slots.verifyParts()
	release, err := s.slots.acquire(ctx, weight)
	if err != nil {
		return VerifyResult{}, err
	}
	defer release()
	res := VerifyResult{KeyChecked: s.logKey != nil}
	if res.Tree, err = schema.VerifyLog(ctx, s.db, s.openCheckpoint); err != nil {
		return res, err
	}
	res.OK = res.Tree.OK
	t := res.Tree
	rec := schema.Verification{
		Actor: a.ID, Channel: a.Channel, Kind: schema.KindTree, OK: t.OK, Checked: t.Checked,
		TreeSize: t.Tree.Size, Root: t.Tree.Root, FirstBad: t.FirstBad, Problem: t.Problem, Duration: t.Duration,
	}
	if o.Digest != nil {
		rec.Digest = o.Digest.String()
		chain, err := schema.VerifyChainParts(ctx, s.db, o.Digest, parts)
		if err != nil {
			return res, err
		}
		res.Chain = &chain
		res.OK = res.OK && chain.OK
		rec.Head, rec.Duration = chain.Head, rec.Duration+chain.Duration
		if rec.OK && !chain.OK {
			rec.OK, rec.FirstBad, rec.Problem = false, chain.FirstBad, res.Message()
		}
	}
	if o.Signatures {
		h := http.Header{}
		sigs, err := schema.VerifySignatures(ctx, s.db, func(e domain.Event) error {
			h.Set("svix-id", e.DeliveryID)
			h.Set("svix-timestamp", strconv.FormatInt(e.SvixTimestamp, 10))
			h.Set("svix-signature", e.SvixSignature)
			return s.verifier.VerifyIgnoringTimestamp(e.Body, h)
		})
		if err != nil {
			return res, err
		}
		res.Signatures = &sigs
		res.OK = res.OK && sigs.OK
		rec.SignaturesChecked, rec.SignaturesFailed = sigs.Checked, sigs.Failed
		rec.Duration += sigs.Duration
		if rec.OK && !sigs.OK {
			rec.OK, rec.FirstBad, rec.Problem = false, sigs.FirstBad, res.Message()
		}
	}
	if err := schema.RecordVerification(context.WithoutCancel(ctx), s.db, rec); err != nil {
		return res, err
	}
	return res, nil
}
