package domain

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxBodyBytes is the largest webhook body the ledger accepts (1 MiB).
const MaxBodyBytes = 1 << 20

// Envelope is the outer shape of every Clerk webhook event:
//
//	{"data":{...},"object":"event","type":"user.created","timestamp":1716883200000,
//	 "instance_id":"ins_...","event_attributes":{...}}
//
// Data is kept raw; each consumer decodes what it needs.
type Envelope struct {
	Type       string          `json:"type"`
	Object     string          `json:"object"`
	Timestamp  int64           `json:"timestamp"` // ms since the epoch
	InstanceID string          `json:"instance_id"`
	Data       json.RawMessage `json:"data"`
}

// ParseEnvelope decodes a verified webhook body. It returns an EINVALID error
// naming the field when the body is not UTF-8 JSON, not an object, lacks a
// string "type" (1 to MaxTypeBytes bytes of text without control
// characters) or an object "data", or has a "timestamp" that is not an
// integer from 0 to MaxEnvelopeTimestamp (year 9999). Unknown event types
// are accepted: the ledger keeps them all.
func ParseEnvelope(body []byte) (Envelope, error) {
	env, _, _, err := parseEnvelope(body)
	return env, err
}

// parseEnvelope is ParseEnvelope also returning the subject's fields of
// data (subjectOK false when they do not decode).
func parseEnvelope(body []byte) (env Envelope, subj subjectData, subjectOK bool, err error) {
	if !utf8.Valid(body) {
		return Envelope{}, subjectData{}, false, Errorf(EINVALID, "body is not UTF-8 text")
	}
	if bytes.IndexByte(body, 0) >= 0 {
		return Envelope{}, subjectData{}, false, Errorf(EINVALID, "body contains a NUL byte")
	}
	env, subj, subjectOK, err = decodeEnvelope(body)
	if err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			want := "string"
			if typeErr.Field == "timestamp" {
				want = "integer of Unix milliseconds"
			}
			return Envelope{}, subjectData{}, false, Errorf(EINVALID, "envelope %q is not a JSON %s", typeErr.Field, want)
		}
		return Envelope{}, subjectData{}, false, Errorf(EINVALID, "body is not a JSON event envelope")
	}
	if strings.TrimSpace(env.Type) == "" {
		return Envelope{}, subjectData{}, false, Errorf(EINVALID, `envelope has no "type"`)
	}
	if err := checkText(`envelope "type"`, env.Type, MaxTypeBytes); err != nil {
		return Envelope{}, subjectData{}, false, err
	}
	data := bytes.TrimSpace(env.Data)
	if len(data) == 0 || data[0] != '{' {
		return Envelope{}, subjectData{}, false, Errorf(EINVALID, `envelope has no "data" object`)
	}
	if env.Timestamp < 0 {
		return Envelope{}, subjectData{}, false, Errorf(EINVALID, `envelope "timestamp" is negative`)
	}
	if env.Timestamp > MaxEnvelopeTimestamp {
		return Envelope{}, subjectData{}, false, Errorf(EINVALID, `envelope "timestamp" %d is after the year 9999 (want Unix milliseconds)`, env.Timestamp)
	}
	return env, subj, subjectOK, nil
}

// subjectData holds the fields that name the Clerk user an event is about.
type subjectData struct {
	ID             string `json:"id"`
	Object         string `json:"object"`
	UserID         string `json:"user_id"`
	PublicUserData struct {
		UserID string `json:"user_id"`
	} `json:"public_user_data"`
	Payer struct {
		UserID string `json:"user_id"`
	} `json:"payer"`
}

// SubjectUserID returns the id of the Clerk user the event is about, or "" when
// it is about no single user: data.id for user.*, data.user_id for session.*,
// email.*, sms.* and the like, data.public_user_data.user_id for organization
// memberships, data.payer.user_id for billing events (subscription.*,
// subscriptionItem.*, paymentAttempt.*: their payer, when it is a user).
func (e Envelope) SubjectUserID() string {
	id, _ := e.subject()
	return id
}

// subject is SubjectUserID and the field it was read from.
func (e Envelope) subject() (id, field string) {
	d, ok := decodeSubject(e.Data)
	if !ok {
		return "", ""
	}
	return e.subjectOf(d)
}

// subjectOf is subject with data already decoded into d.
func (e Envelope) subjectOf(d subjectData) (id, field string) {
	switch {
	case strings.HasPrefix(e.Type, "user."):
		return d.ID, "data.id"
	case d.UserID != "":
		return d.UserID, "data.user_id"
	case d.PublicUserData.UserID != "":
		return d.PublicUserData.UserID, "data.public_user_data.user_id"
	case d.Payer.UserID != "":
		return d.Payer.UserID, "data.payer.user_id"
	case d.Object == "user" || strings.HasPrefix(d.ID, "user_"):
		return d.ID, "data.id"
	}
	return "", ""
}

