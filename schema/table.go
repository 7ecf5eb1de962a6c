package schema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// colKind is how a read-model column travels between Go and PostgreSQL.
type colKind int

const (
	colText colKind = iota // text
	colJSON                // jsonb, sent as its text
	colTime                // timestamptz, sent as RFC 3339 text ("" is NULL)
	colBool                // boolean
	colInt                 // bigint
)

// column is one column of a read-model table whose rows are R: its name,
// its kind, its value in a row (string, bool or int64 by kind) and, for the
// columns read back, how a scanned value is set into a row.
type column[R any] struct {
	name string
	kind colKind
	// personal columns hold personal data: check shows no values of them.
	personal bool
	get      func(r *R) any
	set      func(r *R, v any) // nil: written, never read back
}

// Table is a read-model table whose rows are R, keyed by its first column
// ("id", the key of every row): the live table, or a table aside that a
// rebuild or check builds (Aside). Its columns are listed once (the
// table's column list), and every statement below (upsert, COPY, the read
// back, check's comparison) is made from that list, so none can forget one.
type Table[R any] struct {
	name string
	cols []column[R]
	key  func(r *R) string // the row's id; rows with "" are skipped
}

func newTable[R any](name string, cols []column[R], key func(*R) string) Table[R] {
	return Table[R]{name: name, cols: cols, key: key}
}

// Aside returns the table named name built like t (see CreateLike).
func (t Table[R]) Aside(name string) Table[R] { return Table[R]{name: name, cols: t.cols, key: t.key} }

// Name is the table's name.
func (t Table[R]) Name() string { return t.name }

func (t Table[R]) ident() string { return pq.QuoteIdentifier(t.name) }

func tsText(tm time.Time) string {
	if tm.IsZero() {
		return ""
	}
	return tm.UTC().Format(time.RFC3339Nano)
}

