// Package translog is what makes the ledger's Merkle tree checkable by
// someone who does not trust its operator: the tree's compact right edge
// (appending leaves without reading the tree), signing keys, signed
// checkpoints in the C2SP tlog-checkpoint format, and the per-user proof
// bundle with its offline verification. It holds no SQL and no HTTP, so the
// offline verifier (ledger audit verify-proof) needs no database.
//
// Hashing, proofs and notes are golang.org/x/mod/sumdb/tlog and
// golang.org/x/mod/sumdb/note (RFC 6962 hashing, Ed25519 signed notes),
// the code behind Go's checksum database.
package translog

import (
	"fmt"
	"math/bits"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"golang.org/x/mod/sumdb/tlog"
)

// LeafHash is the tree's hash of a leaf: SHA-256(0x00 || l.Encode()).
func LeafHash(l domain.Leaf) tlog.Hash {
	return tlog.RecordHash(l.Encode(make([]byte, 0, 512)))
}

// EdgeIndexes returns the stored hash indexes (tlog.StoredHashIndex) of the
// complete subtrees that make up a tree of n leaves, left to right: what
// Edge needs to go on appending to it, and what tlog.TreeHash reads.
func EdgeIndexes(n int64) []int64 {
	var out []int64
	var lo int64
	for l := 62; l >= 0; l-- {
		if n&(1<<l) != 0 {
			out = append(out, tlog.StoredHashIndex(l, lo>>l))
			lo += 1 << l
		}
	}
	return out
}

// Edge is the right edge of a tree: the hashes of the complete subtrees a
// tree of Size leaves is made of (at most one per level). With it, leaves
// are appended and the root computed without reading the rest of the tree.
// The zero Edge is the empty tree. It is not safe for concurrent use.
type Edge struct {
	size    int64
	hashes  [64]tlog.Hash // hashes[l]: the subtree of 2^l leaves, when bit l of size is set
	scratch [65]tlog.Hash // what Append returns
}

// NewEdge returns the edge of a tree of size leaves from the hashes at
// EdgeIndexes(size), in that order.
func NewEdge(size int64, hashes []tlog.Hash) (*Edge, error) {
	if size < 0 || len(hashes) != bits.OnesCount64(uint64(size)) {
		return nil, fmt.Errorf("translog: %d edge hashes for a tree of %d leaves", len(hashes), size)
	}
	e := &Edge{size: size}
	i := 0
	for l := 62; l >= 0; l-- {
		if size&(1<<l) != 0 {
			e.hashes[l] = hashes[i]
			i++
		}
	}
	return e, nil
}

// Size is the number of leaves.
func (e *Edge) Size() int64 { return e.size }

// ReadHashes implements tlog.HashReader for the edge's own subtrees only.
func (e *Edge) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		l, n := tlog.SplitStoredHashIndex(idx)
		if e.size&(1<<l) == 0 || n != (e.size>>l)-1 {
			return nil, fmt.Errorf("translog: stored hash %d (level %d, %d) is not on the edge of a tree of %d", idx, l, n, e.size)
		}
		out[i] = e.hashes[l]
	}
	return out, nil
}

// Append adds a leaf with hash h and returns the hashes to store for it, in
// stored-index order from tlog.StoredHashIndex(0, old size): the leaf hash,
// then each subtree it completes, as tlog.StoredHashesForRecordHash gives
// them (TestEdgeStoresWhatTlogStores), without allocating: the slice is
// the Edge's own and valid until the next Append.
func (e *Edge) Append(h tlog.Hash) ([]tlog.Hash, error) {
	if e.size == 1<<63-1 {
		return nil, fmt.Errorf("translog: the tree is full")
	}
	out := append(e.scratch[:0], h)
	l := 0
	for ; e.size>>l&1 == 1; l++ { // each trailing 1 bit: a subtree this leaf completes
		h = tlog.NodeHash(e.hashes[l], h)
		e.hashes[l] = tlog.Hash{}
		out = append(out, h)
	}
	e.hashes[l] = h
	e.size++
	return out, nil
}

// Root is the tree's root hash (tlog.TreeHash).
func (e *Edge) Root() tlog.Hash {
	h, err := tlog.TreeHash(e.size, e)
	if err != nil {
		panic("translog: edge root: " + err.Error()) // the edge holds exactly what TreeHash reads
	}
	return h
}
