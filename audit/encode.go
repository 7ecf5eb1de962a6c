package audit

import (
	"bytes"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// Formats of the history: one page as JSON, or an export.
const (
	FormatJSON  = "json"
	FormatJSONL = "jsonl"
	FormatCSV   = "csv"
)

// EventWriter writes audit events in one export format. It buffers; Flush
// writes out what is buffered. It is not safe for concurrent use.
type EventWriter interface {
	Write(e schema.AuditEvent) error
	Flush() error
}

// NewEventWriter returns an EventWriter for format (jsonl or csv) on w. It
// returns EINVALID for any other format.
//
// JSON lines: one object per line with position, delivery_id, type, user_id
// (null when the event is about no user), occurred_at, received_at (RFC 3339,
// UTC), source (svix or clerk_api), leaf_index and leaf_hash (the event's leaf in the Merkle tree and its
// hash in standard base64; both null until sealed) and payload (the stored
// body as JSON, on one line). CSV: a header row and the same columns, the payload as
// JSON text, source last.
func NewEventWriter(w io.Writer, format string) (EventWriter, error) {
	switch format {
	case FormatJSONL:
		return &jsonlWriter{w: w, buf: make([]byte, 0, 64<<10)}, nil
	case FormatCSV:
		c := &csvWriter{w: csv.NewWriter(w)}
		return c, c.w.Write(csvHeader)
	}
	return nil, domain.Errorf(domain.EINVALID, "format %q is not json, jsonl or csv", format)
}

// ExportContentType returns the media type of an export format.
func ExportContentType(format string) string {
	if format == FormatCSV {
		return "text/csv; charset=utf-8"
	}
	return "application/x-ndjson"
}

var csvHeader = []string{"position", "delivery_id", "type", "user_id", "occurred_at", "received_at", "leaf_index", "leaf_hash", "payload", "source"}

// jsonlWriter encodes by hand: encoding/json would re-validate every payload
// and allocate per field, which halves the export rate.
type jsonlWriter struct {
	w   io.Writer
	buf []byte
}

func (j *jsonlWriter) Write(e schema.AuditEvent) error {
	j.buf = append(appendAuditEvent(j.buf, e), '\n')
	if len(j.buf) >= 48<<10 {
		return j.Flush()
	}
	return nil
}

// appendAuditEvent appends e as the JSON object AuditEventJSON marshals to
// (same fields, order and formats), by hand: encoding/json would re-validate
// every payload and allocate per field, which halves the export rate.
func appendAuditEvent(b []byte, e schema.AuditEvent) []byte {
	b = append(b, `{"position":`...)
	b = strconv.AppendInt(b, e.Position, 10)
	b = append(b, `,"delivery_id":`...)
	b = appendJSONString(b, e.DeliveryID)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, e.Type)
	b = append(b, `,"user_id":`...)
	if e.UserID == "" {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, e.UserID)
	}
	b = append(b, `,"occurred_at":"`...)
	b = e.OccurredAt.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","received_at":"`...)
	b = e.ReceivedAt.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","source":`...)
	b = appendJSONString(b, EventSource(e.Event))
	if e.LeafHash == nil {
		b = append(b, `,"leaf_index":null,"leaf_hash":null`...)
	} else {
		b = append(b, `,"leaf_index":`...)
		b = strconv.AppendInt(b, e.LeafIndex, 10)
		b = append(b, `,"leaf_hash":"`...)
		b = base64.StdEncoding.AppendEncode(b, e.LeafHash)
		b = append(b, '"')
	}
	if e.Erased {
		// Erased: the marker (when, by whom, why) and no payload.
		b = append(b, `,"erased":{"at":`...)
		if m := e.Erasure; m != nil {
			b = append(b, '"')
			b = m.At.UTC().AppendFormat(b, time.RFC3339Nano)
			b = append(b, `","by":`...)
			b = appendJSONString(b, m.By)
			b = append(b, `,"reason":`...)
			b = appendJSONString(b, m.Reason)
		} else {
			b = append(b, `null,"by":"","reason":""`...)
		}
		return append(b, `},"payload":null}`...)
	}
	b = append(b, `,"payload":`...)
	b = appendPayload(b, e.Body)
	return append(b, '}')
}

// AppendEventsPage appends the eventsPage of events (and next, the cursor
// after them) as JSON, followed by a newline as json.Encoder writes it. It is
// EventsPageStart, appendPageEvent for each event and appendEventsPageEnd,
// which the history handler calls as the rows arrive.
func AppendEventsPage(b []byte, events []schema.AuditEvent, next string) []byte {
	b = append(b, EventsPageStart...)
	for i, e := range events {
		b = AppendPageEvent(b, i, e)
	}
	return AppendEventsPageEnd(b, len(events), next)
}

// EventsPageStart opens an eventsPage.
const EventsPageStart = `{"events":[`

// AppendPageEvent appends e, the i-th event (from 0) of an eventsPage.
func AppendPageEvent(b []byte, i int, e schema.AuditEvent) []byte {
	if i > 0 {
		b = append(b, ',')
	}
	return appendAuditEvent(b, e)
}

// AppendEventsPageEnd closes an eventsPage of count events.
func AppendEventsPageEnd(b []byte, count int, next string) []byte {
	b = append(b, `],"count":`...)
	b = strconv.AppendInt(b, int64(count), 10)
	b = append(b, `,"next_cursor":`...)
	b = appendJSONString(b, next)
	return append(b, "}\n"...)
}

