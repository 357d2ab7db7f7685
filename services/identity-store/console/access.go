package console

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// appView is an access application as the admin API returns it (docs/access-policies.md). Policies
// stay raw JSON: the console edits them as JSON and lets the API validate them.
type appView struct {
	ID              string            `json:"id"`
	Name            string            `json:"name"`
	Domain          string            `json:"domain"`
	SessionDuration string            `json:"session_duration"`
	AllowedIdPs     []string          `json:"allowed_idps"`
	Policies        []json.RawMessage `json:"policies"`
	UpdatedAt       time.Time         `json:"updated_at"`
}

// appForm is the application form's state.
type appForm struct {
	ID, Name, Domain, SessionDuration, Policies string
	AllowedIdPs                                 map[string]bool
	TestEmails, TestPath                        string
	FieldErrors                                 map[string][]string
	Errors                                      []string
	New                                         bool
}

func appFormFromView(a appView) appForm {
	f := appForm{ID: a.ID, Name: a.Name, Domain: a.Domain, SessionDuration: a.SessionDuration, AllowedIdPs: map[string]bool{}}
	for _, id := range a.AllowedIdPs {
		f.AllowedIdPs[id] = true
	}
	if a.Policies == nil {
		a.Policies = []json.RawMessage{}
	}
	b, _ := json.MarshalIndent(a.Policies, "", "  ")
	f.Policies = string(b)
	return f
}

func appFormFromRequest(r *http.Request) appForm {
	f := appForm{Name: strings.TrimSpace(r.PostFormValue("name")), Domain: strings.TrimSpace(r.PostFormValue("domain")),
		SessionDuration: strings.TrimSpace(r.PostFormValue("session_duration")), Policies: r.PostFormValue("policies"),
		TestEmails: r.PostFormValue("test_emails"), TestPath: strings.TrimSpace(r.PostFormValue("test_path")), AllowedIdPs: map[string]bool{}}
	for _, id := range r.PostForm["allowed_idps"] {
		f.AllowedIdPs[id] = true
	}
	return f
}

// body is the admin API's application body; a policies field that is not JSON is reported next to it.
func (f *appForm) body() (map[string]any, bool) {
	var pol []json.RawMessage
	if strings.TrimSpace(f.Policies) == "" {
		pol = []json.RawMessage{}
	} else if err := json.Unmarshal([]byte(f.Policies), &pol); err != nil {
		f.FieldErrors = map[string][]string{"policies": {"not a JSON array of policies: " + err.Error()}}
		return nil, false
	}
	idps := []string{}
	for id := range f.AllowedIdPs {
		idps = append(idps, id)
	}
	b := map[string]any{"name": f.Name, "domain": f.Domain, "policies": pol, "allowed_idps": idps}
	if f.SessionDuration != "" {
		b["session_duration"] = f.SessionDuration
	}
	return b, true
}

// placeErrors puts "name: …", "policies[2].include[0]: …" next to their fields.
func (f *appForm) placeErrors(msgs []string) {
	f.FieldErrors = map[string][]string{}
	for _, m := range msgs {
		field := m
		if i := strings.IndexAny(m, ":.["); i >= 0 {
			field = m[:i]
		}
		switch field {
		case "name", "domain", "session_duration", "allowed_idps", "policies":
			f.FieldErrors[field] = append(f.FieldErrors[field], m)
		default:
			f.Errors = append(f.Errors, m)
		}
	}
}

func (c *Console) accessList(w http.ResponseWriter, r *http.Request) {
	var apps []appView
	if _, err := c.get(r.Context(), "/api/v1/access/apps", nil, &apps); err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, sessionOf(r), http.StatusOK, "access.html", "Access", map[string]any{"Apps": apps, "Deleted": r.URL.Query().Get("deleted") != ""})
}

func (c *Console) accessNew(w http.ResponseWriter, r *http.Request) {
	ps, _ := c.idps(r.Context())
	f := appForm{New: true, Policies: "[\n  {\"name\": \"staff\", \"decision\": \"allow\", \"precedence\": 1,\n   \"include\": [{\"group\": {\"name\": \"Engineering\"}}]}\n]"}
	c.render(w, r, sessionOf(r), http.StatusOK, "access_form.html", "New application", map[string]any{"Form": f, "IdPs": ps})
}

func (c *Console) accessEdit(w http.ResponseWriter, r *http.Request) {
	var a appView
	if _, err := c.get(r.Context(), "/api/v1/access/apps/"+url.PathEscape(r.PathValue("id")), nil, &a); err != nil {
		c.fail(w, r, err)
		return
	}
	ps, _ := c.idps(r.Context())
	c.render(w, r, sessionOf(r), http.StatusOK, "access_form.html", a.Name, map[string]any{"Form": appFormFromView(a), "IdPs": ps,
		"Saved": r.URL.Query().Get("saved") != ""})
}

