package console

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/scimflow/scimflow/events"
)

// causedWindow is how far before a log row's time the stream look-up starts: the SCIM events of a
// request carry the resource's modification time, which may precede the log row's by a little.
const causedWindow = 5 * time.Second

// logCaused shows what one SCIM request caused: the registry changes it made (history entries
// whose cause is the request), the events on the SCIM and IDENTITY streams carrying its correlation
// id, and for each IDENTITY event (a revocation, say) how long after the SCIM event was stored
// identity-store stored it.
func (c *Console) logCaused(w http.ResponseWriter, r *http.Request) {
	in := r.URL.Query()
	idp, reqID, email, scimID := in.Get("idp_id"), in.Get("request_id"), in.Get("email"), in.Get("scim_id")
	at, err := parseAt(in.Get("at"))
	if err != nil || idp == "" || reqID == "" || !events.ValidToken(idp) || (scimID != "" && !events.ValidToken(scimID)) {
		c.errorPage(w, r, sessionOf(r), http.StatusBadRequest, "This link is incomplete: it needs idp_id, request_id and at (and may name email and scim_id).")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	data := map[string]any{"IdP": idp, "RequestID": reqID, "Email": email, "At": at}
	if email != "" {
		var us []userSummary
		if _, err := c.get(ctx, "/api/v1/users", url.Values{"email": {email}, "idp_id": {idp}}, &us); err != nil {
			c.fail(w, r, err)
			return
		}
		if len(us) > 0 {
			var u userDetail
			if _, err := c.get(ctx, "/api/v1/users/"+url.PathEscape(us[0].ID), url.Values{"history_limit": {"1000"}}, &u); err != nil {
				c.fail(w, r, err)
				return
			}
			var hs []historyEntry
			for _, h := range u.History {
				// A history entry's cause is its event's correlation id as recorded (project.go),
				// not a sentence to parse: the request's entries are the ones that name it exactly.
				if h.Cause == reqID {
					hs = append(hs, h)
				}
			}
			data["User"], data["History"] = u.userSummary, hs
		}
	}
	// Whole-IdP filters: a message carrying a transaction's batch is stored under its first event's
	// subject, so a per-user filter could miss an event. Security facts travel on the priority lanes
	// too; both copies are listed.
	start := at.Add(-causedWindow)
	var scimEvs, identEvs []causedEvent
	var errs []string
	look := func(dst *[]causedEvent, stream, filter string) {
		evs, err := c.findCaused(ctx, stream, filter, start, reqID, 2000)
		if err != nil {
			errs = append(errs, stream+": "+err.Error())
		}
		*dst = append(*dst, evs...)
	}
	look(&scimEvs, events.StreamSCIM, "scim."+idp+".>")
	look(&scimEvs, events.StreamSCIMPriority, events.PriorityPrefix+"scim."+idp+".>")
	look(&identEvs, events.StreamIdentity, "identity."+idp+".>")
	look(&identEvs, events.StreamIdentityPriority, events.PriorityPrefix+"identity."+idp+".>")
	var origin time.Time
	for _, e := range scimEvs {
		if origin.IsZero() || e.Stored.Before(origin) {
			origin = e.Stored
		}
	}
	for i := range identEvs {
		if !origin.IsZero() {
			identEvs[i].Took = identEvs[i].Stored.Sub(origin)
		}
	}
	data["SCIMEvents"], data["IdentityEvents"] = scimEvs, identEvs
	data["StreamErrors"], data["HasJS"] = errs, c.b.JS != nil
	c.render(w, r, sessionOf(r), http.StatusOK, "caused.html", "What request "+reqID+" caused", data)
}
