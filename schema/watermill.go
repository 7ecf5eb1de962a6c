package schema

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	wmsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
)

// Topic is the Watermill topic name of the ledger. EventsSchema maps it to the
// events table.
const Topic = "events"

// Metadata keys EventsSchema reads from a Watermill message to fill the
// events table's columns. The payload is the exact verified body.
const (
	MetaDeliveryID    = "delivery_id"
	MetaType          = "type"
	MetaUserID        = "user_id"
	MetaOccurredAt    = "occurred_at" // RFC 3339 with nanoseconds
	MetaReceivedAt    = "received_at" // set by UnmarshalMessage only
	MetaSvixTimestamp = "svix_timestamp"
	MetaSvixSignature = "svix_signature"
	MetaPosition      = "position" // set by UnmarshalMessage only
	// MetaCommitment, when set, marks the payload as the sealed body
	// (body_sealed) and holds the raw 32-byte body commitment.
	MetaCommitment = "body_commitment"
)

// EventsSchema is the watermill-sql v3 SchemaAdapter for the events table.
// Unlike Watermill's default table it has a unique delivery id and audit
// columns; a re-published delivery is a no-op (ON CONFLICT DO NOTHING). Its
// INSERT returns the delivery ids it inserted. Its
// SELECT keeps Watermill's xid8 + pg_snapshot_xmin gate but uses a row
// comparison, an index range scan however long the unread backlog is.
// The table itself is created by the embedded migrations, not by Watermill.
type EventsSchema struct {
	wmsql.DefaultPostgreSQLSchema
	// BatchSize is how many rows SelectQuery reads at once (default 100).
	BatchSize int
	// Keys opens sealed bodies in UnmarshalMessage (nil: a sealed row is
	// an error).
	Keys *userkeys.Keyring
}

const insertColumns = 10

// InsertQuery implements wmsql.SchemaAdapter. A message it cannot turn into
// a row (no delivery id or type, an unreadable time) is an EINVALID error.
func (s EventsSchema) InsertQuery(topic string, msgs message.Messages) (wmsql.Query, error) {
	if topic != Topic {
		return wmsql.Query{}, fmt.Errorf("events schema: unknown topic %q", topic)
	}
	// The sealed columns are written only by a batch that seals (a ledger
	// without a master key writes what it did before them).
	cols := insertColumns - 2
	for _, m := range msgs {
		if _, ok := m.Metadata[MetaCommitment]; ok {
			cols = insertColumns
			break
		}
	}
	var b strings.Builder
	if cols == insertColumns {
		b.WriteString(`INSERT INTO events (message_uuid, delivery_id, type, user_id, occurred_at, body, svix_timestamp, svix_signature, body_sealed, body_commitment, transaction_id) VALUES `)
	} else {
		b.WriteString(`INSERT INTO events (message_uuid, delivery_id, type, user_id, occurred_at, body, svix_timestamp, svix_signature, transaction_id) VALUES `)
	}
	args := make([]any, 0, len(msgs)*cols)
	for i, m := range msgs {
		id := m.Metadata.Get(MetaDeliveryID)
		if id == "" {
			return wmsql.Query{}, domain.Errorf(domain.EINVALID, "message %s has no %s", m.UUID, MetaDeliveryID)
		}
		typ := m.Metadata.Get(MetaType)
		if typ == "" {
			return wmsql.Query{}, domain.Errorf(domain.EINVALID, "delivery %s has no %s", id, MetaType)
		}
		occurred, err := time.Parse(time.RFC3339Nano, m.Metadata.Get(MetaOccurredAt))
		if err != nil {
			return wmsql.Query{}, domain.Errorf(domain.EINVALID, "delivery %s: %s: %v", id, MetaOccurredAt, err)
		}
		ts, err := strconv.ParseInt(m.Metadata.Get(MetaSvixTimestamp), 10, 64)
		if err != nil {
			return wmsql.Query{}, domain.Errorf(domain.EINVALID, "delivery %s: %s: %v", id, MetaSvixTimestamp, err)
		}
		var user any
		if u := m.Metadata.Get(MetaUserID); u != "" {
			user = u
		}
		if i > 0 {
			b.WriteByte(',')
		}
		n := i * cols
		if cols == insertColumns {
			fmt.Fprintf(&b, "($%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d,pg_current_xact_id())", n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8, n+9, n+10)
		} else {
			fmt.Fprintf(&b, "($%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d,pg_current_xact_id())", n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8)
		}
		// The body goes as a string: lib/pq would hex-encode a []byte. A
		// sealed body goes to body_sealed (bytea), body left ''.
		body, sealedBody, commitment := string(m.Payload), []byte(nil), []byte(nil)
		if c, ok := m.Metadata[MetaCommitment]; ok {
			body, sealedBody, commitment = "", []byte(m.Payload), []byte(c)
		}
		args = append(args, m.UUID, id, typ, user, occurred, body, ts, m.Metadata.Get(MetaSvixSignature))
		if cols == insertColumns {
			args = append(args, sealedBody, commitment)
		}
	}
	// RETURNING names the rows actually inserted: an executor that runs the
	// statement as a query learns which deliveries were new. Exec ignores it.
	b.WriteString(` ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id`)
	return wmsql.Query{Query: b.String(), Args: args}, nil
}

