package clerksync_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkapi"
	"github.com/clerk-ledger/clerk-ledger/clerkapi/clerkapitest"
	"github.com/clerk-ledger/clerk-ledger/clerksync"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
	"golang.org/x/time/rate"
)

type env struct {
	t     *testing.T
	db    *sqlx.DB
	api   *clerkapitest.Server
	cl    *clerkapi.Client
	sync  *clerksync.Syncer
	store *schema.Store
	// ctx is the context the helpers read and project with (a test that
	// seals puts its keyring in it: schema.WithKeyring).
	ctx context.Context
	dsn string // the database's URL
}

func newEnv(t *testing.T, users int) *env {
	t.Helper()
	api := clerkapitest.New(clerkapitest.Options{Users: users, Seed: 7})
	t.Cleanup(api.Close)
	cl, err := clerkapi.New(clerkapi.Config{SecretKey: api.SecretKey(), BaseURL: api.URL(), HTTPClient: api.Client(),
		RateLimit: rate.Inf, BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, MaxRetryAfter: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	dsn := schematest.NewURL(t)
	db := schematest.Open(t, dsn)
	if _, err := schema.Migrate(context.Background(), db.DB); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: db, api: api, cl: cl, store: schema.NewStore(db), ctx: context.Background(), dsn: dsn}
	e.sync = clerksync.New(db, cl, slog.New(slog.DiscardHandler))
	e.sync.PageSize = 100
	return e
}

// newImportedEnv is newEnv with its users imported and projected.
func newImportedEnv(t *testing.T, users int) *env {
	t.Helper()
	e := newEnv(t, users)
	if _, err := e.sync.ImportUsers(e.ctx, clerksync.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	e.project()
	return e
}

// project runs the users projector until it has read every visible event.
func (e *env) project() {
	e.t.Helper()
	schematest.WaitVisible(e.t, e.db)
	r := projections.NewRunner(e.db, slog.New(slog.DiscardHandler), projections.NewUsers())
	if err := r.CatchUp(e.ctx); err != nil {
		e.t.Fatal(err)
	}
}

// checkProjection asserts rebuild/check agree with the live projection.
func (e *env) checkProjection() {
	e.t.Helper()
	res, err := projections.Check(e.ctx, e.db, projections.NewUsers(), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if len(res.Differences) != 0 {
		e.t.Fatalf("check finds %d differences: %+v", len(res.Differences), res.Differences[:min(3, len(res.Differences))])
	}
	// A rebuild from the first event gives the same table.
	dump := func() string {
		var s string
		if err := e.db.QueryRowx(`SELECT coalesce(string_agg(concat_ws('|', id, email, first_name, deleted, version_updated_at, version_delivery_id), E'\n' ORDER BY id), '') FROM users`).Scan(&s); err != nil {
			e.t.Fatal(err)
		}
		return s
	}
	before := dump()
	if _, err := projections.Rebuild(e.ctx, e.db, projections.NewUsers(), nil); err != nil {
		e.t.Fatal(err)
	}
	if after := dump(); after != before || before == "" {
		e.t.Fatalf("the rebuilt users differ from the live projection:\n%.500s\n---\n%.500s", before, after)
	}
}

// webhook appends a user.* delivery carrying the user's current object on
// the fake server (as Clerk would send after a change).
func (e *env) webhook(typ, id string) {
	e.t.Helper()
	raw, ok := e.api.Raw(id)
	data := string(raw)
	if typ == "user.deleted" {
		data = fmt.Sprintf(`{"deleted":true,"id":%q,"object":"user"}`, id)
	} else if !ok {
		e.t.Fatalf("no user %s", id)
	}
	now := time.Now()
	body := fmt.Sprintf(`{"data":%s,"object":"event","type":%q,"timestamp":%d,"instance_id":"ins_1"}`, data, typ, now.UnixMilli())
	d, err := domain.NewDelivery(fmt.Sprintf("msg_%s_%d", id, now.UnixNano()), now.Unix(), "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", []byte(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.store.AppendDelivery(context.Background(), d); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) user(id string) domain.User {
	e.t.Helper()
	u, err := schema.GetUser(context.Background(), e.db, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

func (e *env) count(query string, args ...any) int64 {
	e.t.Helper()
	var n int64
	if err := e.db.QueryRowx(query, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func mustClient(t *testing.T, key string, api *clerkapitest.Server) *clerkapi.Client {
	t.Helper()
	cl, err := clerkapi.New(clerkapi.Config{SecretKey: key, BaseURL: api.URL(), HTTPClient: api.Client(), RateLimit: rate.Inf, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}
