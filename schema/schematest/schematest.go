// Package schematest gives tests a fresh, migrated PostgreSQL database on the
// real server (TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres),
// dropped when the test ends. Packages and tests can run in parallel: every
// database has its own random name.
package schematest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// ServerURL is the URL of the maintenance database tests create databases from.
func ServerURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// NewURL creates an empty database with a random name and returns its URL;
// it is dropped (with any open connections) when t ends. The test fails
// (never skips) when the server is not reachable.
func NewURL(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	admin, err := schema.Open(ctx, ServerURL(), schema.PoolOptions{MaxOpen: 1})
	if err != nil {
		t.Fatalf("schematest: PostgreSQL test server: %v (start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)", err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	name := "ledger_test_" + hex.EncodeToString(b)
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+pq.QuoteIdentifier(name)); err != nil {
		admin.Close()
		t.Fatalf("schematest: create database: %v", err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+pq.QuoteIdentifier(name)+` WITH (FORCE)`); err != nil {
			t.Errorf("schematest: drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(ServerURL())
	if err != nil {
		t.Fatalf("schematest: TEST_DATABASE_URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// NewDB creates a fresh database, applies every migration and returns a pool
// on it, closed and dropped when t ends.
func NewDB(t testing.TB) *sqlx.DB {
	t.Helper()
	db := Open(t, NewURL(t))
	if _, err := schema.Migrate(context.Background(), db.DB); err != nil {
		t.Fatalf("schematest: migrate: %v", err)
	}
	return db
}

// NewDBs is NewDB with a second pool on the same database: the event
// store's own pool as a service opens it (schema.PoolOptions
// BinaryParameters), for a Store.
func NewDBs(t testing.TB) (db, appends *sqlx.DB) {
	t.Helper()
	u := NewURL(t)
	db = Open(t, u)
	if _, err := schema.Migrate(context.Background(), db.DB); err != nil {
		t.Fatalf("schematest: migrate: %v", err)
	}
	appends, err := schema.Open(context.Background(), u, schema.PoolOptions{MaxOpen: schema.AppendPoolConns, BinaryParameters: true})
	if err != nil {
		t.Fatalf("schematest: open: %v", err)
	}
	t.Cleanup(func() { appends.Close() })
	return db, appends
}

// Open opens a pool on dsn, closed when t ends.
func Open(t testing.TB, dsn string) *sqlx.DB {
	t.Helper()
	db, err := schema.Open(context.Background(), dsn, schema.PoolOptions{MaxOpen: 40})
	if err != nil {
		t.Fatalf("schematest: open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// WaitVisible waits (up to 60 s) until every event committed so far is
// readable below the xid8 gate. The gate is cluster-wide: a transaction open
// in another test's database holds it, so a just-committed event can stay
// unreadable for a moment.
func WaitVisible(t testing.TB, db schema.Queryer) {
	t.Helper()
	var n int64
	if err := db.QueryRowxContext(context.Background(), `SELECT count(*) FROM events`).Scan(&n); err != nil {
		t.Fatalf("schematest: count events: %v", err)
	}
	WaitReadable(t, db, n)
}

// WaitReadable waits (up to 60 s) until at least n events are readable
// below the xid8 gate.
func WaitReadable(t testing.TB, db schema.Queryer, n int64) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(60 * time.Second)
	for {
		c, err := schema.CountAfter(context.Background(), db, schema.Cursor{})
		if err != nil {
			t.Fatal(err)
		}
		if c >= n {
			if waited := time.Since(start); waited > time.Second {
				t.Logf("schematest: waited %s for the xid8 gate: a transaction elsewhere in the cluster was open", waited.Round(time.Millisecond))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("schematest: only %d of %d events became readable in 60 s: a transaction elsewhere in the cluster stays open (see pg_stat_activity)", c, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
