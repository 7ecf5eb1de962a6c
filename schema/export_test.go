package schema

// VerifyChainInRanges exposes verifyChain to the tests: the same check split
// into more ranges than a small test ledger would get.
var VerifyChainInRanges = verifyChain

// Pending is how many appends wait for a group commit: tests use it to
// gather a batch deterministically.
func (s *Store) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}
