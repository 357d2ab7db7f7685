package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Views of the admin API's results (docs/admin-api.md); only the fields the pages show.

type idpView struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Type   string `json:"type"`
	Config struct {
		ClientID       string   `json:"client_id"`
		ClientSecret   string   `json:"client_secret"`
		AuthURL        string   `json:"auth_url"`
		TokenURL       string   `json:"token_url"`
		CertsURL       string   `json:"certs_url"`
		Issuer         string   `json:"issuer"`
		PKCEEnabled    bool     `json:"pkce_enabled"`
		EmailClaimName string   `json:"email_claim_name"`
		Claims         []string `json:"claims"`
		Scopes         []string `json:"scopes"`
	} `json:"config"`
	SCIMConfig struct {
		Enabled                bool      `json:"enabled"`
		UserDeprovision        bool      `json:"user_deprovision"`
		SeatDeprovision        bool      `json:"seat_deprovision"`
		IdentityUpdateBehavior string    `json:"identity_update_behavior"`
		SCIMBaseURL            string    `json:"scim_base_url"`
		Secret                 string    `json:"secret"`
		SecretSet              bool      `json:"secret_set"`
		SecretRotatedAt        time.Time `json:"secret_rotated_at"`
	} `json:"scim_config"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

type userSummary struct {
	ID        string    `json:"id"`
	IdPID     string    `json:"idp_id"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	Status    string    `json:"status"`
	SeatHeld  bool      `json:"seat_held"`
	Locked    bool      `json:"locked"`
	LastSeen  time.Time `json:"last_seen"`
	UpdatedAt time.Time `json:"updated_at"`
}

type group struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type identity struct {
	Email         string         `json:"email"`
	Name          string         `json:"name"`
	Groups        []group        `json:"groups"`
	OIDCFields    map[string]any `json:"oidc_fields"`
	Status        string         `json:"status"`
	SeatHeld      bool           `json:"seat_held"`
	Locked        bool           `json:"locked"`
	RevokedBefore *time.Time     `json:"revoked_before"`
	SCIMUserID    string         `json:"scim_user_id"`
	SCIMGroups    []group        `json:"scim_groups"`
}

type historyEntry struct {
	At        time.Time `json:"at"`
	EventID   string    `json:"event_id"`
	EventType string    `json:"event_type"`
	Cause     string    `json:"cause"`
	Changes   []string  `json:"changes"`
	Notes     []string  `json:"notes"`
}

type userDetail struct {
	userSummary
	Identity identity `json:"identity"`
	Seat     struct {
		Held      bool      `json:"held"`
		TakenAt   time.Time `json:"taken_at"`
		RemovedAt time.Time `json:"removed_at"`
		LastSeen  time.Time `json:"last_seen"`
	} `json:"seat"`
	RevokedBefore *time.Time `json:"revoked_before"`
	SCIM          *struct {
		UserID   string `json:"user_id"`
		UserName string `json:"user_name"`
		Active   bool   `json:"active"`
		Deleted  bool   `json:"deleted"`
	} `json:"scim"`
	ActiveSessions []struct {
		SessionIDHash string    `json:"session_id_hash"`
		IssuedAt      time.Time `json:"issued_at"`
		ExpiresAt     time.Time `json:"expires_at"`
	} `json:"active_sessions"`
	History    []historyEntry `json:"history"`
	IdentityAt *identity      `json:"identity_at"`
}

type logRow struct {
	ID                string    `json:"id"`
	IdPID             string    `json:"idp_id"`
	LoggedAt          time.Time `json:"logged_at"`
	RequestID         string    `json:"request_id"`
	RequestMethod     string    `json:"request_method"`
	Path              string    `json:"path"`
	ResourceType      string    `json:"resource_type"`
	CFResourceID      string    `json:"cf_resource_id"`
	IdPResourceID     string    `json:"idp_resource_id"`
	ResourceUserEmail string    `json:"resource_user_email"`
	ResourceGroupName string    `json:"resource_group_name"`
	Status            string    `json:"status"`
	HTTPStatus        int       `json:"http_status"`
	ErrorDescription  string    `json:"error_description"`
	RequestBody       string    `json:"request_body"`
}

func (c *Console) idps(ctx context.Context) ([]idpView, error) {
	var out []idpView
	_, err := c.get(ctx, "/api/v1/identity_providers", nil, &out)
	slices.SortFunc(out, func(a, b idpView) int { return strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)) })
	return out, err
}

