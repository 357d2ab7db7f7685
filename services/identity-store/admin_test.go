package identitystore

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
	"github.com/scimflow/scimflow/internal/httpserv"
)

// api is an httptest server on the service's admin routes, with the platform's request ids.
type api struct {
	t   *testing.T
	srv *httptest.Server
}

func newAPI(t *testing.T, s *service) *api {
	srv := httptest.NewServer(httpserv.RequestID(s.routes()))
	t.Cleanup(srv.Close)
	return &api{t: t, srv: srv}
}

type response struct {
	Success    bool            `json:"success"`
	Errors     []envelopeError `json:"errors"`
	Messages   []string        `json:"messages"`
	Result     json.RawMessage `json:"result"`
	ResultInfo *resultInfo     `json:"result_info"`
	Status     int             `json:"-"`
	Header     http.Header     `json:"-"`
}

func (a *api) do(method, path, token string, body any) response {
	a.t.Helper()
	var rd io.Reader
	if s, ok := body.(string); ok {
		rd = strings.NewReader(s)
	} else if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, a.srv.URL+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer res.Body.Close()
	var r response
	raw, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(raw, &r); err != nil {
		a.t.Fatalf("%s %s: body is not JSON: %s", method, path, raw)
	}
	r.Status, r.Header = res.StatusCode, res.Header
	return r
}

func (a *api) call(method, path string, body any, want int, out any) response {
	a.t.Helper()
	r := a.do(method, path, testToken, body)
	if r.Status != want {
		a.t.Fatalf("%s %s = %d %v, want %d", method, path, r.Status, r.Errors, want)
	}
	if out != nil {
		if err := json.Unmarshal(r.Result, out); err != nil {
			a.t.Fatal(err)
		}
	}
	return r
}

func validIdP(name string) map[string]any {
	return map[string]any{
		"name": name, "type": "oidc",
		"config": map[string]any{"client_id": "cid", "client_secret": "csecret", "auth_url": "https://idp.example/authorize",
			"token_url": "https://idp.example/token", "certs_url": "https://idp.example/keys", "pkce_enabled": true,
			"claims": []string{"department"}, "scopes": []string{"openid", "email", "profile"}},
		"scim_config": map[string]any{"enabled": true, "user_deprovision": true, "seat_deprovision": true, "identity_update_behavior": "reauth"},
	}
}

