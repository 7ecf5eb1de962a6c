// Package clerksync keeps the ledger faithful to Clerk's Backend API
// (issue 12): ImportUsers backfills every user as a user.snapshot event,
// resumably; Reconcile compares the users projection with Clerk's list and
// repairs the drift; FirstSignIn fetches a user who signed in before their
// user.created delivery arrived. Snapshots are written with
// schema.AppendSnapshots only; the users fold (domain) orders them against
// the webhooks by updated_at.
//
// It never logs user objects, emails or the secret key.
package clerksync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkapi"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
	"golang.org/x/sync/errgroup"
)

// API is the part of the Backend API client (*clerkapi.Client) the syncer
// uses.
type API interface {
	ListUsersInto(ctx context.Context, p *clerkapi.Page, offset, limit int) error
	CountUsers(ctx context.Context) (int64, error)
	GetUser(ctx context.Context, id string) (clerkapi.User, error)
	ListOrganizationsInto(ctx context.Context, p *clerkapi.Page, offset, limit int) error
	ListMembershipsInto(ctx context.Context, p *clerkapi.Page, orgID string, offset, limit int) error
}

// lister reads one list page (an API method).
type lister func(ctx context.Context, p *clerkapi.Page, offset, limit int) error

// importKind is what one kind of import reads and stores.
type importKind struct {
	name  string // clerk_imports.kind
	list  lister
	count func(ctx context.Context) (int64, error)
	// build turns a page into snapshots and failures; it may read more
	// (an organization's memberships). Bodies may point into the page.
	build func(ctx context.Context, p *clerkapi.Page) ([]domain.Delivery, []schema.ImportFailure, error)
}

// Syncer imports and reconciles users. It is safe for concurrent use, but
// two imports of the same kind at once share one place and count pages
// twice (the events are stored once).
type Syncer struct {
	db  *sqlx.DB
	api API
	log *slog.Logger
	// PageSize is the list page size (default and at most clerkapi.MaxLimit).
	PageSize int
	// Writers is how many pages an import stores at once, each in its own
	// transaction (default 2: the database's work on one page overlaps
	// another's).
	Writers int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// New returns a Syncer writing to db and reading Clerk through api.
func New(db *sqlx.DB, api API, log *slog.Logger) *Syncer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Syncer{db: db, api: api, log: log, PageSize: clerkapi.MaxLimit, Writers: 2, Now: time.Now}
}

// DB is the database the Syncer writes to.
func (s *Syncer) DB() *sqlx.DB { return s.db }

// KindUsers is the import kind of ImportUsers in clerk_imports.
const KindUsers = "users"

// ImportOptions tune ImportUsers.
type ImportOptions struct {
	// Restart starts a new pass at offset 0 even when the last one was
	// interrupted (by default it resumes).
	Restart bool
	// Progress, when set, is called after each stored page (from the
	// importing goroutine).
	Progress func(Progress)
}

// Progress is where an import pass is.
type Progress struct {
	Offset    int   // list offset reached
	Total     int64 // users Clerk counted at the start of the pass (-1: unknown)
	Imported  int64 // stored now (new, or changed since the last import)
	Unchanged int64 // already stored with this updated_at
	Failed    int64 // malformed, not stored
}

// ImportSummary is what an import did. Counts are the pass's, including a
// resumed pass's earlier runs.
type ImportSummary struct {
	Progress
	Resumed    bool // continued an interrupted pass
	FromOffset int  // where this run started
	Finished   bool // the pass reached the last page
	// Failures are this run's failures (at most 100): ids and reasons.
	Failures []schema.ImportFailure
	Duration time.Duration
}

// ImportUsers reads every user from the Backend API, a page of PageSize at
// a time in clerkapi.ListOrder, and stores each as a user.snapshot event
// (domain.NewSnapshot: the exact bytes, delivery id from id and updated_at,
// so a user imported before with the same updated_at stores nothing). Each
// page's events and the pass's place (clerk_imports) commit in one
// transaction, so an interrupted import (ctx cancelled, a crash, an error)
// resumes at the first page not stored, unless o.Restart. A malformed
// user object is counted as failed with its id and reason (kept in
// clerk_import_failures), never stored; the rest of its page is.
//
// It returns the summary so far with any error: ctx's error when
// interrupted, the API's (EUNAUTHORIZED for a refused key, EUNAVAILABLE,
// ERATELIMIT after the client's retries) or the database's.
func (s *Syncer) ImportUsers(ctx context.Context, o ImportOptions) (ImportSummary, error) {
	return s.importAll(ctx, importKind{name: KindUsers, list: s.api.ListUsersInto, count: s.api.CountUsers,
		build: func(_ context.Context, p *clerkapi.Page) ([]domain.Delivery, []schema.ImportFailure, error) {
			ds, failures := snapshots(p)
			return ds, failures, nil
		}}, o)
}

