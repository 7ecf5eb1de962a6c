package schematest

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"
)

// PlaintextLeft scans every text, json, jsonb, varchar and bytea column of
// every table of db (bytea both raw and as text) and a pg_dump of dsn for
// each of needles (case-insensitively), and returns where it found one
// ("table.column holds …", "pg_dump holds …"). The test fails when the
// database has fewer than 20 such columns or pg_dump is missing or writes
// almost nothing: a scan that cannot find anything proves nothing.
func PlaintextLeft(tb testing.TB, db *sqlx.DB, dsn string, needles []string) []string {
	tb.Helper()
	ctx := context.Background()
	type col struct{ table, column, kind string }
	var cols []col
	rows, err := db.QueryxContext(ctx, `SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c
JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE'
WHERE c.table_schema = 'public' AND c.data_type IN ('text', 'json', 'jsonb', 'bytea', 'character varying')`)
	if err != nil {
		tb.Fatal(err)
	}
	for rows.Next() {
		var c col
		if err := rows.Scan(&c.table, &c.column, &c.kind); err != nil {
			tb.Fatal(err)
		}
		cols = append(cols, c)
	}
	rows.Close()
	if len(cols) < 20 {
		tb.Fatalf("only %d columns to scan", len(cols))
	}
	var found []string
	for _, c := range cols {
		expr := fmt.Sprintf("%q::text", c.column)
		if c.kind == "bytea" {
			expr = fmt.Sprintf("encode(%q, 'escape')", c.column)
		}
		for _, n := range needles {
			var hits int
			q := fmt.Sprintf(`SELECT count(*) FROM %q WHERE strpos(lower(%s), lower($1)) > 0`, c.table, expr)
			if err := db.QueryRowContext(ctx, q, n).Scan(&hits); err != nil {
				tb.Fatalf("%s.%s: %v", c.table, c.column, err)
			}
			if hits > 0 {
				found = append(found, fmt.Sprintf("%s.%s holds %q", c.table, c.column, n))
			}
		}
	}
	path, err := exec.LookPath("pg_dump")
	if err != nil {
		tb.Fatal("pg_dump is not installed: the dump scan cannot run")
	}
	out, err := exec.Command(path, "--data-only", dsn).Output()
	if err != nil {
		tb.Fatalf("pg_dump: %v", err)
	}
	if len(out) < 1000 {
		tb.Fatalf("pg_dump wrote %d bytes", len(out))
	}
	for _, n := range needles {
		if bytes.Contains(bytes.ToLower(out), []byte(strings.ToLower(n))) {
			found = append(found, fmt.Sprintf("pg_dump holds %q", n))
		}
	}
	return found
}