// TestAdminIdentityProviders covers IdP create/read/update/delete, validation reporting every problem,
// secret handling (shown once, stored as SHA-256, redacted, rotation keeps the previous digest).
func TestAdminIdentityProviders(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.start()
	a := newAPI(t, s)

	if r := a.do("GET", "/api/v1/identity_providers", "", nil); r.Status != 401 || r.Success || len(r.Errors) != 1 {
		t.Errorf("no token: %d %+v, want 401 with one error", r.Status, r)
	}
	if r := a.do("GET", "/api/v1/identity_providers", "wrong", nil); r.Status != 401 {
		t.Errorf("wrong token: %d, want 401", r.Status)
	}
	bad := map[string]any{"name": "", "type": "saml",
		"config":      map[string]any{"client_id": "", "auth_url": "/relative", "token_url": "ftp://x", "scopes": []string{"email"}},
		"scim_config": map[string]any{"seat_deprovision": true, "identity_update_behavior": "sometimes"}}
	r := a.call("POST", "/api/v1/identity_providers", bad, 400, nil)
	var msgs []string
	for _, e := range r.Errors {
		msgs = append(msgs, e.Message)
	}
	for _, want := range []string{"name: required", "type:", "config.client_id: required", "config.client_secret: required",
		"config.auth_url:", "config.token_url:", "config.certs_url: required", "config.scopes: must contain", "identity_update_behavior:", "seat_deprovision: cannot be enabled"} {
		if !strings.Contains(strings.Join(msgs, "\n"), want) {
			t.Errorf("validation errors %q lack %q", msgs, want)
		}
	}
	if r := a.do("POST", "/api/v1/identity_providers", testToken, `{"name":"x","typo_field":1}`); r.Status != 400 {
		t.Errorf("unknown field: %d, want 400", r.Status)
	}

	var created idpView
	a.call("POST", "/api/v1/identity_providers", validIdP("Okta"), 201, &created)
	sec := created.SCIMConfig.Secret
	if !strings.HasPrefix(sec, "scim_") || len(sec) != 5+43 {
		t.Errorf("secret %q: want scim_ + 256 bits base64url", sec)
	}
	if want := "http://scim.test/populations/" + created.ID + "/scim/v2"; created.SCIMConfig.SCIMBaseURL != want {
		t.Errorf("scim_base_url = %q, want %q", created.SCIMConfig.SCIMBaseURL, want)
	}
	if created.Config.ClientSecret != Redacted {
		t.Errorf("client_secret = %q in the create response, want redacted", created.Config.ClientSecret)
	}
	stored := h.kvIdP(created.ID)
	if stored.SCIMConfig.SecretSHA256 != sha256Hex(sec) || stored.Config.ClientSecret != "csecret" {
		t.Errorf("stored IdP = %+v, want the secret's SHA-256 and the clear client secret", stored.SCIMConfig)
	}
	a.call("POST", "/api/v1/identity_providers", validIdP("okta"), 400, nil) // duplicate name, case-insensitive

	var got idpView
	a.call("GET", "/api/v1/identity_providers/"+created.ID, nil, 200, &got)
	if got.SCIMConfig.Secret != "" || got.Config.ClientSecret != Redacted || !got.SCIMConfig.SecretSet {
		t.Errorf("GET shows secret %q client_secret %q secret_set %v, want both redacted and secret_set", got.SCIMConfig.Secret, got.Config.ClientSecret, got.SCIMConfig.SecretSet)
	}
	var list []idpView
	a.call("GET", "/api/v1/identity_providers", nil, 200, &list)
	if len(list) != 1 || list[0].ID != created.ID {
		t.Errorf("list = %+v, want the one IdP", list)
	}

	upd := validIdP("Okta prod")
	upd["config"].(map[string]any)["client_secret"] = Redacted
	upd["scim_config"].(map[string]any)["identity_update_behavior"] = "automatic"
	a.call("PUT", "/api/v1/identity_providers/"+created.ID, upd, 200, &got)
	stored = h.kvIdP(created.ID)
	if stored.Name != "Okta prod" || stored.Config.ClientSecret != "csecret" || stored.SCIMConfig.IdentityUpdateBehavior != "automatic" || stored.SCIMConfig.SecretSHA256 != sha256Hex(sec) {
		t.Errorf("after PUT stored = %+v, want renamed, automatic, client secret and SCIM secret kept", stored)
	}

	var refreshed idpView
	a.call("POST", "/api/v1/identity_providers/"+created.ID+"/refresh_scim_secret", nil, 200, &refreshed)
	stored = h.kvIdP(created.ID)
	if refreshed.SCIMConfig.Secret == "" || refreshed.SCIMConfig.Secret == sec || stored.SCIMConfig.SecretSHA256 != sha256Hex(refreshed.SCIMConfig.Secret) ||
		stored.SCIMConfig.PreviousSecretSHA256 != sha256Hex(sec) || stored.SCIMConfig.SecretRotatedAt.IsZero() {
		t.Errorf("after refresh stored = %+v, want the new digest, the previous one and the rotation time", stored.SCIMConfig)
	}

	a.call("DELETE", "/api/v1/identity_providers/"+created.ID, nil, 200, nil)
	a.call("GET", "/api/v1/identity_providers/"+created.ID, nil, 404, nil)
	a.call("POST", "/api/v1/identity_providers/nope/refresh_scim_secret", nil, 404, nil)
	a.call("GET", "/api/v1/nothing", nil, 404, nil)
}

