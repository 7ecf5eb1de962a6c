package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"github.com/spf13/cobra"
)

const (
	devDefaultURL = "postgres://postgres@localhost:5432/ledger?sslmode=disable"
	devDataDir    = ".data"
	devPGPort     = 54329
)

func (a *app) devCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the service locally on defaults: database, secret and all",
		Long: `dev is the one-command local run. It uses DATABASE_URL when set; otherwise it
connects to ` + devDefaultURL + `, creating the database if
needed, and if no server answers there it starts a private PostgreSQL cluster
under ./.data/postgres with this machine's PostgreSQL binaries (as the postgres
user when run as root) and stops it on exit. Without Clerk keys it generates a
webhook signing secret (kept in ./.data/webhook-secret) and prints it with a
ready 'ledger webhook send' command line. Without LEDGER_LOG_KEY it generates
the log's checkpoint signing key (kept in ./.data/log.key; ledger audit key
prints its verifier key). Without LEDGER_MASTER_KEY it generates the master key
that wraps every user's data key (kept in ./.data/master.key). Then it runs
what serve runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, cfg, err := a.serviceSetup(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			cfg.Dev = true
			if cfg.DatabaseURL == "" {
				dsn, stop, err := devDatabase(ctx, log, devDataDir, devDefaultURL, devPGPort)
				if err != nil {
					return err
				}
				defer stop()
				cfg.DatabaseURL = dsn
			} else if _, err := schema.CreateDatabase(ctx, cfg.DatabaseURL); err != nil && domain.ErrorCode(err) != domain.EINVALID {
				return err
			}
			if cfg.Log.Signer == nil {
				skey, err := devLogKey(filepath.Join(devDataDir, "log.key"))
				if err != nil {
					return err
				}
				if cfg.Log.Signer, err = translog.ParseSigner(skey); err != nil {
					return err
				}
				if cfg.Log.Origin == "" {
					cfg.Log.Origin = cfg.Log.Signer.Name()
				}
				log.Info("signing checkpoints with the dev log key", "file", filepath.Join(devDataDir, "log.key"), "verifier_key", cfg.Log.Signer.VerifierKey())
			}
			if len(cfg.WebhookSecrets) == 0 {
				secret, err := devSecret(filepath.Join(devDataDir, "webhook-secret"))
				if err != nil {
					return err
				}
				cfg.WebhookSecrets = []string{secret}
				a.printDevBanner(cfg, secret)
			}
			if schema.KeyringFrom(ctx) == nil {
				k, err := devMasterKey(filepath.Join(devDataDir, "master.key"))
				if err != nil {
					return err
				}
				ctx = schema.WithKeyring(ctx, k)
				log.Info("sealing personal data with the dev master key", "file", filepath.Join(devDataDir, "master.key"), "key_id", k.ID())
			}
			return a.serve(ctx, log, cfg, nil)
		},
	}
	addServiceFlags(cmd)
	return cmd
}

func (a *app) printDevBanner(cfg config, secret string) {
	fmt.Fprintf(a.stdout, `
  clerk-ledger dev
  webhook endpoint  http://%[1]s/api/webhooks/clerk
  signing secret    %[2]s   (generated, kept in %[3]s)

  send a signed test delivery:
    CLERK_WEBHOOK_SIGNING_SECRET=%[2]s %[4]s webhook send user.created --addr %[1]s --first-name Ada --last-name Lovelace --email ada@example.com