func idpNames(ps []idpView) map[string]string {
	m := make(map[string]string, len(ps))
	for _, p := range ps {
		m[p.ID] = p.Name
	}
	return m
}

// --- identity providers ---

func (c *Console) idpList(w http.ResponseWriter, r *http.Request) {
	ps, err := c.idps(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, sessionOf(r), http.StatusOK, "idps.html", "Identity providers", map[string]any{"IdPs": ps, "AuthURL": strings.TrimRight(c.cfg.AuthURL, "/")})
}

// idpForm is the IdP form's state: the values as typed and the API's messages per field.
type idpForm struct {
	ID, Name, ClientID, ClientSecret, AuthURL, TokenURL, CertsURL, Issuer string
	EmailClaim, Claims, Scopes, Behavior                                  string
	PKCE, SCIMEnabled, UserDeprov, SeatDeprov                             bool
	FieldErrors                                                           map[string][]string
	Errors                                                                []string
	New                                                                   bool
	SecretSet                                                             bool
}

func formFromView(p idpView) idpForm {
	return idpForm{ID: p.ID, Name: p.Name, ClientID: p.Config.ClientID, AuthURL: p.Config.AuthURL, TokenURL: p.Config.TokenURL,
		CertsURL: p.Config.CertsURL, Issuer: p.Config.Issuer, EmailClaim: p.Config.EmailClaimName, Claims: strings.Join(p.Config.Claims, ", "),
		Scopes: strings.Join(p.Config.Scopes, " "), Behavior: p.SCIMConfig.IdentityUpdateBehavior, PKCE: p.Config.PKCEEnabled,
		SCIMEnabled: p.SCIMConfig.Enabled, UserDeprov: p.SCIMConfig.UserDeprovision, SeatDeprov: p.SCIMConfig.SeatDeprovision,
		SecretSet: p.Config.ClientSecret != ""}
}

func formFromRequest(r *http.Request) idpForm {
	v := func(n string) string { return strings.TrimSpace(r.PostFormValue(n)) }
	on := func(n string) bool { return r.PostFormValue(n) != "" }
	return idpForm{Name: v("name"), ClientID: v("client_id"), ClientSecret: r.PostFormValue("client_secret"), AuthURL: v("auth_url"),
		TokenURL: v("token_url"), CertsURL: v("certs_url"), Issuer: v("issuer"), EmailClaim: v("email_claim_name"), Claims: v("claims"),
		Scopes: v("scopes"), Behavior: v("identity_update_behavior"), PKCE: on("pkce_enabled"), SCIMEnabled: on("scim_enabled"),
		UserDeprov: on("user_deprovision"), SeatDeprov: on("seat_deprovision")}
}

func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' || r == '\r' })
}

// body is the admin API create/update body of the form.
func (f idpForm) body() map[string]any {
	cfg := map[string]any{"client_id": f.ClientID, "client_secret": f.ClientSecret, "auth_url": f.AuthURL, "token_url": f.TokenURL,
		"certs_url": f.CertsURL, "issuer": f.Issuer, "pkce_enabled": f.PKCE, "email_claim_name": f.EmailClaim}
	if cl := splitList(f.Claims); len(cl) > 0 {
		cfg["claims"] = cl
	}
	if sc := splitList(f.Scopes); len(sc) > 0 {
		cfg["scopes"] = sc
	}
	return map[string]any{"name": f.Name, "type": "oidc", "config": cfg, "scim_config": map[string]any{"enabled": f.SCIMEnabled,
		"user_deprovision": f.UserDeprov, "seat_deprovision": f.SeatDeprov, "identity_update_behavior": f.Behavior}}
}

// formFields maps the admin API's field paths to the form's inputs.
var formFields = map[string]string{
	"name": "name", "type": "name", "config.client_id": "client_id", "config.client_secret": "client_secret",
	"config.auth_url": "auth_url", "config.token_url": "token_url", "config.certs_url": "certs_url", "config.issuer": "issuer",
	"config.scopes": "scopes", "config.claims": "claims", "config.email_claim_name": "email_claim_name",
	"config.pkce_enabled": "pkce_enabled", "scim_config.identity_update_behavior": "identity_update_behavior",
	"scim_config.seat_deprovision": "seat_deprovision", "scim_config.user_deprovision": "user_deprovision",
	"scim_config.enabled": "scim_enabled",
}

