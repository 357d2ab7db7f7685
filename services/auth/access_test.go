package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/scimflow/scimflow/access"
	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
	"github.com/scimflow/scimflow/testkit/oidctest"
)

// putApp writes an app into the access_apps bucket as identity-store's syncer does, and waits until
// every given replica compiled it.
func (n *natsEnv) putApp(t testing.TB, a access.App, rs ...*replica) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := n.js.KeyValue(ctx, broker.KVAccessApps)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(a)
	if _, err := kv.Put(ctx, a.ID, b); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		waitFor(t, "app "+a.ID+" compiled", 10*time.Second, func() error {
			for _, c := range r.srv.apps.cur.Load().reg.Apps() {
				if c.App.ID == a.ID && string(mustJSON(c.App)) == string(b) {
					return nil
				}
			}
			return errNotYet
		})
	}
}

func (n *natsEnv) deleteApp(t testing.TB, id string, rs ...*replica) {
	t.Helper()
	ctx := context.Background()
	kv, _ := n.js.KeyValue(ctx, broker.KVAccessApps)
	if err := kv.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		waitFor(t, "app "+id+" removed", 10*time.Second, func() error {
			for _, c := range r.srv.apps.cur.Load().reg.Apps() {
				if c.App.ID == id {
					return errNotYet
				}
			}
			return nil
		})
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func mustParseApp(t testing.TB, raw string) access.App {
	t.Helper()
	a, err := access.ParseApp([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if probs := a.Validate(); len(probs) > 0 {
		t.Fatalf("app invalid: %v", probs)
	}
	return a
}

// at calls /verify for a forwarded request to host+uri (X-Forwarded-Host/Uri), with the session token
// (empty: none) and extra headers. It returns the response and its body.
func at(t testing.TB, r *replica, tok, host, uri string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.url+"/verify", nil)
	if tok != "" {
		req.AddCookie(&http.Cookie{Name: r.srv.sessionName, Value: tok})
	}
	if host != "" {
		req.Header.Set("X-Forwarded-Host", host)
		req.Header.Set("X-Forwarded-Uri", uri)
		req.Header.Set("X-Forwarded-Proto", "https")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET /verify: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// loginAs logs sub in at op (idp) and returns the session token.
func (h *harness) loginAs(o *op, sub string) string {
	h.t.Helper()
	if err := o.SetDefaultUser(sub); err != nil {
		h.t.Fatal(err)
	}
	return h.mustLogin(newBrowser(), h.r, o.idp.ID)
}

const decisionsApp = `{
  "id": "grafana", "name": "Grafana", "domain": "grafana.corp.example",
  "policies": [
    {"name": "health", "decision": "bypass", "include": [{"everyone": {}}], "paths": ["/api/health"]},
    {"name": "office", "decision": "bypass", "include": [{"ip": {"ip": "192.0.2.0/24"}}], "paths": ["/office"]},
    {"name": "contractors out", "decision": "deny", "precedence": 1, "include": [{"email_domain": {"domain": "contractor.example"}}]},
    {"name": "engineers", "decision": "allow", "precedence": 3,
     "include": [{"group": {"name": "ENG"}}],
     "require": [{"login_method": {"id": "idp-a"}}],
     "exclude": [{"email": {"email": "carol@example.com"}}]},
    {"name": "admins by claim", "decision": "allow", "precedence": 4, "include": [{"oidc": {"claim_name": "roles", "claim_value": "admin"}}], "paths": ["/admin"]},
    {"name": "terminated", "decision": "deny", "precedence": 2, "include": [{"oidc": {"claim_name": "department", "claim_value": "Terminated"}}]},
    {"name": "lab", "decision": "allow", "precedence": 5, "include": [{"ip": {"ip": "198.51.100.0/24"}}]}
  ]}`

const adminPathApp = `{
  "id": "admin", "name": "Admin console", "domain": "corp.example/admin",
  "policies": [{"name": "ops", "decision": "allow", "precedence": 1, "include": [{"group": {"name": "ops"}}]}]}`

// TestAccessDecisionsThroughVerify drives every selector, decision, precedence, bypass paths,
// require/exclude, host and host+path apps and the 403 path through /verify with real sessions.
func TestAccessDecisionsThroughVerify(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.TrustedProxies = []string{"127.0.0.1"} }})
	for _, u := range []oidctest.User{
		{Sub: "bob", Email: "bob@contractor.example", Name: "Bob", Groups: []string{"eng"}},
		{Sub: "carol", Email: "carol@example.com", Name: "Carol", Groups: []string{"eng", "ops"}},
		{Sub: "dave", Email: "dave@example.com", Name: "Dave", Groups: []string{}, Claims: map[string]any{"roles": []string{"viewer", "admin"}}},
		{Sub: "erin", Email: "erin@example.com", Name: "Erin", Groups: []string{"eng"}, Claims: map[string]any{"department": "Terminated"}},
	} {
		if err := h.op.AddUser(u); err != nil {
			t.Fatal(err)
		}
	}
	alice := h.loginAs(h.op, alice)
	bob := h.loginAs(h.op, "bob")
	carol := h.loginAs(h.op, "carol")
	dave := h.loginAs(h.op, "dave")
	erin := h.loginAs(h.op, "erin")

	// No application yet: every valid session passes, as before access applications existed.
	if resp, _ := at(t, h.r, dave, "anything.example", "/", nil); resp.StatusCode != 200 || resp.Header.Get(HeaderApp) != "" || resp.Header[HeaderApp] == nil {
		t.Fatalf("no apps: verify = %d app %q, want 200 without an app", resp.StatusCode, resp.Header.Get(HeaderApp))
	}
	h.n.putApp(t, mustParseApp(t, decisionsApp), h.r)
	h.n.putApp(t, mustParseApp(t, adminPathApp), h.r)

	api := map[string]string{"Accept": "application/json"}
	xff := func(ip string) map[string]string {
		return map[string]string{"Accept": "application/json", "X-Forwarded-For": ip}
	}
	for _, tc := range []struct {
		name      string
		tok       string
		host, uri string
		hdr       map[string]string
		status    int
		app       string
		reason    string // X-Scimflow-Deny-Reason
	}{
		{"group + require, case-insensitive group", alice, "grafana.corp.example", "/d/1", api, 200, "grafana", ""},
		{"host is lower-cased, port ignored", alice, "GRAFANA.corp.example:443", "/", api, 200, "grafana", ""},
		{"deny by email_domain wins by precedence over the group", bob, "grafana.corp.example", "/", api, 403, "grafana", "contractors out"},
		{"exclude by email", carol, "grafana.corp.example", "/", api, 403, "grafana", access.ReasonNoPolicy},
		{"oidc claim, multi-valued, under its path", dave, "grafana.corp.example", "/admin/users", api, 200, "grafana", ""},
		{"oidc claim outside its path", dave, "grafana.corp.example", "/adminx", api, 403, "grafana", access.ReasonNoPolicy},
		{"oidc claim deny at precedence 2 beats the group allow", erin, "grafana.corp.example", "/", api, 403, "grafana", "terminated"},
		{"ip selector through a trusted proxy", dave, "grafana.corp.example", "/", xff("198.51.100.9"), 200, "grafana", ""},
		{"ip: right-most untrusted hop, spoofed left entries ignored", dave, "grafana.corp.example", "/", xff("198.51.100.9, 203.0.113.5"), 403, "grafana", access.ReasonNoPolicy},
		{"bypass path without a session", "", "grafana.corp.example", "/api/health", api, 200, "grafana", ""},
		{"bypass path, dot segments resolved", "", "grafana.corp.example", "/x/../api/%68ealth?probe=1", api, 200, "grafana", ""},
		{"bypass is by segment", "", "grafana.corp.example", "/api/healthz", api, 401, "grafana", ""},
		{"bypass by ip", "", "grafana.corp.example", "/office/map", xff("192.0.2.10"), 200, "grafana", ""},
		{"bypass by ip, other address", "", "grafana.corp.example", "/office/map", xff("203.0.113.10"), 401, "grafana", ""},
		{"host+path app", carol, "corp.example", "/admin/x", api, 200, "admin", ""},
		{"host+path app, ops member", alice, "corp.example", "/admin", api, 200, "admin", ""},
		{"host+path app, no group", dave, "corp.example", "/admin", api, 403, "admin", access.ReasonNoPolicy},
		{"host without an app", alice, "corp.example", "/other", api, 403, "", access.ReasonNoApplication},
		{"unknown host without a session", "", "evil.example", "/", api, 403, "", access.ReasonNoApplication},
		{"no session", "", "grafana.corp.example", "/", api, 401, "grafana", ""},
	} {
		resp, _ := at(t, h.r, tc.tok, tc.host, tc.uri, tc.hdr)
		if resp.StatusCode != tc.status || resp.Header.Get(HeaderApp) != tc.app || resp.Header.Get(HeaderDenyReason) != tc.reason {
			t.Errorf("%s: verify = %d app %q reason %q, want %d app %q reason %q", tc.name, resp.StatusCode,
				resp.Header.Get(HeaderApp), resp.Header.Get(HeaderDenyReason), tc.status, tc.app, tc.reason)
		}
		if resp.StatusCode == 403 && (resp.Header.Get(HeaderEmail) != "" || resp.Header.Get(HeaderJWTAssertion) != "") {
			t.Errorf("%s: a 403 carries identity headers", tc.name)
		}
		if resp.StatusCode == 200 && tc.tok != "" && resp.Header.Get(HeaderJWTAssertion) == "" {
			t.Errorf("%s: 200 without the identity headers", tc.name)
		}
		if resp.StatusCode == 200 && tc.tok == "" { // bypass: every identity header present and empty
			for _, k := range []string{HeaderUserID, HeaderIdP, HeaderEmail, HeaderGroups, HeaderJWTAssertion} {
				if v, ok := resp.Header[k]; !ok || len(v) != 1 || v[0] != "" {
					t.Errorf("%s: bypass %s = %q, want present and empty", tc.name, k, v)
				}
			}
		}
	}

	// X-Original-URL (nginx) is used when X-Forwarded-Host is absent.
	if resp, _ := at(t, h.r, bob, "", "", map[string]string{"X-Original-URL": "https://grafana.corp.example/x", "Accept": "application/json"}); resp.StatusCode != 403 || resp.Header.Get(HeaderDenyReason) != "contractors out" {
		t.Errorf("X-Original-URL: verify = %d %q, want 403 contractors out", resp.StatusCode, resp.Header.Get(HeaderDenyReason))
	}
	// Browsers: the login redirect for no session, and a page naming who is signed in for a 403.
	resp, _ := at(t, h.r, "", "grafana.corp.example", "/d/1?x=1", map[string]string{"Accept": "text/html"})
	if loc, _ := url.Parse(resp.Header.Get("Location")); resp.StatusCode != 302 || loc.Query().Get("redirect_url") != "https://grafana.corp.example/d/1?x=1" {
		t.Errorf("browser without session: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := at(t, h.r, bob, "grafana.corp.example", "/", map[string]string{"Accept": "text/html"})
	if resp.StatusCode != 403 || !strings.Contains(body, "bob@contractor.example") || !strings.Contains(body, "IdP idp-a") ||
		!strings.Contains(body, "Switch account") || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("browser 403 = %d %q", resp.StatusCode, body)
	}

	// Every decision is counted.
	if v := metricValue(t, h.r.reg, "scimflow_auth_access_decisions_total", map[string]string{"app": "grafana", "decision": "deny", "reason": "contractors out"}); v < 2 {
		t.Errorf("contractors out decisions = %v, want >= 2", v)
	}
	if v := metricValue(t, h.r.reg, "scimflow_auth_access_decisions_total", map[string]string{"app": "none", "reason": access.ReasonNoApplication}); v != 2 {
		t.Errorf("no_application decisions = %v, want 2", v)
	}

	// A change of an app applies without a restart; deleting every app restores the old behaviour.
	upd := mustParseApp(t, decisionsApp)
	upd.Policies[2].Include[0].EmailDomain.Domain = "other.example"
	h.n.putApp(t, upd, h.r)
	if resp, _ := at(t, h.r, bob, "grafana.corp.example", "/", api); resp.StatusCode != 200 {
		t.Errorf("after the update bob = %d, want 200 (engineers)", resp.StatusCode)
	}
	h.n.deleteApp(t, "grafana", h.r)
	h.n.deleteApp(t, "admin", h.r)
	if resp, _ := at(t, h.r, dave, "grafana.corp.example", "/", api); resp.StatusCode != 200 || resp.Header.Get(HeaderApp) != "" {
		t.Errorf("all apps deleted: dave = %d, want 200 without an app", resp.StatusCode)
	}
}

// TestAccessIdPsAndSessionDuration covers allowed_idps (browser re-login at an allowed IdP, 403 for
// API callers) and session_duration (re-login once the session is older than the app allows).
func TestAccessIdPsAndSessionDuration(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	opB := newOP(t, h.clock, "idp-b", nil)
	h.n.putIdP(t, opB.idp)
	waitFor(t, "idp-b known", 10*time.Second, func() error {
		if _, ok := h.r.srv.idps.get("idp-b"); !ok {
			return errNotYet
		}
		return nil
	})
	h.n.putApp(t, mustParseApp(t, `{"id":"b-only","name":"B only","domain":"b.example","session_duration":"1h","allowed_idps":["idp-b"],
	  "policies":[{"name":"all","decision":"allow","precedence":1,"include":[{"everyone":{}}]}]}`), h.r)
	h.n.putApp(t, mustParseApp(t, `{"id":"any","name":"Any","domain":"any.example",
	  "policies":[{"name":"all","decision":"allow","precedence":1,"include":[{"everyone":{}}]}]}`), h.r)
	tokA := h.mustLogin(newBrowser(), h.r, "idp-a")
	tokB := h.mustLogin(newBrowser(), h.r, "idp-b")

	resp, _ := at(t, h.r, tokA, "b.example", "/x", map[string]string{"Accept": "text/html"})
	if loc, _ := url.Parse(resp.Header.Get("Location")); resp.StatusCode != 302 || loc.Query().Get("idp_id") != "idp-b" {
		t.Errorf("idp-a session, browser: %d %s, want 302 to /login?idp_id=idp-b", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := at(t, h.r, tokA, "b.example", "/x", map[string]string{"Accept": "application/json"}); resp.StatusCode != 403 || resp.Header.Get(HeaderDenyReason) != access.ReasonIdPNotAllowed {
		t.Errorf("idp-a session, API: %d %q, want 403 idp_not_allowed", resp.StatusCode, resp.Header.Get(HeaderDenyReason))
	}
	if resp, _ := at(t, h.r, tokB, "b.example", "/x", nil); resp.StatusCode != 200 {
		t.Errorf("idp-b session = %d, want 200", resp.StatusCode)
	}
	// Without a session, a browser is sent to the first allowed IdP.
	resp, _ = at(t, h.r, "", "b.example", "/x", map[string]string{"Accept": "text/html"})
	if loc, _ := url.Parse(resp.Header.Get("Location")); resp.StatusCode != 302 || loc.Query().Get("idp_id") != "idp-b" {
		t.Errorf("no session, browser: %d %s, want /login?idp_id=idp-b", resp.StatusCode, resp.Header.Get("Location"))
	}

	h.clock.Advance(61 * time.Minute)
	if resp, _ := at(t, h.r, tokB, "b.example", "/x", map[string]string{"Accept": "application/json"}); resp.StatusCode != 401 {
		t.Errorf("session older than session_duration, API = %d, want 401", resp.StatusCode)
	}
	resp, _ = at(t, h.r, tokB, "b.example", "/x", map[string]string{"Accept": "text/html"})
	if resp.StatusCode != 302 || !strings.Contains(resp.Header.Get("Location"), "idp_id=idp-b") {
		t.Errorf("session older than session_duration, browser = %d %s, want 302 to login", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := at(t, h.r, tokB, "any.example", "/", nil); resp.StatusCode != 200 {
		t.Errorf("the same session at an app without session_duration = %d, want 200", resp.StatusCode)
	}
	fresh := h.mustLogin(newBrowser(), h.r, "idp-b")
	if resp, _ := at(t, h.r, fresh, "b.example", "/x", nil); resp.StatusCode != 200 {
		t.Errorf("after a new login = %d, want 200", resp.StatusCode)
	}
	if v := metricValue(t, h.r.reg, "scimflow_auth_access_decisions_total", map[string]string{"app": "b-only", "decision": "login", "reason": access.ReasonSessionTooOld}); v != 2 {
		t.Errorf("session_duration decisions = %v, want 2", v)
	}
}

// TestAccessGroupRemovalAndLog: a SCIM group removal (an identity snapshot without the group, as
// identity-store publishes in automatic mode) turns an allow into a 403 at once; the sampled access log
// reaches the AUTH stream with one record per (session, app, reason) window.
func TestAccessGroupRemovalAndLog(t *testing.T) {
	t.Parallel()
	// automatic: only then does a snapshot reach a live session.
	h := newHarness(t, harnessOpts{idpMut: func(i *events.IdP) {
		i.SCIMConfig.Enabled, i.SCIMConfig.IdentityUpdateBehavior = true, events.UpdateAutomatic
	}})
	h.n.putApp(t, mustParseApp(t, decisionsApp), h.r)
	uid := "registry-alice"
	// SCIM knows alice in Engineering (eng) and ops: the session's groups are the SCIM groups.
	h.n.publish(t, identityEvent("idp-a", h.clock.Now(), events.Identity{UserID: uid, Email: aliceEmail, Status: events.StatusProvisioned,
		Groups: []events.Group{{ID: "g1", Name: "eng"}, {ID: "g2", Name: "ops"}}, SCIMGroups: []events.Group{{ID: "g1", Name: "eng"}, {ID: "g2", Name: "ops"}}}))
	waitFor(t, "snapshot applied", 10*time.Second, func() error {
		if _, ok := h.r.srv.state.userIDByEmail("idp-a", aliceEmail); !ok {
			return errNotYet
		}
		return nil
	})
	tok := h.mustLogin(newBrowser(), h.r, "idp-a")
	for range 3 {
		if resp, _ := at(t, h.r, tok, "grafana.corp.example", "/", nil); resp.StatusCode != 200 {
			t.Fatalf("before the removal = %d, want 200", resp.StatusCode)
		}
	}
	h.n.publish(t, identityEvent("idp-a", h.clock.Now(), events.Identity{UserID: uid, Email: aliceEmail, Status: events.StatusActive,
		Groups: []events.Group{{ID: "g2", Name: "ops"}}, SCIMGroups: []events.Group{{ID: "g2", Name: "ops"}}}))
	waitFor(t, "group removal applied", 10*time.Second, func() error {
		if resp, _ := at(t, h.r, tok, "grafana.corp.example", "/", nil); resp.StatusCode != 403 {
			return fmt.Errorf("verify = %d", resp.StatusCode)
		}
		return nil
	})
	for range 3 {
		at(t, h.r, tok, "grafana.corp.example", "/", nil)
	}
	waitFor(t, "access log records on the AUTH stream", 10*time.Second, func() error {
		var allow, deny int
		for _, e := range h.n.streamEvents(t, events.StreamAuth) {
			d, ok := e.Data.(events.AccessDecided)
			if !ok {
				continue
			}
			if d.AppID != "grafana" || d.Email != aliceEmail || d.Replica != "r1" || d.Host != "grafana.corp.example" {
				return fmt.Errorf("record %+v", d)
			}
			switch {
			case d.Decision == access.Allow && d.Reason == "engineers":
				allow++
			case d.Decision == access.Deny && d.Reason == access.ReasonNoPolicy:
				deny++
			}
		}
		if allow != 1 || deny != 1 {
			return fmt.Errorf("allow records %d, deny records %d; want 1 and 1 (sampled)", allow, deny)
		}
		return nil
	})
}

// TestAccessNotLoadedFailsClosed: before the access_apps bucket was read, /verify cannot know the
// apps and answers 503.
func TestAccessNotLoadedFailsClosed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	tok := h.mustLogin(newBrowser(), h.r, "idp-a")
	h.r.srv.apps.synced.Store(false)
	if resp, _ := at(t, h.r, tok, "x.example", "/", nil); resp.StatusCode != 503 {
		t.Errorf("apps not loaded: verify = %d, want 503", resp.StatusCode)
	}
	h.r.srv.apps.synced.Store(true)
	if resp, _ := at(t, h.r, tok, "x.example", "/", nil); resp.StatusCode != 200 {
		t.Errorf("apps loaded (none): verify = %d, want 200", resp.StatusCode)
	}
}

func TestTrustedProxiesValidation(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	c.TrustedProxies = []string{"10.0.0.0/8", "192.0.2.1", "nope", "10.0.0.0/40"}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), `"nope"`) || !strings.Contains(err.Error(), `"10.0.0.0/40"`) {
		t.Errorf("Validate() = %v, want both bad entries named", err)
	}
}