// Delivery is one verified webhook delivery as it is appended to the ledger:
// the exact body bytes plus the Svix headers needed to re-check the signature.
type Delivery struct {
	ID         string    // svix-id: stable across retries, unique in the ledger
	Timestamp  int64     // svix-timestamp, unix seconds
	Signature  string    // svix-signature, as sent (space-separated list)
	Body       []byte    // exact verified bytes
	Type       string    // envelope type
	UserID     string    // SubjectUserID, may be ""
	OccurredAt time.Time // OccurredAt(envelope timestamp, svix-timestamp)
	// Source is SourceSvix ("" means it too) for a webhook delivery,
	// SourceClerkAPI for a snapshot read from the Backend API (NewSnapshot,
	// NewSnapshotDeleted), which has no svix-timestamp or signature.
	Source string
}

// NewDelivery builds a Delivery from a verified body and its Svix headers. It
// returns EINVALID naming the field when the body is not a Clerk event
// envelope (ParseEnvelope), when the subject user id is longer than
// MaxUserIDBytes or holds control characters, or when the result would not
// pass Delivery.Check (a malformed svix-id, say). OccurredAt follows the
// rule of the function OccurredAt.
func NewDelivery(id string, svixTimestamp int64, signature string, body []byte) (Delivery, error) {
	if err := CheckDeliveryID(id); err != nil {
		return Delivery{}, err
	}
	env, subj, subjectOK, err := parseEnvelope(body)
	if err != nil {
		return Delivery{}, err
	}
	var user, field string
	if subjectOK {
		user, field = env.subjectOf(subj)
	}
	if err := checkText(field, user, MaxUserIDBytes); err != nil {
		return Delivery{}, err
	}
	d := Delivery{
		ID:         id,
		Timestamp:  svixTimestamp,
		Signature:  signature,
		Body:       body,
		Type:       env.Type,
		UserID:     user,
		OccurredAt: OccurredAt(env.Timestamp, svixTimestamp),
	}
	if err := d.Check(); err != nil {
		return Delivery{}, err
	}
	return d, nil
}

// Event is one stored ledger row. Ledger order is (TxID, Position): Position is
// assigned at insert, TxID is the inserting transaction's xid8; readers only
// see rows below the snapshot xmin, so no late commit is ever skipped.
type Event struct {
	Position      int64     `json:"position"`
	TxID          uint64    `json:"-"`
	DeliveryID    string    `json:"delivery_id"`
	Type          string    `json:"type"`
	UserID        string    `json:"user_id,omitempty"`
	OccurredAt    time.Time `json:"occurred_at"`
	ReceivedAt    time.Time `json:"received_at"`
	Body          []byte    `json:"-"`
	SvixTimestamp int64     `json:"svix_timestamp"`
	SvixSignature string    `json:"-"`
	// Source is where the event came from: "svix" (a verified webhook
	// delivery) unless another source stored it.
	Source string `json:"source,omitempty"`
	// Erased is true when the body is gone: its user was erased (the data
	// key destroyed). Body is then nil; every other field stays.
	Erased bool `json:"erased,omitempty"`
	// Salt is the random salt a sealed body was stored with (nil for a
	// body kept in clear): with Body it opens the leaf's commitment.
	Salt []byte `json:"-"`
	// Commitment is the body commitment stored with a sealed event (nil
	// for a body kept in clear, whose commitment is computed).
	Commitment []byte `json:"-"`
}

// BodyCommitment returns the commitment e's leaf makes to its body: the
// stored one of a sealed (or erased) event, else BodyCommitment(Salt, Body).
func (e Event) BodyCommitment() [HashSize]byte {
	if len(e.Commitment) == HashSize {
		return [HashSize]byte(e.Commitment)
	}
	return BodyCommitment(e.Salt, e.Body)
}

// Leaf returns e's leaf, its body committed by e.BodyCommitment.
func (e Event) Leaf() Leaf {
	return Leaf{LeafFields: e.leafFields(), BodyCommitment: e.BodyCommitment()}
}

// leafFields returns the fields of e its leaf commits to as they are.
func (e Event) leafFields() LeafFields {
	return LeafFields{
		Position: e.Position, DeliveryID: e.DeliveryID, Type: e.Type, UserID: e.UserID, Source: e.Source,
		OccurredAt: e.OccurredAt, ReceivedAt: e.ReceivedAt,
		SvixTimestamp: e.SvixTimestamp, SvixSignature: e.SvixSignature,
	}
}
