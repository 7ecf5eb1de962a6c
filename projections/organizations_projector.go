package projections

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
)

// OrganizationsName is the name of the organizations projector.
const OrganizationsName = "organizations"

// Organizations is the organizations projector: it folds organization.*
// and organizationMembership.* events (domain.ParseOrganizationEvent,
// ApplyOrganization, ApplyMembership) into two tables, organizations and
// organization_memberships, one row per organization and per membership,
// and keeps each organization's members_count (its memberships that are
// not deleted) in the same transaction. A batch loads the rows it touches
// in one query per table, folds them in memory and writes them back in one
// upsert per table. The fold is order-insensitive and idempotent, so the
// tables converge whatever order and however often events arrive; a row
// PostgreSQL refuses is the Runner's to isolate (applyIsolated), and a
// rebuild's and check's (orgFold.load), as for users.
type Organizations struct {
	orgs schema.OrganizationsTable
	mems schema.MembershipsTable
}

// NewOrganizations returns the organizations projector writing the live
// organizations and organization_memberships tables.
func NewOrganizations() *Organizations {
	return &Organizations{orgs: schema.LiveOrganizations(), mems: schema.LiveMemberships()}
}

// Name implements Projector.
func (p *Organizations) Name() string { return OrganizationsName }

// Types implements Projector: organization.* and organizationMembership.*.
// The erasure event too: it removes the erased user's memberships.
func (p *Organizations) Types() []string {
	return append(domain.OrganizationEventTypes(), domain.ErasureEventType)
}

// rowState is one row being folded (an organization's or a membership's),
// with the last event applied to it.
type rowState[R any] struct {
	row  R
	last schema.Cursor
}

// orgState and memState are one organization and one membership being
// folded.
type (
	orgState = rowState[schema.OrganizationRow]
	memState = rowState[schema.MembershipRow]
)

// foldRow folds an event at c into the state of id in m, creating it with
// a zero row: apply updates the row, and c becomes its last event if later.
func foldRow[R any](m map[string]*rowState[R], id string, c schema.Cursor, apply func(row *R)) {
	st := m[id]
	if st == nil {
		st = &rowState[R]{}
		m[id] = st
	}
	apply(&st.row)
	if st.last.Less(c) {
		st.last = c
	}
}

// orgStates is the part of the read model a batch or a rebuild folds.
type orgStates struct {
	orgs map[string]*orgState
	mems map[string]*memState
}

func newOrgStates() *orgStates {
	return &orgStates{orgs: map[string]*orgState{}, mems: map[string]*memState{}}
}

// add folds x, parsed from e, into the states, creating those it touches.
func (s *orgStates) add(e domain.Event, x domain.OrganizationEvent) {
	c := schema.After(e)
	if id := x.OrganizationID(); id != "" {
		foldRow(s.orgs, id, c, func(r *schema.OrganizationRow) {
			r.Organization = domain.ApplyOrganization(r.Organization, x)
		})
	}
	if id := x.MembershipID(); id != "" {
		foldRow(s.mems, id, c, func(r *schema.MembershipRow) {
			r.Membership = domain.ApplyMembership(r.Membership, x)
		})
	}
}

func (s *orgStates) rows() ([]schema.OrganizationRow, []schema.MembershipRow) {
	orgs := make([]schema.OrganizationRow, 0, len(s.orgs))
	for _, st := range s.orgs {
		r := st.row
		r.LastPosition = st.last.Position
		orgs = append(orgs, r)
	}
	mems := make([]schema.MembershipRow, 0, len(s.mems))
	for _, st := range s.mems {
		r := st.row
		r.LastPosition = st.last.Position
		mems = append(mems, r)
	}
	return orgs, mems
}

// parseOrg parses e, or returns its Failure (a poison event).
func parseOrg(e domain.Event) (domain.OrganizationEvent, *Failure) {
	x, err := domain.ParseOrganizationEvent(e)
	if err != nil {
		return x, &Failure{Position: e.Position, DeliveryID: e.DeliveryID, Err: err}
	}
	return x, nil
}

