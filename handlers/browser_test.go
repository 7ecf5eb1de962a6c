package handlers

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium package. The browser test never uses a
// browser that a tool downloaded.
const chromiumPath = "/usr/bin/chromium"

var writeScreenshot = flag.Bool("screenshot", false, "write the signed-in page's screenshot to docs/signed-in.png")

// newBrowser starts headless Chromium for t and returns a tab's context.
// Every host but 127.0.0.1 (and 127.0.0.2, another site for the cross-site
// tests) resolves to nothing, so the page cannot reach
// the internet (ClerkJS from the Frontend API host fails at once, as it
// does offline) and the test sees only what the server rendered. It fails,
// never skips, when Chromium is missing.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the browser test needs headless Chromium at %s (Debian: apt-get install -y chromium): %v", chromiumPath, err)
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE 127.0.0.2"),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 1200),
	)
	ctx, cancelTab := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	return ctx
}

// visit clears the browser's cookies, sets cookies on the test server's
// origin, opens path and waits for the page's main element. It returns the
// page's visible text.
func (e *webEnv) visit(t *testing.T, ctx context.Context, path string, cookies map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := chromedp.Call(ctx, network.ClearBrowserCookies, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	for name, value := range cookies {
		if _, err := chromedp.Call(ctx, network.SetCookie, network.SetCookieParams{Name: name, Value: value, URL: e.srv.URL, Path: "/"}); err != nil {
			t.Fatalf("set cookie %s: %v", name, err)
		}
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(e.srv.URL+path), chromedp.WaitVisible("main#main")); err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body.innerText"))
	if err != nil {
		t.Fatal(err)
	}
	return text
}

func evalBool(t *testing.T, ctx context.Context, js string) bool {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}

// TestBrowserEndToEnd drives headless Chromium against the real service:
// webhooks delivered through the real endpoint, projected, and read back by
// a person signed in with a session cookie; forged and expired cookies show
// nobody's data.
func TestBrowserEndToEnd(t *testing.T) {
	ctx := newBrowser(t)
	e := newWebEnv(t, webOptions{})
	ada, bob := e.seedAdaAndBob(t)

	t.Run("signed out shows the sign-in mount", func(t *testing.T) {
		text := e.visit(t, ctx, "/", nil)
		mustContain(t, text, "Your Clerk account, as the ledger saw it", "Sign in")
		mustNotContain(t, text, "Ada", "Bob")
		if !evalBool(t, ctx, `!!document.querySelector("#sign-in.clerk-mount")`) {
			t.Error("no #sign-in mount point")
		}
		// Our script ran under the CSP and says ClerkJS is unreachable.
		if !strings.Contains(text, "Clerk could not be loaded from clerk.example.test") {
			t.Errorf("app.js did not report the unreachable ClerkJS:\n%s", text)
		}
	})

	t.Run("signed in shows the own record and timeline", func(t *testing.T) {
		text := e.visit(t, ctx, "/", map[string]string{sessionCookie: e.token(t, ada.ID)})
		mustContain(t, text, "Ada Lovelace", "ada@example.com", ada.ID, "Your timeline",
			"Account created as \u2068Ada Byron\u2069", "Changed name to \u2068Ada Lovelace\u2069", "Signed in",
			"Clerk sent you an email: \u2068verification code\u2069")
		mustNotContain(t, text, "Bob", "bob@example.com", "Not synced yet")
		if !evalBool(t, ctx, `document.querySelectorAll("#timeline li").length === 4`) {
			t.Error("the timeline does not list Ada's 4 events")
		}
		if !evalBool(t, ctx, `document.querySelector("#timeline time").title.includes("UTC")`) {
			t.Error("app.js did not localize the times")
		}
		if !evalBool(t, ctx, `!!document.getElementById("user-button")`) {
			t.Error("no user button mount point")
		}
		shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(shot, []byte("\x89PNG")) || len(shot) < 10_000 {
			t.Fatalf("screenshot is not a PNG page (%d bytes)", len(shot))
		}
		out := filepath.Join(t.TempDir(), "signed-in.png")
		if *writeScreenshot {
			out = filepath.Join("..", "docs", "signed-in.png")
			if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(out, shot, 0o644); err != nil {
			t.Fatal(err)
		}

		// On a phone the page fits the screen: nothing scrolls sideways.
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(375, 800, chromedp.EmulateScale(2)), chromedp.Reload(), chromedp.WaitVisible("main#main")); err != nil {
			t.Fatal(err)
		}
		if !evalBool(t, ctx, `document.documentElement.scrollWidth <= window.innerWidth`) {
			t.Error("the signed-in page scrolls sideways at 375 px")
		}
		if err := chromedp.Do(ctx, chromedp.EmulateReset()); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("another user's cookie shows only that user", func(t *testing.T) {
		text := e.visit(t, ctx, "/", map[string]string{sessionCookie: e.token(t, bob.ID)})
		mustContain(t, text, "Bob Secretperson", "bob@example.com")
		mustNotContain(t, text, "Ada", "ada@example.com", "Lovelace")
	})

	forged := mintJWT(t, map[string]any{"alg": "RS256", "kid": "ins_test"}, sessionClaims(ada.ID, e.srv.URL), testOtherKey(), nil)
	c := sessionClaims(ada.ID, e.srv.URL)
	old := time.Now().Add(-10 * time.Minute)
	c["iat"], c["nbf"], c["exp"] = old.Unix(), old.Unix(), old.Add(time.Minute).Unix()
	expired := mintJWT(t, map[string]any{"alg": "RS256", "kid": "ins_test"}, c, testClerkKey(), nil)
	for _, tc := range []struct {
		name    string
		cookies map[string]string
		mount   string
	}{
		{"forged cookie", map[string]string{sessionCookie: forged}, "#sign-in"},
		{"forged cookie with a Clerk client", map[string]string{sessionCookie: forged, clientUATCookie: "1716883200"}, "#sign-in"},
		{"expired cookie", map[string]string{sessionCookie: expired}, "#sign-in"},
		{"expired cookie with a Clerk client gets the refresh page", map[string]string{sessionCookie: expired, clientUATCookie: "1716883200"}, "#refresh"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := e.visit(t, ctx, "/", tc.cookies)
			mustNotContain(t, text, "Ada", "ada@example.com", ada.ID, "Bob")
			if evalBool(t, ctx, `!!document.querySelector("#profile, #timeline, #not-synced")`) {
				t.Error("a profile or timeline is on the page")
			}
			if !evalBool(t, ctx, `!!document.querySelector("`+tc.mount+`")`) {
				t.Errorf("no %s on the page:\n%s", tc.mount, text)
			}
		})
	}
}
