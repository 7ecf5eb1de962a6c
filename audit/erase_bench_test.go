package audit_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// BenchmarkErase1000Events times audit.Service.Erase of a user with 1,000
// sealed events (account, session and email events, projected), among
// other users' events (issue 14: at most 100 ms):
//
//	go test ./audit -run '^$' -bench Erase1000Events -benchtime 5x
func BenchmarkErase1000Events(b *testing.B) {
	l := newEraseLedgerB(b)
	for i := range b.N {
		b.StopTimer()
		user := fmt.Sprintf("user_bench_%d", i)
		u := clerkgen.User{ID: user, Email: user + "@example.com", FirstName: "Bench", CreatedAt: at(0), UpdatedAt: at(0)}
		var bd []schema.Backdated
		for j := range 1000 {
			typ := []string{"user.updated", "session.created", "email.created"}[j%3]
			u.UpdatedAt = at(float64(j) / 100)
			body, err := clerkgen.Event(typ, u, u.UpdatedAt)
			if err != nil {
				b.Fatal(err)
			}
			d, err := domain.NewDelivery(fmt.Sprintf("msg_%s_%04d", user, j), u.UpdatedAt.Unix(), "v1,bench", body)
			if err != nil {
				b.Fatal(err)
			}
			bd = append(bd, schema.Backdated{Delivery: d, ReceivedAt: time.Now()})
		}
		tx, err := l.db.Beginx()
		if err != nil {
			b.Fatal(err)
		}
		if err := schema.CopyDeliveries(l.ctx, tx, bd); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
		schematest.WaitVisible(b, l.db)
		if err := l.runner.CatchUp(l.ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := l.svc.Erase(l.ctx, audit.Actor{ID: "cli:bench", Channel: schema.ChannelCLI}, audit.EraseInput{UserID: user, Reason: "bench"})
		if err != nil || !res.Created {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/erase")
}