// readList is the SELECT list of the columns read back, in order, each
// prefixed with prefix (a table alias and a dot, or "").
func (t Table[R]) readList(prefix string) string {
	var b strings.Builder
	for _, c := range t.cols {
		if c.set == nil {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(prefix + c.name)
	}
	return b.String()
}

// scan scans one row selected with readList.
func (t Table[R]) scan(row interface{ Scan(...any) error }) (R, error) {
	var dests []any
	var cols []column[R]
	for _, c := range t.cols {
		if c.set == nil {
			continue
		}
		cols = append(cols, c)
		switch c.kind {
		case colText, colJSON:
			dests = append(dests, new(string))
		case colTime:
			dests = append(dests, new(sql.NullTime))
		case colBool:
			dests = append(dests, new(bool))
		case colInt:
			dests = append(dests, new(int64))
		}
	}
	var r R
	if err := row.Scan(dests...); err != nil {
		return r, err
	}
	for i, c := range cols {
		switch d := dests[i].(type) {
		case *string:
			c.set(&r, *d)
		case *sql.NullTime:
			tm := time.Time{}
			if d.Valid {
				tm = d.Time.UTC()
			}
			c.set(&r, tm)
		case *bool:
			c.set(&r, *d)
		case *int64:
			c.set(&r, *d)
		}
	}
	return r, nil
}

// get returns the row of t with that id; ENOTFOUND-free: ok is false when
// there is none.
func (t Table[R]) get(ctx context.Context, q Queryer, id string) (r R, ok bool, err error) {
	r, err = t.scan(q.QueryRowxContext(ctx, `SELECT `+t.readList("")+` FROM `+t.ident()+` WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("get %s from %s: %w", id, t.name, Classify(err))
	}
	return r, true, nil
}

// query returns the rows of t selected by the statement `SELECT <columns>
// FROM <t> <rest>` with args.
func (t Table[R]) query(ctx context.Context, q Queryer, rest string, args ...any) ([]R, error) {
	return t.queryFrom(ctx, q, `SELECT `+t.readList("")+` FROM `+t.ident()+` `+rest, args...)
}

// queryFrom returns the rows of t that query (selecting readList) reads.
func (t Table[R]) queryFrom(ctx context.Context, q Queryer, query string, args ...any) ([]R, error) {
	rows, err := q.QueryxContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", t.name, Classify(err))
	}
	defer rows.Close()
	var out []R
	for rows.Next() {
		r, err := t.scan(rows)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", t.name, Classify(err))
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", t.name, Classify(err))
	}
	return out, nil
}

// Load reads the rows of ids from t, by id: one primary-key probe per id
// (a LATERAL join whose LIMIT keeps PostgreSQL from flattening it into a
// hash join over the whole table), whatever the planner's statistics say. A table that
// grows fast from empty (a backfill, a new deployment taking a burst of
// sign-ups) has statistics behind its size, and with `id = ANY($1)` over a
// projector batch's thousand ids PostgreSQL then scanned the whole table
// at each batch (5-8 ms per batch at 40-80k users in bench ingest).
func (t Table[R]) Load(ctx context.Context, q Queryer, ids []string) (map[string]R, error) {
	list, err := t.queryFrom(ctx, q, `SELECT `+t.readList("r.")+` FROM unnest($1::text[]) AS k(id)
CROSS JOIN LATERAL (SELECT * FROM `+t.ident()+` WHERE id = k.id LIMIT 1) AS r`, pq.Array(ids))
	if err != nil {
		return nil, fmt.Errorf("load %d rows: %w", len(ids), err)
	}
	out := make(map[string]R, len(list))
	for i := range list {
		out[t.key(&list[i])] = list[i]
	}
	return out, nil
}

// upsertSQL is Upsert's statement for table (one unnest array per column).
func (t Table[R]) upsertSQL(table string) string {
	var names, sel, args, set []string
	for i, c := range t.cols {
		names = append(names, c.name)
		v := "c" + strconv.Itoa(i)
		switch c.kind {
		case colText:
			sel, args = append(sel, v), append(args, "$"+strconv.Itoa(i+1)+"::text[]")
		case colJSON:
			sel, args = append(sel, v+"::jsonb"), append(args, "$"+strconv.Itoa(i+1)+"::text[]")
		case colTime:
			sel, args = append(sel, "NULLIF("+v+", '')::timestamptz"), append(args, "$"+strconv.Itoa(i+1)+"::text[]")
		case colBool:
			sel, args = append(sel, v), append(args, "$"+strconv.Itoa(i+1)+"::bool[]")
		case colInt:
			sel, args = append(sel, v), append(args, "$"+strconv.Itoa(i+1)+"::bigint[]")
		}
		if c.name != "id" {
			set = append(set, c.name+" = EXCLUDED."+c.name)
		}
	}
	vars := make([]string, len(t.cols))
	for i := range vars {
		vars[i] = "c" + strconv.Itoa(i)
	}
	return `INSERT INTO ` + pq.QuoteIdentifier(table) + ` (` + strings.Join(names, ", ") + `)
SELECT ` + strings.Join(sel, ", ") + `
FROM unnest(` + strings.Join(args, ", ") + `) AS t(` + strings.Join(vars, ", ") + `)
ON CONFLICT (id) DO UPDATE SET ` + strings.Join(set, ", ")
}

// Upsert writes rows into t in one statement (inserted, or replacing the
// stored row of the same id). Rows with an empty id are skipped.
func (t Table[R]) Upsert(ctx context.Context, q Execer, rows []R) error {
	cols := make([]any, len(t.cols))
	for i, c := range t.cols {
		switch c.kind {
		case colBool:
			cols[i] = make([]bool, 0, len(rows))
		case colInt:
			cols[i] = make([]int64, 0, len(rows))
		default:
			cols[i] = make([]string, 0, len(rows))
		}
	}
	n := 0
	for i := range rows {
		r := &rows[i]
		if t.key(r) == "" {
			continue
		}
		n++
		for j, c := range t.cols {
			switch v := c.get(r).(type) {
			case string:
				cols[j] = append(cols[j].([]string), v)
			case bool:
				cols[j] = append(cols[j].([]bool), v)
			case int64:
				cols[j] = append(cols[j].([]int64), v)
			}
		}
	}
	if n == 0 {
		return nil
	}
	args := make([]any, len(cols))
	for i, c := range cols {
		args[i] = pq.Array(c)
	}
	if _, err := q.ExecContext(ctx, t.upsertSQL(t.name), args...); err != nil {
		return fmt.Errorf("upsert %d rows into %s: %w", n, t.name, Classify(err))
	}
	return nil
}

// Copy writes rows into t, which must hold none of them, with one COPY
// inside tx: the bulk load of a rebuild and of check. Values are encoded as
// Upsert encodes them, so PostgreSQL takes or refuses a row alike on both
// paths. Rows with an empty id are skipped.
func (t Table[R]) Copy(ctx context.Context, tx *sqlx.Tx, rows []R) error {
	names := make([]string, len(t.cols))
	for i, c := range t.cols {
		names[i] = c.name
	}
	stmt, err := tx.PrepareContext(ctx, pq.CopyIn(t.name, names...))
	if err != nil {
		return fmt.Errorf("copy into %s: %w", t.name, Classify(err))
	}
	defer stmt.Close()
	vals := make([]any, len(t.cols))
	for i := range rows {
		r := &rows[i]
		if t.key(r) == "" {
			continue
		}
		for j, c := range t.cols {
			v := c.get(r)
			if c.kind == colTime && v == "" {
				v = nil
			}
			vals[j] = v
		}
		if _, err := stmt.ExecContext(ctx, vals...); err != nil {
			return fmt.Errorf("copy %s into %s: %w", t.key(r), t.name, Classify(err))
		}
	}
	if _, err := stmt.ExecContext(ctx); err != nil {
		return fmt.Errorf("copy into %s: %w", t.name, Classify(err))
	}
	return nil
}

// ErrRowTaken is InsertNew's error when a row of one of the ids it was
// given is already stored. It is not Refused: a projector's batch that gets
// it is retried whole (the row then loads as stored), never isolated as
// poison.
var ErrRowTaken = errors.New("a row of that id is already stored")

// InsertNew writes rows, none of whose ids t holds, with one COPY inside tx:
// 0.39-0.63 of Upsert's time a row (go test ./schema -bench UsersWriteNew:
// users rows, 13-20 µs against 24-37, Go's encoding and the commit
// included), for a projector's batch of users it has not seen. Values are encoded as Copy and Upsert encode
// them, so PostgreSQL takes or refuses a row alike on every path. Errors:
// ErrRowTaken when an id is stored after all (the caller's read of the
// stored rows missed it); otherwise as Copy.
func (t Table[R]) InsertNew(ctx context.Context, tx *sqlx.Tx, rows []R) error {
	if len(rows) == 0 {
		return nil
	}
	err := t.Copy(ctx, tx, rows)
	if pe := (*pq.Error)(nil); errors.As(err, &pe) && pe.Code == "23505" {
		// The pq.Error is not wrapped, so Refused does not see it.
		return fmt.Errorf("insert %d new rows into %s: %w (%s)", len(rows), t.name, ErrRowTaken, pe.Message)
	}
	return err
}

// DeleteWhere deletes the rows of t whose column col is one of values
// (col and returning are column names of the code, never input) and
// returns their column returning.
func (t Table[R]) DeleteWhere(ctx context.Context, tx *sqlx.Tx, col string, values []string, returning string) ([]string, error) {
	out, err := deleteReturning(ctx, tx, `DELETE FROM `+t.ident()+` WHERE `+pq.QuoteIdentifier(col)+` = ANY($1) RETURNING `+pq.QuoteIdentifier(returning), pq.Array(values))
	if err != nil {
		return nil, fmt.Errorf("delete rows of %s: %w", t.name, err)
	}
	return out, nil
}

// Delete deletes the rows of ids from t.
func (t Table[R]) Delete(ctx context.Context, q Execer, ids []string) error {
	if _, err := q.ExecContext(ctx, `DELETE FROM `+t.ident()+` WHERE id = ANY($1)`, pq.Array(ids)); err != nil {
		return fmt.Errorf("delete %d rows from %s: %w", len(ids), t.name, Classify(err))
	}
	return nil
}

// CreateLike creates t empty with the columns, indexes and constraints of
// like (a rebuild's table aside, or with temp a check's temporary table,
// dropped at commit), so that PostgreSQL refuses the same rows in both.
func (t Table[R]) CreateLike(ctx context.Context, q Execer, like Table[R], temp bool) error {
	stmt := `CREATE TABLE ` + t.ident() + ` (LIKE ` + like.ident() + ` INCLUDING ALL)`
	if temp {
		stmt = `CREATE TEMP TABLE ` + t.ident() + ` (LIKE ` + like.ident() + ` INCLUDING ALL) ON COMMIT DROP`
	}
	if _, err := q.ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("create %s like %s: %w", t.name, like.name, Classify(err))
	}
	return nil
}

// Drop drops t if it exists.
func (t Table[R]) Drop(ctx context.Context, q Execer) error {
	if _, err := q.ExecContext(ctx, `DROP TABLE IF EXISTS `+t.ident()); err != nil {
		return fmt.Errorf("drop %s: %w", t.name, Classify(err))
	}
	return nil
}

// Analyze updates t's planner statistics.
func (t Table[R]) Analyze(ctx context.Context, q Execer) error {
	if _, err := q.ExecContext(ctx, `ANALYZE `+t.ident()); err != nil {
		return fmt.Errorf("analyze %s: %w", t.name, Classify(err))
	}
	return nil
}

// Count returns how many rows t holds.
func (t Table[R]) Count(ctx context.Context, q Queryer) (int, error) {
	var n int
	if err := q.QueryRowxContext(ctx, `SELECT count(*) FROM `+t.ident()).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s: %w", t.name, Classify(err))
	}
	return n, nil
}

// ReplaceWith puts aside in the place of t inside tx: t is dropped, aside
// takes its name, and aside's indexes take the names of t's (matched by
// definition; CreateLike named them after aside). Readers of t wait for tx.
func (t Table[R]) ReplaceWith(ctx context.Context, tx *sqlx.Tx, aside Table[R]) error {
	indexes, err := indexNames(ctx, tx, t.name)
	if err != nil {
		return err
	}
	old := t.Aside(t.name + "_replaced")
	for _, q := range []string{
		`ALTER TABLE ` + t.ident() + ` RENAME TO ` + old.ident(),
		`ALTER TABLE ` + aside.ident() + ` RENAME TO ` + t.ident(),
		`DROP TABLE ` + old.ident(),
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("swap %s in for %s: %w", aside.name, t.name, Classify(err))
		}
	}
	now, err := indexNames(ctx, tx, t.name)
	if err != nil {
		return err
	}
	for def, idx := range now {
		if want, ok := indexes[def]; ok && want != idx {
			if _, err := tx.ExecContext(ctx, `ALTER INDEX `+pq.QuoteIdentifier(idx)+` RENAME TO `+pq.QuoteIdentifier(want)); err != nil {
				return fmt.Errorf("rename index %s: %w", idx, Classify(err))
			}
		}
	}
	return nil
}

