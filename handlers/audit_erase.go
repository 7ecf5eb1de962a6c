package handlers

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// erasePage is the data of audit_erase.html.
type erasePage struct {
	Error   string
	UserID  string
	UserURL string
	Reason  string
	Result  *audit.EraseResult
}

// handleAuditErase serves POST /audit/users/{id}/erase: the workspace's
// erasure (audit.Service.Erase, as ledger erase does). It is a POST behind
// checkOrigin and the auditor check, and it runs only when the form
// confirms it: "confirm" must repeat the user id, and "reason" say why; a
// form that does not is answered 400 with the form again and nothing done.
func handleAuditErase(pg *pages, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := checkUserID(id); err != nil {
			pg.renderError(w, r, err)
			return
		}
		data := erasePage{UserID: id, UserURL: "/audit/users/" + url.PathEscape(id)}
		form, err := readForm(w, r)
		if err == nil {
			data.Reason = strings.TrimSpace(form.Get("reason"))
			switch {
			case strings.TrimSpace(form.Get("confirm")) != id:
				err = domain.Errorf(domain.EINVALID, "type the user id %s in the confirmation field to erase the user", id)
			default:
				var res audit.EraseResult
				if res, err = svc.Erase(r.Context(), actorOf(r, schema.ChannelPage), audit.EraseInput{UserID: id, Reason: data.Reason}); err == nil {
					data.Result = &res
				}
			}
		}
		if err != nil {
			if ErrorStatus(err) >= 500 {
				pg.renderError(w, r, err)
				return
			}
			data.Error = domain.ErrorMessage(err)
			pg.render(w, r, ErrorStatus(err), "audit_erase.html", data)
			return
		}
		pg.render(w, r, http.StatusOK, "audit_erase.html", data)
	}
}