func (h *harness) kvIdP(id string) events.IdP {
	h.t.Helper()
	kv, err := h.js.KeyValue(context.Background(), broker.KVIdPConfig)
	if err != nil {
		h.t.Fatal(err)
	}
	p, _, err := getIdP(context.Background(), kv, id)
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

// TestSeedIdentityProviders: config seeds are applied at start and again without change; a pinned
// secret is stored as its digest; a bad seed fails validation.
func TestSeedIdentityProviders(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	seed := validIdP("Entra")
	seed["id"] = "entra"
	seed["scim_config"].(map[string]any)["secret"] = strings.Repeat("s", 40)
	raw, _ := json.Marshal(seed)
	h.cfg.IdentityProviders = []json.RawMessage{raw}
	h.start()
	eventually(t, "seeded", func() bool {
		kv, err := h.js.KeyValue(context.Background(), broker.KVIdPConfig)
		if err != nil {
			return false
		}
		_, _, err = getIdP(context.Background(), kv, "entra")
		return err == nil
	})
	p := h.kvIdP("entra")
	if p.SCIMConfig.SecretSHA256 != sha256Hex(strings.Repeat("s", 40)) || p.Name != "Entra" {
		t.Errorf("seeded = %+v", p)
	}
	kv, _ := h.js.KeyValue(context.Background(), broker.KVIdPConfig)
	e1, _ := kv.Get(context.Background(), "entra")
	h.stop()
	h.start()
	eventually(t, "ready", func() bool { return h.service().scim.Ready() })
	e2, _ := kv.Get(context.Background(), "entra")
	if e1.Revision() != e2.Revision() {
		t.Errorf("seeding again rewrote the IdP (revision %d → %d), want idempotent", e1.Revision(), e2.Revision())
	}
	delete(seed, "id")
	seed["scim_config"].(map[string]any)["user_deprovision"] = false
	raw, _ = json.Marshal(seed)
	cfg := DefaultConfig()
	cfg.IdentityProviders = []json.RawMessage{raw}
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "id: required") || !strings.Contains(err.Error(), "seat_deprovision") {
		t.Errorf("Validate(bad seed) = %v, want id and seat_deprovision problems", err)
	}
}

