package schema

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// PoolOptions tunes the connection pool Open creates.
type PoolOptions struct {
	MaxOpen int // default 32
	MaxIdle int // default MaxOpen
	// BinaryParameters sends every []byte parameter in binary format
	// (lib/pq's binary_parameters): a bytea goes as its bytes, not
	// hex-encoded text twice its size, and a query with parameters takes
	// one round trip instead of two. Only for a pool whose every []byte
	// parameter is bound to a bytea or text column (the binary format of
	// jsonb, for one, is not its text): the event store's (AppendPoolConns).
	BinaryParameters bool
}

// AppendPoolConns is the size of the event store's own pool: its group
// commits (Store.MaxInFlight, default 2) with their sealing and duplicate
// checks.
const AppendPoolConns = 4

// Open connects to the Postgres database at dsn (a postgres:// URL or a
// key=value string) and checks that it answers. The pool is safe for
// concurrent use; the caller closes it.
func Open(ctx context.Context, dsn string, o PoolOptions) (*sqlx.DB, error) {
	if o.MaxOpen <= 0 {
		o.MaxOpen = 32
	}
	if o.MaxIdle <= 0 {
		o.MaxIdle = o.MaxOpen
	}
	connect := dsn
	if o.BinaryParameters {
		var err error
		if connect, err = withBinaryParameters(dsn); err != nil {
			return nil, err
		}
	}
	db, err := sqlx.Open("postgres", connect)
	if err != nil {
		return nil, domain.Errorf(domain.EINVALID, "DATABASE_URL is malformed: %v", err)
	}
	db.SetMaxOpenConns(o.MaxOpen)
	db.SetMaxIdleConns(o.MaxIdle)
	db.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to %s: %w", RedactURL(dsn), Classify(err))
	}
	return db, nil
}

// withBinaryParameters returns dsn (a postgres:// URL or a key=value
// string) with binary_parameters=yes.
func withBinaryParameters(dsn string) (string, error) {
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return dsn + " binary_parameters=yes", nil
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "", domain.Errorf(domain.EINVALID, "DATABASE_URL is malformed")
	}
	q := u.Query()
	q.Set("binary_parameters", "yes")
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// CreateDatabase creates the database named in dsn when it does not exist,
// connecting to the server's "postgres" database to do so. It reports whether
// it created it.
func CreateDatabase(ctx context.Context, dsn string) (bool, error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return false, domain.Errorf(domain.EINVALID, "DATABASE_URL must be a postgres:// URL to create its database")
	}
	name := strings.TrimPrefix(u.Path, "/")
	if name == "" {
		return false, domain.Errorf(domain.EINVALID, "DATABASE_URL names no database")
	}
	admin := *u
	admin.Path = "/postgres"
	db, err := Open(ctx, admin.String(), PoolOptions{MaxOpen: 1})
	if err != nil {
		return false, err
	}
	defer db.Close()
	var exists bool
	if err := db.GetContext(ctx, &exists, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name); err != nil {
		return false, fmt.Errorf("look up database %s: %w", name, Classify(err))
	}
	if exists {
		return false, nil
	}
	if _, err := db.ExecContext(ctx, `CREATE DATABASE `+pq.QuoteIdentifier(name)); err != nil {
		var pqErr *pq.Error
		if errors.As(err, &pqErr) && pqErr.Code == "42P04" { // created meanwhile
			return false, nil
		}
		return false, fmt.Errorf("create database %s: %w", name, Classify(err))
	}
	return true, nil
}

// RedactURL returns dsn with any password replaced, safe to log.
func RedactURL(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Host == "" {
		return "(database)"
	}
	return u.Redacted()
}

// Classify wraps errors that mean "the database is unreachable or cannot
// take the work now, try again" as EUNAVAILABLE (see Unavailable), keeping the
// cause in the chain. Other errors are returned unchanged. It is the one place
// that sorts database errors; DataFault tells the ones a row's data caused.
func Classify(err error) error {
	if err == nil || !Unavailable(err) {
		return err
	}
	return fmt.Errorf("%w: %w", domain.Errorf(domain.EUNAVAILABLE, "database unavailable"), err)
}

// unavailableClasses are the SQLSTATE classes that mean "not now", whatever
// the statement: the same statement succeeds once the database recovers.
var unavailableClasses = map[pq.ErrorClass]bool{
	"08": true, // connection exception: refused, lost, could not connect
	"40": true, // transaction rollback: deadlock, serialization failure (retry it)
	"53": true, // insufficient resources: too many connections, disk full, out of memory
	"55": true, // object not in prerequisite state: 55000 "database is not currently accepting connections" (ALLOW_CONNECTIONS false), 55P03 lock not available, 55006 object in use
	"57": true, // operator intervention: admin shutdown, crash shutdown, cannot connect now (starting up, recovery), query canceled, idle session timeout
	"58": true, // system error: I/O error, undefined file (storage trouble)
}

// unavailableCodes are single SQLSTATEs outside those classes that mean the same.
var unavailableCodes = map[pq.ErrorCode]bool{
	"25006": true, // read_only_sql_transaction: the server is a standby now (failover in progress)
	"25P03": true, // idle_in_transaction_session_timeout
	"25P04": true, // transaction_timeout
	"72000": true, // snapshot_too_old
}

// Unavailable reports whether err means the database could not be reached or
// could not take the work now (connection refused or lost, timeout, shutdown
// or start-up, a database that refuses connections, too many connections,
// a standby after failover, a deadlock or serialization failure that rolled
// the transaction back), as opposed to a bug, a configuration error or a
// row the database refuses.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	if domain.ErrorCode(err) == domain.EUNAVAILABLE {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return unavailableClasses[pqErr.Code.Class()] || unavailableCodes[pqErr.Code]
	}
	msg := err.Error()
	return strings.Contains(msg, "driver: bad connection") || strings.Contains(msg, "connection refused") ||
		strings.Contains(msg, "unexpected EOF") || strings.Contains(msg, "broken pipe")
}

// Refused reports whether err is PostgreSQL refusing the values a statement
// writes, so that the same statement with the same values fails the same way
// however often it is retried: the fault lies with the rows, not with the
// database. The projector runtime isolates such rows (poison events) instead
// of retrying them forever, and the event store splits such a row out of its
// group commit so that the other deliveries are stored. It is false for
// everything Unavailable reports. The SQLSTATE classes, and only these, are:
//
//   - 22 data exception: a value the type does not take (NUL or invalid
//     UTF-8 in text 22021, a \u0000 escape in jsonb 22P05, an unpaired
//     surrogate escape in jsonb 22P02, a number beyond numeric 22003, a
//     timestamp out of range 22008, a string too long 22001, ...);
//   - 23 integrity constraint violation: NOT NULL, CHECK, UNIQUE, foreign
//     key or exclusion constraint rejecting a value;
//   - 54 program limit exceeded: a value too large for what holds it (an
//     index row over 2,704 bytes 54000, a statement too complex 54001).
//
// Everything else is not the rows' fault and is retried: the classes
// Unavailable names (connection 08, resources 53, operator 57 including a
// cancelled query, rollback 40), and also syntax or undefined objects (42:
// a bug or a missing migration, which must not poison every event), a lock
// not available (55), system and internal errors (58, XX) and anything
// that is not a PostgreSQL error.
func Refused(err error) bool {
	if err == nil || Unavailable(err) {
		return false
	}
	var pqErr *pq.Error
	if !errors.As(err, &pqErr) {
		return false
	}
	switch pqErr.Code.Class() {
	case "22", "23", "54":
		return true
	}
	return false
}
