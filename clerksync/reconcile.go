package clerksync

import (
	"context"
	"fmt"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkapi"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// Triggers of a reconcile run (reconcile_runs.trigger).
const (
	TriggerCLI      = "cli"
	TriggerSchedule = "schedule"
)

// ReconcileOptions tune Reconcile.
type ReconcileOptions struct {
	// DryRun only reports: nothing is appended (the run is still recorded).
	DryRun bool
	// Trigger is recorded with the run (TriggerCLI, TriggerSchedule).
	Trigger string
	// MaxGone is the safety limit: when more users than this seem gone
	// from Clerk, none is marked deleted (the run says why), because an
	// answer that lost users (an empty or truncated list, the wrong
	// instance's key) must not mark everyone deleted. 0 means the default:
	// 10 users or 5% of the ledger's live users, whichever is more. -1
	// removes the limit.
	MaxGone int
}

// Reconcile compares the users projection with Clerk's current list of
// users and, unless o.DryRun, repairs what differs, counting each user as:
//
//	missing       listed by Clerk, not in the projection: a user.snapshot is appended
//	stale         Clerk's updated_at is newer than the projection's: a user.snapshot is appended
//	same          the projection has Clerk's updated_at (or a newer one, from a webhook)
//	gone          in the projection, not deleted, not listed, and GET /v1/users/{id}
//	              answers 404: a user.snapshot_deleted is appended (never a user.deleted)
//	deleted_here  deleted or erased in the projection but still listed by Clerk
//	              (reported only: a snapshot never revives a deleted or erased user)
//
// A user not listed whom GET still returns (a listing pass is not a
// snapshot: see clerkapi.ListOrder) is compared as if listed. Repairs are
// appended a page at a time with schema.AppendSnapshots, idempotently (the
// delivery ids of domain.NewSnapshot, NewSnapshotDeleted), so a repeated
// run or one racing the projector stores nothing twice. Every run, dry or
// not, complete or failed, is recorded in reconcile_runs and returned.
// One reconcile runs at a time across processes (schema.TryReconcileLock):
// ECONFLICT, nothing recorded, when another is running.
//
// The projection may lag the ledger by the projector's lag: a user
// imported a moment ago may count as missing once more, which appends
// nothing (same delivery id).
func (s *Syncer) Reconcile(ctx context.Context, o ReconcileOptions) (schema.ReconcileRun, error) {
	release, ok, err := schema.TryReconcileLock(ctx, s.db)
	if err != nil {
		return schema.ReconcileRun{}, fmt.Errorf("reconcile: %w", err)
	}
	if !ok {
		return schema.ReconcileRun{}, domain.Errorf(domain.ECONFLICT, "another reconcile is running (ledger reconcile, or a serve's schedule): try again when it is done")
	}
	defer release()
	run := schema.ReconcileRun{StartedAt: s.Now().UTC(), Trigger: o.Trigger, DryRun: o.DryRun}
	if run.Trigger == "" {
		run.Trigger = TriggerCLI
	}
	err = s.reconcile(ctx, o, &run)
	if err != nil {
		run.Error = reason(err)
	}
	// Recorded even when cancelled: with a context of its own.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	id, rerr := schema.RecordReconcile(rctx, s.db, run)
	run.ID = id
	if err != nil {
		return run, fmt.Errorf("reconcile: %w", err)
	}
	if rerr != nil {
		return run, rerr
	}
	s.log.Info("reconcile finished", "run", id, "dry_run", run.DryRun, "missing", run.Missing, "stale", run.Stale,
		"gone", run.Gone, "same", run.Same, "deleted_here", run.DeletedHere, "repaired", run.Repaired, "failed", run.Failed, "held_back", run.HeldBack != "")
	return run, nil
}

func (s *Syncer) reconcile(ctx context.Context, o ReconcileOptions, run *schema.ReconcileRun) error {
	versions, err := schema.UserVersions(ctx, s.db)
	if err != nil {
		return err
	}
	live := 0
	for _, v := range versions {
		if !v.Deleted && !v.Erased {
			live++
		}
	}
	run.LedgerUsers = int64(live)
	listed := make(map[string]bool, len(versions))
	// seen is each listed user's greatest updated_at so far and the count
	// it went to: a user seen twice in one pass (the list shifted) is
	// compared again when the later sighting is newer (it changed in
	// between), and counted once, as that sighting.
	type sighting struct {
		updatedAt int64
		counted   *int64
	}
	seen := make(map[string]sighting, len(versions))
	err = s.eachPage(ctx, s.api.ListUsersInto, 0, func(p *clerkapi.Page) error {
		var repairs []domain.Delivery
		for _, f := range p.Failures {
			run.Failed++
			s.log.Warn("clerk user not reconciled", "user_id", f.ID, "position", f.Position, "reason", reason(f.Err))
			if f.ID != "" {
				listed[f.ID] = true // present in Clerk, whatever its state
			}
		}
		for _, u := range p.Users {
			if prev, ok := seen[u.ID]; ok {
				if u.UpdatedAt <= prev.updatedAt {
					continue // seen twice in one pass (the list shifted), unchanged
				}
				*prev.counted-- // counted again below, as the newer sighting
			} else {
				run.ClerkUsers++
			}
			listed[u.ID] = true
			d, ok, counted := s.compare(run, versions, u)
			seen[u.ID] = sighting{updatedAt: u.UpdatedAt, counted: counted}
			if ok {
				repairs = append(repairs, d)
			}
		}
		return s.repair(ctx, o, run, repairs)
	})
	if err != nil {
		return err
	}
	var candidates []string
	for id, v := range versions {
		if !v.Deleted && !listed[id] {
			candidates = append(candidates, id)
		}
	}
	limit := o.MaxGone
	if limit == 0 {
		limit = max(10, live/20)
	}
	if limit >= 0 && len(candidates) > limit {
		run.Gone = int64(len(candidates))
		run.HeldBack = fmt.Sprintf("%d of %d users seem gone from Clerk, more than the safety limit of %d: none was checked or marked deleted (is CLERK_SECRET_KEY the right instance's? run ledger reconcile --max-gone N to allow)", len(candidates), live, limit)
		s.log.Warn("reconcile held back", "seem_gone", len(candidates), "limit", limit)
		return nil
	}
	var repairs []domain.Delivery
	for _, id := range candidates {
		u, err := s.api.GetUser(ctx, id)
		switch domain.ErrorCode(err) {
		case "":
			if d, ok, _ := s.compare(run, versions, u); ok {
				repairs = append(repairs, d)
			}
			run.ClerkUsers++
			continue
		case domain.ENOTFOUND:
		default:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			run.Failed++
			s.log.Warn("clerk user not reconciled", "user_id", id, "error", reason(err))
			continue
		}
		run.Gone++
		d, err := domain.NewSnapshotDeleted(id, s.Now(), "not listed by GET /v1/users; GET /v1/users/{id} answered 404")
		if err != nil {
			run.Failed++
			continue
		}
		repairs = append(repairs, d)
	}
	return s.repair(ctx, o, run, repairs)
}

// compare counts u against the projection and returns the snapshot that
// repairs it, if any, and the count of run it added one to.
func (s *Syncer) compare(run *schema.ReconcileRun, versions map[string]schema.UserVersion, u clerkapi.User) (domain.Delivery, bool, *int64) {
	v, ok := versions[u.ID]
	switch {
	case ok && (v.Deleted || v.Erased):
		// An erased user's tombstone has no version to compare: whatever
		// Clerk holds now would only be stored discarded, run after run.
		run.DeletedHere++
		return domain.Delivery{}, false, &run.DeletedHere
	case ok && v.UpdatedAt >= u.UpdatedAt:
		run.Same++
		return domain.Delivery{}, false, &run.Same
	}
	d, err := domain.NewSnapshot(u.ID, u.UpdatedAt, u.Raw)
	if err != nil {
		run.Failed++
		s.log.Warn("clerk user not reconciled", "user_id", u.ID, "reason", reason(err))
		return domain.Delivery{}, false, &run.Failed
	}
	if ok {
		run.Stale++
		return d, true, &run.Stale
	}
	run.Missing++
	return d, true, &run.Missing
}

// repair appends ds in one transaction unless it is a dry run, counting
// the events that were new.
func (s *Syncer) repair(ctx context.Context, o ReconcileOptions, run *schema.ReconcileRun, ds []domain.Delivery) error {
	if o.DryRun || len(ds) == 0 {
		return nil
	}
	n, err := s.appendTx(ctx, ds, nil)
	if err != nil {
		return err
	}
	run.Repaired += int64(n)
	return nil
}
