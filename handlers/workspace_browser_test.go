package handlers

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/translog"
)

// axePath is axe-core as `make deps` installs it (npm ci from the
// committed package-lock.json in testdata/axe).
const axePath = "testdata/axe/node_modules/axe-core/axe.min.js"

var axeSource = sync.OnceValues(func() ([]byte, error) { return os.ReadFile(axePath) })

// axeViolation is one rule axe-core found broken on a page.
type axeViolation struct {
	ID     string   `json:"id"`
	Impact string   `json:"impact"`
	Help   string   `json:"help"`
	Nodes  []string `json:"nodes"`
}

// checkAxe injects axe-core into the page (through the DevTools protocol:
// the page's own CSP still forbids any script but ours) and fails t for
// every serious or critical violation.
func checkAxe(t *testing.T, ctx context.Context, page string) {
	t.Helper()
	src, err := axeSource()
	if err != nil {
		t.Fatalf("axe-core is missing (run make deps: npm ci --prefix handlers/testdata/axe): %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](string(src))); err != nil {
		t.Fatalf("%s: inject axe-core: %v", page, err)
	}
	vs, err := chromedp.Run(ctx, chromedp.Evaluate[[]axeViolation](`axe.run(document, {resultTypes: ["violations"]}).then(r => r.violations.map(v => ({
  id: v.id, impact: v.impact || "", help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(" ") + " " + n.html.slice(0, 120))})))`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: run axe-core: %v", page, err)
	}
	for _, v := range vs {
		if v.Impact == "serious" || v.Impact == "critical" {
			t.Errorf("%s: axe-core %s violation %s (%s): %v", page, v.Impact, v.ID, v.Help, v.Nodes)
		} else {
			t.Logf("%s: axe-core %s violation %s (%s)", page, v.Impact, v.ID, v.Help)
		}
	}
}

// consoleWatch collects what the pages write to the console.
type consoleWatch struct {
	mu   sync.Mutex
	msgs []string
}

func watchConsole(ctx context.Context) *consoleWatch {
	c := &consoleWatch{}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException || m.Type == chromedp.ConsoleWarning {
				c.mu.Lock()
				c.msgs = append(c.msgs, m.String()+" at "+m.URL)
				c.mu.Unlock()
			}
		}
	}()
	return c
}

// take returns and forgets what was written since the last take.
func (c *consoleWatch) take() []string {
	time.Sleep(100 * time.Millisecond) // let the events of the page's last moments arrive
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.msgs
	c.msgs = nil
	return out
}

// seedBackground inserts a month of other users' deliveries, received on
// their days (as the ledger stores them: INSERT into events), so that the
// overview's chart has something to draw.
func seedBackground(t *testing.T, e *webEnv) {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 7))
	today := time.Now().UTC().Truncate(24 * time.Hour)
	n := 0
	for d := 29; d >= 1; d-- {
		day := today.AddDate(0, 0, -d)
		for _, typ := range []string{"user.created", "user.updated", "session.created", "email.created", "organization.created"} {
			k := map[string]int{"user.created": 2, "user.updated": 4, "session.created": 9, "email.created": 3, "organization.created": 1}[typ]
			for range r.IntN(k*2 + 1) {
				n++
				at := day.Add(time.Duration(r.IntN(86_000)) * time.Second)
				u := clerkgen.User{ID: fmt.Sprintf("user_bg%04d", r.IntN(40)), Email: fmt.Sprintf("bg%d@example.net", r.IntN(40)), FirstName: "Bg", CreatedAt: at, UpdatedAt: at}
				body, err := clerkgen.Event(typ, u, at)
				if err != nil {
					t.Fatal(err)
				}
				e.db.MustExec(`INSERT INTO events (message_uuid, delivery_id, type, user_id, occurred_at, received_at, body, svix_timestamp, svix_signature)
VALUES (gen_random_uuid(), $1, $2, $3, $4, $4, $5, $6, 'v1,x')`, fmt.Sprintf("msg_bg_%05d", n), typ, u.ID, at, string(body), at.Unix())
			}
		}
	}
}