// SchemaInitializingQueries implements wmsql.SchemaAdapter. The events table
// is created by migrations, so there is nothing to initialize.
func (s EventsSchema) SchemaInitializingQueries(topic string) []wmsql.Query { return nil }

// eventColumns is the column list every ledger read scans with scanEvent.
const eventColumns = `position, transaction_id, delivery_id, type, COALESCE(user_id, ''), occurred_at, received_at, body, svix_timestamp, svix_signature, source, ` + sealColumns

// SelectQuery implements wmsql.SchemaAdapter with the row-comparison form of
// Watermill's xid8 gate.
func (s EventsSchema) SelectQuery(topic string, consumerGroup string, offsets wmsql.OffsetsAdapter) wmsql.Query {
	next := offsets.NextOffsetQuery(topic, consumerGroup)
	batch := s.BatchSize
	if batch <= 0 {
		batch = 100
	}
	q := `WITH last_processed AS (` + next.Query + `)
SELECT ` + eventColumns + ` FROM events
WHERE (transaction_id, position) > (
        (SELECT last_processed_transaction_id FROM last_processed),
        (SELECT offset_acked FROM last_processed))
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id, position
LIMIT ` + strconv.Itoa(batch)
	return wmsql.Query{Query: q, Args: next.Args}
}

// UnmarshalMessage implements wmsql.SchemaAdapter: the message payload is the
// stored body, and its metadata carries the row's columns.
func (s EventsSchema) UnmarshalMessage(row wmsql.Scanner) (wmsql.Row, error) {
	e, err := scanEvent(s.Keys, row)
	if err != nil {
		return wmsql.Row{}, err
	}
	msg := message.NewMessage(e.DeliveryID, e.Body)
	msg.Metadata.Set(MetaDeliveryID, e.DeliveryID)
	msg.Metadata.Set(MetaType, e.Type)
	msg.Metadata.Set(MetaUserID, e.UserID)
	msg.Metadata.Set(MetaOccurredAt, e.OccurredAt.Format(time.RFC3339Nano))
	msg.Metadata.Set(MetaReceivedAt, e.ReceivedAt.Format(time.RFC3339Nano))
	msg.Metadata.Set(MetaSvixTimestamp, strconv.FormatInt(e.SvixTimestamp, 10))
	msg.Metadata.Set(MetaSvixSignature, e.SvixSignature)
	msg.Metadata.Set(MetaPosition, strconv.FormatInt(e.Position, 10))
	return wmsql.Row{
		Offset:    e.Position,
		UUID:      []byte(e.DeliveryID),
		Payload:   e.Body,
		Msg:       msg,
		ExtraData: map[string]any{"transaction_id": int64(e.TxID)},
	}, nil
}
