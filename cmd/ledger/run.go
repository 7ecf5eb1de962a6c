package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/joho/godotenv"
	"github.com/spf13/cobra"
)

// exitCode is returned by a command that has already said what went wrong
// and only needs the process to exit with that code.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// app is what every subcommand shares: where to write, and the settings
// source (process environment over ./.env).
type app struct {
	stdout, stderr io.Writer
	env            func(string) string
}

// run builds and runs the CLI. It is main without the process: arguments,
// environment and output are passed in, so tests run it in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	dotenv, err := readDotEnv(".env")
	if err != nil {
		return err
	}
	a := &app{stdout: stdout, stderr: stderr, env: func(k string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return dotenv[k]
	}}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}

// readDotEnv reads KEY=value settings from path; a missing file is no error.
func readDotEnv(path string) (map[string]string, error) {
	m, err := godotenv.Read(path)
	if err != nil {
		if os.IsNotExist(err) {
			return map[string]string{}, nil
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "ledger",
		Short: "Clerk webhooks into an event-sourced, tamper-evident user ledger on PostgreSQL",
		Long: `ledger turns Clerk's user webhooks into an append-only, tamper-evident event
ledger on PostgreSQL, projects it into read models (users), and serves the
webhook endpoint, a small web frontend and the auditors' workspace.

Settings come from the environment, then ./.env (the environment wins), then
flags (flags win): DATABASE_URL, CLERK_WEBHOOK_SIGNING_SECRET (several,
space-separated, during a rotation), CLERK_SECRET_KEY, CLERK_JWT_KEY,
PUBLIC_CLERK_PUBLISHABLE_KEY (or CLERK_PUBLISHABLE_KEY), LEDGER_ADDR,
LOG_FORMAT (text|json), LOG_LEVEL.`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: a.withKeyring,
	}
	root.PersistentFlags().String("database-url", "", "PostgreSQL URL (overrides DATABASE_URL)")
	root.PersistentFlags().String("log-format", "", "log format: text or json (overrides LOG_FORMAT)")
	root.AddCommand(a.serveCmd(), a.devCmd(), a.migrateCmd(), a.webhookCmd(), a.benchCmd())
	root.AddCommand(a.projectionsCmd(), a.projectCmd(), a.seedCmd(), a.auditCmd())
	root.AddCommand(a.relayCmd(), a.keysCmd(), a.eraseCmd())
	root.AddCommand(a.importCmd(), a.reconcileCmd(), a.statusCmd())
	return root
}

// setting returns the flag's value when it was given, else the environment's.
func (a *app) setting(cmd *cobra.Command, flag, envName string) string {
	if f := cmd.Flags().Lookup(flag); f != nil && f.Changed {
		return f.Value.String()
	}
	return strings.TrimSpace(a.env(envName))
}

// logger returns the process logger: text or JSON (LOG_FORMAT) on stderr.
func (a *app) logger(cmd *cobra.Command) (*slog.Logger, error) {
	level := slog.LevelInfo
	if v := a.env("LOG_LEVEL"); v != "" {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			return nil, domain.Errorf(domain.EINVALID, "LOG_LEVEL %q is not one of debug, info, warn, error", v)
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f := a.setting(cmd, "log-format", "LOG_FORMAT"); f {
	case "", "text":
		return slog.New(slog.NewTextHandler(a.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(a.stderr, opts)), nil
	default:
		return nil, domain.Errorf(domain.EINVALID, "LOG_FORMAT %q is not text or json", f)
	}
}
