package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"
)

// loadKeyring reads LEDGER_MASTER_KEY (the key text or a file holding it);
// nil when it is not set. A malformed one is a one-line EINVALID error
// naming the setting, never the key.
func loadKeyring(env func(string) string) (*userkeys.Keyring, error) {
	v := strings.TrimSpace(env("LEDGER_MASTER_KEY"))
	if v == "" {
		return nil, nil
	}
	return userkeys.Load(v)
}

// withKeyring is the root command's pre-run: every command's context
// carries the master key when LEDGER_MASTER_KEY is set, so that each
// ledger read opens sealed bodies (schema.WithKeyring).
func (a *app) withKeyring(cmd *cobra.Command, _ []string) error {
	k, err := loadKeyring(a.env)
	if err != nil {
		return err
	}
	if k != nil {
		cmd.SetContext(schema.WithKeyring(cmd.Context(), k))
	}
	return nil
}

// requireKeyring returns the master key of ctx after checking it opens the
// ledger's data keys (schema.CheckKeyring): a process that writes or
// projects refuses to start without the right one.
func requireKeyring(ctx context.Context, db *sqlx.DB) (*userkeys.Keyring, error) {
	k := schema.KeyringFrom(ctx)
	if k == nil {
		return nil, domain.Errorf(domain.EINVALID, "LEDGER_MASTER_KEY is not set (the master key wrapping every user's data key: ledger keys new makes one; ledger dev keeps one in ./.data/master.key)")
	}
	if err := schema.CheckKeyring(ctx, db, k); err != nil {
		return nil, err
	}
	return k, nil
}

// benchUnsealedFlag is serve's hidden flag that runs it without a master key,
// storing every body in clear: the service `ledger bench ingest --unsealed`
// measures against the sealing one. It is no deployment's setting.
const benchUnsealedFlag = "bench-unsealed"

// serveKeyring returns the keyring serve seals and opens bodies with:
// requireKeyring's, or with unsealed (--bench-unsealed) none, after
// checking that no master key is set and that db (migrated) holds no event
// yet, so that no ledger mixes bodies in clear into a sealed history; it
// then logs a warning that bodies are stored in clear. Errors: EINVALID
// (one line) for either refusal.
func serveKeyring(ctx context.Context, log *slog.Logger, db *sqlx.DB, unsealed bool) (*userkeys.Keyring, error) {
	if !unsealed {
		return requireKeyring(ctx, db)
	}
	if schema.KeyringFrom(ctx) != nil {
		return nil, domain.Errorf(domain.EINVALID, "--%s (for ledger bench ingest --unsealed only) stores bodies in clear and takes no master key: unset LEDGER_MASTER_KEY (in the environment and ./.env)", benchUnsealedFlag)
	}
	var empty bool
	if err := db.GetContext(ctx, &empty, `SELECT NOT EXISTS (SELECT 1 FROM events)`); err != nil {
		return nil, fmt.Errorf("--%s: count events: %w", benchUnsealedFlag, err)
	}
	if !empty {
		return nil, domain.Errorf(domain.EINVALID, "--%s (for ledger bench ingest --unsealed only) refuses a database that already holds events: it stores bodies in clear, on a fresh scratch database only", benchUnsealedFlag)
	}
	log.Warn("bodies are stored in clear, not sealed, and erasing a user does not remove them: --bench-unsealed is for ledger bench ingest --unsealed only", "bench_unsealed", true)
	return nil, nil
}

// devMasterKey returns the master key kept in path, generating and saving
// one (mode 0600) the first time.
func devMasterKey(path string) (*userkeys.Keyring, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := userkeys.Load(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, domain.Errorf(domain.EINVALID, "%s does not hold a master key; delete it only if the ledger holds no sealed event", path)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	text, err := userkeys.Generate()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(text+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("save %s: %w", path, err)
	}
	return userkeys.Load(text)
}

func (a *app) keysCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "keys",
		Short: "The master key that wraps every user's data key (LEDGER_MASTER_KEY)",
	}
	c.AddCommand(&cobra.Command{
		Use:   "new",
		Short: "Print a new random master key (LEDGER_MASTER_KEY=...; keep it secret, back it up apart from the database)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			text, err := userkeys.Generate()
			if err != nil {
				return err
			}
			k, err := userkeys.Load(text)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "LEDGER_MASTER_KEY=%s\n# key id %s\n", text, k.ID())
			return nil
		},
	})
	var to string
	rotate := &cobra.Command{
		Use:   "rotate --to NEW_KEY",
		Short: "Rewrap every user's data key under a new master key",
		Long: `rotate rewraps every live data key, wrapped by the current master key
(LEDGER_MASTER_KEY), under the new one (--to: the key text, or a file holding
it; ledger keys new makes one), in one transaction. No body is re-encrypted
and no event changes. Stop serve and project first, run rotate, then start
them with LEDGER_MASTER_KEY set to the new key (a process still holding the
old key cannot open the rewrapped keys). Running it again is harmless: keys
already under the new key are skipped.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			from := schema.KeyringFrom(cmd.Context())
			if from == nil {
				return domain.Errorf(domain.EINVALID, "LEDGER_MASTER_KEY (the current master key) is not set")
			}
			if to == "" {
				return domain.Errorf(domain.EINVALID, "--to (the new master key, or a file holding it) is required")
			}
			next, err := userkeys.Load(to)
			if err != nil {
				return domain.Errorf(domain.EINVALID, "--to: %s", strings.Replace(err.Error(), "LEDGER_MASTER_KEY", "the new master key", 1))
			}
			dsn, err := a.requireDatabaseURL(cmd)
			if err != nil {
				return err
			}
			db, err := schema.Open(cmd.Context(), dsn, schema.PoolOptions{MaxOpen: 1})
			if err != nil {
				return err
			}
			defer db.Close()
			n, err := schema.RotateKeys(cmd.Context(), db, from, next)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "rewrapped %d data keys from key id %s to key id %s: set LEDGER_MASTER_KEY to the new key\n", n, from.ID(), next.ID())
			return nil
		},
	}
	rotate.Flags().StringVar(&to, "to", "", "the new master key, or a file holding it")
	c.AddCommand(rotate)
	return c
}