// placeErrors puts each API message next to its field ("config.auth_url: …"); the rest stay general.
func (f *idpForm) placeErrors(msgs []string) {
	f.FieldErrors = map[string][]string{}
	for _, m := range msgs {
		path, rest, ok := strings.Cut(m, ": ")
		if field, known := formFields[path]; ok && known {
			f.FieldErrors[field] = append(f.FieldErrors[field], rest)
			continue
		}
		f.Errors = append(f.Errors, m)
	}
}

func (c *Console) idpNew(w http.ResponseWriter, r *http.Request) {
	f := idpForm{New: true, Scopes: "openid email profile", EmailClaim: "email", Behavior: "no_action", SCIMEnabled: true}
	c.render(w, r, sessionOf(r), http.StatusOK, "idp_form.html", "New identity provider", map[string]any{"Form": f})
}

func (c *Console) idpCreate(w http.ResponseWriter, r *http.Request) {
	f := formFromRequest(r)
	f.New = true
	var p idpView
	res, err := c.call(r.Context(), http.MethodPost, "/api/v1/identity_providers", nil, f.body(), &p)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if res.Status == http.StatusBadRequest || res.Status == http.StatusConflict {
		f.placeErrors(res.messages())
		c.render(w, r, sessionOf(r), http.StatusBadRequest, "idp_form.html", "New identity provider", map[string]any{"Form": f})
		return
	}
	if err := res.err(); err != nil {
		c.fail(w, r, err)
		return
	}
	c.showSecret(w, r, p, "created")
}

// showSecret renders the page that shows a new SCIM secret once. It is never stored by the
// console; the page is no-store and the secret is not in any URL.
func (c *Console) showSecret(w http.ResponseWriter, r *http.Request, p idpView, what string) {
	c.render(w, r, sessionOf(r), http.StatusOK, "idp_secret.html", "SCIM secret", map[string]any{"IdP": p, "What": what,
		"Grace": c.cfg.SecretGrace})
}

func (c *Console) loadIdP(w http.ResponseWriter, r *http.Request) (idpView, bool) {
	var p idpView
	if _, err := c.get(r.Context(), "/api/v1/identity_providers/"+url.PathEscape(r.PathValue("id")), nil, &p); err != nil {
		c.fail(w, r, err)
		return p, false
	}
	return p, true
}

func (c *Console) idpEdit(w http.ResponseWriter, r *http.Request) {
	p, ok := c.loadIdP(w, r)
	if !ok {
		return
	}
	c.render(w, r, sessionOf(r), http.StatusOK, "idp_form.html", p.Name, map[string]any{"Form": formFromView(p), "IdP": p,
		"AuthURL": strings.TrimRight(c.cfg.AuthURL, "/")})
}

func (c *Console) idpUpdate(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	f := formFromRequest(r)
	f.ID, f.SecretSet = id, true
	var p idpView
	res, err := c.call(r.Context(), http.MethodPut, "/api/v1/identity_providers/"+url.PathEscape(id), nil, f.body(), &p)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if res.Status == http.StatusBadRequest || res.Status == http.StatusConflict {
		f.placeErrors(res.messages())
		c.render(w, r, sessionOf(r), http.StatusBadRequest, "idp_form.html", f.Name, map[string]any{"Form": f, "AuthURL": strings.TrimRight(c.cfg.AuthURL, "/")})
		return
	}
	if err := res.err(); err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/ui/idps/"+url.PathEscape(id)+"?saved=1", http.StatusSeeOther)
}

// idpConfirm asks before a destructive or one-time action (delete, rotate the SCIM secret).
func (c *Console) idpConfirm(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	if action != "delete" && action != "rotate" {
		c.errorPage(w, r, sessionOf(r), http.StatusNotFound, "No such page.")
		return
	}
	p, ok := c.loadIdP(w, r)
	if !ok {
		return
	}
	c.render(w, r, sessionOf(r), http.StatusOK, "confirm.html", "Confirm", map[string]any{"Action": action, "IdP": p,
		"PostTo": "/ui/idps/" + url.PathEscape(p.ID) + "/" + action, "Back": "/ui/idps/" + url.PathEscape(p.ID), "Grace": c.cfg.SecretGrace})
}

func (c *Console) idpDelete(w http.ResponseWriter, r *http.Request) {
	if _, err := c.call2(r, http.MethodDelete, "/api/v1/identity_providers/"+url.PathEscape(r.PathValue("id")), nil); err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/ui/idps?deleted=1", http.StatusSeeOther)
}