// indexNames maps the definition of each index of table (without its name
// and table) to its name.
func indexNames(ctx context.Context, tx *sqlx.Tx, table string) (map[string]string, error) {
	rows, err := tx.QueryxContext(ctx, `SELECT c.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = $1::regclass`, pq.QuoteIdentifier(table))
	if err != nil {
		return nil, fmt.Errorf("list indexes of %s: %w", table, Classify(err))
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			return nil, fmt.Errorf("list indexes of %s: %w", table, Classify(err))
		}
		// CREATE [UNIQUE] INDEX name ON public.table USING btree (id)
		unique := strings.HasPrefix(def, "CREATE UNIQUE")
		_, using, _ := strings.Cut(def, " USING ")
		out[strconv.FormatBool(unique)+" "+using] = name
	}
	return out, rows.Err()
}

// RowDiff is one row whose contents differ between two tables of a read
// model (check's live table and the table rebuilt from the events).
type RowDiff struct {
	// Table is the live table's name when the read model has several
	// (organizations), empty for users.
	Table string `json:"table,omitempty"`
	ID    string `json:"id"`
	// Kind is "missing_live" (only in the other table), "missing_rebuilt"
	// (only in t) or "differs".
	Kind    string       `json:"kind"`
	Columns []ColumnDiff `json:"columns,omitempty"`
}

