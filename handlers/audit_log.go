package handlers

import (
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// The verifiable log's routes: the signed checkpoint, an event's inclusion
// proof and a user's proof bundle. Each is recorded in the access log by
// the audit application.

// parseTreeSize reads the optional size parameter (a kept checkpoint's tree
// size; 0 or absent: the latest) and refuses any other parameter.
func parseTreeSize(v url.Values) (int64, error) {
	for k, vs := range v {
		if k != "size" {
			return 0, domain.Errorf(domain.EINVALID, "unknown parameter %q (want size)", k)
		}
		if len(vs) > 1 {
			return 0, domain.Errorf(domain.EINVALID, "parameter %q is given %d times", k, len(vs))
		}
	}
	s := strings.TrimSpace(v.Get("size"))
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 {
		return 0, domain.Errorf(domain.EINVALID, "size %q is not a positive tree size", s)
	}
	return n, nil
}

// handleAuditCheckpoint serves GET /api/audit/checkpoint?size=N: the latest
// signed checkpoint (or the kept one of tree size N) as the signed note
// itself (text/plain, C2SP tlog-checkpoint), byte for byte as signed, so it
// can be kept or handed to a witness as it is. 404 when none is kept.
func handleAuditCheckpoint(log *slog.Logger, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		size, err := parseTreeSize(r.URL.Query())
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		cp, err := svc.Checkpoint(r.Context(), actorOf(r, schema.ChannelAPI), size)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(cp.Note))
	}
}

// handleAuditEventProof serves GET /api/audit/events/{position}/proof?size=N:
// the inclusion proof of the event at that position in the tree of the
// latest checkpoint (or the kept one of tree size N), as JSON
// (audit.InclusionProof). 404 when the event is not in that tree.
func handleAuditEventProof(log *slog.Logger, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		size, err := parseTreeSize(r.URL.Query())
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		pos, err := strconv.ParseInt(r.PathValue("position"), 10, 64)
		if err != nil || pos < 1 {
			writeError(w, r, log, domain.Errorf(domain.EINVALID, "position %q is not a positive integer", r.PathValue("position")))
			return
		}
		p, err := svc.Proof(r.Context(), actorOf(r, schema.ChannelAPI), pos, size)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeAnswer(w, r, log, p)
	}
}

// handleAuditUserProof serves GET /api/audit/users/{id}/proof: the user's
// proof bundle (translog.Bundle) as a JSON download, in its canonical
// encoding: `ledger audit verify-proof FILE --key KEY` checks it offline.
func handleAuditUserProof(log *slog.Logger, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if len(r.URL.Query()) > 0 {
			writeError(w, r, log, domain.Errorf(domain.EINVALID, "this route takes no parameters"))
			return
		}
		id := r.PathValue("id")
		if err := checkUserID(id); err != nil {
			writeError(w, r, log, err)
			return
		}
		b, err := svc.UserProof(r.Context(), actorOf(r, schema.ChannelAPI), id)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		out, err := b.Encode()
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="ledger-proof-`+safeFileName(id)+`.json"`)
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(out)
	}
}

// safeFileName keeps the ASCII letters, digits, '-' and '_' of s.
func safeFileName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 128 && (r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "user"
	}
	return b.String()
}

// handleAuditConsistency serves GET /api/audit/consistency?from=M&size=N:
// the consistency proof from the tree of M leaves to the kept checkpoint of
// tree size N (default the latest), as JSON (audit.ConsistencyProof), so a
// witness holding the checkpoint of M can check and co-sign the one of N.
func handleAuditConsistency(log *slog.Logger, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := r.URL.Query()
		fromText := strings.TrimSpace(v.Get("from"))
		if len(v["from"]) > 1 {
			writeError(w, r, log, domain.Errorf(domain.EINVALID, "parameter \"from\" is given %d times", len(v["from"])))
			return
		}
		v.Del("from")
		size, err := parseTreeSize(v)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		from, err := strconv.ParseInt(fromText, 10, 64)
		if err != nil || from < 1 {
			writeError(w, r, log, domain.Errorf(domain.EINVALID, "from %q is not a positive tree size", fromText))
			return
		}
		p, err := svc.Consistency(r.Context(), actorOf(r, schema.ChannelAPI), from, size)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeAnswer(w, r, log, p)
	}
}
