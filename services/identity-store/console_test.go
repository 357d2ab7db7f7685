package identitystore

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
)

// TestUsersSearchQ covers the q parameter of GET /api/v1/users: a case-insensitive prefix of the
// email or of the name (whole or any word), combined with the IdP and status filters, paged.
func TestUsersSearchQ(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.start()
	a := newAPI(t, s)
	okta, entra := h.gen("okta"), h.gen("entra")
	p := pol(events.UpdateAutomatic, true, false)
	h.publish(
		okta.ev(scimUser("u1", "lena.schmidt@example.com", "Lena Schmidt", true, 1, p)),
		okta.ev(scimUser("u2", "lars@example.com", "Lars Berg", true, 1, p)),
		okta.ev(scimUser("u3", "anna@example.com", "Anna Lenz", true, 1, p)),
		entra.ev(scimUser("e1", "lena.schmidt@example.com", "Lena Schmidt", true, 1, p)),
		okta.login("lars@example.com", "Lars Berg", "s1", true),
	)
	h.caughtUp()
	emails := func(q string) []string {
		t.Helper()
		var out []userSummary
		a.call("GET", "/api/v1/users?"+q, nil, 200, &out)
		var got []string
		for _, u := range out {
			got = append(got, u.IdPID+":"+u.Email)
		}
		return got
	}
	for _, tc := range []struct {
		q    string
		want []string
	}{
		{"q=LENA", []string{"entra:lena.schmidt@example.com", "okta:lena.schmidt@example.com"}},
		{"q=len", []string{"okta:anna@example.com", "entra:lena.schmidt@example.com", "okta:lena.schmidt@example.com"}}, // "Lenz" by name
		{"q=schm", []string{"entra:lena.schmidt@example.com", "okta:lena.schmidt@example.com"}},
		{"q=lena+sch", []string{"entra:lena.schmidt@example.com", "okta:lena.schmidt@example.com"}},
		{"q=l&idp_id=okta", []string{"okta:anna@example.com", "okta:lars@example.com", "okta:lena.schmidt@example.com"}},
		{"q=l&idp_id=okta&status=active", []string{"okta:lars@example.com"}},
		{"q=zzz", nil},
	} {
		if got := emails(tc.q); !cmp.Equal(got, tc.want) {
			t.Errorf("GET /api/v1/users?%s = %v, want %v", tc.q, got, tc.want)
		}
	}
	r := a.call("GET", "/api/v1/users?q=l&per_page=1&page=2", nil, 200, nil)
	if r.ResultInfo.TotalCount != 4 || r.ResultInfo.Count != 1 {
		t.Errorf("q=l page 2 of 1: result_info %+v, want total 4, count 1", r.ResultInfo)
	}
	if r := a.do("GET", "/api/v1/users?q="+strings.Repeat("x", maxQueryLen+1), testToken, nil); r.Status != 400 {
		t.Errorf("over-long q: %d, want 400", r.Status)
	}
	// A rename moves the name index entries.
	h.publish(okta.ev(scimUser("u3", "anna@example.com", "Anna Berg", true, 2, p)))
	h.caughtUp()
	if got := emails("q=lenz"); got != nil {
		t.Errorf("after rename, q=lenz = %v, want none", got)
	}
	if got := emails("q=berg"); !cmp.Equal(got, []string{"okta:anna@example.com", "okta:lars@example.com"}) {
		t.Errorf("after rename, q=berg = %v", got)
	}
}

// browser is a cookie-keeping client of the console that does not follow redirects.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newBrowser(t *testing.T, base string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: base, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) do(method, path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, b.base+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res, string(raw)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in page:\n%s", page)
	}
	return m[1]
}

// signIn signs b in with token and returns the session's CSRF token.
func (b *browser) signIn(token string) (*http.Response, string) {
	b.t.Helper()
	_, page := b.do("GET", "/ui/signin", nil)
	return b.do("POST", "/ui/signin", url.Values{"csrf": {csrfOf(b.t, page)}, "token": {token}, "next": {"/ui/people"}})
}

