package console

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// apiStub answers the console's in-process admin API calls with an empty list; these tests are
// about the console's own access rules (identity-store's tests drive the real API).
var apiStub = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer admin-token" {
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"success":false,"errors":[{"code":401,"message":"missing or invalid admin token"}]}`))
		return
	}
	w.Write([]byte(`{"success":true,"errors":[],"messages":[],"result":[]}`))
})

// issuer is a stand-in for auth: an ES256 key published at /certs, minting app tokens.
type issuer struct {
	srv *httptest.Server
	key *ecdsa.PrivateKey
	kid string
}

func newIssuer(t *testing.T) *issuer {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	is := &issuer{key: key, kid: "k1"}
	is.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: is.kid, Algorithm: "ES256", Use: "sig"}}})
	}))
	t.Cleanup(is.srv.Close)
	return is
}

func (is *issuer) mint(t *testing.T, key *ecdsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: is.kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	obj, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := obj.CompactSerialize()
	return tok
}

func newTestConsole(t *testing.T, is *issuer, now time.Time) *Console {
	t.Helper()
	c, err := New(Config{AdminIdP: "corp", AdminGroup: "console-admins", AuthURL: is.srv.URL, AppAudience: "console.example"},
		Backend{API: apiStub, Token: "admin-token", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAppTokenSignIn covers the reverse-proxy sign-in: only a valid app token of auth, for the
// console's audience, of a member of the console group of the console IdP, opens a session.
func TestAppTokenSignIn(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	now := time.Unix(1_800_000_000, 0)
	c := newTestConsole(t, is, now)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := func() map[string]any {
		return map[string]any{"iss": is.srv.URL, "aud": []string{"console.example"}, "type": "app", "sub": "u1", "email": "ida@corp.example",
			"groups": []string{"Console-Admins", "staff"}, "idp": map[string]string{"id": "corp", "type": "oidc"},
			"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()}
	}
	with := func(k string, v any) map[string]any {
		m := good()
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		name string
		tok  string
		want int // status of GET /ui/people
	}{
		{"member", is.mint(t, is.key, good()), http.StatusOK},
		{"forged signature", is.mint(t, other, good()), http.StatusSeeOther},
		{"not a member", is.mint(t, is.key, with("groups", []string{"staff"})), http.StatusSeeOther},
		{"other IdP", is.mint(t, is.key, with("idp", map[string]string{"id": "okta"})), http.StatusSeeOther},
		{"other audience", is.mint(t, is.key, with("aud", []string{"scimflow"})), http.StatusSeeOther},
		{"other issuer", is.mint(t, is.key, with("iss", "https://evil.example")), http.StatusSeeOther},
		{"session token type", is.mint(t, is.key, with("type", nil)), http.StatusSeeOther},
		{"expired", is.mint(t, is.key, with("exp", now.Add(-time.Minute).Unix())), http.StatusSeeOther},
		{"garbage", "not.a.token", http.StatusSeeOther},
	} {
		req := httptest.NewRequest("GET", "/ui/people", nil)
		req.Header.Set(headerAssertion, tc.tok)
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s: GET /ui/people = %d, want %d", tc.name, rec.Code, tc.want)
		}
		hasCookie := strings.Contains(rec.Header().Get("Set-Cookie"), cookieName+"=")
		if hasCookie != (tc.want == http.StatusOK) {
			t.Errorf("%s: session cookie set = %v", tc.name, hasCookie)
		}
	}
}

// TestCrossOriginPostRefused: a POST whose Origin is another site is refused even with the right
// CSRF token, and a post-sign-in redirect never leaves the console.
func TestCrossOriginPostRefused(t *testing.T) {
	t.Parallel()
	c := newTestConsole(t, newIssuer(t), time.Now())
	rec := httptest.NewRecorder()
	s := c.open(rec, httptest.NewRequest("GET", "/ui/", nil), "token", "admin token", "")
	ck := rec.Result().Cookies()[0]
	post := func(origin string) int {
		req := httptest.NewRequest("POST", "http://console.example/ui/signout", strings.NewReader(url.Values{"csrf": {s.csrf}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(ck)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, req)
		return rec.Code
	}
	if got := post("https://evil.example"); got != http.StatusForbidden {
		t.Errorf("cross-origin POST = %d, want 403", got)
	}
	if got := post("http://console.example"); got != http.StatusSeeOther {
		t.Errorf("same-origin POST = %d, want 303", got)
	}
	for in, want := range map[string]string{"/ui/people": "/ui/people", "//evil.example/ui/": "/ui/", "https://evil.example": "/ui/",
		"/ui/\\evil": "/ui/", "/api/v1/users": "/ui/"} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestOverviewPrometheus: with a Prometheus URL the overview shows revocation latency p50/p99 and the
// firing alerts (pending ones left out); a Prometheus that fails is reported on the page.
func TestOverviewPrometheus(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		switch r.URL.Path {
		case "/api/v1/query":
			v := "0.012"
			if strings.HasPrefix(r.URL.Query().Get("query"), "histogram_quantile(0.99") {
				v = "0.25"
			}
			w.Write([]byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1800000000,"` + v + `"]}]}}`))
		case "/api/v1/alerts":
			w.Write([]byte(`{"status":"success","data":{"alerts":[
				{"labels":{"alertname":"ScimflowRevocationSlow","severity":"page"},"annotations":{"summary":"p99 above 1s"},"state":"firing","activeAt":"2026-12-06T10:00:00Z"},
				{"labels":{"alertname":"ScimflowPendingOnly"},"annotations":{},"state":"pending","activeAt":"2026-12-06T10:00:00Z"}]}}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer prom.Close()
	c, err := New(Config{PrometheusURL: prom.URL}, Backend{API: apiStub, Token: "admin-token",
		Stats: func(context.Context) (Stats, error) { return Stats{}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	c.open(rec, httptest.NewRequest("GET", "/ui/", nil), "token", "admin token", "")
	ck := rec.Result().Cookies()[0]
	page := func() string {
		req := httptest.NewRequest("GET", "/ui/", nil)
		req.AddCookie(ck)
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("overview = %d", rec.Code)
		}
		return rec.Body.String()
	}
	got := page()
	for _, want := range []string{"<dd>12ms</dd>", "<dd>250ms</dd>", "ScimflowRevocationSlow", "p99 above 1s"} {
		if !strings.Contains(got, want) {
			t.Errorf("overview lacks %q", want)
		}
	}
	if strings.Contains(got, "ScimflowPendingOnly") {
		t.Errorf("overview shows a pending alert as firing")
	}
	fail.Store(true)
	if got := page(); !strings.Contains(got, "prometheus: 503") {
		t.Errorf("overview does not report the failing Prometheus")
	}
}