// TestBrowserWorkspace drives headless Chromium through the audit
// workspace and the user's own page as a person would (links, forms,
// toggles), on a ledger whose deliveries arrived out of order: every page
// has its content and no console error, passes axe-core with no serious or
// critical violation, and fits a 390-px-wide screen. With -screenshot it
// writes docs/overview.png and docs/change-history.png.
func TestBrowserWorkspace(t *testing.T) {
	ctx := newBrowser(t)
	const auditor = "user_browser_auditor"
	e := newWebEnv(t, webOptions{dev: true, auditors: []string{auditor}})
	seedBackground(t, e)
	t0 := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	ada := clerkgen.User{ID: clerkgen.NewID("user"), Email: "ada@example.com", FirstName: "Ada", LastName: "Byron", CreatedAt: t0, UpdatedAt: t0}
	renamed := ada
	renamed.LastName, renamed.Email, renamed.UpdatedAt = "Lovelace", "ada@lovelace.org", t0.Add(10*time.Minute)
	later := renamed
	later.Username, later.Phone, later.UpdatedAt = "ada", "+15550100", t0.Add(30*time.Minute)
	// Arrival order: the rename (10 min) arrives last, after the change
	// made at 30 min.
	e.deliver(t, "user.created", ada, t0)
	e.deliver(t, "session.created", ada, t0.Add(20*time.Minute))
	e.deliver(t, "user.updated", later, later.UpdatedAt)
	e.deliver(t, "user.updated", renamed, renamed.UpdatedAt)
	e.deliver(t, "user.created", clerkgen.User{ID: auditor, Email: "auditor@example.com", FirstName: "Audrey", LastName: "Auditor", CreatedAt: t0, UpdatedAt: t0}, t0)
	// Ada joins an organization, last of all.
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	org := clerkgen.Organization{ID: "org_browser_engines", Name: "Analytical Engines", Slug: "engines", CreatedAt: t0.Add(35 * time.Minute), UpdatedAt: t0.Add(35 * time.Minute)}
	for _, b := range [][]byte{
		must(clerkgen.OrganizationEvent("organization.created", org, org.CreatedAt)),
		must(clerkgen.MembershipEvent("organizationMembership.created", clerkgen.Membership{ID: "orgmem_browser_ada", Organization: org, User: later,
			Role: "org:admin", CreatedAt: t0.Add(40 * time.Minute), UpdatedAt: t0.Add(40 * time.Minute)}, t0.Add(40*time.Minute))),
	} {
		e.deliverBody(t, b)
	}
	projectUsers(t, e.db)
	if err := projections.NewRunner(e.db, nil, projections.NewTree(), projections.NewUsers(), projections.NewWorkspace(), projections.NewOrganizations()).CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	logSigner, logVerifier := schematest.NewLogKey(t, "clerk-ledger/browser")
	cp := schematest.SignCheckpoint(t, e.db, logSigner, "clerk-ledger/browser")
	console := watchConsole(ctx)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	signIn := func(user string) {
		t.Helper()
		tok, _, err := e.dev.Mint(user, e.srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.Call(ctx, network.ClearBrowserCookies, cdp.Empty{}); err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.Call(ctx, network.SetCookie, network.SetCookieParams{Name: sessionCookie, Value: tok, URL: e.srv.URL, Path: "/", SameSite: network.CookieSameSiteLax}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor := func(js string) {
		t.Helper()
		safe := `(() => { try { return !!(` + js + `) } catch (e) { return false } })()`
		// false while a navigation replaces the page, too
		ok := func() bool { v, err := chromedp.Run(ctx, chromedp.Evaluate[bool](safe)); return err == nil && v }
		for deadline := time.Now().Add(20 * time.Second); !ok(); {
			if time.Now().After(deadline) {
				t.Fatalf("waited for %s; the page says:\n%.1500s", js, evalText(t, ctx))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	click := func(sel string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Click(sel)); err != nil {
			t.Fatalf("click %s: %v", sel, err)
		}
	}
	// check runs the checks every page gets and returns its text.
	visited := map[string]string{}
	check := func(name string) string {
		t.Helper()
		waitFor(`document.readyState === "complete" && !!document.querySelector("main#main")`)
		text := evalText(t, ctx)
		for _, m := range console.take() {
			if name == "error page" && strings.Contains(m, "status of 404") {
				continue // the browser's own note of the 404 answer
			}
			t.Errorf("%s: console: %s", name, m)
		}
		checkAxe(t, ctx, name)
		u, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname + location.search`))
		if err != nil {
			t.Fatal(err)
		}
		visited[name] = u
		return text
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), name)
		if *writeScreenshot {
			out = filepath.Join("..", "docs", name)
		}
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	signIn(auditor)
	if err := chromedp.Do(ctx, chromedp.Navigate(e.srv.URL+"/audit")); err != nil {
		t.Fatal(err)
	}
	text := check("overview")
	mustContain(t, text, "The ledger at a glance", "Deliveries per day, last 30 days", "Last delivery", "Projection users", "Projection workspace",
		"Never verified", "Latest audit accesses", "Overview", "Search", "Verifiable log", "Access log", "Signed in as",
		"Merkle tree", fmt.Sprintf("%d events sealed", cp.Size), "Latest signed checkpoint", fmt.Sprintf("tree size %d", cp.Size))
	if !evalBool(t, ctx, `document.querySelectorAll(".chart svg rect").length > 20 && document.querySelectorAll("#chart-table tbody tr").length === 30`) {
		t.Error("the chart has no bars, or its table not 30 days")
	}
	if !evalBool(t, ctx, `document.querySelector(".nav a[aria-current]").textContent === "Overview"`) {
		t.Error("the navigation does not mark the overview")
	}
	shot("overview.png")

	// Search by Ada's past email from the overview's form.
	if err := chromedp.Do(ctx, chromedp.SendKeys("#q-email", "ADA@example.com")); err != nil {
		t.Fatal(err)
	}
	click(`form.quick-search button[type=submit]`)
	waitFor(`location.pathname === "/audit/search" && !!document.querySelector("#results-range")`)
	text = check("search")
	mustContain(t, text, "Users whose events named ada@example.com", ada.ID, "Events 1–5 of 5")
	mustNotContain(t, text, "bg1@example.net", "Not run yet")

	// The match links to Ada's view as of then: the change history.
	click(`#email-users a.id`)
	waitFor(`location.pathname.startsWith("/audit/users/") && !!document.querySelector("#changes")`)
	text = check("user view")
	mustContain(t, text, "Change history", "arrived out of order", "last_name", "Byron", "Lovelace", "ada@lovelace.org", "username",
		"+15550100", "192.0.2.10", "no change to the record", "(events 1–5 of 5, time order)",
		"In no organization", "Joined \u2068Analytical Engines\u2069 (\u2068admin\u2069)")
	// Time order: by when each change happened, not by arrival.
	if !evalBool(t, ctx, `(() => { const ts = [...document.querySelectorAll("#changes .change-head time")].map(t => t.getAttribute("datetime"));
  return ts.length === 5 && ts.every((x, i) => i === 0 || new Date(ts[i-1]) <= new Date(x)) })()`) {
		t.Error("the change history is not in time order")
	}
	if !evalBool(t, ctx, `[...document.querySelectorAll("#changes > li")].map(li => li.textContent.includes("arrived out of order")).join() === "false,true,false,false,false"`) {
		t.Error("the rename that arrived last is not the one marked out of order")
	}
	shot("change-history.png")
	// The proof bundle link downloads Ada's bundle (from the workspace's
	// own page, so the recorded read runs), and it verifies offline.
	bundle, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch(document.querySelector("#proof-bundle").getAttribute("href")).then(r => r.ok ? r.text() : "status " + r.status)`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := translog.VerifyBundle([]byte(bundle), logVerifier); err != nil || !rep.OK || rep.UserID != ada.ID || len(rep.Events) != 5 {
		t.Errorf("the user view's proof bundle does not verify: %+v %v\n%.300s", rep, err, bundle)
	}
	// The raw ledger order: the late rename is older than what the ledger had.
	click(`nav.toggle a:nth-child(2)`)
	waitFor(`location.search.includes("order=ledger") && !!document.querySelector("#changes")`)
	text = check("user view, ledger order")
	mustContain(t, text, "older than what the ledger had: ignored", "(events 1–5 of 5, ledger order)")

	// Now (the view was as of the email's last sighting, before Ada
	// joined): her organization, which links to its view: state, members
	// (each linking back to the user's view), member history.
	click(`main form.inline a`)
	waitFor(`!location.search.includes("at=") && !!document.querySelector("#user-organizations a[href^='/audit/organizations/']")`)
	text = check("user view, now")
	mustContain(t, text, "Organizations now", "Analytical Engines", "org:admin", "member")
	click(`#user-organizations a[href^="/audit/organizations/"]`)
	waitFor(`location.pathname === "/audit/organizations/org_browser_engines" && !!document.querySelector("#org-memberships")`)
	text = check("organization view")
	mustContain(t, text, "Analytical Engines", "engines", "Memberships now", ada.ID, "org:admin", "matches", "Member history",
		"organization.created", "organizationMembership.created", "(events 1–2 of 2, ledger order)")
	if !evalBool(t, ctx, `document.querySelector(".nav a[aria-current]").textContent === "Search"`) {
		t.Error("the navigation does not mark the organization view as part of search")
	}
	click(`#org-memberships a[href^="/audit/users/"]`)
	waitFor(`location.pathname === "/audit/users/` + ada.ID + `" && !!document.querySelector("#changes")`)

	// The log page shows the signed checkpoint whole; its own button
	// verifies; the overview then says so.
	click(`.nav a[href="/audit/chain"]`)
	waitFor(`location.pathname === "/audit/chain" && !!document.querySelector("#checkpoint")`)
	text = check("log")
	mustContain(t, text, "Verifiable log", "Latest signed checkpoint", "ledger audit verify --checkpoint")
	if got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#checkpoint").textContent`)); err != nil || got != cp.Note {
		t.Errorf("the log page's checkpoint is not the signed note: %q %v, want %q", got, err, cp.Note)
	}
	if !evalBool(t, ctx, `document.querySelector(".nav a[aria-current]").textContent === "Verifiable log"`) {
		t.Error("the navigation does not mark the log page")
	}
	click(`main form.form button[type=submit]`)
	waitFor(`!!document.querySelector("#verify-result")`)
	text = check("log, verified")
	mustContain(t, text, "Result", "OK", fmt.Sprintf("%d leaves match", cp.Size), "1 checkpoint roots match")
	click(`.nav a[href="/audit/log"]`)
	waitFor(`location.pathname === "/audit/log"`)
	text = check("access log")
	mustContain(t, text, "Audit access log", "events", "user")
	click(`.nav a[href="/audit"]`)
	waitFor(`location.pathname === "/audit" && !!document.querySelector("#verify-badge")`)
	if text := check("overview, verified"); !strings.Contains(text, "Verified") {
		t.Errorf("the overview's badge does not show the verification:\n%.500s", text)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(e.srv.URL+"/no/such/page")); err != nil {
		t.Fatal(err)
	}
	mustContain(t, check("error page"), "Page not found")

	// Ada's own page: her timeline in time order, newest first, marked.
	signIn(ada.ID)
	if err := chromedp.Do(ctx, chromedp.Navigate(e.srv.URL+"/")); err != nil {
		t.Fatal(err)
	}
	text = check("own page")
	mustContain(t, text, "Your timeline", "newest first, by when each happened", "arrived out of order", "Changed name to \u2068Ada Lovelace\u2069",
		"Your organizations", "Analytical Engines")
	mustNotContain(t, text, "Overview", "192.0.2.10")
	if !evalBool(t, ctx, `(() => { const ts = [...document.querySelectorAll("#timeline time")].map(t => t.getAttribute("datetime"));
  return ts.length === 5 && ts.every((x, i) => i === 0 || new Date(ts[i-1]) >= new Date(x)) })()`) {
		t.Error("the own timeline is not newest first in time order")
	}
	click(`nav.toggle a:nth-child(2)`)
	waitFor(`location.search.includes("order=ledger")`)
	mustContain(t, check("own page, ledger order"), "in the order the ledger received them")

	// Every page fits a 390-px-wide phone screen: nothing scrolls sideways.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2))); err != nil {
		t.Fatal(err)
	}
	for name, path := range visited {
		if strings.HasPrefix(name, "own page") {
			signIn(ada.ID)
		} else {
			signIn(auditor)
		}
		// From the workspace's own pages (a same-origin Referer), so
		// recorded views show their data.
		if err := chromedp.Do(ctx, chromedp.Navigate(e.srv.URL+"/static/style.css")); err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](`setTimeout(() => { location.href = `+jsString(path)+` }, 0)`)); err != nil {
			t.Fatal(err)
		}
		waitFor(`location.pathname + location.search === ` + jsString(path) + ` && document.readyState === "complete"`)
		if !evalBool(t, ctx, `document.documentElement.scrollWidth <= window.innerWidth`) {
			w, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
			t.Errorf("%s (%s) scrolls sideways at 390 px: %d px wide", name, path, w)
		}
		console.take()
	}
	if err := chromedp.Do(ctx, chromedp.EmulateReset()); err != nil {
		t.Fatal(err)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`).Replace(s) + "'"
}