// TestConsoleSignInAndGuards covers the console's access rules: redirect or 401 without a session, the
// admin token sign-in and its cookie, the cookie not opening /api/*, CSRF refusal, security headers.
func TestConsoleSignInAndGuards(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	base := "http://" + h.addr
	b := newBrowser(t, base)

	if res, _ := b.do("GET", "/ui/people?q=x", nil); res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/signin?next=%2Fui%2Fpeople%3Fq%3Dx" {
		t.Errorf("GET /ui/people without session = %d %q, want 303 to the sign-in page", res.StatusCode, res.Header.Get("Location"))
	}
	if res, _ := b.do("POST", "/ui/people/x/revoke", url.Values{"csrf": {"x"}}); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST without session = %d, want 401", res.StatusCode)
	}
	res, page := b.do("GET", "/ui/signin", nil)
	for k, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"} {
		if got := res.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") ||
		!strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy = %q, want self-only scripts and no framing", csp)
	}
	if strings.Contains(page, "<script>") || strings.Contains(page, " style=") || strings.Contains(page, "onclick") {
		t.Errorf("sign-in page has inline script or style")
	}
	// Sign-in without the form's CSRF token (another site posting the token form) is refused.
	if res, _ := b.do("POST", "/ui/signin", url.Values{"csrf": {"forged"}, "token": {testToken}}); res.StatusCode != http.StatusForbidden {
		t.Errorf("sign-in with a forged CSRF token = %d, want 403", res.StatusCode)
	}
	if res, page := b.signIn("wrong"); res.StatusCode != http.StatusUnauthorized || !strings.Contains(page, "not the admin token") {
		t.Errorf("wrong token = %d, want 401 with a message", res.StatusCode)
	}
	res, _ = b.signIn(testToken)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/people" {
		t.Fatalf("sign-in = %d %q, want 303 to next", res.StatusCode, res.Header.Get("Location"))
	}
	i := slices.IndexFunc(res.Cookies(), func(c *http.Cookie) bool { return c.Name == "scimflow_console" })
	if i < 0 {
		t.Fatalf("sign-in set no session cookie: %v", res.Cookies())
	}
	ck := res.Cookies()[i]
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/ui/" || ck.Secure || len(ck.Value) < 40 {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/ui/, not Secure over http, 256 random bits", ck)
	}
	// The console cookie opens no API endpoint, even sent explicitly.
	req, _ := http.NewRequest("GET", base+"/api/v1/users", nil)
	req.AddCookie(ck)
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /api/v1/users with the console cookie = %v %v, want 401", r.StatusCode, err)
	}
	eventually(t, "consumers set up", func() bool { s := h.service(); return s.scim.Ready() && s.auth.Ready() && s.ident.Ready() })
	res, page = b.do("GET", "/ui/", nil)
	if res.StatusCode != 200 || !strings.Contains(page, "Pipeline") || !strings.Contains(page, "identitystore-scim") {
		t.Fatalf("overview = %d, want 200 with the pipeline's consumers:\n%s", res.StatusCode, page)
	}
	csrf := csrfOf(t, page)
	// State-changing forms need the session's CSRF token; a same-site form without it is refused.
	if res, _ := b.do("POST", "/ui/idps", url.Values{"name": {"x"}}); res.StatusCode != http.StatusForbidden {
		t.Errorf("create IdP without CSRF token = %d, want 403", res.StatusCode)
	}
	if res, _ := b.do("POST", "/ui/idps", url.Values{"name": {"x"}, "csrf": {csrf + "x"}}); res.StatusCode != http.StatusForbidden {
		t.Errorf("create IdP with a wrong CSRF token = %d, want 403", res.StatusCode)
	}
	// Sign-out ends the session server-side: the old cookie no longer opens pages.
	if res, _ := b.do("POST", "/ui/signout", url.Values{"csrf": {csrf}}); res.StatusCode != http.StatusSeeOther {
		t.Errorf("sign-out = %d, want 303", res.StatusCode)
	}
	req, _ = http.NewRequest("GET", base+"/ui/", nil)
	req.AddCookie(ck)
	if r, err := http.DefaultTransport.RoundTrip(req); err != nil || r.StatusCode != http.StatusSeeOther {
		t.Errorf("old cookie after sign-out: %v %v, want 303 to sign-in", r.StatusCode, err)
	}
}

