package translog

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"golang.org/x/mod/sumdb/tlog"
)

// BundleFormat names the per-user proof bundle's format and version.
const BundleFormat = "clerk-ledger/user-proof/v1"

// Bundle is a per-user proof bundle: a signed checkpoint, and each of the
// user's events in the checkpoint's tree with its leaf fields, its exact body
// and salt, and its inclusion proof. Everything in it is checked against the
// checkpoint's signed root (VerifyBundle); nothing else needs trusting.
type Bundle struct {
	Format     string        `json:"format"`
	UserID     string        `json:"user_id"`
	Checkpoint string        `json:"checkpoint"` // the signed note, as signed
	Events     []BundleEvent `json:"events"`
}

// BundleEvent is one event of a Bundle.
type BundleEvent struct {
	LeafIndex int64 `json:"leaf_index"`
	// The leaf's fields, in JSON as fields of the event: position,
	// delivery_id, type, user_id, source, occurred_at, received_at,
	// svix_timestamp and svix_signature.
	domain.LeafFields
	// Salt (base64, empty for a body kept in clear) and Body (the exact
	// delivered bytes) open BodyCommitment. Body is null when the body was
	// erased: the leaf still verifies, the body check says "erased".
	Salt           string   `json:"salt"`
	Body           *string  `json:"body"`
	Erased         bool     `json:"erased,omitempty"`
	BodyCommitment string   `json:"body_commitment"` // base64 of 32 bytes
	LeafHash       string   `json:"leaf_hash"`       // base64 of 32 bytes
	Proof          []string `json:"proof"`           // base64 hashes, tlog.RecordProof
}

// NewBundleEvent returns the bundle entry of the event e at leaf index
// leaf, with body opened by salt (nil: e.Salt, the salt of a sealed body
// as read), and its proof. An erased event (e.Erased) goes without body
// or salt, marked erased: its leaf, from the stored commitment, still
// verifies.
func NewBundleEvent(leaf int64, e domain.Event, salt []byte, proof tlog.RecordProof) BundleEvent {
	if salt != nil {
		e.Salt = salt
	}
	l := e.Leaf()
	h := LeafHash(l)
	var body *string
	if !e.Erased {
		s := string(e.Body)
		body = &s
	}
	fields := l.LeafFields
	fields.OccurredAt, fields.ReceivedAt = fields.OccurredAt.UTC(), fields.ReceivedAt.UTC()
	b := BundleEvent{
		LeafIndex: leaf, LeafFields: fields,
		Salt: base64.StdEncoding.EncodeToString(e.Salt), Body: body, Erased: e.Erased,
		BodyCommitment: base64.StdEncoding.EncodeToString(l.BodyCommitment[:]),
		LeafHash:       base64.StdEncoding.EncodeToString(h[:]),
		Proof:          make([]string, len(proof)),
	}
	for i, p := range proof {
		b.Proof[i] = base64.StdEncoding.EncodeToString(p[:])
	}
	return b
}

// Encode returns the bundle's one canonical encoding (indented JSON and a
// final newline). VerifyBundle accepts only this encoding, so that any
// change to any byte of a bundle fails it, also one that would decode to the
// same values.
func (b Bundle) Encode() ([]byte, error) {
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode proof bundle: %w", err)
	}
	return append(out, '\n'), nil
}

// EventCheck is what VerifyBundle found for one event.
type EventCheck struct {
	Position  int64  `json:"position"`
	LeafIndex int64  `json:"leaf_index"`
	Included  bool   `json:"included"` // the leaf recomputed from the fields is in the tree
	Body      string `json:"body"`     // "ok", "erased" or "mismatch"
	Problem   string `json:"problem,omitempty"`
}

// BundleReport is the outcome of VerifyBundle.
type BundleReport struct {
	OK         bool         `json:"ok"`
	UserID     string       `json:"user_id"`
	Checkpoint Checkpoint   `json:"-"`
	Events     []EventCheck `json:"events"`
	Erased     int          `json:"erased"`
	Problem    string       `json:"problem,omitempty"` // the first problem
}