// Apply implements Projector.
func (p *Organizations) Apply(ctx context.Context, tx *sqlx.Tx, events []domain.Event) ([]Failure, error) {
	if len(events) == 0 {
		return nil, nil
	}
	var failures []Failure
	parsed := make([]domain.OrganizationEvent, len(events))
	ok := make([]bool, len(events))
	orgIDs, memIDs := map[string]bool{}, map[string]bool{}
	for i, e := range events {
		x, f := parseOrg(e)
		if f != nil {
			failures = append(failures, *f)
			continue
		}
		parsed[i], ok[i] = x, true
		if id := x.OrganizationID(); id != "" {
			orgIDs[id] = true
		}
		if id := x.MembershipID(); id != "" {
			memIDs[id] = true
		}
	}
	s := newOrgStates()
	storedOrgs, err := p.orgs.Load(ctx, tx, keys(orgIDs))
	if err != nil {
		return nil, err
	}
	for id, r := range storedOrgs {
		s.orgs[id] = &orgState{row: r, last: schema.Cursor{Position: r.LastPosition}}
	}
	storedMems, err := p.mems.Load(ctx, tx, keys(memIDs))
	if err != nil {
		return nil, err
	}
	// Recount every organization a touched membership belonged to, before
	// and after the batch.
	recount := map[string]bool{}
	for id, r := range storedMems {
		s.mems[id] = &memState{row: r, last: schema.Cursor{Position: r.LastPosition}}
		recount[r.Membership.OrganizationID] = true
	}
	for i, e := range events {
		if ok[i] {
			s.add(e, parsed[i])
		}
	}
	for _, st := range s.mems {
		recount[st.row.Membership.OrganizationID] = true
	}
	orgs, mems := s.rows()
	if err := p.orgs.Upsert(ctx, tx, orgs); err != nil {
		return nil, err
	}
	if err := p.mems.Upsert(ctx, tx, mems); err != nil {
		return nil, err
	}
	for id := range orgIDs {
		recount[id] = true
	}
	// An erased user's memberships go (the events that made them cannot
	// be read any more: a rebuild would not make them either).
	var erased []string
	for _, e := range events {
		if e.Type == domain.ErasureEventType && e.UserID != "" {
			erased = append(erased, e.UserID)
		}
	}
	if len(erased) > 0 {
		orgsOf, err := p.mems.DeleteWhere(ctx, tx, "user_id", erased, "organization_id")
		if err != nil {
			return nil, err
		}
		// A membership event carries its organization's object: the row
		// may show an erased member's event, which a rebuild can no longer
		// read. Those organizations are folded again from what can be.
		shaped, err := schema.OrganizationsShapedBy(ctx, tx, p.orgs, erased)
		if err != nil {
			return nil, err
		}
		again := map[string]bool{}
		for _, id := range append(orgsOf, shaped...) {
			recount[id], again[id] = true, true
		}
		delete(again, "")
		if err := p.foldAgain(ctx, tx, keys(again), lastOf(events)); err != nil {
			return nil, err
		}
	}
	delete(recount, "")
	if len(recount) > 0 {
		if err := schema.RecountMembers(ctx, tx, p.orgs, p.mems, keys(recount)); err != nil {
			return nil, err
		}
	}
	return failures, nil
}

// foldAgain replaces the rows of the organizations ids with their fold
// from the empty state over every event up to upTo, as a rebuild folds
// them: an erased member's events are about nothing now, and an
// organization no event makes any more is deleted. It reads every
// organization event up to upTo (opening the sealed membership events),
// so it runs only for an erasure.
func (p *Organizations) foldAgain(ctx context.Context, tx *sqlx.Tx, ids []string, upTo schema.Cursor) error {
	if len(ids) == 0 {
		return nil
	}
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	s := newOrgStates()
	err := schema.StreamEvents(ctx, tx, schema.Cursor{}, upTo, domain.OrganizationEventTypes(), func(e domain.Event) error {
		if x, f := parseOrg(e); f == nil && want[x.OrganizationID()] {
			foldRow(s.orgs, x.OrganizationID(), schema.After(e), func(r *schema.OrganizationRow) {
				r.Organization = domain.ApplyOrganization(r.Organization, x)
			})
		}
		return ctx.Err()
	})
	if err != nil {
		return fmt.Errorf("fold %d organizations again after an erasure: %w", len(ids), err)
	}
	var gone []string
	for _, id := range ids {
		if s.orgs[id] == nil {
			gone = append(gone, id)
		}
	}
	if err := p.orgs.Delete(ctx, tx, gone); err != nil {
		return err
	}
	orgs, _ := s.rows()
	return p.orgs.Upsert(ctx, tx, orgs)
}