func (c *Console) idpRotate(w http.ResponseWriter, r *http.Request) {
	var p idpView
	if _, err := c.call2(r, http.MethodPost, "/api/v1/identity_providers/"+url.PathEscape(r.PathValue("id"))+"/refresh_scim_secret", &p); err != nil {
		c.fail(w, r, err)
		return
	}
	c.showSecret(w, r, p, "rotated")
}

// call2 is an action call whose refusal is an error.
func (c *Console) call2(r *http.Request, method, path string, out any) (apiResult, error) {
	res, err := c.call(r.Context(), method, path, nil, nil, out)
	if err != nil {
		return res, err
	}
	return res, res.err()
}

// --- people ---

const peoplePerPage = 50

func (c *Console) people(w http.ResponseWriter, r *http.Request) {
	in := r.URL.Query()
	page, _ := strconv.Atoi(in.Get("page"))
	page = max(page, 1)
	q := url.Values{"per_page": {strconv.Itoa(peoplePerPage)}, "page": {strconv.Itoa(page)}}
	for _, k := range []string{"q", "idp_id", "status"} {
		if v := strings.TrimSpace(in.Get(k)); v != "" {
			q.Set(k, v)
		}
	}
	ps, err := c.idps(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	var users []userSummary
	res, err := c.get(r.Context(), "/api/v1/users", q, &users)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
		c.render(w, r, sessionOf(r), http.StatusBadRequest, "people.html", "People", map[string]any{"IdPs": ps, "Query": in, "Errors": ae.Messages})
		return
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	total := res.ResultInfo.TotalCount
	data := map[string]any{"IdPs": ps, "Names": idpNames(ps), "Users": users, "Query": in, "Total": total, "Page": page,
		"First": (page-1)*peoplePerPage + 1, "Last": (page-1)*peoplePerPage + len(users)}
	if page > 1 {
		data["Prev"] = withQuery(in, "page", strconv.Itoa(page-1))
	}
	if page*peoplePerPage < total {
		data["Next"] = withQuery(in, "page", strconv.Itoa(page+1))
	}
	c.render(w, r, sessionOf(r), http.StatusOK, "people.html", "People", data)
}

// parseAt reads the person page's "identity at" time: RFC 3339, or a datetime-local value (taken as
// UTC, which the page says).
func parseAt(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a date and time", v)
}

func (c *Console) person(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := url.Values{"history_limit": {"200"}}
	at, err := parseAt(r.URL.Query().Get("at"))
	var atErr string
	if err != nil {
		atErr = err.Error()
	} else if !at.IsZero() {
		q.Set("at", at.Format(time.RFC3339Nano))
	}
	var u userDetail
	res, err := c.call(r.Context(), http.MethodGet, "/api/v1/users/"+url.PathEscape(id), q, nil, &u)
	if err == nil && res.Status == http.StatusNotFound && !at.IsZero() {
		// The user did not exist then: show today's page with the API's message next to the field.
		atErr = strings.Join(res.messages(), "; ")
		q.Del("at")
		res, err = c.call(r.Context(), http.MethodGet, "/api/v1/users/"+url.PathEscape(id), q, nil, &u)
	}
	if err == nil {
		err = res.err()
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	ps, _ := c.idps(r.Context())
	data := map[string]any{"U": u, "IdPName": idpNames(ps)[u.IdPID], "At": r.URL.Query().Get("at"), "AtError": atErr}
	if !at.IsZero() && atErr == "" {
		data["AtTime"] = at
	}
	c.render(w, r, sessionOf(r), http.StatusOK, "person.html", u.Email, data)
}

// personActions are the person page's actions: the admin API call each makes and what the
// confirmation page says.
var personActions = map[string]struct {
	method, path, title, explain string
}{
	"revoke": {http.MethodPost, "/revoke", "Revoke sessions",
		"Every session of this person ends now, on every auth replica. The seat is kept; they can sign in again unless locked."},
	"remove-seat": {http.MethodDelete, "/seat", "Remove seat",
		"The seat is freed and every session ends. The person shows inactive until their next sign-in."},
	"unlock": {http.MethodPost, "/unlock", "Unlock",
		"The lock SCIM deprovisioning set is lifted, so the person can sign in again. Sessions issued before the lock stay invalid; while the IdP still says active: false the person shows inactive."},
	"reset-sub": {http.MethodDelete, "/sub", "Reset OIDC sub",
		"The binding to the person's OIDC sub is voided as of now (an account replaced at the IdP on purpose): the next login binds its own sub. Sessions are not touched."},
}

func (c *Console) personConfirm(w http.ResponseWriter, r *http.Request) {
	a, ok := personActions[r.PathValue("action")]
	if !ok {
		c.errorPage(w, r, sessionOf(r), http.StatusNotFound, "No such page.")
		return
	}
	id := r.PathValue("id")
	var u userSummary
	if _, err := c.get(r.Context(), "/api/v1/users/"+url.PathEscape(id), url.Values{"history_limit": {"0"}}, &u); err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, sessionOf(r), http.StatusOK, "confirm.html", a.title, map[string]any{"Action": r.PathValue("action"), "Title": a.title,
		"Explain": a.explain, "User": u, "PostTo": "/ui/people/" + url.PathEscape(id) + "/" + r.PathValue("action"), "Back": "/ui/people/" + url.PathEscape(id)})
}

func (c *Console) personAction(w http.ResponseWriter, r *http.Request) {
	a, ok := personActions[r.PathValue("action")]
	if !ok {
		c.errorPage(w, r, sessionOf(r), http.StatusNotFound, "No such action.")
		return
	}
	id := r.PathValue("id")
	var out struct {
		EventIDs []string `json:"event_ids"`
		Applied  bool     `json:"applied"`
	}
	if _, err := c.call2(r, a.method, "/api/v1/users/"+url.PathEscape(id)+a.path, &out); err != nil {
		c.fail(w, r, err)
		return
	}
	done := "done"
	if !out.Applied {
		done = "published"
	}
	http.Redirect(w, r, "/ui/people/"+url.PathEscape(id)+"?"+url.Values{"done": {r.PathValue("action")}, "state": {done}}.Encode(), http.StatusSeeOther)
}

// --- provisioning logs ---

// logFilters are the provisioning-log filters of GET /api/v1/logs/scim, all passed through.
var logFilters = []string{"idp_id", "status", "resource_type", "request_method", "resource_user_email", "resource_group_name",
	"cf_resource_id", "idp_resource_id", "since", "until", "direction", "per_page"}

func (c *Console) logs(w http.ResponseWriter, r *http.Request) {
	in := r.URL.Query()
	q := url.Values{}
	for _, k := range logFilters {
		if v := strings.TrimSpace(in.Get(k)); v != "" {
			if k == "since" || k == "until" {
				t, err := parseAt(v)
				if err == nil {
					v = t.Format(time.RFC3339Nano)
				}
			}
			q.Set(k, v)
		}
	}
	perPage, _ := strconv.Atoi(q.Get("per_page"))
	if perPage <= 0 {
		perPage = 50
		q.Set("per_page", "50")
	}
	page, _ := strconv.Atoi(in.Get("page"))
	page = max(page, 1)
	q.Set("page", strconv.Itoa(page))
	ps, err := c.idps(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	var rows []logRow
	res, err := c.get(r.Context(), "/api/v1/logs/scim", q, &rows)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
		c.render(w, r, sessionOf(r), http.StatusBadRequest, "logs.html", "Provisioning logs", map[string]any{"IdPs": ps, "Query": in, "Errors": ae.Messages})
		return
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	total := res.ResultInfo.TotalCount
	data := map[string]any{"IdPs": ps, "Names": idpNames(ps), "Rows": rows, "Query": in, "Total": total,
		"First": (page-1)*perPage + 1, "Last": (page-1)*perPage + len(rows)}
	if page > 1 {
		data["Prev"] = withQuery(in, "page", strconv.Itoa(page-1))
	}
	if page*perPage < total {
		data["Next"] = withQuery(in, "page", strconv.Itoa(page+1))
	}
	c.render(w, r, sessionOf(r), http.StatusOK, "logs.html", "Provisioning logs", data)
}

func prettyJSON(s string) string {
	var v any
	if json.Unmarshal([]byte(s), &v) != nil {
		return s
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return s
	}
	return string(b)
}

// withQuery returns "?"+q with k set to v.
func withQuery(q url.Values, k, v string) string {
	n := url.Values{}
	for kk, vv := range q {
		n[kk] = slices.Clone(vv)
	}
	n.Set(k, v)
	return "?" + n.Encode()
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

func formatTime(t any) string {
	switch v := t.(type) {
	case time.Time:
		if v.IsZero() {
			return "—"
		}
		return v.UTC().Format("2006-01-02 15:04:05 UTC")
	case *time.Time:
		if v == nil || v.IsZero() {
			return "—"
		}
		return v.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	return ""
}

// since says how long ago t was, for humans.
func (c *Console) since(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := c.b.Now().Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}
