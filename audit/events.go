package audit

import (
	"bufio"
	"context"
	"io"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// MaxPageBytes is the most body bytes one page of the JSON API holds (the
// history and a user's events): a page stops early there and its cursor
// continues. A page always holds its first event (at most 1 MiB).
const MaxPageBytes = 8 << 20

// Events runs one page of a history query (q.Format json; q.Filter.Limit
// events at most, and at most maxBytes of bodies, 0: MaxPageBytes), calling
// fn with each event as it arrives (e.Body valid only during the call),
// then records the query in the access log and waits for that commit. It
// returns the number of events and the cursor after them ("" when nothing
// follows: the end of what is visible now). After an error, what fn built
// must not be shown: a query that cannot be recorded is not answered.
// Errors: EINVALID for a bad query (EventQuery.Check); EUNAVAILABLE when
// the audit reads' connections are all busy.
func (s *Service) Events(ctx context.Context, a Actor, q EventQuery, maxBytes int64, fn func(i int, e schema.AuditEvent)) (int, string, error) {
	if err := q.Check(); err != nil {
		return 0, "", err
	}
	if q.Format != FormatJSON {
		return 0, "", domain.Errorf(domain.EINVALID, "format %s is an export: use Export", q.Format)
	}
	if maxBytes <= 0 {
		maxBytes = MaxPageBytes
	}
	release, err := s.slots.acquire(ctx, 1)
	if err != nil {
		return 0, "", err
	}
	defer release()
	var last domain.Event
	var bytes int64
	i := 0
	q.Filter.MaxBytes = maxBytes
	n, err := schema.QueryAuditEventsRecorded(ctx, s.db, q.Filter, schema.Access{Actor: a.ID, Channel: a.Channel, Action: schema.ActionEvents, Filters: filters(q)},
		func(e schema.AuditEvent) error {
			fn(i, e)
			i++
			bytes += int64(len(e.Body))
			last = e.Event
			return nil
		})
	if err != nil {
		return 0, "", err
	}
	next := ""
	if schema.PageMore(q.Filter, n, bytes) {
		next = EncodeCursor(schema.After(last))
	}
	return n, next, nil
}

// Export streams every event matching q (q.Filter.Limit of them when set)
// to w in q.Format (jsonl or csv; see NewEventWriter) with constant memory,
// from one snapshot, within an audit slot, then records the export and the
// rows written in the access log, also when the stream failed midway (a
// client gone, a write deadline). It returns the rows written and the first
// error: of the query, of w, or of the record. Errors before the first row
// (n == 0) leave nothing written to w.
func (s *Service) Export(ctx context.Context, a Actor, q EventQuery, w io.Writer) (int64, error) {
	if err := q.Check(); err != nil {
		return 0, err
	}
	if q.Format == FormatJSON {
		return 0, domain.Errorf(domain.EINVALID, "format json is one page: use Events")
	}
	release, err := s.slots.acquire(ctx, 1)
	if err != nil {
		return 0, err
	}
	defer release()
	bw := bufio.NewWriterSize(w, 64<<10)
	enc, err := NewEventWriter(bw, q.Format)
	if err != nil {
		return 0, err
	}
	n, err := schema.StreamAuditEvents(ctx, s.db, q.Filter, enc.Write)
	if err == nil {
		if err = enc.Flush(); err == nil {
			err = bw.Flush()
		}
	}
	if rerr := s.record(ctx, a, schema.ActionExport, filters(q), n); rerr != nil && err == nil {
		err = rerr
	}
	return n, err
}