// lastOf returns the greatest cursor of events (not empty).
func lastOf(events []domain.Event) schema.Cursor {
	var c schema.Cursor
	for _, e := range events {
		if a := schema.After(e); c.Less(a) {
			c = a
		}
	}
	return c
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// asideAs implements rebuildable.
func (p *Organizations) asideAs(name func(string) string) rebuildable {
	return &Organizations{orgs: p.orgs.Aside(name(p.orgs.Name())), mems: p.mems.Aside(name(p.mems.Name()))}
}

// createLike implements rebuildable.
func (p *Organizations) createLike(ctx context.Context, q schema.Execer, live rebuildable, temp bool) error {
	l := live.(*Organizations)
	if err := p.orgs.CreateLike(ctx, q, l.orgs, temp); err != nil {
		return err
	}
	return p.mems.CreateLike(ctx, q, l.mems, temp)
}

// dropTables implements rebuildable.
func (p *Organizations) dropTables(ctx context.Context, q schema.Execer) error {
	if err := p.orgs.Drop(ctx, q); err != nil {
		return err
	}
	return p.mems.Drop(ctx, q)
}

// analyzeTables implements rebuildable.
func (p *Organizations) analyzeTables(ctx context.Context, q schema.Execer) error {
	if err := p.orgs.Analyze(ctx, q); err != nil {
		return err
	}
	return p.mems.Analyze(ctx, q)
}

// replaceWith implements rebuildable: both tables in the one transaction.
func (p *Organizations) replaceWith(ctx context.Context, tx *sqlx.Tx, aside rebuildable) error {
	a := aside.(*Organizations)
	if err := p.orgs.ReplaceWith(ctx, tx, a.orgs); err != nil {
		return err
	}
	return p.mems.ReplaceWith(ctx, tx, a.mems)
}

// countRows implements rebuildable: the organizations.
func (p *Organizations) countRows(ctx context.Context, q schema.Queryer) (int, error) {
	return p.orgs.Count(ctx, q)
}

// diffWith implements rebuildable: both tables, each difference naming
// its table.
func (p *Organizations) diffWith(ctx context.Context, q schema.Queryer, aside rebuildable) ([]Difference, error) {
	a := aside.(*Organizations)
	orgs, err := p.orgs.Diff(ctx, q, a.orgs)
	if err != nil {
		return nil, err
	}
	mems, err := p.mems.Diff(ctx, q, a.mems)
	if err != nil {
		return nil, err
	}
	for i := range orgs {
		orgs[i].Table = p.orgs.Name()
	}
	for i := range mems {
		mems[i].Table = p.mems.Name()
	}
	return append(orgs, mems...), nil
}

// orgFold is a range of the ledger folded in memory by foldRange.
type orgFold struct {
	p        *Organizations
	states   *orgStates
	failures []Failure
	nread    int64
}

func (f *orgFold) read() int64 { return f.nread }
func (f *orgFold) rows() int   { return len(f.states.orgs) }

// foldRange implements rebuildable: one sequential scan of the range (no
// ORDER BY: the fold is order-insensitive), folded in memory.
func (p *Organizations) foldRange(ctx context.Context, q schema.Queryer, after, upTo schema.Cursor, progress func(int64)) (folded, error) {
	f := &orgFold{p: p, states: newOrgStates()}
	err := schema.StreamEvents(ctx, q, after, upTo, p.Types(), func(e domain.Event) error {
		f.nread++
		if x, fail := parseOrg(e); fail != nil {
			f.failures = append(f.failures, *fail)
		} else {
			f.states.add(e, x)
		}
		if progress != nil && f.nread%4096 == 0 {
			progress(f.nread)
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	if progress != nil {
		progress(f.nread)
	}
	return f, nil
}

// load implements folded. It COPYs every organization and membership,
// each table inside a savepoint, then counts the members. When PostgreSQL
// refuses rows (schema.Refused), it finds them by COPYing halves, and then
// every event that touches a refused row, every row those events touch,
// and so on (an event touches an organization and a membership, so one
// refused row can decide what another holds); it deletes the rows so found
// and applies their events again in ledger order with applyIsolated, as the
// live projector does: the events whose rows are refused become poison,
// the others are kept. The slow path costs two more scans of the range,
// and only when a row is refused.
func (f *orgFold) load(ctx context.Context, tx *sqlx.Tx, after, upTo schema.Cursor) ([]Failure, error) {
	orgs, mems := f.states.rows()
	f.states = newOrgStates() // let the rows go
	refusedOrgs, err := copyRefused(ctx, tx, f.p.orgs, orgs)
	if err != nil {
		return nil, err
	}
	refusedMems, err := copyRefused(ctx, tx, f.p.mems, mems)
	if err != nil {
		return nil, err
	}
	orgs, mems = nil, nil
	failures := f.failures
	if len(refusedOrgs)+len(refusedMems) > 0 {
		fs, err := f.reapply(ctx, tx, after, upTo, refusedOrgs, refusedMems)
		if err != nil {
			return nil, err
		}
		failures = mergeFailures(failures, fs)
	}
	if err := schema.RecountMembers(ctx, tx, f.p.orgs, f.p.mems, nil); err != nil {
		return nil, err
	}
	return failures, nil
}

// reapply is load's slow path (see load).
func (f *orgFold) reapply(ctx context.Context, tx *sqlx.Tx, after, upTo schema.Cursor, refusedOrgs []schema.OrganizationRow, refusedMems []schema.MembershipRow) ([]Failure, error) {
	orgIDs, memIDs := map[string]bool{}, map[string]bool{}
	for _, r := range refusedOrgs {
		orgIDs[r.Organization.ID] = true
	}
	for _, r := range refusedMems {
		memIDs[r.Membership.ID] = true
	}
	// Every event's keys, then the closure of the refused rows over them.
	type touch struct{ org, mem string }
	var touches []touch
	err := schema.StreamEvents(ctx, tx, after, upTo, f.p.Types(), func(e domain.Event) error {
		if x, fail := parseOrg(e); fail == nil {
			touches = append(touches, touch{x.OrganizationID(), x.MembershipID()})
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("read the events of rows that are refused: %w", err)
	}
	for grew := true; grew; {
		grew = false
		for _, t := range touches {
			if (t.org != "" && orgIDs[t.org]) || (t.mem != "" && memIDs[t.mem]) {
				if t.org != "" && !orgIDs[t.org] {
					orgIDs[t.org], grew = true, true
				}
				if t.mem != "" && !memIDs[t.mem] {
					memIDs[t.mem], grew = true, true
				}
			}
		}
	}
	touches = nil
	if err := f.p.orgs.Delete(ctx, tx, keys(orgIDs)); err != nil {
		return nil, err
	}
	if err := f.p.mems.Delete(ctx, tx, keys(memIDs)); err != nil {
		return nil, err
	}
	var events []domain.Event
	err = schema.StreamEvents(ctx, tx, after, upTo, f.p.Types(), func(e domain.Event) error {
		if x, fail := parseOrg(e); fail == nil && (orgIDs[x.OrganizationID()] || memIDs[x.MembershipID()]) {
			events = append(events, e)
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("read the events of rows that are refused: %w", err)
	}
	slices.SortFunc(events, func(a, b domain.Event) int {
		return cmp.Or(cmp.Compare(a.TxID, b.TxID), cmp.Compare(a.Position, b.Position))
	})
	fs, err := applyIsolated(ctx, tx, f.p, events)
	if err != nil {
		return nil, fmt.Errorf("apply the events of %d organizations and %d memberships whose rows are refused: %w", len(orgIDs), len(memIDs), err)
	}
	return fs, nil
}