// TestAdminUsers: list and detail (sessions, history with cause, identity at a time), revoke and seat
// removal published to IDENTITY and applied from there, so a replay rebuilds them.
func TestAdminUsers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.start()
	a := newAPI(t, s)
	g := h.gen("okta")
	p := pol(events.UpdateAutomatic, true, true)
	h.publishPhased([]events.Event{
		g.ev(scimUser("u1", "ivy@example.com", "Ivy", true, 1, p)),
		g.ev(scimUser("u2", "jon@example.com", "Jon", true, 1, p)),
		g.ev(scimUser("u3", "kim@example.com", "Kim", true, 1, p)),
	})
	li := g.login("ivy@example.com", "Ivy", "sess-ivy", true)
	h.publishPhased([]events.Event{li})
	ren := scimUser("u1", "ivy@example.com", "Ivy Renamed", true, 2, p)
	renEv := g.ev(ren)
	h.publishPhased([]events.Event{renEv})

	var users []userSummary
	r := a.call("GET", "/api/v1/users?idp_id=okta&per_page=2", nil, 200, &users)
	if len(users) != 2 || r.ResultInfo.TotalCount != 3 {
		t.Errorf("page 1 = %d users of %d, want 2 of 3", len(users), r.ResultInfo.TotalCount)
	}
	first := users[0].ID
	r = a.call("GET", "/api/v1/users?idp_id=okta&per_page=2&page=2", nil, 200, &users)
	if len(users) != 1 || r.ResultInfo.TotalCount != 3 || users[0].ID == first {
		t.Errorf("page 2 = %+v of %d, want the third user of 3", users, r.ResultInfo.TotalCount)
	}
	a.call("GET", "/api/v1/users?per_page=3", nil, 200, &users)
	if len(users) != 3 {
		t.Errorf("all users = %d, want 3", len(users))
	}
	a.call("GET", "/api/v1/users?email=IVY@example.com", nil, 200, &users)
	if len(users) != 1 || users[0].Status != events.StatusActive {
		t.Fatalf("by email = %+v, want ivy, active", users)
	}
	a.call("GET", "/api/v1/users?status=provisioned", nil, 200, &users)
	if len(users) != 2 {
		t.Errorf("provisioned = %d users, want 2", len(users))
	}
	a.call("GET", "/api/v1/users?status=bogus", nil, 400, nil)
	uid := events.UserID("okta", "ivy@example.com")

	var d userDetail
	a.call("GET", "/api/v1/users/"+uid, nil, 200, &d)
	if len(d.ActiveSessions) != 1 || d.ActiveSessions[0].SessionIDHash != "sess-ivy" || !d.Seat.Held {
		t.Errorf("detail sessions %+v seat %+v, want sess-ivy and a seat", d.ActiveSessions, d.Seat)
	}
	if len(d.History) != 3 || d.History[0].Cause != renEv.CorrelationID || d.History[0].Before.Name != "Ivy" || d.History[0].After.Name != "Ivy Renamed" {
		t.Errorf("history = %+v, want 3 entries, newest the rename with its cause and before/after", d.History)
	}
	a.call("GET", "/api/v1/users/"+uid+"?at="+li.OccurredAt.Add(500*time.Millisecond).Format(time.RFC3339Nano), nil, 200, &d)
	if d.IdentityAt == nil || d.IdentityAt.Name != "Ivy" || d.IdentityAt.Status != events.StatusActive {
		t.Errorf("identity at login time = %+v, want Ivy, active", d.IdentityAt)
	}
	a.call("GET", "/api/v1/users/"+uid+"?at=2000-01-01T00:00:00Z", nil, 404, nil)
	a.call("GET", "/api/v1/users/nope", nil, 404, nil)

	var res adminActionResult
	a.call("POST", "/api/v1/users/"+uid+"/revoke", nil, 200, &res)
	if !res.Applied || len(res.EventIDs) != 1 {
		t.Errorf("revoke = %+v, want applied with one event", res)
	}
	a.call("GET", "/api/v1/users/"+uid, nil, 200, &d)
	if len(d.ActiveSessions) != 0 || d.RevokedBefore == nil || !d.Seat.Held {
		t.Errorf("after revoke sessions %v revoked_before %v seat %v, want none, set, seat kept", d.ActiveSessions, d.RevokedBefore, d.Seat.Held)
	}
	a.call("DELETE", "/api/v1/users/"+uid+"/seat", nil, 200, &res)
	a.call("GET", "/api/v1/users/"+uid, nil, 200, &d)
	if d.Seat.Held || d.Status != events.StatusInactive {
		t.Errorf("after seat removal seat %v status %s, want no seat, inactive", d.Seat.Held, d.Status)
	}
	var types []string
	for _, e := range h.streamEvents(events.StreamIdentity) {
		if isAdminEvent(e) {
			types = append(types, e.Type)
		}
	}
	if want := []string{events.TypeSessionsRevoked, events.TypeSessionsRevoked, events.TypeSeatRemoved}; !cmp.Equal(types, want) {
		t.Errorf("admin events on IDENTITY = %v, want %v", types, want)
	}
	if got := h.metric("scimflow_identity_store_revocations_total", "reason", "admin"); got != 1 {
		t.Errorf("revocations_total{reason=admin} = %v, want 1", got)
	}
	// Both revocations (revoke, seat removal) also went on the priority lane, ahead of any IDENTITY
	// backlog: same user and revoked_before as the ordered copy, a different event id.
	ordered := map[time.Time]string{}
	for _, e := range h.streamEvents(events.StreamIdentity) {
		if p, ok := e.Data.(events.SessionsRevoked); ok && isAdminEvent(e) {
			ordered[p.RevokedBefore] = e.ID
		}
	}
	var prio int
	for _, e := range h.streamEvents(events.StreamIdentityPriority) {
		p, ok := e.Data.(events.SessionsRevoked)
		if !ok || p.UserID != uid {
			t.Errorf("priority lane carries %s %+v, want only the user's revocations", e.Type, e.Data)
			continue
		}
		if id, ok := ordered[p.RevokedBefore]; !ok || id == e.ID {
			t.Errorf("priority revocation %s at %v: ordered copy %q, want one with another id", e.ID, p.RevokedBefore, id)
		}
		prio++
	}
	if prio != 2 {
		t.Errorf("priority revocations = %d, want 2 (revoke, seat removal)", prio)
	}
	h.oracle()
}

