package projections

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// The checkpointer signs only a grown, non-empty tree, never goes back,
// writes each checkpoint to its directory, and two at once sign one.
func TestCheckpointerSignsWhenTheTreeGrows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := schematest.NewDB(t)
	signer, verifier := schematest.NewLogKey(t, "clerk-ledger/cp-test")
	c := NewCheckpointer(db, nil, signer, "")
	c.Dir = filepath.Join(t.TempDir(), "checkpoints")
	if _, added, err := c.Sign(ctx); err != nil || added {
		t.Fatalf("empty tree: added %v %v", added, err)
	}
	load(t, db, history(t, 1, 3, 40))
	waitVisible(t, db)
	r := NewRunner(db, nil, NewTree())
	runToHead(t, r)
	cp, added, err := c.Sign(ctx)
	if err != nil || !added || cp.Size != 40 {
		t.Fatalf("first: %+v %v %v", cp, added, err)
	}
	stated, err := verifier.Open([]byte(cp.Note))
	head, _ := schema.ReadTreeHead(ctx, db)
	if err != nil || stated.Origin != "clerk-ledger/cp-test" || stated.Size != 40 || stated.Root != head.Root {
		t.Fatalf("note states %+v (%v), tree %+v", stated, err, head)
	}
	if _, added, _ := c.Sign(ctx); added {
		t.Error("signed again without growth")
	}
	for _, name := range []string{"40.checkpoint", "latest"} {
		b, err := os.ReadFile(filepath.Join(c.Dir, name))
		if err != nil || string(b) != cp.Note {
			t.Errorf("%s: %q %v", name, b, err)
		}
	}
	load(t, db, history(t, 2, 3, 10)[:10])
	waitVisible(t, db)
	runToHead(t, r)
	var wg sync.WaitGroup
	adds := make([]bool, 2)
	for i := range adds {
		wg.Go(func() {
			_, a, err := c.Sign(ctx)
			if err != nil {
				t.Error(err)
			}
			adds[i] = a
		})
	}
	wg.Wait()
	if adds[0] == adds[1] {
		t.Errorf("two signers at once: added %v", adds)
	}
	latest, _ := os.ReadFile(filepath.Join(c.Dir, "latest"))
	if !strings.HasPrefix(string(latest), "clerk-ledger/cp-test\n50\n") {
		t.Errorf("latest is %q", latest)
	}
}
