package handlers

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
)

// devIssuer is the iss of dev sign-in tokens. It matches Clerk's issuer
// pattern (https://clerk.<domain>) so the same verification accepts it; the
// .invalid TLD can never be a real Clerk instance.
const devIssuer = "https://clerk.ledger-dev.invalid"

// DevSignInConfig configures NewDevSignIn.
type DevSignInConfig struct {
	// Addr is the address the server actually listens on (host:port). It
	// must be a loopback address.
	Addr string
	// The Clerk settings: any of them set refuses the dev sign-in, so a
	// server with real Clerk keys can never mint its own sessions.
	ClerkSecretKey, ClerkJWTKey, PublishableKey string
	// TTL is how long a dev session token lives; default 10 min.
	TTL time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// DevSignIn is the development sign-in for `ledger dev` without a Clerk
// account: it signs people in as a projected user with short-lived RS256
// session tokens from a key made for this process only, shaped like Clerk's
// and verified by the same SessionVerifier code path as real tokens (build
// it from SessionConfig). It is safe for concurrent use.
type DevSignIn struct {
	key     *rsa.PrivateKey
	kid     string
	origins []string
	ttl     time.Duration
	now     func() time.Time
}

// NewDevSignIn returns a DevSignIn with a new per-process key. It refuses
// (EINVALID, saying why) when any real Clerk key is configured or when Addr
// is not a loopback address.
func NewDevSignIn(c DevSignInConfig) (*DevSignIn, error) {
	if c.ClerkSecretKey != "" || c.ClerkJWTKey != "" || c.PublishableKey != "" {
		return nil, domain.Errorf(domain.EINVALID, "dev sign-in refused: real Clerk keys are configured (CLERK_SECRET_KEY, CLERK_JWT_KEY or PUBLIC_CLERK_PUBLISHABLE_KEY); sign in with Clerk instead")
	}
	if !isLoopbackAddr(c.Addr) {
		return nil, domain.Errorf(domain.EINVALID, "dev sign-in refused: the server listens on %q, not a loopback address (use localhost:PORT)", c.Addr)
	}
	origins, err := DefaultAuthorizedParties(c.Addr)
	if err != nil {
		return nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("dev sign-in key: %w", err)
	}
	d := &DevSignIn{key: key, kid: "ins_dev_" + strconv.FormatInt(time.Now().UnixNano(), 36), origins: origins, ttl: c.TTL, now: c.Now}
	if d.ttl <= 0 {
		d.ttl = 10 * time.Minute
	}
	if d.now == nil {
		d.now = time.Now
	}
	return d, nil
}

// SessionConfig returns the configuration of the SessionVerifier that
// accepts this DevSignIn's tokens: its public key as CLERK_JWT_KEY and the
// server's loopback origins as authorized parties.
func (d *DevSignIn) SessionConfig() SessionConfig {
	der, _ := x509.MarshalPKIXPublicKey(&d.key.PublicKey) // an RSA public key always marshals
	return SessionConfig{
		JWTKey:            string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		AuthorizedParties: d.origins,
		Now:               d.now,
	}
}

// Mint returns a session token for userID issued to origin azp (one of the
// server's origins), valid for the TTL, and its expiry.
func (d *DevSignIn) Mint(userID, azp string) (string, time.Time, error) {
	now := d.now()
	exp := now.Add(d.ttl)
	tok, err := signRS256(d.key, d.kid, map[string]any{
		"iss": devIssuer, "sub": userID, "sid": clerkgen.NewID("sess"), "azp": azp,
		"iat": now.Unix(), "nbf": now.Unix() - 5, "exp": exp.Unix(), "v": 2,
	})
	return tok, exp, err
}

// signRS256 returns the compact JWS of claims signed with key (RS256).
func signRS256(key *rsa.PrivateKey, kid string, claims map[string]any) (string, error) {
	h, err := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": kid})
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("sign dev session token: %w", err)
	}
	return signing + "." + enc.EncodeToString(sig), nil
}

