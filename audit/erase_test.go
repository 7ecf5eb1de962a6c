package audit_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/svixsig"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
	"github.com/jmoiron/sqlx"
)

// eraseLedger is a ledger with sealing on, its projectors and audit
// service, and a log key.
type eraseLedger struct {
	t      *testing.T
	ctx    context.Context
	db     *sqlx.DB
	dsn    string
	keys   *userkeys.Keyring
	store  *schema.Store
	runner *projections.Runner
	svc    *audit.Service
	signer *translog.Signer
	vkey   *translog.Verifier
	secret string
	sign   *clerkgen.Signer
	n      int
}

func newEraseLedger(t *testing.T) *eraseLedger {
	t.Helper()
	l := newEraseLedgerB(t)
	l.t = t
	return l
}

// newEraseLedgerB is newEraseLedger for a benchmark too (l.t is nil).
func newEraseLedgerB(t testing.TB) *eraseLedger {
	t.Helper()
	dsn := schematest.NewURL(t)
	db := schematest.Open(t, dsn)
	if _, err := schema.Migrate(context.Background(), db.DB); err != nil {
		t.Fatal(err)
	}
	k := schematest.NewKeyring(t)
	var err error
	l := &eraseLedger{db: db, dsn: dsn, keys: k, ctx: schema.WithKeyring(context.Background(), k)}
	l.store = schema.NewStore(db)
	l.store.Keys = k
	l.runner = projections.NewRunner(db, nil, projections.Default()...)
	l.signer, l.vkey = schematest.NewLogKey(t, "clerk-ledger/erase-test")
	l.secret = clerkgen.NewSecret()
	if l.sign, err = clerkgen.NewSigner(l.secret); err != nil {
		t.Fatal(err)
	}
	v, err := svixsig.NewVerifier([]string{l.secret})
	if err != nil {
		t.Fatal(err)
	}
	l.svc = audit.New(audit.Config{DB: db, Verifier: v, LogKey: l.vkey, Auditors: []string{"user_auditor"}})
	return l
}

// add appends body as a signed delivery.
func (l *eraseLedger) add(body []byte, err error) string {
	l.t.Helper()
	if err != nil {
		l.t.Fatal(err)
	}
	l.n++
	id := fmt.Sprintf("msg_erase_%03d", l.n)
	h := l.sign.Headers(id, time.Now(), body)
	ts := time.Now().Unix()
	fmt.Sscan(h.Get("svix-timestamp"), &ts)
	d, err := domain.NewDelivery(id, ts, h.Get("svix-signature"), body)
	if err != nil {
		l.t.Fatal(err)
	}
	if _, err := l.store.Append(l.ctx, d); err != nil {
		l.t.Fatal(err)
	}
	return id
}

func (l *eraseLedger) catchUp() {
	l.t.Helper()
	schematest.WaitVisible(l.t, l.db)
	if err := l.runner.CatchUp(l.ctx); err != nil {
		l.t.Fatal(err)
	}
}

var auditor = audit.Actor{ID: "user_auditor", Channel: schema.ChannelCLI}

// Ada's personal data, as her events carry it.
var adaPII = []string{"ada.lovelace@example.com", "Lovelace", "+4915112345678", "203.0.113.77", "ada-secret-handle", "Firefox/128.0"}

func (l *eraseLedger) history() {
	ada := clerkgen.User{ID: "user_ada", Email: "ada.lovelace@example.com", Phone: "+4915112345678", FirstName: "Augusta", LastName: "Lovelace", Username: "ada-secret-handle", CreatedAt: at(0), UpdatedAt: at(0)}
	bob := clerkgen.User{ID: "user_bob", Email: "bob@example.com", FirstName: "Bob", LastName: "Builder", CreatedAt: at(0), UpdatedAt: at(0)}
	acme := clerkgen.Organization{ID: "org_acme", Name: "Acme", Slug: "acme", CreatedAt: at(0), UpdatedAt: at(0)}
	l.add(clerkgen.Event("user.created", ada, at(0)))
	l.add(clerkgen.Event("user.created", bob, at(0)))
	ada2 := ada
	ada2.UpdatedAt = at(1)
	l.add(clerkgen.Event("user.updated", ada2, at(1)))
	l.add([]byte(`{"type":"session.created","object":"event","timestamp":`+fmt.Sprint(at(1).UnixMilli())+
		`,"data":{"id":"sess_1","object":"session","user_id":"user_ada","status":"active","latest_activity":{"ip_address":"203.0.113.77","browser_name":"Firefox/128.0","city":"London"}}}`), nil)
	l.add(clerkgen.Event("email.created", ada, at(1.5)))
	l.add(clerkgen.OrganizationEvent("organization.created", acme, at(0)))
	l.add(clerkgen.MembershipEvent("organizationMembership.created", clerkgen.Membership{ID: "orgmem_ada", Organization: acme, User: ada, Role: "org:admin", CreatedAt: at(2), UpdatedAt: at(2)}, at(2)))
	l.add(clerkgen.MembershipEvent("organizationMembership.created", clerkgen.Membership{ID: "orgmem_bob", Organization: acme, User: bob, Role: "org:member", CreatedAt: at(2), UpdatedAt: at(2)}, at(2)))
	l.add(clerkgen.Event("user.deleted", ada, at(3)))
	l.catchUp()
}