// accessSave handles the application form: "Test" evaluates the form's (unsaved) application
// against the registry, "Save" creates or replaces it; either way the API's messages go next to the
// fields.
func (c *Console) accessSave(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	f := appFormFromRequest(r)
	f.ID, f.New = id, id == ""
	title := f.Name
	if f.New {
		title = "New application"
	}
	ps, _ := c.idps(r.Context())
	data := map[string]any{"Form": &f, "IdPs": ps}
	body, ok := f.body()
	if !ok {
		c.render(w, r, sessionOf(r), http.StatusBadRequest, "access_form.html", title, data)
		return
	}
	if r.PostFormValue("action") == "test" {
		if id != "" {
			body["id"] = id
		}
		tb := map[string]any{"app": body}
		if emails := splitList(f.TestEmails); len(emails) > 0 {
			tb["emails"] = emails
		}
		if f.TestPath != "" {
			tb["path"] = f.TestPath
		}
		var rep struct {
			Path    string `json:"path"`
			Summary struct {
				Users, Allowed, Denied int
				ByReason               map[string]int `json:"by_reason"`
			} `json:"summary"`
			Users []struct {
				Email    string `json:"email"`
				IdPID    string `json:"idp_id"`
				Decision string `json:"decision"`
				Reason   string `json:"reason"`
				Policy   string `json:"policy"`
				Found    bool   `json:"found"`
			} `json:"users"`
		}
		res, err := c.call(r.Context(), http.MethodPost, "/api/v1/access/apps/test", nil, tb, &rep)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		status := http.StatusOK
		if res.Status == http.StatusBadRequest {
			f.placeErrors(res.messages())
			status = http.StatusBadRequest
		} else if err := res.err(); err != nil {
			c.fail(w, r, err)
			return
		} else {
			data["Test"] = rep
		}
		c.render(w, r, sessionOf(r), status, "access_form.html", title, data)
		return
	}
	method, path := http.MethodPost, "/api/v1/access/apps"
	if id != "" {
		method, path = http.MethodPut, "/api/v1/access/apps/"+url.PathEscape(id)
	}
	var saved appView
	res, err := c.call(r.Context(), method, path, nil, body, &saved)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if res.Status == http.StatusBadRequest || res.Status == http.StatusConflict {
		f.placeErrors(res.messages())
		c.render(w, r, sessionOf(r), http.StatusBadRequest, "access_form.html", title, data)
		return
	}
	if err := res.err(); err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/ui/access/"+url.PathEscape(saved.ID)+"?saved=1", http.StatusSeeOther)
}

func (c *Console) accessConfirmDelete(w http.ResponseWriter, r *http.Request) {
	var a appView
	if _, err := c.get(r.Context(), "/api/v1/access/apps/"+url.PathEscape(r.PathValue("id")), nil, &a); err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, sessionOf(r), http.StatusOK, "confirm.html", "Delete application", map[string]any{"App": a,
		"PostTo": "/ui/access/" + url.PathEscape(a.ID) + "/delete", "Back": "/ui/access/" + url.PathEscape(a.ID)})
}

func (c *Console) accessDelete(w http.ResponseWriter, r *http.Request) {
	if _, err := c.call2(r, http.MethodDelete, "/api/v1/access/apps/"+url.PathEscape(r.PathValue("id")), nil); err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/ui/access?deleted=1", http.StatusSeeOther)
}

type accessRow struct {
	ID       string    `json:"id"`
	LoggedAt time.Time `json:"logged_at"`
	AppID    string    `json:"app_id"`
	AppName  string    `json:"app_name"`
	Host     string    `json:"host"`
	Path     string    `json:"path"`
	Decision string    `json:"decision"`
	Reason   string    `json:"reason"`
	Email    string    `json:"email"`
	UserIdP  string    `json:"user_idp"`
	ClientIP string    `json:"client_ip"`
	Replica  string    `json:"replica"`
	Repeats  int       `json:"repeats"`
}

// accessLogFilters are passed through to GET /api/v1/logs/access.
var accessLogFilters = []string{"app_id", "decision", "email", "since", "until", "direction", "limit"}

func (c *Console) accessLog(w http.ResponseWriter, r *http.Request) {
	in := r.URL.Query()
	q := url.Values{}
	for _, k := range accessLogFilters {
		if v := strings.TrimSpace(in.Get(k)); v != "" {
			if t, err := parseAt(v); err == nil && (k == "since" || k == "until") {
				v = t.Format(time.RFC3339Nano)
			}
			q.Set(k, v)
		}
	}
	if q.Get("limit") == "" {
		q.Set("limit", "50")
	}
	var apps []appView
	if _, err := c.get(r.Context(), "/api/v1/access/apps", nil, &apps); err != nil {
		c.fail(w, r, err)
		return
	}
	var rows []accessRow
	_, err := c.get(r.Context(), "/api/v1/logs/access", q, &rows)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
		c.render(w, r, sessionOf(r), http.StatusBadRequest, "access_log.html", "Access log", map[string]any{"Apps": apps, "Query": in, "Errors": ae.Messages})
		return
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	data := map[string]any{"Apps": apps, "Query": in, "Rows": rows}
	if n := len(rows); n > 0 && q.Get("limit") == strconv.Itoa(n) {
		last := rows[n-1].LoggedAt
		if q.Get("direction") == "asc" {
			data["Next"] = withQuery(in, "since", last.Add(time.Nanosecond).Format(time.RFC3339Nano))
		} else {
			data["Next"] = withQuery(in, "until", last.Add(-time.Nanosecond).Format(time.RFC3339Nano))
		}
	}
	c.render(w, r, sessionOf(r), http.StatusOK, "access_log.html", "Access log", data)
}