// VerifyBundle checks a proof bundle offline with the log's verifier key:
// the bundle is in its canonical encoding; the checkpoint's signature; for
// every event, that it is about the bundle's user, that its leaf recomputed
// from its fields hashes to its leaf hash, that its inclusion proof leads
// from that hash at its leaf index to the checkpoint's root
// (tlog.CheckRecord), and that its salt and body open its body commitment;
// and that the events are in leaf order, each once. A bundle that is not
// even JSON is an EINVALID error; any other problem makes the report not
// OK, naming the first.
func VerifyBundle(data []byte, v *Verifier) (BundleReport, error) {
	var b Bundle
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return BundleReport{}, domain.Errorf(domain.EINVALID, "not a proof bundle: %v", err)
	}
	rep := BundleReport{UserID: b.UserID}
	fail := func(format string, args ...any) (BundleReport, error) {
		if rep.Problem == "" {
			rep.Problem = fmt.Sprintf(format, args...)
		}
		rep.OK = false
		return rep, nil
	}
	if b.Format != BundleFormat {
		return fail("format %q is not %s", b.Format, BundleFormat)
	}
	canon, err := b.Encode()
	if err != nil {
		return BundleReport{}, err
	}
	if !bytes.Equal(canon, data) {
		return fail("the bundle is not byte for byte as the ledger wrote it (edited?)")
	}
	cp, err := v.Open([]byte(b.Checkpoint))
	if err != nil {
		return fail("%s", domain.ErrorMessage(err))
	}
	rep.Checkpoint = cp
	rep.OK = true
	last := int64(-1)
	for _, e := range b.Events {
		c := EventCheck{Position: e.Position, LeafIndex: e.LeafIndex}
		c.Included, c.Body, c.Problem = checkEvent(b.UserID, e, cp)
		if c.Problem == "" && e.LeafIndex <= last {
			c.Problem = fmt.Sprintf("leaf %d is out of order or repeated", e.LeafIndex)
		}
		last = max(last, e.LeafIndex)
		if c.Body == "erased" {
			rep.Erased++
		}
		rep.Events = append(rep.Events, c)
		if c.Problem != "" {
			fail("event at position %d (leaf %d): %s", e.Position, e.LeafIndex, c.Problem)
		}
	}
	return rep, nil
}

// checkEvent checks one bundle event against cp; problem is "" when it
// holds (body is then "ok" or "erased"). included reports whether its leaf
// is proven in the tree.
func checkEvent(user string, e BundleEvent, cp Checkpoint) (included bool, body, problem string) {
	if e.UserID != user {
		return false, "", fmt.Sprintf("it is about user %q, not %q", e.UserID, user)
	}
	commit, err := hash32(e.BodyCommitment)
	if err != nil {
		return false, "", "body_commitment: " + err.Error()
	}
	want, err := hash32(e.LeafHash)
	if err != nil {
		return false, "", "leaf_hash: " + err.Error()
	}
	if LeafHash(domain.Leaf{LeafFields: e.LeafFields, BodyCommitment: commit}) != want {
		return false, "", "its fields do not hash to its leaf hash"
	}
	proof := make(tlog.RecordProof, len(e.Proof))
	for i, p := range e.Proof {
		if proof[i], err = hash32(p); err != nil {
			return false, "", "proof: " + err.Error()
		}
	}
	if e.LeafIndex < 0 || e.LeafIndex >= cp.Size {
		return false, "", fmt.Sprintf("leaf %d is not in a tree of %d", e.LeafIndex, cp.Size)
	}
	if err := tlog.CheckRecord(proof, cp.Size, cp.Root, e.LeafIndex, want); err != nil {
		return false, "", "its inclusion proof does not lead to the checkpoint's root"
	}
	salt, err := strictBase64(e.Salt)
	if err != nil {
		return true, "", "salt is not base64"
	}
	switch {
	case e.Body == nil && e.Erased:
		return true, "erased", ""
	case e.Body == nil:
		return true, "", "the body is missing and the event is not marked erased"
	case e.Erased:
		return true, "", "the event is marked erased but carries a body"
	case domain.BodyCommitment(salt, []byte(*e.Body)) != commit:
		return true, "mismatch", "its body does not match the body commitment in its leaf"
	}
	return true, "ok", ""
}

func hash32(s string) (tlog.Hash, error) {
	b, err := strictBase64(s)
	if err != nil || len(b) != tlog.HashSize {
		return tlog.Hash{}, fmt.Errorf("not base64 of %d bytes", tlog.HashSize)
	}
	var h tlog.Hash
	copy(h[:], b)
	return h, nil
}

// strictBase64 decodes standard base64 that is in its one canonical form:
// Go's decoder ignores the unused low bits of the last character, so two
// spellings would decode alike, and a bundle's bytes could change unnoticed.
func strictBase64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if base64.StdEncoding.EncodeToString(b) != s {
		return nil, fmt.Errorf("not canonical base64")
	}
	return b, nil
}
