package console

import (
	"context"
	"net/http"
	"net/url"
	"strings"
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
	var uid string
	if email != "" {
		var us []userSummary
		if _, err := c.get(ctx, "/api/v1/users", url.Values{"email": {email}, "idp_id": {idp}}, &us); err != nil {
			c.fail(w, r, err)
			return
		}
		if len(us) > 0 {
			uid = us[0].ID
			var u userDetail
			if _, err := c.get(ctx, "/api/v1/users/"+url.PathEscape(uid), url.Values{"history_limit": {"1000"}}, &u); err != nil {
				c.fail(w, r, err)
				return
			}
			var hs []historyEntry
			for _, h := range u.History {
				if strings.HasSuffix(h.Cause, " "+reqID) || h.Cause == reqID {
					hs = append(hs, h)
				}
			}
			data["User"], data["History"] = u.userSummary, hs
		}
	}
	start := at.Add(-causedWindow)
	scimFilter, identFilter := "scim."+idp+".>", "identity."+idp+".>"
	if scimID != "" {
		scimFilter = "scim." + idp + ".user." + scimID + ".>"
	}
	if uid != "" && events.ValidToken(uid) {
		identFilter = "identity." + idp + ".user." + uid + ".>"
	}
	scimEvs, err1 := c.findCaused(ctx, events.StreamSCIM, scimFilter, start, reqID, 2000)
	identEvs, err2 := c.findCaused(ctx, events.StreamIdentity, identFilter, start, reqID, 2000)
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
	var errs []string
	for _, e := range []error{err1, err2} {
		if e != nil {
			errs = append(errs, e.Error())
		}
	}
	data["StreamErrors"], data["HasJS"] = errs, c.b.JS != nil
	c.render(w, r, sessionOf(r), http.StatusOK, "caused.html", "What request "+reqID+" caused", data)
}