// importAll runs an import of kind k (ImportUsers, ImportOrganizations).
func (s *Syncer) importAll(ctx context.Context, k importKind, o ImportOptions) (ImportSummary, error) {
	start := time.Now()
	var sum ImportSummary
	st, ok, err := schema.ReadImport(ctx, s.db, k.name)
	if err != nil {
		return sum, err
	}
	if ok && !st.Finished && !o.Restart {
		sum.Resumed = true
		sum.Progress = Progress{Offset: st.NextOffset, Total: st.Total, Imported: st.Imported, Unchanged: st.Unchanged, Failed: st.Failed}
	} else {
		total, err := k.count(ctx)
		if err != nil {
			return sum, fmt.Errorf("import %s: %w", k.name, err)
		}
		if err := schema.StartImport(ctx, s.db, k.name, total); err != nil {
			return sum, err
		}
		sum.Progress = Progress{Total: total}
	}
	sum.FromOffset = sum.Offset
	err = s.importPages(ctx, k, o, &sum)
	sum.Duration = time.Since(start)
	if err != nil {
		return sum, fmt.Errorf("import %s at offset %d: %w", k.name, sum.Offset, err)
	}
	return sum, nil
}

// writeTimeout bounds the storing of one page.
const writeTimeout = 60 * time.Second

// page is one page's snapshots, their memory the page's own, on its way
// to a writer.
type page struct {
	offset, next int
	last         bool
	ds           []domain.Delivery
	failures     []schema.ImportFailure
}

