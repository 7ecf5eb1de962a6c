package schema

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// UserRow is one row of the users read model: the folded user and the
// position of the last event applied to it.
type UserRow struct {
	User         domain.User
	LastPosition int64
}

// colKind is how a users column travels between Go and PostgreSQL.
type colKind int

const (
	colText colKind = iota // text
	colJSON                // jsonb, sent as its text
	colTime                // timestamptz, sent as RFC 3339 text ("" is NULL)
	colBool                // boolean
	colInt                 // bigint
)

// userColumn is one column of the users table: its name, its kind, its
// value in a row (string, bool or int64 by kind) and, for the columns read
// back, how a scanned value is set into a row.
type userColumn struct {
	name string
	kind colKind
	// personal columns hold personal data: check shows no values of them.
	personal bool
	get      func(r *UserRow) any
	set      func(r *UserRow, v any) // nil: written, never read back
}

func tsText(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func metaText(u domain.User) string {
	if len(u.PublicMetadata) == 0 {
		return "{}"
	}
	return string(u.PublicMetadata)
}

// userColumns is the users table as the projection writes and reads it,
// in the order of every statement below: the one list of its columns.
var userColumns = []userColumn{
	{"id", colText, false, func(r *UserRow) any { return r.User.ID }, func(r *UserRow, v any) { r.User.ID = v.(string) }},
	{"email", colText, true, func(r *UserRow) any { return r.User.Email }, func(r *UserRow, v any) { r.User.Email = v.(string) }},
	{"first_name", colText, true, func(r *UserRow) any { return r.User.FirstName }, func(r *UserRow, v any) { r.User.FirstName = v.(string) }},
	{"last_name", colText, true, func(r *UserRow) any { return r.User.LastName }, func(r *UserRow, v any) { r.User.LastName = v.(string) }},
	{"name", colText, true, func(r *UserRow) any { return r.User.Name() }, nil},
	{"username", colText, true, func(r *UserRow) any { return r.User.Username }, func(r *UserRow, v any) { r.User.Username = v.(string) }},
	{"image_url", colText, true, func(r *UserRow) any { return r.User.ImageURL }, func(r *UserRow, v any) { r.User.ImageURL = v.(string) }},
	{"public_metadata", colJSON, true, func(r *UserRow) any { return metaText(r.User) }, func(r *UserRow, v any) { r.User.PublicMetadata = json.RawMessage(v.(string)) }},
	{"created_at", colTime, false, func(r *UserRow) any { return tsText(r.User.CreatedAt) }, func(r *UserRow, v any) { r.User.CreatedAt = v.(time.Time) }},
	{"updated_at", colTime, false, func(r *UserRow) any { return tsText(r.User.UpdatedAt) }, func(r *UserRow, v any) { r.User.UpdatedAt = v.(time.Time) }},
	{"deleted", colBool, false, func(r *UserRow) any { return r.User.Deleted }, func(r *UserRow, v any) { r.User.Deleted = v.(bool) }},
	{"deleted_at", colTime, false, func(r *UserRow) any { return tsText(r.User.DeletedAt) }, func(r *UserRow, v any) { r.User.DeletedAt = v.(time.Time) }},
	{"version_updated_at", colInt, false, func(r *UserRow) any { return r.User.Version.UpdatedAt }, func(r *UserRow, v any) { r.User.Version.UpdatedAt = v.(int64) }},
	{"version_occurred_at", colInt, false, func(r *UserRow) any { return r.User.Version.OccurredAt }, func(r *UserRow, v any) { r.User.Version.OccurredAt = v.(int64) }},
	{"version_delivery_id", colText, false, func(r *UserRow) any { return r.User.Version.DeliveryID }, func(r *UserRow, v any) { r.User.Version.DeliveryID = v.(string) }},
	{"last_position", colInt, false, func(r *UserRow) any { return r.LastPosition }, func(r *UserRow, v any) { r.LastPosition = v.(int64) }},
}

// readColumns is the SELECT list of the columns read back, in order.
func readColumns(prefix string) string {
	var b strings.Builder
	for _, c := range userColumns {
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

var userReadList = readColumns("")

// scanUserRow scans one row selected with userReadList.
func scanUserRow(row interface{ Scan(...any) error }) (UserRow, error) {
	var dests []any
	var cols []userColumn
	for _, c := range userColumns {
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
	if err := row.Scan(dests...); err != nil {
		return UserRow{}, err
	}
	var r UserRow
	for i, c := range cols {
		switch d := dests[i].(type) {
		case *string:
			c.set(&r, *d)
		case *sql.NullTime:
			t := time.Time{}
			if d.Valid {
				t = d.Time.UTC()
			}
			c.set(&r, t)
		case *bool:
			c.set(&r, *d)
		case *int64:
			c.set(&r, *d)
		}
	}
	return r, nil
}

// UsersTable is a table of the users read model: the live "users", or a
// table aside that a rebuild or check builds (UsersAside).
type UsersTable struct{ name string }

// LiveUsers is the live users table.
func LiveUsers() UsersTable { return UsersTable{name: "users"} }

// Aside returns the table named name built like t (see CreateLike).
func (t UsersTable) Aside(name string) UsersTable { return UsersTable{name: name} }

// Name is the table's name.
func (t UsersTable) Name() string { return t.name }

func (t UsersTable) ident() string { return pq.QuoteIdentifier(t.name) }

// GetUser returns the projected user with that Clerk id from the live users
// table. Errors: ENOTFOUND when no event about that user has been projected.
func GetUser(ctx context.Context, q Queryer, id string) (domain.User, error) {
	r, err := scanUserRow(q.QueryRowxContext(ctx, `SELECT `+userReadList+` FROM users WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return domain.User{}, domain.Errorf(domain.ENOTFOUND, "user %s is not in the users projection yet", id)
	}
	if err != nil {
		return domain.User{}, fmt.Errorf("get user %s: %w", id, Classify(err))
	}
	return r.User, nil
}

// ListUsers returns up to limit projected users that are not deleted, most
// recently updated first (the dev sign-in's picker).
func ListUsers(ctx context.Context, q Queryer, limit int) ([]domain.User, error) {
	rows, err := q.QueryxContext(ctx, `SELECT `+userReadList+` FROM users WHERE NOT deleted
ORDER BY updated_at DESC NULLS LAST, id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", Classify(err))
	}
	defer rows.Close()
	var out []domain.User
	for rows.Next() {
		r, err := scanUserRow(rows)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", Classify(err))
		}
		out = append(out, r.User)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", Classify(err))
	}
	return out, nil
}

// Load reads the rows of ids from t.
func (t UsersTable) Load(ctx context.Context, q Queryer, ids []string) (map[string]UserRow, error) {
	rows, err := q.QueryxContext(ctx, `SELECT `+userReadList+` FROM `+t.ident()+` WHERE id = ANY($1)`, pq.Array(ids))
	if err != nil {
		return nil, fmt.Errorf("load %d users from %s: %w", len(ids), t.name, Classify(err))
	}
	defer rows.Close()
	out := make(map[string]UserRow, len(ids))
	for rows.Next() {
		r, err := scanUserRow(rows)
		if err != nil {
			return nil, fmt.Errorf("load users from %s: %w", t.name, Classify(err))
		}
		out[r.User.ID] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load users from %s: %w", t.name, Classify(err))
	}
	return out, nil
}

// upsertSQL is Upsert's statement for table (one unnest array per column).
func upsertSQL(table string) string {
	var names, sel, args, set []string
	for i, c := range userColumns {
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
	vars := make([]string, len(userColumns))
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
func (t UsersTable) Upsert(ctx context.Context, q Execer, rows []UserRow) error {
	cols := make([]any, len(userColumns))
	for i, c := range userColumns {
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
		if r.User.ID == "" {
			continue
		}
		n++
		for j, c := range userColumns {
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
	if _, err := q.ExecContext(ctx, upsertSQL(t.name), args...); err != nil {
		return fmt.Errorf("upsert %d users into %s: %w", n, t.name, Classify(err))
	}
	return nil
}

// Copy writes rows into t, which must hold none of them, with one COPY
// inside tx: the bulk load of a rebuild and of check. Values are encoded as
// Upsert encodes them, so PostgreSQL takes or refuses a row alike on both
// paths. Rows with an empty id are skipped.
func (t UsersTable) Copy(ctx context.Context, tx *sqlx.Tx, rows []UserRow) error {
	names := make([]string, len(userColumns))
	for i, c := range userColumns {
		names[i] = c.name
	}
	stmt, err := tx.PrepareContext(ctx, pq.CopyIn(t.name, names...))
	if err != nil {
		return fmt.Errorf("copy into %s: %w", t.name, Classify(err))
	}
	defer stmt.Close()
	vals := make([]any, len(userColumns))
	for i := range rows {
		r := &rows[i]
		if r.User.ID == "" {
			continue
		}
		for j, c := range userColumns {
			v := c.get(r)
			if c.kind == colTime && v == "" {
				v = nil
			}
			vals[j] = v
		}
		if _, err := stmt.ExecContext(ctx, vals...); err != nil {
			return fmt.Errorf("copy user %s into %s: %w", r.User.ID, t.name, Classify(err))
		}
	}
	if _, err := stmt.ExecContext(ctx); err != nil {
		return fmt.Errorf("copy into %s: %w", t.name, Classify(err))
	}
	return nil
}

// CreateLike creates t empty with the columns, indexes and constraints of
// like (a rebuild's table aside, or with temp a check's temporary table,
// dropped at commit), so that PostgreSQL refuses the same rows in both.
func (t UsersTable) CreateLike(ctx context.Context, q Execer, like UsersTable, temp bool) error {
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
func (t UsersTable) Drop(ctx context.Context, q Execer) error {
	if _, err := q.ExecContext(ctx, `DROP TABLE IF EXISTS `+t.ident()); err != nil {
		return fmt.Errorf("drop %s: %w", t.name, Classify(err))
	}
	return nil
}

// Analyze updates t's planner statistics.
func (t UsersTable) Analyze(ctx context.Context, q Execer) error {
	if _, err := q.ExecContext(ctx, `ANALYZE `+t.ident()); err != nil {
		return fmt.Errorf("analyze %s: %w", t.name, Classify(err))
	}
	return nil
}

// Count returns how many rows t holds.
func (t UsersTable) Count(ctx context.Context, q Queryer) (int, error) {
	var n int
	if err := q.QueryRowxContext(ctx, `SELECT count(*) FROM `+t.ident()).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s: %w", t.name, Classify(err))
	}
	return n, nil
}

// ReplaceWith puts aside in the place of t inside tx: t is dropped, aside
// takes its name, and aside's indexes take the names of t's (matched by
// definition; CreateLike named them after aside). Readers of t wait for tx.
func (t UsersTable) ReplaceWith(ctx context.Context, tx *sqlx.Tx, aside UsersTable) error {
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

// UserDiff is one user whose row differs between two users tables.
type UserDiff struct {
	ID string `json:"id"`
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
// users whose rows differ, by id.
func (t UsersTable) Diff(ctx context.Context, q Queryer, other UsersTable) ([]UserDiff, error) {
	var sel, l, r []string
	for _, c := range userColumns {
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
	var out []UserDiff
	for rows.Next() {
		vals := make([]sql.NullString, 2*len(userColumns))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("compare %s with %s: %w", t.name, other.name, Classify(err))
		}
		d := UserDiff{ID: vals[0].String + vals[1].String, Kind: "differs"}
		switch {
		case !vals[0].Valid:
			d.Kind = "missing_live"
		case !vals[1].Valid:
			d.Kind = "missing_rebuilt"
		default:
			for i, c := range userColumns {
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