// TestSCIMLogs: the provisioning log with Cloudflare's filters, and retention by event time.
func TestSCIMLogs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.cfg.SCIMLogRetention = 3600e9 // 1h
	s := h.start()
	a := newAPI(t, s)
	g := h.gen("okta")
	old := g.ev(events.SCIMLog{RequestID: "r0", Method: "POST", ResourceType: "USER", ResourceUserEmail: "old@example.com", Status: events.LogSuccess, HTTPStatus: 201})
	h.publish(old)
	g.clock.Add(7200) // two hours later
	rows := []events.Event{
		g.ev(events.SCIMLog{RequestID: "r1", Method: "POST", ResourceType: "USER", ResourceID: "u1", ResourceUserEmail: "Lea@Example.com", Status: events.LogSuccess, HTTPStatus: 201, RequestBody: json.RawMessage(`{"userName":"lea@example.com"}`)}),
		g.ev(events.SCIMLog{RequestID: "r2", Method: "POST", ResourceType: "USER", ResourceUserEmail: "lea@example.com", Status: events.LogError, HTTPStatus: 409, ErrorDescription: "uniqueness"}),
		g.ev(events.SCIMLog{RequestID: "r3", Method: "PATCH", ResourceType: "GROUP", ResourceID: "g1", ResourceGroupName: "Eng", Status: events.LogSuccess, HTTPStatus: 204}),
		h.gen("entra").ev(events.SCIMLog{RequestID: "r4", Method: "DELETE", ResourceType: "USER", ResourceUserEmail: "max@example.com", Status: events.LogSuccess, HTTPStatus: 204}),
	}
	h.publish(rows...)
	h.caughtUp()
	var got []logView
	reqIDs := func() []string {
		var out []string
		for _, l := range got {
			out = append(out, l.RequestID)
		}
		return out
	}
	cases := []struct {
		query string
		want  []string
	}{
		{"", []string{"r4", "r3", "r2", "r1"}}, // r0 pruned: older than the retention at r1's time
		{"?direction=asc", []string{"r1", "r2", "r3", "r4"}},
		{"?idp_id=okta", []string{"r3", "r2", "r1"}},
		{"?idp_id=okta,entra&limit=2", []string{"r4", "r3"}},
		{"?status=ERROR", []string{"r2"}},
		{"?resource_type=group", []string{"r3"}},
		{"?request_method=POST&status=SUCCESS", []string{"r1"}},
		{"?resource_user_email=LEA@example.com", []string{"r2", "r1"}},
		{"?resource_group_name=eng", []string{"r3"}},
		{"?cf_resource_id=u1", []string{"r1"}},
		{"?since=" + rows[1].OccurredAt.Format(time.RFC3339) + "&until=" + rows[2].OccurredAt.Format(time.RFC3339), []string{"r3", "r2"}},
	}
	for _, c := range cases {
		got = nil
		a.call("GET", "/api/v1/logs/scim"+c.query, nil, 200, &got)
		if diff := cmp.Diff(c.want, reqIDs()); diff != "" {
			t.Errorf("GET /api/v1/logs/scim%s (-want +got):\n%s", c.query, diff)
		}
	}
	a.call("GET", "/api/v1/logs/scim?idp_id=okta&cf_resource_id=u1", nil, 200, &got)
	if len(got) != 1 || got[0].RequestBody != `{"userName":"lea@example.com"}` || got[0].ResourceUserEmail != "lea@example.com" {
		t.Errorf("row = %+v, want request_body as a JSON string and the lower-cased email", got)
	}
	r := a.do("GET", "/api/v1/logs/scim?since=yesterday&limit=0&direction=up", testToken, nil)
	if r.Status != 400 || len(r.Errors) != 3 {
		t.Errorf("bad filters: %d %+v, want 400 with three errors", r.Status, r.Errors)
	}
	h.oracle()
}

// TestGeneratedAdminToken: with no admin_token configured, one is generated into
// <data_dir>/admin_token (0600) and reused at the next start.
func TestGeneratedAdminToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.DataDir = dir
	tok, err := adminToken(cfg, Deps{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "admin_token"))
	if err != nil || st.Mode().Perm() != 0o600 || len(tok) != 64 {
		t.Fatalf("token file %v %v, token length %d: want 0600 and 64 hex digits", st, err, len(tok))
	}
	again, _ := adminToken(cfg, Deps{Logger: quietLog})
	if again != tok {
		t.Error("a second start generated another token")
	}
	cfg.AdminToken = "configured"
	if got, _ := adminToken(cfg, Deps{}); got != "configured" {
		t.Errorf("configured token ignored: %q", got)
	}
}