// importPages stores the pages from sum.Offset on, with Writers
// transactions at once (each page one transaction: its events, counts and
// failures) while the next pages are fetched. The place (clerk_imports
// next_offset) moves only over pages that are all stored: a writer whose
// page starts at the place moves it, over every later page already stored;
// so after a crash at most Writers-1 stored pages are read again (their
// users counted unchanged).
func (s *Syncer) importPages(ctx context.Context, k importKind, o ImportOptions, sum *ImportSummary) error {
	writers := s.Writers
	if writers <= 0 {
		writers = 1
	}
	// Interrupted (ctx cancelled), the fetching stops and the pages handed
	// to writers are still stored (at most Writers pages, each bounded by
	// writeTimeout): Ctrl-C keeps what was read.
	wctx := context.WithoutCancel(ctx)
	g, ctx := errgroup.WithContext(ctx)
	work := make(chan page)
	var mu sync.Mutex
	place := sum.Offset
	stored := map[int]page{} // stored pages past the place, by offset
	// advance moves the place over stored pages (mu held) and says whether
	// it moved and whether the pass is finished.
	advance := func() (moved, finished bool) {
		for {
			p, ok := stored[place]
			if !ok {
				return moved, finished
			}
			delete(stored, place)
			place, moved, finished = p.next, true, p.last
		}
	}
	store := func(p page) error {
		ctx, cancel := context.WithTimeout(wctx, writeTimeout)
		defer cancel()
		inserted, unchanged, failures, err := s.appendPage(ctx, k.name, p)
		if err != nil {
			return err
		}
		mu.Lock()
		for _, f := range failures {
			s.log.Warn("clerk object not imported", "kind", k.name, "id", f.ObjectID, "position", f.Position, "reason", f.Reason)
			if len(sum.Failures) < 100 {
				sum.Failures = append(sum.Failures, f)
			}
		}
		sum.Imported += int64(inserted)
		sum.Unchanged += int64(unchanged)
		sum.Failed += int64(len(failures))
		stored[p.offset] = p
		moved, finished := advance()
		next := place
		if moved {
			sum.Offset, sum.Finished = place, finished
			if o.Progress != nil {
				o.Progress(sum.Progress)
			}
		}
		mu.Unlock()
		if !moved {
			return nil
		}
		// Places recorded by two writers may cross: SetImportPlace only
		// moves forward.
		return schema.SetImportPlace(ctx, s.db, k.name, next, finished)
	}
	for range writers {
		g.Go(func() error {
			for p := range work {
				if err := store(p); err != nil {
					return err
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(work)
		return s.eachPage(ctx, k.list, sum.Offset, func(p *clerkapi.Page) error {
			ds, failures, err := k.build(ctx, p)
			if err != nil {
				return err
			}
			// The page's memory is reused for the next fetch: the bodies
			// are copied into one buffer of this page's own.
			n := 0
			for _, d := range ds {
				n += len(d.Body)
			}
			buf := make([]byte, 0, n)
			for i := range ds {
				start := len(buf)
				buf = append(buf, ds[i].Body...)
				ds[i].Body = buf[start:len(buf):len(buf)]
			}
			select {
			case work <- page{offset: p.Offset, next: p.Next(), last: p.Last(), ds: ds, failures: failures}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	})
	return g.Wait()
}

// appendPage appends a page's snapshots with its counts and failures in
// one transaction. When the database refuses a row's data it stores the
// page one snapshot at a time, recording the refused ones as failures. It
// returns how many snapshots were new and how many were stored before, and
// the page's failures.
func (s *Syncer) appendPage(ctx context.Context, kind string, p page) (inserted, unchanged int, _ []schema.ImportFailure, _ error) {
	ds, failures := p.ds, p.failures
	n, err := s.appendTx(ctx, ds, func(tx *sqlx.Tx, inserted int) error {
		return schema.AddImportCounts(ctx, tx, kind, int64(inserted), int64(len(uniqueIDs(ds))-inserted), failures)
	})
	if err == nil || !schema.Refused(err) {
		return n, len(uniqueIDs(ds)) - n, failures, err
	}
	var stored []domain.Delivery
	for i, d := range ds {
		k, err := s.appendTx(ctx, ds[i:i+1], nil)
		switch {
		case schema.Refused(err):
			failures = append(failures, schema.ImportFailure{ObjectID: d.UserID, Position: int64(p.offset), Reason: "the database refused its data"})
		case err != nil:
			return 0, 0, failures, err
		default:
			inserted += k
			stored = append(stored, d)
		}
	}
	unchanged = len(uniqueIDs(stored)) - inserted
	_, err = s.appendTx(ctx, nil, func(tx *sqlx.Tx, _ int) error {
		return schema.AddImportCounts(ctx, tx, kind, int64(inserted), int64(unchanged), failures)
	})
	return inserted, unchanged, failures, err
}

// appendTx appends ds in one transaction, then runs also (when set) in it
// before committing. It returns how many were new.
func (s *Syncer) appendTx(ctx context.Context, ds []domain.Delivery, also func(tx *sqlx.Tx, inserted int) error) (int, error) {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", schema.Classify(err))
	}
	defer tx.Rollback()
	inserted, err := schema.AppendSnapshots(ctx, tx, ds)
	if err != nil {
		return 0, err
	}
	if also != nil {
		if err := also(tx, len(inserted)); err != nil {
			return 0, err
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", schema.Classify(err))
	}
	return len(inserted), nil
}

func uniqueIDs(ds []domain.Delivery) map[string]bool {
	m := make(map[string]bool, len(ds))
	for _, d := range ds {
		m[d.ID] = true
	}
	return m
}

// snapshots turns a page of users into snapshot deliveries and failures.
func snapshots(p *clerkapi.Page) ([]domain.Delivery, []schema.ImportFailure) {
	return pageSnapshots(p, domain.NewSnapshot, -1)
}

// pageSnapshots turns a page's objects into deliveries with newSnap
// (domain.NewSnapshot, NewOrganizationSnapshot, …), and its malformed
// elements and the objects newSnap refuses into failures. at, when not -1,
// is the list position recorded for every failure (a membership's is its
// organization's); else each element's own.
func pageSnapshots(p *clerkapi.Page, newSnap func(id string, updatedAt int64, raw []byte) (domain.Delivery, error), at int64) ([]domain.Delivery, []schema.ImportFailure) {
	pos := func(i int) int64 {
		if at >= 0 {
			return at
		}
		return int64(p.Offset + i)
	}
	ds := make([]domain.Delivery, 0, len(p.Users))
	var failures []schema.ImportFailure
	for _, f := range p.Failures {
		failures = append(failures, schema.ImportFailure{ObjectID: f.ID, Position: pos(f.Index), Reason: reason(f.Err)})
	}
	for i, u := range p.Users {
		d, err := newSnap(u.ID, u.UpdatedAt, u.Raw)
		if err != nil {
			failures = append(failures, schema.ImportFailure{ObjectID: u.ID, Position: pos(i), Reason: reason(err)})
			continue
		}
		ds = append(ds, d)
	}
	return ds, failures
}

// reason is an error's message without the domain code prefix.
func reason(err error) string {
	var e *domain.Error
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}

// eachPage lists (list: users, organizations) from offset to the last page and calls fn with each
// page in order, fetching the next page while fn runs on the current one
// (two pages' memory, reused). fn must not keep the page after it returns.
func (s *Syncer) eachPage(ctx context.Context, list lister, offset int, fn func(*clerkapi.Page) error) error {
	size := s.PageSize
	if size <= 0 || size > clerkapi.MaxLimit {
		size = clerkapi.MaxLimit
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type fetched struct {
		p   *clerkapi.Page
		err error
	}
	free := make(chan *clerkapi.Page, 2)
	free <- new(clerkapi.Page)
	free <- new(clerkapi.Page)
	pages := make(chan fetched, 1)
	go func() {
		defer close(pages)
		for off := offset; ; {
			var p *clerkapi.Page
			select {
			case p = <-free:
			case <-ctx.Done():
				return
			}
			err := list(ctx, p, off, size)
			select {
			case pages <- fetched{p, err}:
			case <-ctx.Done():
				return
			}
			if err != nil || p.Last() {
				return
			}
			off = p.Next()
		}
	}()
	for f := range pages {
		if f.err != nil {
			return f.err
		}
		if err := fn(f.p); err != nil {
			return err
		}
		last := f.p.Last()
		free <- f.p
		if last {
			return nil
		}
	}
	return ctx.Err()
}