// ColumnDiff is one differing column. Personal columns (email, names,
// username, image URL, metadata) show no values, only that they differ.
type ColumnDiff struct {
	Column  string `json:"column"`
	Live    string `json:"live,omitempty"`
	Rebuilt string `json:"rebuilt,omitempty"`
}

// Diff compares t (the live table) with other (rebuilt from the events)
// column by column, every column the projection writes, and returns the
// rows that differ, by id.
func (t Table[R]) Diff(ctx context.Context, q Queryer, other Table[R]) ([]RowDiff, error) {
	var sel, l, r []string
	for _, c := range t.cols {
		sel = append(sel, "l."+c.name+"::text", "r."+c.name+"::text")
		l, r = append(l, "l."+c.name), append(r, "r."+c.name)
	}
	rows, err := q.QueryxContext(ctx, `SELECT `+strings.Join(sel, ", ")+`
FROM `+t.ident()+` l FULL JOIN `+other.ident()+` r ON l.id = r.id
WHERE (`+strings.Join(l, ", ")+`) IS DISTINCT FROM (`+strings.Join(r, ", ")+`)
ORDER BY COALESCE(l.id, r.id)`)
	if err != nil {
		return nil, fmt.Errorf("compare %s with %s: %w", t.name, other.name, Classify(err))
	}
	defer rows.Close()
	var out []RowDiff
	for rows.Next() {
		vals := make([]sql.NullString, 2*len(t.cols))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("compare %s with %s: %w", t.name, other.name, Classify(err))
		}
		d := RowDiff{ID: vals[0].String, Kind: "differs"}
		if !vals[0].Valid {
			d.ID = vals[1].String
		}
		switch {
		case !vals[0].Valid:
			d.Kind = "missing_live"
		case !vals[1].Valid:
			d.Kind = "missing_rebuilt"
		default:
			for i, c := range t.cols {
				lv, rv := vals[2*i], vals[2*i+1]
				if lv == rv {
					continue
				}
				cd := ColumnDiff{Column: c.name}
				if !c.personal {
					cd.Live, cd.Rebuilt = nullText(lv), nullText(rv)
				}
				d.Columns = append(d.Columns, cd)
			}
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("compare %s with %s: %w", t.name, other.name, Classify(err))
	}
	return out, nil
}

func nullText(s sql.NullString) string {
	if !s.Valid {
		return "NULL"
	}
	return s.String
}
