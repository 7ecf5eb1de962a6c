package audit

import (
	"sync"

	"golang.org/x/mod/sumdb/tlog"
)

// cacheLevel is the lowest level of the tree whose stored hashes proofs
// keep in memory: subtrees of 256 leaves or more.
const cacheLevel = 8

// maxCached is the most hashes a hashCache keeps (~8 MB of hashes; a tree
// of 32M leaves has that many at cacheLevel and above). Past it, the
// missing ones are read as without a cache.
const maxCached = 1 << 18

// hashCache keeps, once read, the stored hashes of the tree's subtrees of
// at least 2^cacheLevel leaves, for serving proofs (never for verifying:
// VerifyCheckpoint and VerifyLog read the database). A stored hash is of a
// complete subtree of an append-only tree, so it never changes once
// written; there are few of them (one per 2^cacheLevel leaves per level)
// and most proofs share them: about half of a 100-event bundle's hashes in
// a tree of 1M leaves. A rewritten tree (tampering) would be served stale,
// and those proofs fail to check against its checkpoints, as proofs from
// the rewritten rows would against the checkpoints signed before. It is
// safe for concurrent use.
type hashCache struct {
	mu sync.Mutex
	m  map[int64]tlog.Hash
}

// read returns the hashes at indexes, in that order: the cached ones from
// memory, the others with one call of miss (with those indexes, in order;
// it is called even when none is missing, so that whatever it does with
// the read, such as recording it, is done).
func (c *hashCache) read(indexes []int64, miss func([]int64) ([]tlog.Hash, error)) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	var missing []int64
	var at []int
	c.mu.Lock()
	for i, idx := range indexes {
		if h, ok := c.m[idx]; ok {
			out[i] = h
			continue
		}
		missing, at = append(missing, idx), append(at, i)
	}
	c.mu.Unlock()
	hs, err := miss(missing)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[int64]tlog.Hash)
	}
	for j, i := range at {
		out[i] = hs[j]
		if l, _ := tlog.SplitStoredHashIndex(missing[j]); l >= cacheLevel && len(c.m) < maxCached {
			c.m[missing[j]] = hs[j]
		}
	}
	return out, nil
}
