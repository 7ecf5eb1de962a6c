package domain

import (
	"bytes"
	"encoding/json"
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
// when the body is not UTF-8 JSON, not an object, or lacks a string "type" or
// an object "data". Unknown event types are accepted: the ledger keeps them all.
func ParseEnvelope(body []byte) (Envelope, error) {
	if !utf8.Valid(body) {
		return Envelope{}, Errorf(EINVALID, "body is not UTF-8 text")
	}
	if bytes.IndexByte(body, 0) >= 0 {
		return Envelope{}, Errorf(EINVALID, "body contains a NUL byte")
	}
	var env Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return Envelope{}, Errorf(EINVALID, "body is not a JSON event envelope")
	}
	if strings.TrimSpace(env.Type) == "" {
		return Envelope{}, Errorf(EINVALID, `envelope has no "type"`)
	}
	if len(env.Type) > 200 {
		return Envelope{}, Errorf(EINVALID, `envelope "type" is longer than 200 characters`)
	}
	data := bytes.TrimSpace(env.Data)
	if len(data) == 0 || data[0] != '{' {
		return Envelope{}, Errorf(EINVALID, `envelope has no "data" object`)
	}
	if env.Timestamp < 0 {
		return Envelope{}, Errorf(EINVALID, `envelope "timestamp" is negative`)
	}
	return env, nil
}

// subjectData holds the fields that name the Clerk user an event is about.
type subjectData struct {
	ID             string `json:"id"`
	Object         string `json:"object"`
	UserID         string `json:"user_id"`
	PublicUserData struct {
		UserID string `json:"user_id"`
	} `json:"public_user_data"`
}

// SubjectUserID returns the id of the Clerk user the event is about, or "" when
// it is about no single user: data.id for user.*, data.user_id for session.*,
// email.*, sms.* and the like, data.public_user_data.user_id for organization
// memberships.
func (e Envelope) SubjectUserID() string {
	var d subjectData
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return ""
	}
	switch {
	case strings.HasPrefix(e.Type, "user."):
		return d.ID
	case d.UserID != "":
		return d.UserID
	case d.PublicUserData.UserID != "":
		return d.PublicUserData.UserID
	case d.Object == "user" || strings.HasPrefix(d.ID, "user_"):
		return d.ID
	}
	return ""
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
	OccurredAt time.Time // envelope timestamp (or svix-timestamp when absent)
}

// NewDelivery builds a Delivery from a verified body and its Svix headers. It
// returns EINVALID when the body is not a Clerk event envelope.
func NewDelivery(id string, svixTimestamp int64, signature string, body []byte) (Delivery, error) {
	env, err := ParseEnvelope(body)
	if err != nil {
		return Delivery{}, err
	}
	occurred := time.UnixMilli(env.Timestamp).UTC()
	if env.Timestamp == 0 {
		occurred = time.Unix(svixTimestamp, 0).UTC()
	}
	return Delivery{
		ID:         id,
		Timestamp:  svixTimestamp,
		Signature:  signature,
		Body:       body,
		Type:       env.Type,
		UserID:     env.SubjectUserID(),
		OccurredAt: occurred,
	}, nil
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
}