// TestConsolePages walks the pages with the admin token: create an IdP through the form (validation
// messages next to fields first), see the secret once, find a person, revoke them, and see the
// revocation in the history and from the provisioning log's "what it caused" page.
func TestConsolePages(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	b := newBrowser(t, "http://"+h.addr)
	b.signIn(testToken)
	_, page := b.do("GET", "/ui/idps/new", nil)
	csrf := csrfOf(t, page)

	form := url.Values{"csrf": {csrf}, "name": {"Okta"}, "client_id": {"cid"}, "auth_url": {"/relative"}, "scopes": {"email"},
		"scim_enabled": {"on"}, "seat_deprovision": {"on"}, "identity_update_behavior": {"no_action"}}
	res, page := b.do("POST", "/ui/idps", form)
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("invalid IdP form = %d, want 400", res.StatusCode)
	}
	for field, msg := range map[string]string{"client_secret": "required", "auth_url": "not an absolute", "scopes": "must contain",
		"seat_deprovision": "cannot be enabled", "token_url": "required unless"} {
		if !regexp.MustCompile(`id="` + field + `-err"><ul class="field-errors"><li>[^<]*` + regexp.QuoteMeta(msg)).MatchString(page) {
			t.Errorf("form page lacks %q next to %s", msg, field)
		}
	}
	if !strings.Contains(page, `value="Okta"`) {
		t.Errorf("the refused form lost what was typed")
	}
	form.Set("client_secret", "s3cret")
	form.Set("issuer", "https://idp.example")
	form.Set("auth_url", "")
	form.Set("scopes", "openid email")
	form.Set("user_deprovision", "on")
	res, page = b.do("POST", "/ui/idps", form)
	secret := regexp.MustCompile(`id="scim-secret" class="secret">(scim_[^<]+)<`).FindStringSubmatch(page)
	if res.StatusCode != 200 || secret == nil {
		t.Fatalf("create IdP = %d, want the secret page:\n%s", res.StatusCode, page)
	}
	var idps []idpView
	newAPI(t, h.service()).call("GET", "/api/v1/identity_providers", nil, 200, &idps)
	if len(idps) != 1 || idps[0].Name != "Okta" || !idps[0].SCIMConfig.UserDeprovision || h.kvIdP(idps[0].ID).SCIMConfig.SecretSHA256 != sha256Hex(secret[1]) {
		t.Fatalf("IdPs after the form = %+v, want Okta with the shown secret", idps)
	}
	idp := idps[0].ID
	// The secret is shown once: the IdP page does not have it.
	if _, page := b.do("GET", "/ui/idps/"+idp, nil); strings.Contains(page, secret[1]) {
		t.Errorf("the IdP page shows the SCIM secret again")
	}

	g := h.gen(idp)
	p := pol(events.UpdateNoAction, true, false)
	h.publish(g.ev(scimUser("u1", "lena@example.com", "Lena Schmidt", true, 1, p)), g.login("lena@example.com", "Lena Schmidt", "sess1", true))
	h.caughtUp()
	_, page = b.do("GET", "/ui/people?q=schm", nil)
	uid := events.UserID(idp, "lena@example.com")
	if !strings.Contains(page, `href="/ui/people/`+uid+`">lena@example.com`) || !strings.Contains(page, "1–1 of 1") {
		t.Fatalf("people search for schm lacks Lena:\n%s", page)
	}
	// Revoke: a confirmation page first, then the action.
	_, page = b.do("GET", "/ui/people/"+uid+"/revoke", nil)
	if !strings.Contains(page, "Revoke sessions for <strong>lena@example.com") {
		t.Fatalf("no confirmation page:\n%s", page)
	}
	res, _ = b.do("POST", "/ui/people/"+uid+"/revoke", url.Values{"csrf": {csrfOf(t, page)}})
	if res.StatusCode != http.StatusSeeOther || !strings.Contains(res.Header.Get("Location"), "state=done") {
		t.Fatalf("revoke = %d %q, want 303 back to the person, done", res.StatusCode, res.Header.Get("Location"))
	}
	if u := h.userByEmail(idp, "lena@example.com"); u.RevokedBefore.IsZero() {
		t.Errorf("revoke through the console left revoked_before unset")
	}
	// Reset the OIDC sub binding, also confirmed first.
	_, page = b.do("GET", "/ui/people/"+uid+"/reset-sub", nil)
	res, _ = b.do("POST", "/ui/people/"+uid+"/reset-sub", url.Values{"csrf": {csrfOf(t, page)}})
	if res.StatusCode != http.StatusSeeOther || !strings.Contains(res.Header.Get("Location"), "state=done") {
		t.Fatalf("reset sub = %d %q, want 303 back to the person, done", res.StatusCode, res.Header.Get("Location"))
	}
	_, page = b.do("GET", "/ui/people/"+uid, nil)
	if !strings.Contains(page, "identity.user.sub_reset") {
		t.Errorf("person page lacks the sub reset in the history")
	}
	if !strings.Contains(page, "identity.user.sessions_revoked") || !strings.Contains(page, "cause: <code>admin-") {
		t.Errorf("person page lacks the revocation in the history:\n%s", page)
	}

	// Deactivation over SCIM: the log row links to what it caused, including the revocation.
	deact := g.ev(scimUser("u1", "lena@example.com", "Lena Schmidt", false, 2, p))
	logEv := events.New(idp, deact.OccurredAt, deact.CorrelationID, "", events.SCIMLog{RequestID: deact.CorrelationID, Method: "PATCH",
		Path: "/Users/u1", ResourceType: "USER", ResourceID: "u1", ResourceUserEmail: "lena@example.com", Status: "SUCCESS", HTTPStatus: 200,
		RequestBody: []byte(`{"Operations":[{"op":"replace","path":"active","value":false}]}`)})
	h.publish(deact, logEv)
	h.caughtUp()
	_, page = b.do("GET", "/ui/logs?idp_id="+idp, nil)
	link := regexp.MustCompile(`href="(/ui/logs/caused\?[^"]+)">What it caused`).FindStringSubmatch(page)
	if link == nil || !strings.Contains(page, "1–1 of 1 requests") || !strings.Contains(page, "PATCH <code>/Users/u1</code>") || !strings.Contains(page, "&#34;active&#34;") {
		t.Fatalf("log page lacks the PATCH row, its body or its link:\n%s", page)
	}
	_, page = b.do("GET", strings.ReplaceAll(link[1], "&amp;", "&"), nil)
	if !strings.Contains(page, "identity.user.sessions_revoked (deprovisioned)") || !strings.Contains(page, "sessions revoked: deprovisioned") {
		t.Errorf("caused page lacks the revocation:\n%s", page)
	}
	// The deactivation locked Lena; the person page offers Unlock, behind a confirmation.
	if !h.userByEmail(idp, "lena@example.com").Locked {
		t.Fatalf("deactivation did not lock Lena")
	}
	_, page = b.do("GET", "/ui/people/"+uid, nil)
	if !strings.Contains(page, `href="/ui/people/`+uid+`/unlock"`) {
		t.Errorf("person page of a locked user lacks Unlock")
	}
	_, page = b.do("GET", "/ui/people/"+uid+"/unlock", nil)
	if res, _ := b.do("POST", "/ui/people/"+uid+"/unlock", url.Values{"csrf": {csrfOf(t, page)}}); res.StatusCode != http.StatusSeeOther {
		t.Errorf("unlock = %d, want 303", res.StatusCode)
	}
	if h.userByEmail(idp, "lena@example.com").Locked {
		t.Errorf("Lena still locked after the console's unlock")
	}
	_, page = b.do("GET", "/ui/", nil)
	if !strings.Contains(page, "200 SUCCESS</span> PATCH") {
		t.Errorf("overview lacks the last SCIM request:\n%s", page)
	}
}

