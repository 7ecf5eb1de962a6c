package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/spf13/cobra"
)

// eraseCmd is `ledger erase USER_ID --reason TEXT`.
func (a *app) eraseCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "erase USER_ID --reason TEXT",
		Short: "Erase a user: destroy their data key, leave a tombstone (GDPR Art. 17)",
		Long: `erase destroys the data key of the Clerk user USER_ID, so that the body of
every event about them can never be read again (crypto-shredding); records
the erasure (who: cli:$USER, when, --reason) and appends a ledger.user_erased
event that holds nothing but the user id; and turns the user's row into a
tombstone (id, deleted, erased and their times), removing their addresses,
memberships and projection failures and the values naming them in the audit
access log. The events stay, with their metadata and an erased marker, and
every proof and checkpoint made before still verifies. Erasing an erased
user does nothing (it says so). Write no personal data in --reason.
Backups taken before hold the key still: see README, Erasure.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			svc, db, err := a.openAudit(cmd, nil)
			if err != nil {
				return err
			}
			defer db.Close()
			ctx := cmd.Context()
			if schema.KeyringFrom(ctx) == nil {
				// Erasure needs no key (it destroys one); the ledger
				// should have one all the same.
				fmt.Fprintln(a.stderr, "note: LEDGER_MASTER_KEY is not set in this process (erasure does not need it)")
			}
			res, err := svc.Erase(ctx, a.cliActor(), audit.EraseInput{UserID: args[0], Reason: reason})
			if err != nil {
				return err
			}
			e := res.Erasure
			if !res.Created {
				fmt.Fprintf(a.stdout, "user %s was already erased at %s by %s: nothing to do\n", e.UserID, e.At.Format("2006-01-02T15:04:05Z"), e.By)
				return nil
			}
			fmt.Fprintf(a.stdout, "erased user %s at %s (erasure event %s); their data key is destroyed\n", e.UserID, e.At.Format("2006-01-02T15:04:05Z"), e.DeliveryID)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept in the erasures table; no personal data)")
	return cmd
}

// parseEraseAfterDelete reads LEDGER_ERASE_AFTER_DELETE: empty or "off"
// (the default: no automatic erasure), or a duration of at least one hour,
// in days ("30d") or Go's syntax ("720h").
func parseEraseAfterDelete(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "" || v == "off" || v == "0" {
		return 0, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 36500 {
			return 0, domain.Errorf(domain.EINVALID, "LEDGER_ERASE_AFTER_DELETE %q is not a number of days (e.g. 30d), a duration (720h) or off", v)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			return 0, domain.Errorf(domain.EINVALID, "LEDGER_ERASE_AFTER_DELETE %q is not a number of days (e.g. 30d), a duration (720h) or off", v)
		}
	}
	if d < time.Hour {
		return 0, domain.Errorf(domain.EINVALID, "LEDGER_ERASE_AFTER_DELETE %q is under an hour: erasure cannot be undone", v)
	}
	return d, nil
}

// autoEraseEvery is how often serve looks for users to erase automatically.
const autoEraseEvery = 10 * time.Minute

// startAutoErase erases, every autoEraseEvery, the users deleted more than
// after ago (audit.Service.EraseDeletedBefore, as actor "ledger:auto"),
// until ctx ends; it returns the function that stops it and waits.
func startAutoErase(ctx context.Context, log *slog.Logger, svc *audit.Service, after time.Duration) (stop func()) {
	actor := audit.Actor{ID: "ledger:auto", Channel: schema.ChannelCLI}
	return goEvery(ctx, 0, autoEraseEvery, func(ctx context.Context) {
		users, err := svc.EraseDeletedBefore(ctx, actor, time.Now().Add(-after), 100)
		if err != nil && ctx.Err() == nil {
			log.Error("automatic erasure", "err", err)
		}
		if len(users) > 0 {
			log.Info("erased deleted users automatically", "users", len(users), "after", after.String())
		}
	})
}

// goEvery runs f in a goroutine of its own, first after `first`, then
// `every` after each run ends, until ctx ends. The function it returns
// cancels the context f is given and waits for the goroutine to end.
func goEvery(ctx context.Context, first, every time.Duration, f func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTimer(first)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			f(ctx)
			t.Reset(every)
		}
	}()
	return func() { cancel(); <-done }
}
