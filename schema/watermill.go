package schema

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	wmsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
	"github.com/lib/pq"
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
	// Plain leaves ON CONFLICT out of the INSERT: a delivery id already
	// stored fails the whole statement on events' unique delivery id
	// (isDeliveryTaken), storing nothing. The Store's first attempt at a
	// group: the speculative insertion ON CONFLICT makes of every row costs
	// PostgreSQL more than the rare failed statement does (a redelivery's
	// group is inserted again with ON CONFLICT).
	Plain bool
}

// insertColumnList is the columns of events an append writes, in the order
// of appendRowArgs; insertColumns is their number; the sealed columns
// (sealedColumnList, sealedColumns more) are written only by a batch that
// seals, so a store without a master key writes what a ledger before
// them (migration 00020) has. The INSERT adds transaction_id
// (pg_current_xact_id(), the ledger order) to each row.
const (
	insertColumnList = `message_uuid, delivery_id, type, user_id, occurred_at, body, svix_timestamp, svix_signature`
	insertColumns    = 8
	sealedColumnList = `, body_sealed, body_commitment`
	sealedColumns    = 2
)

// appendRowArgs appends the values of the row of r, made into message uuid,
// in the order of insertColumnList (and sealedColumnList when sealing).
func appendRowArgs(args []any, uuid string, r *appendReq, sealing bool) []any {
	var user any
	if r.d.UserID != "" {
		user = r.d.UserID
	}
	// The body goes as the verified bytes: lib/pq sends a []byte bound to a
	// text parameter as it is. A sealed body (r.seal, SealDeliveries) goes
	// to body_sealed (bytea) with its commitment, body left ''; a clear one
	// leaves both NULL.
	var body any = r.d.Body
	var sealed, commitment any
	if r.seal.Sealed != nil {
		body, sealed, commitment = "", r.seal.Sealed, r.seal.Commitment
	}
	args = append(args, uuid, rowID{r}, r.d.Type, user, r.d.OccurredAt, body, r.d.Timestamp, r.d.Signature)
	if sealing {
		args = append(args, sealed, commitment)
	}
	return args
}

// InsertQuery implements wmsql.SchemaAdapter: one multi-row INSERT of msgs,
// each made by DeliveryMessage (the delivery rides typed in the message's
// context). A message that carries no delivery, or a delivery without an id
// or a type, is an EINVALID error (the Store checks every delivery with
// domain.Delivery.Check before).
func (s EventsSchema) InsertQuery(topic string, msgs message.Messages) (wmsql.Query, error) {
	if topic != Topic {
		return wmsql.Query{}, fmt.Errorf("events schema: unknown topic %q", topic)
	}
	cols, list := insertColumns, insertColumnList
	var fresh []*appendReq // one request per fresh key (Store.seal)
	seen := map[*userkeys.Fresh]bool{}
	for _, m := range msgs {
		r, ok := rowFrom(m)
		if ok && r.seal.Sealed != nil {
			cols, list = insertColumns+sealedColumns, insertColumnList+sealedColumnList
		}
		if ok && r.fresh != nil && !seen[r.fresh] {
			seen[r.fresh] = true
			fresh = append(fresh, r)
		}
	}
	var b []byte
	if len(fresh) > 0 {
		b = append(b, freshKeysHead...)
	}
	b = append(b, `INSERT INTO events (`+list+`, transaction_id) VALUES `...)
	args := make([]any, 0, len(msgs)*cols+3)
	for i, m := range msgs {
		r, ok := rowFrom(m)
		if !ok {
			return wmsql.Query{}, domain.Errorf(domain.EINVALID, "message %s carries no delivery (make it with schema.DeliveryMessage)", m.UUID)
		}
		if r.d.ID == "" || r.d.Type == "" {
			return wmsql.Query{}, domain.Errorf(domain.EINVALID, "message %s: a delivery without an id or a type", m.UUID)
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '(')
		for c := range cols {
			if c > 0 {
				b = append(b, ',')
			}
			b = append(b, '$')
			b = strconv.AppendInt(b, int64(len(args)+c+1), 10)
		}
		b = append(b, ",pg_current_xact_id())"...)
		args = appendRowArgs(args, m.UUID, r, cols > insertColumns)
	}
	// RETURNING names the rows actually inserted: an executor that runs the
	// statement as a query learns which deliveries were new. Exec ignores it.
	if !s.Plain {
		b = append(b, ` ON CONFLICT (delivery_id) DO NOTHING`...)
	}
	b = append(b, ` RETURNING delivery_id`...)
	if len(fresh) == 0 {
		return wmsql.Query{Query: string(b), Args: args}, nil
	}
	// The fresh keys, in user order (two group commits making keys for the
	// same users wait for each other's rows in the same order).
	slices.SortFunc(fresh, func(x, y *appendReq) int { return strings.Compare(x.d.UserID, y.d.UserID) })
	users, wrapped := make([]string, len(fresh)), make([][]byte, len(fresh))
	for i, r := range fresh {
		users[i], wrapped[i] = r.d.UserID, r.fresh.Wrapped
	}
	n := len(args)
	q := strings.NewReplacer("$U", "$"+strconv.Itoa(n+1), "$W", "$"+strconv.Itoa(n+2), "$K", "$"+strconv.Itoa(n+3)).Replace(string(b))
	args = append(args, pq.Array(users), pq.ByteaArray(wrapped), fresh[0].fresh.KEK)
	return wmsql.Query{Query: q, Args: args}, nil
}

// freshKeysHead begins the INSERT of a group commit that carries fresh data
// keys (Store.seal): their rows go into user_keys in the same statement as
// the events, with a plain INSERT, so a user who has a key row already
// (live, made by another append, or destroyed by an erasure) fails the
// whole statement on user_keys' primary key: no event is stored under a key
// that is not, and the Store seals those deliveries again under the stored
// keys (ErrKeyRowTaken, isKeyRowTaken). Keys and events commit together: no
// event outlives its key, and one WAL flush covers both. $U, $W and $K
// (users, wrapped keys, master key id) are numbered after the rows'
// parameters. A plain INSERT, not ON CONFLICT DO NOTHING with a guard on
// how many rows it made: the speculative insertion and the guard cost
// PostgreSQL more than the rare failed statement does.
const freshKeysHead = `WITH fresh AS (
  INSERT INTO user_keys (user_id, wrapped, kek_id)
  SELECT u, w, $K FROM unnest($U::text[], $W::bytea[]) AS t(u, w))
`

// keyRowConstraint is the constraint a fresh key's row fails on when its
// user has a key row already.
const keyRowConstraint = "user_keys_pkey"

// isKeyRowTaken reports whether err is a fresh key's INSERT failing on
// user_keys' primary key (freshKeysHead).
func isKeyRowTaken(err error) bool {
	var pe *pq.Error
	return errors.As(err, &pe) && pe.Code == "23505" && pe.Constraint == keyRowConstraint
}

// deliveryIDConstraint is events' unique delivery id, which a Plain INSERT
// fails on when a delivery of the group is stored already.
const deliveryIDConstraint = "events_delivery_id_key"

// isDeliveryTaken reports whether err is a Plain INSERT failing on events'
// unique delivery id.
func isDeliveryTaken(err error) bool {
	var pe *pq.Error
	return errors.As(err, &pe) && pe.Code == "23505" && pe.Constraint == deliveryIDConstraint
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