// TestBackfillIndexes: a registry file written before the search indexes existed gets them at open,
// so name search, the status filter and the overview's locked count cover its old users.
func TestBackfillIndexes(t *testing.T) {
	t.Parallel()
	db, err := openStore(filepath.Join(t.TempDir(), "old.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	u := user{ID: "u1", IdPID: "okta", Email: "lena@example.com", Name: "Lena Schmidt", Locked: true, CreatedAt: epoch, UpdatedAt: epoch}
	err = db.Update(func(tx *bolt.Tx) error { return putJSON(tx, bkUsers, []byte(u.ID), u) })
	if err != nil {
		t.Fatal(err)
	}
	if err := backfillIndexes(db); err != nil {
		t.Fatal(err)
	}
	if err := backfillIndexes(db); err != nil { // idempotent: a second open changes nothing
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		hits, err := searchUsers(tx, "schm", "")
		if err != nil || len(hits) != 1 || hits[0] != (searchHit{"lena@example.com", "okta", "u1"}) {
			t.Errorf("searchUsers(schm) after backfill = %v %v, want u1", hits, err)
		}
		if tx.Bucket([]byte(bkStatus)).Get(key(events.StatusProvisioned, "okta", "u1")) == nil {
			t.Errorf("status index lacks u1 after backfill")
		}
		if v := tx.Bucket([]byte(bkStats)).Get([]byte(statLocked("okta"))); len(v) != 8 || v[7] != 1 {
			t.Errorf("locked counter after backfill = %v, want 1", v)
		}
		return nil
	})
}

// TestConsoleAccess edits an access application through the console: a policy the API refuses shows
// its message next to the policies field, "Test" evaluates the unsaved application against the
// registry, "Save" creates it, and the access page lists it.
func TestConsoleAccess(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	g := h.gen("okta")
	p := pol(events.UpdateNoAction, true, false)
	h.publish(g.ev(scimUser("u1", "lena@example.com", "Lena Schmidt", true, 1, p)), g.login("lena@example.com", "Lena Schmidt", "s1", true, "Engineering"))
	h.caughtUp()
	b := newBrowser(t, "http://"+h.addr)
	b.signIn(testToken)
	_, page := b.do("GET", "/ui/access/new", nil)
	form := url.Values{"csrf": {csrfOf(t, page)}, "name": {"Grafana"}, "domain": {"grafana.corp.example"},
		"policies": {`[{"name":"eng","decision":"allow","precedence":1,"include":[{"groop":{"name":"Engineering"}}]}]`}, "action": {"save"}}
	res, page := b.do("POST", "/ui/access", form)
	if res.StatusCode != http.StatusBadRequest || !regexp.MustCompile(`id="policies-err"><ul class="field-errors"><li>policies\[0\]`).MatchString(page) {
		t.Fatalf("bad policy = %d, want 400 with the message next to policies:\n%s", res.StatusCode, page)
	}
	form.Set("policies", `[{"name":"eng","decision":"allow","precedence":1,"include":[{"email":{"email":"lena@example.com"}}]}]`)
	form.Set("action", "test")
	form.Set("test_emails", "lena@example.com, nobody@example.com")
	res, page = b.do("POST", "/ui/access", form)
	if res.StatusCode != 200 || !strings.Contains(page, "Test result (not saved)") || !strings.Contains(page, `<th scope="row">lena@example.com</th><td class="ok">allow</td>`) {
		t.Fatalf("test = %d, want Lena allowed:\n%s", res.StatusCode, page)
	}
	if _, page := b.do("GET", "/ui/access", nil); strings.Contains(page, "Grafana") {
		t.Fatalf("testing saved the application")
	}
	form.Set("action", "save")
	res, _ = b.do("POST", "/ui/access", form)
	if res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(res.Header.Get("Location"), "/ui/access/") {
		t.Fatalf("save = %d %q, want 303 to the application", res.StatusCode, res.Header.Get("Location"))
	}
	if _, page := b.do("GET", "/ui/access", nil); !strings.Contains(page, "grafana.corp.example") {
		t.Errorf("access page lacks the saved application:\n%s", page)
	}
	if res, _ := b.do("GET", "/ui/access/log", nil); res.StatusCode != 200 {
		t.Errorf("access log page = %d", res.StatusCode)
	}
}