`, cfg.Addr, secret, filepath.Join(devDataDir, "webhook-secret"), selfCommand(os.Executable, exec.LookPath))
}

// selfCommand is how the person who started this process runs it again from
// the same shell: "go run ./cmd/ledger" for a binary `go run` built (it
// lives in the build cache's temporary exe directory, and `make run` starts
// it that way from the repository root), "ledger" when that name on PATH is
// this binary, else the binary's absolute path.
func selfCommand(executable func() (string, error), lookPath func(string) (string, error)) string {
	exe, err := executable()
	if err != nil {
		return "ledger"
	}
	if strings.Contains(exe, string(filepath.Separator)+"go-build") && filepath.Base(filepath.Dir(exe)) == "exe" {
		return "go run ./cmd/ledger"
	}
	if p, err := lookPath("ledger"); err == nil {
		if a, err := filepath.Abs(p); err == nil && sameFile(a, exe) {
			return "ledger"
		}
	}
	return exe
}

// sameFile reports whether paths a and b name the same file.
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// devSecret returns the webhook secret kept in path, generating and saving
// one (mode 0600) the first time.
func devSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if s := strings.TrimSpace(string(b)); strings.HasPrefix(s, "whsec_") {
			return s, nil
		}
		return "", domain.Errorf(domain.EINVALID, "%s does not hold a whsec_ secret; delete it to generate a new one", path)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	s := clerkgen.NewSecret()
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("save %s: %w", path, err)
	}
	return s, nil
}

// devDatabase returns a URL of a database to run on: defaultURL when its
// server answers (creating the database there), otherwise a database in a
// private cluster it starts under dataDir/postgres. stop stops that cluster
// (a no-op when none was started).
func devDatabase(ctx context.Context, log *slog.Logger, dataDir, defaultURL string, port int) (dsn string, stop func(), err error) {
	if serverAnswers(defaultURL) {
		if _, err := schema.CreateDatabase(ctx, defaultURL); err != nil {
			return "", nil, err
		}
		log.Info("using local PostgreSQL", "database", schema.RedactURL(defaultURL))
		return defaultURL, func() {}, nil
	}
	dir, err := filepath.Abs(filepath.Join(dataDir, "postgres"))
	if err != nil {
		return "", nil, err
	}
	cl, err := newPrivateCluster(dir, port)
	if err != nil {
		return "", nil, err
	}
	log.Info("no PostgreSQL answers at "+schema.RedactURL(defaultURL)+"; starting a private cluster", "dir", dir, "port", port, "bin", cl.bin)
	if err := cl.start(ctx); err != nil {
		return "", nil, err
	}
	dsn = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/ledger?sslmode=disable", port)
	if _, err := schema.CreateDatabase(ctx, dsn); err != nil {
		cl.stop()
		return "", nil, err
	}
	return dsn, func() {
		log.Info("stopping the private PostgreSQL cluster", "dir", dir)
		if err := cl.stop(); err != nil {
			log.Warn("could not stop the private PostgreSQL cluster", "err", err)
		}
	}, nil
}

// serverAnswers reports whether something accepts TCP connections at the
// host:port of dsn.
func serverAnswers(dsn string) bool {
	u, err := url.Parse(dsn)
	if err != nil {
		return false
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "5432")
	}
	c, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// privateCluster is a PostgreSQL cluster of our own under dir, run with the
// machine's binaries.
type privateCluster struct {
	dir  string
	port int
	bin  string   // directory holding initdb and pg_ctl
	as   []string // command prefix to run as the postgres user, when root
}

func newPrivateCluster(dir string, port int) (*privateCluster, error) {
	bin := findPGBin()
	if bin == "" {
		return nil, domain.Errorf(domain.EUNAVAILABLE,
			"no PostgreSQL server answers and no PostgreSQL binaries (initdb, pg_ctl) were found: install them (Debian/Ubuntu: apt-get install postgresql) or set DATABASE_URL")
	}
	c := &privateCluster{dir: dir, port: port, bin: bin}
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root.
		if _, err := user.Lookup("postgres"); err != nil {
			return nil, domain.Errorf(domain.EUNAVAILABLE, "running as root and there is no postgres user to run the private cluster as")
		}
		c.as = []string{"runuser", "-u", "postgres", "--"}
	}
	return c, nil
}

// findPGBin returns the directory of initdb and pg_ctl: PATH first, then the
// newest /usr/lib/postgresql/*/bin.
func findPGBin() string {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if _, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p)
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	return ""
}

func pgVersion(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func (c *privateCluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	full := append(append(append([]string{}, c.as...), filepath.Join(c.bin, name)), args...)
	return exec.CommandContext(ctx, full[0], full[1:]...)
}

// create makes dir (given to the postgres user when we run as root) and
// initializes a cluster there unless it holds one already.
func (c *privateCluster) create(ctx context.Context) error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return err
	}
	if len(c.as) > 0 {
		u, _ := user.Lookup("postgres")
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(c.dir, uid, gid); err != nil {
			return fmt.Errorf("give %s to the postgres user: %w", c.dir, err)
		}
	}
	if _, err := os.Stat(filepath.Join(c.dir, "PG_VERSION")); err != nil {
		out, err := c.command(ctx, "initdb", "-D", c.dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-instructions").CombinedOutput()
		if err != nil {
			return fmt.Errorf("initdb %s: %w: %s", c.dir, err, lastLine(out))
		}
	}
	return nil
}

// serverArgs are the server's options: our port, its socket in dir, and
// TCP on loopback only.
func (c *privateCluster) serverArgs() []string {
	return []string{"-p", strconv.Itoa(c.port), "-k", c.dir, "-c", "listen_addresses=127.0.0.1"}
}

// start creates the cluster when needed and starts its server with pg_ctl,
// returning once it accepts connections.
func (c *privateCluster) start(ctx context.Context) error {
	if err := c.create(ctx); err != nil {
		return err
	}
	opts := strings.Join(c.serverArgs(), " ")
	out, err := c.command(ctx, "pg_ctl", "-D", c.dir, "-l", filepath.Join(c.dir, "server.log"), "-o", opts, "-w", "-t", "60", "start").CombinedOutput()
	if err != nil {
		return fmt.Errorf("start private PostgreSQL in %s: %w: %s (see %s)", c.dir, err, lastLine(out), filepath.Join(c.dir, "server.log"))
	}
	return nil
}

// stop stops the server with a fast shutdown (open transactions are rolled
// back, sessions ended) and waits until it is down.
func (c *privateCluster) stop() error {
	out, err := c.command(context.Background(), "pg_ctl", "-D", c.dir, "-m", "fast", "-w", "stop").CombinedOutput()
	if err != nil {
		return fmt.Errorf("stop private PostgreSQL in %s: %w: %s", c.dir, err, lastLine(out))
	}
	return nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

func listenLocal() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