// plaintextLeft scans the whole database and a pg_dump for each of
// needles (schematest.PlaintextLeft).
func (l *eraseLedger) plaintextLeft(needles []string) []string {
	l.t.Helper()
	return schematest.PlaintextLeft(l.t, l.db, l.dsn, needles)
}

// TestEraseLeavesNoPlaintextAndTheLedgerVerifiable is issue 14's test: a
// user with events of every kind is erased; then no column of any table
// nor a pg_dump holds her emails, names, phone or IP; verify, the
// checkpoint kept before, and her proof bundle still pass (her events
// counted erased); rebuild and check are clean and keep the tombstone;
// history and point-in-time show her events' metadata with the erased
// marker; Bob is untouched.
func TestEraseLeavesNoPlaintextAndTheLedgerVerifiable(t *testing.T) {
	l := newEraseLedger(t)
	l.history()
	// An auditor searched for her address: the access log names it.
	if _, err := l.svc.User(l.ctx, auditor, "user_ada", time.Time{}, audit.UserPage{}); err != nil {
		t.Fatal(err)
	}
	if err := schema.RecordAccess(l.ctx, l.db, schema.Access{Actor: "user_auditor", Channel: schema.ChannelPage, Action: schema.ActionEvents, Filters: map[string]string{"email": "ada.lovelace@example.com"}}); err != nil {
		t.Fatal(err)
	}
	if found := l.plaintextLeft(adaPII[:1]); len(found) == 0 {
		t.Fatal("the scan finds nothing even before the erasure: it cannot fail")
	}
	before := schematest.SignCheckpoint(t, l.db, l.signer, "clerk-ledger/erase-test")
	bundleBefore, err := l.svc.UserProof(l.ctx, auditor, "user_ada")
	if err != nil {
		t.Fatal(err)
	}

	res, err := l.svc.Erase(l.ctx, auditor, audit.EraseInput{UserID: "user_ada", Reason: "GDPR Art. 17 request #42"})
	if err != nil || !res.Created || res.Erasure.CompletedAt.IsZero() {
		t.Fatalf("erase: %+v %v", res, err)
	}
	l.catchUp()
	schematest.SignCheckpoint(t, l.db, l.signer, "clerk-ledger/erase-test")

	if found := l.plaintextLeft(adaPII); len(found) > 0 {
		t.Errorf("plaintext of the erased user left:\n%s", strings.Join(found, "\n"))
	}
	if found := l.plaintextLeft([]string{"bob@example.com", "Builder"}); len(found) == 0 {
		t.Error("Bob's data is gone too")
	}

	// The ledger still verifies: tree, signatures (hers erased), the
	// checkpoint kept before, the bundle made before and one made now.
	v, err := l.svc.Verify(l.ctx, auditor, audit.VerifyOptions{Signatures: true})
	if err != nil || !v.OK {
		t.Fatalf("verify after erasure: %+v %v", v, err)
	}
	if !strings.Contains(v.Message(), "6 events erased") {
		t.Errorf("verify message: %s", v.Message())
	}
	if v.Signatures.Erased != 6 || v.Signatures.Unsigned != 1 || v.Signatures.Failed != 0 {
		t.Errorf("signatures: %+v (want Ada's 6 events erased, the erasure event unsigned)", v.Signatures)
	}
	cons, err := l.svc.VerifyCheckpoint(l.ctx, auditor, []byte(before.Note))
	if err != nil || !cons.OK {
		t.Fatalf("the checkpoint kept before: %+v %v", cons, err)
	}
	enc, _ := bundleBefore.Encode()
	if rep, err := translog.VerifyBundle(enc, l.vkey); err != nil || !rep.OK || rep.Erased != 0 {
		t.Fatalf("the bundle made before: %+v %v", rep, err)
	}
	after, err := l.svc.UserProof(l.ctx, auditor, "user_ada")
	if err != nil {
		t.Fatal(err)
	}
	enc, _ = after.Encode()
	if bytes.Contains(enc, []byte("Lovelace")) {
		t.Error("the bundle made after holds her name")
	}
	rep, err := translog.VerifyBundle(enc, l.vkey)
	if err != nil || !rep.OK || rep.Erased != 6 || len(rep.Events) != 7 {
		t.Fatalf("the bundle made after: ok=%v erased=%d events=%d %s %v", rep.OK, rep.Erased, len(rep.Events), rep.Problem, err)
	}

	// The tombstone, and the same after a rebuild; check finds nothing.
	u, err := schema.GetUser(l.ctx, l.db, "user_ada")
	if err != nil || !u.Erased() || !u.Deleted || u.Email != "" || u.FirstName != "" || u.Phone != "" || !u.CreatedAt.IsZero() {
		t.Fatalf("tombstone: %+v %v", u, err)
	}
	for _, p := range []projections.Projector{projections.NewUsers(), projections.NewOrganizations()} {
		c, err := projections.Check(l.ctx, l.db, p, nil)
		if err != nil || len(c.Differences) != 0 {
			t.Fatalf("check %s: %+v %v", p.Name(), c.Differences, err)
		}
		if _, err := projections.Rebuild(l.ctx, l.db, p, nil); err != nil {
			t.Fatal(err)
		}
	}
	u2, err := schema.GetUser(l.ctx, l.db, "user_ada")
	if err != nil || !u2.Erased() || u2.Email != "" || !u2.ErasedAt.Equal(u.ErasedAt) || u2.Deleted != u.Deleted {
		t.Fatalf("after rebuild: %+v %v", u2, err)
	}
	if found := l.plaintextLeft(adaPII); len(found) > 0 {
		t.Errorf("plaintext after rebuild:\n%s", strings.Join(found, "\n"))
	}

	// History: her events are there, metadata and erased marker, no body.
	hist, err := l.svc.User(l.ctx, auditor, "user_ada", time.Time{}, audit.UserPage{})
	if err != nil {
		t.Fatal(err)
	}
	if hist.State.Email != "" || !hist.State.Erased() {
		t.Errorf("point-in-time state of the erased user: %+v", hist.State)
	}
	var erased int
	var all []schema.AuditEvent
	if _, _, err := l.svc.Events(l.ctx, auditor, audit.EventQuery{Filter: schema.EventFilter{UserID: "user_ada"}, Format: audit.FormatJSON}, 0, func(_ int, e schema.AuditEvent) {
		all = append(all, e)
		if e.Erased {
			erased++
			if e.Body != nil {
				t.Errorf("erased event %d has a body", e.Position)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if len(all) != 7 || erased != 6 || all[6].Type != domain.ErasureEventType {
		t.Errorf("history: %d events, %d erased", len(all), erased)
	}
	var export bytes.Buffer
	if _, err := l.svc.Export(l.ctx, auditor, audit.EventQuery{Filter: schema.EventFilter{UserID: "user_ada"}, Format: audit.FormatJSONL}, &export); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(export.Bytes(), []byte("Lovelace")) || !bytes.Contains(export.Bytes(), []byte(`"by":"user_auditor","reason":"GDPR Art. 17 request #42"},"payload":null}`)) {
		t.Errorf("export after erasure:\n%s", export.String())
	}

	// Erasing twice: nothing done, said so; an unknown user: ENOTFOUND.
	again, err := l.svc.Erase(l.ctx, auditor, audit.EraseInput{UserID: "user_ada", Reason: "again"})
	if err != nil || again.Created || !again.Erasure.At.Equal(res.Erasure.At) {
		t.Fatalf("second erase: %+v %v", again, err)
	}
	if _, err := l.svc.Erase(l.ctx, auditor, audit.EraseInput{UserID: "user_nobody", Reason: "x"}); domain.ErrorCode(err) != domain.ENOTFOUND {
		t.Fatalf("unknown user: %v", err)
	}
	if _, err := l.svc.Erase(l.ctx, auditor, audit.EraseInput{UserID: "user_bob"}); domain.ErrorCode(err) != domain.EINVALID {
		t.Fatalf("no reason: %v", err)
	}

	// A delivery for her after the erasure is stored as a fact, body
	// discarded, and changes nothing.
	l.add(clerkgen.Event("user.updated", clerkgen.User{ID: "user_ada", Email: "ada.again@example.com", FirstName: "Resurrected"}, at(5)))
	l.catchUp()
	if found := l.plaintextLeft([]string{"ada.again@example.com", "Resurrected"}); len(found) > 0 {
		t.Errorf("a delivery after erasure left plaintext:\n%s", strings.Join(found, "\n"))
	}
	if u3, _ := schema.GetUser(l.ctx, l.db, "user_ada"); u3.Email != "" || !u3.Erased() {
		t.Errorf("resurrected: %+v", u3)
	}
	if v, err := l.svc.Verify(l.ctx, auditor, audit.VerifyOptions{}); err != nil || !v.OK {
		t.Fatalf("verify at the end: %+v %v", v, err)
	}
}

// TestEraseRecoversFromACrashBeforeTheCleanup: the key is destroyed and
// the erasure recorded (BeginErasure), then the process dies; the read
// models still hold her data until recovery, which finishes the job.
func TestEraseRecoversFromACrashBeforeTheCleanup(t *testing.T) {
	l := newEraseLedger(t)
	l.history()
	if _, created, err := schema.BeginErasure(l.ctx, l.db, schema.Erasure{UserID: "user_bob", At: time.Now(), By: "cli:op", Reason: "test"}); err != nil || !created {
		t.Fatal(err)
	}
	if u, _ := schema.GetUser(l.ctx, l.db, "user_bob"); u.Email == "" {
		t.Fatal("the read model was cleaned without the cleanup step")
	}
	n, err := l.svc.RecoverErasures(l.ctx)
	if err != nil || n != 1 {
		t.Fatalf("recover: %d %v", n, err)
	}
	l.catchUp()
	if found := l.plaintextLeft([]string{"bob@example.com", "Builder"}); len(found) > 0 {
		t.Errorf("after recovery:\n%s", strings.Join(found, "\n"))
	}
	if n, err := l.svc.RecoverErasures(l.ctx); err != nil || n != 0 {
		t.Fatalf("second recovery: %d %v", n, err)
	}
	e, err := schema.GetErasure(l.ctx, l.db, "user_bob")
	if err != nil || e.CompletedAt.IsZero() {
		t.Fatalf("erasure row: %+v %v", e, err)
	}
}

// TestEraseDeletedBefore is LEDGER_ERASE_AFTER_DELETE's step: every user
// deleted in Clerk before the cut-off and not erased yet is erased, once;
// a user not deleted, or deleted after it, is not.
func TestEraseDeletedBefore(t *testing.T) {
	l := newEraseLedger(t)
	l.history() // Ada deleted at at(3); Bob never
	auto := audit.Actor{ID: "ledger:auto", Channel: schema.ChannelCLI}
	if got, err := l.svc.EraseDeletedBefore(l.ctx, auto, at(2), 10); err != nil || len(got) != 0 {
		t.Fatalf("cut-off before the deletion: %v %v", got, err)
	}
	got, err := l.svc.EraseDeletedBefore(l.ctx, auto, at(4), 10)
	if err != nil || len(got) != 1 || got[0] != "user_ada" {
		t.Fatalf("erased %v %v, want [user_ada]", got, err)
	}
	if e, err := schema.GetErasure(l.ctx, l.db, "user_ada"); err != nil || e.By != "ledger:auto" || e.CompletedAt.IsZero() {
		t.Fatalf("erasure: %+v %v", e, err)
	}
	if got, err := l.svc.EraseDeletedBefore(l.ctx, auto, at(4), 10); err != nil || len(got) != 0 {
		t.Fatalf("second pass: %v %v", got, err)
	}
}

// TestEraseRecoveryAfterTheProjectorsPassedTheErasure: the process dies
// between the key's destruction and the cleanup, and a projector (another
// process's, or serve's own, which start before its recovery) applies the
// erasure event first: the users projector drops her addresses from
// user_emails and tombstones her row. The recovery must still find the
// address an auditor searched for and redact it in the access log.
func TestEraseRecoveryAfterTheProjectorsPassedTheErasure(t *testing.T) {
	l := newEraseLedger(t)
	l.history()
	if err := schema.RecordAccess(l.ctx, l.db, schema.Access{Actor: "user_auditor", Channel: schema.ChannelPage, Action: schema.ActionEvents, Filters: map[string]string{"email": "ada.lovelace@example.com"}}); err != nil {
		t.Fatal(err)
	}
	if _, created, err := schema.BeginErasure(l.ctx, l.db, schema.Erasure{UserID: "user_ada", At: time.Now(), By: "cli:op", Reason: "test"}); err != nil || !created {
		t.Fatal(err)
	}
	l.catchUp() // the projectors pass the erasure event before the recovery
	if n, err := l.svc.RecoverErasures(l.ctx); err != nil || n != 1 {
		t.Fatalf("recover: %d %v", n, err)
	}
	if found := l.plaintextLeft(adaPII); len(found) > 0 {
		t.Errorf("plaintext of the erased user left after recovery:\n%s", strings.Join(found, "\n"))
	}
}

// TestEraseOrganizationsCheckAndRebuildAgree: a membership event carries
// its organization object, a snapshot of it. When the erased member's
// membership event is the newest event about the organization (here it
// also carries the organization's newest name), the live organizations
// row must still be what a rebuild, which can no longer read that event,
// makes of it: check finds no difference and a rebuild changes nothing.
// The organizations projector folds such an organization again when it
// meets the erasure (Organizations.foldAgain).
func TestEraseOrganizationsCheckAndRebuildAgree(t *testing.T) {
	l := newEraseLedger(t)
	ada := clerkgen.User{ID: "user_ada", Email: "ada.lovelace@example.com", FirstName: "Augusta", LastName: "Lovelace", CreatedAt: at(0), UpdatedAt: at(0)}
	bob := clerkgen.User{ID: "user_bob", Email: "bob@example.com", FirstName: "Bob", LastName: "Builder", CreatedAt: at(0), UpdatedAt: at(0)}
	acme := clerkgen.Organization{ID: "org_acme", Name: "Acme", Slug: "acme", CreatedAt: at(0), UpdatedAt: at(0)}
	l.add(clerkgen.Event("user.created", ada, at(0)))
	l.add(clerkgen.Event("user.created", bob, at(0)))
	l.add(clerkgen.OrganizationEvent("organization.created", acme, at(0)))
	l.add(clerkgen.MembershipEvent("organizationMembership.created", clerkgen.Membership{ID: "orgmem_bob", Organization: acme, User: bob, CreatedAt: at(1), UpdatedAt: at(1)}, at(1)))
	renamed := acme
	renamed.Name, renamed.UpdatedAt = "Acme Renamed", at(2)
	l.add(clerkgen.MembershipEvent("organizationMembership.created", clerkgen.Membership{ID: "orgmem_ada", Organization: renamed, User: ada, CreatedAt: at(2), UpdatedAt: at(2)}, at(2)))
	// An organization the ledger knows only from her membership: no
	// readable event makes it after the erasure.
	solo := clerkgen.Organization{ID: "org_solo", Name: "Solo", Slug: "solo", CreatedAt: at(0), UpdatedAt: at(0)}
	l.add(clerkgen.MembershipEvent("organizationMembership.created", clerkgen.Membership{ID: "orgmem_ada_solo", Organization: solo, User: ada, CreatedAt: at(3), UpdatedAt: at(3)}, at(3)))
	l.catchUp()
	if _, err := schema.GetOrganization(l.ctx, l.db, "org_solo"); err != nil {
		t.Fatalf("before the erasure: %v", err)
	}
	if _, err := l.svc.Erase(l.ctx, auditor, audit.EraseInput{UserID: "user_ada", Reason: "DSR-7"}); err != nil {
		t.Fatal(err)
	}
	l.catchUp()
	p := projections.NewOrganizations()
	c, err := projections.Check(l.ctx, l.db, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Differences) != 0 {
		t.Errorf("check organizations after the erasure: %+v", c.Differences)
	}
	if _, err := schema.GetOrganization(l.ctx, l.db, "org_solo"); domain.ErrorCode(err) != domain.ENOTFOUND {
		t.Errorf("an organization only her erased event made is still projected (err %v)", err)
	}
	before, err := schema.GetOrganization(l.ctx, l.db, "org_acme")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := projections.Rebuild(l.ctx, l.db, p, nil); err != nil {
		t.Fatal(err)
	}
	after, err := schema.GetOrganization(l.ctx, l.db, "org_acme")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("a rebuild after the erasure changed the organization:\nlive:    %+v\nrebuilt: %+v", before, after)
	}
}

// TestEraseDeletedBeforeFindsUsersReconcileSawGone: Clerk's user.deleted
// webhook never arrived (Svix gave up), and reconcile recorded that the
// Backend API no longer has the user (user.snapshot_deleted): the user
// is deleted in Clerk as much as one whose webhook came, the users fold
// deletes them, and LEDGER_ERASE_AFTER_DELETE erases them too.
func TestEraseDeletedBeforeFindsUsersReconcileSawGone(t *testing.T) {
	l := newEraseLedger(t)
	l.history() // Bob is never deleted by a webhook
	gone, err := domain.NewSnapshotDeleted("user_bob", at(3), "not listed by GET /v1/users; GET /v1/users/{id} answered 404")
	if err != nil {
		t.Fatal(err)
	}
	tx, err := l.db.BeginTxx(l.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := schema.AppendSnapshots(l.ctx, tx, []domain.Delivery{gone}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	l.catchUp()
	if u, err := schema.GetUser(l.ctx, l.db, "user_bob"); err != nil || !u.Deleted {
		t.Fatalf("Bob is not deleted in the users table: %+v %v", u, err)
	}
	auto := audit.Actor{ID: "ledger:auto", Channel: schema.ChannelCLI}
	got, err := l.svc.EraseDeletedBefore(l.ctx, auto, at(4), 10)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"user_ada", "user_bob"}) {
		t.Fatalf("erased %v, want [user_ada user_bob]", got)
	}
}

// TestEraseRedactsPrefixSearchesForHerAddress: the workspace's search
// takes an address prefix ending in "*" ("ada.lovelace@*" finds every
// account of hers); the access log records it as typed. Once she is
// erased, a prefix of her address is redacted like the address itself;
// a prefix of no address of hers (or of Bob's) is left alone.
func TestEraseRedactsPrefixSearchesForHerAddress(t *testing.T) {
	l := newEraseLedger(t)
	l.history()
	for _, email := range []string{"Ada.Lovelace@*", "ada.lovelace@example.c*", "bob@*"} {
		if _, err := l.svc.Search(l.ctx, auditor, audit.EventQuery{}, email, 0, func(int, schema.AuditEvent) {}); err != nil {
			t.Fatal(err)
		}
	}
	if found := l.plaintextLeft([]string{"ada.lovelace@"}); len(found) == 0 {
		t.Fatal("the access log does not hold the searches: the test cannot fail")
	}
	if _, err := l.svc.Erase(l.ctx, auditor, audit.EraseInput{UserID: "user_ada", Reason: "DSR-9"}); err != nil {
		t.Fatal(err)
	}
	if found := l.plaintextLeft([]string{"ada.lovelace@"}); len(found) > 0 {
		t.Errorf("a search by a prefix of her address is left:\n%s", strings.Join(found, "\n"))
	}
	if found := l.plaintextLeft([]string{"bob@*"}); len(found) == 0 {
		t.Error("a search for Bob's addresses was redacted too")
	}
}

// TestEraseSealsADeliveryWithAnOddFieldBesideItsUser: a session event
// names its user in data.user_id, and carries a field the subject's
// decoding also reads (public_user_data) with another JSON type than a
// membership's object. Its user is still the one data.user_id names: the
// body is sealed under her key, so erasing her leaves no IP or browser of
// it (it was stored in clear, for no user).
func TestEraseSealsADeliveryWithAnOddFieldBesideItsUser(t *testing.T) {
	l := newEraseLedger(t)
	l.history()
	l.add([]byte(`{"type":"session.created","object":"event","timestamp":`+fmt.Sprint(at(2).UnixMilli())+
		`,"data":{"id":"sess_2","object":"session","user_id":"user_ada","public_user_data":"n/a","latest_activity":{"ip_address":"198.51.100.23","browser_name":"Ladybird/0.9"}}}`), nil)
	l.catchUp()
	if _, err := l.svc.Erase(l.ctx, auditor, audit.EraseInput{UserID: "user_ada", Reason: "DSR-11"}); err != nil {
		t.Fatal(err)
	}
	l.catchUp()
	if found := l.plaintextLeft([]string{"198.51.100.23", "Ladybird/0.9"}); len(found) > 0 {
		t.Errorf("a delivery about the erased user kept in clear:\n%s", strings.Join(found, "\n"))
	}
}