func (j *jsonlWriter) Flush() error {
	if len(j.buf) == 0 {
		return nil
	}
	_, err := j.w.Write(j.buf)
	j.buf = j.buf[:0]
	return err
}

// appendPayload appends the stored body as JSON on one line. Bodies were
// verified as JSON objects at ingest and are written as they are (compacted
// only when they span lines); a body that does not even look like a JSON
// object or array (a tampered row) is written as a JSON string instead, so
// the output stays parseable.
func appendPayload(b, body []byte) []byte {
	t := bytes.TrimSpace(body)
	if len(t) < 2 || !((t[0] == '{' && t[len(t)-1] == '}') || (t[0] == '[' && t[len(t)-1] == ']')) {
		return appendJSONString(b, string(body))
	}
	if bytes.IndexByte(t, '\n') < 0 && bytes.IndexByte(t, '\r') < 0 {
		return append(b, t...)
	}
	var c bytes.Buffer
	if err := json.Compact(&c, t); err != nil {
		return appendJSONString(b, string(body))
	}
	return append(b, c.Bytes()...)
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, s[start:i]...)
				b = append(b, `\ufffd`...)
				i += size
				start = i
				continue
			}
			i += size
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

type csvWriter struct {
	w   *csv.Writer
	rec [10]string
}

func (c *csvWriter) Write(e schema.AuditEvent) error {
	r := c.rec[:]
	r[0] = strconv.FormatInt(e.Position, 10)
	r[1] = e.DeliveryID
	r[2] = e.Type
	r[3] = e.UserID
	r[4] = e.OccurredAt.UTC().Format(time.RFC3339Nano)
	r[5] = e.ReceivedAt.UTC().Format(time.RFC3339Nano)
	r[6], r[7] = "", ""
	if e.LeafHash != nil {
		r[6] = strconv.FormatInt(e.LeafIndex, 10)
		r[7] = base64.StdEncoding.EncodeToString(e.LeafHash)
	}
	r[8] = string(e.Body)
	if e.Erased {
		r[8] = "[erased]"
		if m := e.Erasure; m != nil {
			r[8] = "[erased " + m.At.UTC().Format(time.RFC3339) + " by " + m.By + ": " + m.Reason + "]"
		}
	}
	// Last: consumers reading columns by position before it existed still work.
	r[9] = EventSource(e.Event)
	return c.w.Write(r)
}

func (c *csvWriter) Flush() error {
	c.w.Flush()
	return c.w.Error()
}

// EventsPage is the JSON shape of one page of the history (GET
// /api/audit/events); AppendEventsPage encodes it as encoding/json would.
type EventsPage struct {
	Events []EventJSON `json:"events"`
	Count  int         `json:"count"`
	// NextCursor continues after the last event; empty when nothing
	// follows (the end of what is visible now).
	NextCursor string `json:"next_cursor"`
}

// EventJSON is the JSON shape of one event in audit answers.
type EventJSON struct {
	Position   int64     `json:"position"`
	DeliveryID string    `json:"delivery_id"`
	Type       string    `json:"type"`
	UserID     *string   `json:"user_id"`
	OccurredAt time.Time `json:"occurred_at"`
	ReceivedAt time.Time `json:"received_at"`
	// Source is where the event came from: "svix" (a verified webhook
	// delivery), "clerk_api" (a snapshot the ledger read from Clerk's
	// Backend API: no Svix signature) or "ledger" (written by the ledger
	// itself, such as an erasure).
	Source    string  `json:"source"`
	LeafIndex *int64  `json:"leaf_index"`
	LeafHash  *string `json:"leaf_hash"`
	// Erased is set, and Payload null, for an erased event.
	Erased  *ErasedJSON     `json:"erased,omitempty"`
	Payload json.RawMessage `json:"payload"`
}

// ErasedJSON is the erased marker of an event: when its user was erased,
// by whom and why (At null when the erasure is not recorded: a body
// discarded at ingest for a user erased since).
type ErasedJSON struct {
	At     *time.Time `json:"at"`
	By     string     `json:"by"`
	Reason string     `json:"reason"`
}

// NewEventJSON returns e in its JSON shape.
func NewEventJSON(e schema.AuditEvent) EventJSON {
	j := EventJSON{
		Position: e.Position, DeliveryID: e.DeliveryID, Type: e.Type,
		OccurredAt: e.OccurredAt, ReceivedAt: e.ReceivedAt, Source: EventSource(e.Event),
		Payload: appendPayload(nil, e.Body),
	}
	if e.Erased {
		j.Payload, j.Erased = json.RawMessage("null"), &ErasedJSON{}
		if m := e.Erasure; m != nil {
			at := m.At.UTC()
			j.Erased.At, j.Erased.By, j.Erased.Reason = &at, m.By, m.Reason
		}
	}
	if e.UserID != "" {
		u := e.UserID
		j.UserID = &u
	}
	if e.LeafHash != nil {
		n, h := e.LeafIndex, base64.StdEncoding.EncodeToString(e.LeafHash)
		j.LeafIndex, j.LeafHash = &n, &h
	}
	return j
}

// EventSource is e's source, "svix" for rows stored before the column had
// another value.
func EventSource(e domain.Event) string {
	if e.Source == "" {
		return domain.SourceSvix
	}
	return e.Source
}