// isLoopbackAddr reports whether host:port names a loopback host.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// DefaultAuthorizedParties returns the origins a browser uses to reach a
// server listening on addr, the default for CLERK_AUTHORIZED_PARTIES: for a
// loopback host every spelling (http://localhost:P, http://127.0.0.1:P,
// http://[::1]:P); for a named host http://host:port (and https://host on
// port 443). Errors: EINVALID for an unspecified host (":4321",
// "0.0.0.0:4321"), whose public origin cannot be known.
func DefaultAuthorizedParties(addr string) ([]string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, domain.Errorf(domain.EINVALID, "LEDGER_ADDR %q is not host:port", addr)
	}
	if isLoopbackAddr(addr) {
		return []string{"http://localhost:" + port, "http://127.0.0.1:" + port, "http://[::1]:" + port}, nil
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return nil, domain.Errorf(domain.EINVALID, "CLERK_AUTHORIZED_PARTIES is not set and LEDGER_ADDR %q does not name the app's origin: set it to the origin(s) people open, e.g. https://ledger.example.com", addr)
	}
	if port == "443" {
		return []string{"https://" + host}, nil
	}
	return []string{"http://" + net.JoinHostPort(host, port)}, nil
}

// devSignInPage is the data of dev_sign_in.html.
type devSignInPage struct {
	Users []domain.User
}

// remoteLoopback reports whether the request comes from this machine.
func remoteLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// handleDevSignInPage serves GET /dev/sign-in: the bannered list of
// projected users to sign in as. Only answered to loopback clients.
func handleDevSignInPage(pg *pages, db *sqlx.DB) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !remoteLoopback(r) {
			pg.renderError(w, r, domain.Errorf(domain.EFORBIDDEN, "the dev sign-in only answers this machine"))
			return
		}
		if db == nil {
			pg.renderError(w, r, domain.Errorf(domain.EUNAVAILABLE, "no database"))
			return
		}
		users, err := schema.ListUsers(r.Context(), db, 200)
		if err != nil {
			pg.renderError(w, r, err)
			return
		}
		pg.render(w, r, http.StatusOK, "dev_sign_in.html", devSignInPage{Users: users})
	}
}

// handleDevSignIn serves POST /dev/sign-in (form field user_id): it signs
// the browser in as that projected user with a dev session token in the
// __session cookie and redirects to /. 404 page for a user not in the
// projection, 400 for a user_id that is not text (checkValues), 413 for a
// form over formMaxBytes. Origin is checked by checkOrigin, the host name
// by loopbackOnly; only loopback clients.
func handleDevSignIn(log *slog.Logger, pg *pages, dev *DevSignIn, db *sqlx.DB) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !remoteLoopback(r) {
			pg.renderError(w, r, domain.Errorf(domain.EFORBIDDEN, "the dev sign-in only answers this machine"))
			return
		}
		if db == nil {
			pg.renderError(w, r, domain.Errorf(domain.EUNAVAILABLE, "no database"))
			return
		}
		if _, err := readForm(w, r); err != nil {
			pg.renderError(w, r, err)
			return
		}
		id := strings.TrimSpace(r.PostFormValue("user_id"))
		if id == "" {
			pg.renderError(w, r, domain.Errorf(domain.EINVALID, "pick a user to sign in as"))
			return
		}
		if len(id) > 200 {
			pg.renderError(w, r, domain.Errorf(domain.EINVALID, "user_id is longer than 200 bytes"))
			return
		}
		if _, err := schema.GetUser(r.Context(), db, id); err != nil {
			pg.renderError(w, r, err)
			return
		}
		azp := dev.origins[0]
		for _, o := range dev.origins {
			if strings.EqualFold(o, r.Header.Get("Origin")) {
				azp = o
			}
		}
		tok, exp, err := dev.Mint(id, azp)
		if err != nil {
			pg.renderError(w, r, err)
			return
		}
		http.SetCookie(w, &http.Cookie{
			Name: sessionCookie, Value: tok, Path: "/", Expires: exp, MaxAge: int(dev.ttl.Seconds()),
			HttpOnly: true, SameSite: http.SameSiteLaxMode,
		})
		log.InfoContext(r.Context(), "dev sign-in", "user_id", id)
		http.Redirect(w, r, "/", http.StatusSeeOther)
	}
}

// handleDevSignOut serves POST /dev/sign-out: it clears the session cookie
// and redirects to /.
func handleDevSignOut() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
		http.Redirect(w, r, "/", http.StatusSeeOther)
	}
}
