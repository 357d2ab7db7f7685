package scenario

import (
	"context"
	"net/http"
	"testing"
)

// TestVerifyRequest checks the forward-auth subrequests against docs/reverse-proxies.md: what each
// proxy sends decides between 401 and 302 and which original URL the login returns to.
func TestVerifyRequest(t *testing.T) {
	t.Parallel()
	const app = "https://app.example.com/a/b?x=1"
	for _, c := range []struct {
		p                   Proxy
		wantURL, wantAccept string
		wantHeaders         map[string]string
	}{
		{Nginx, "http://auth:8082/verify?redirect=false", "text/html,application/xhtml+xml",
			map[string]string{"X-Original-Url": app, "X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "/a/b?x=1", "X-Forwarded-Proto": "https"}},
		{NginxLogin, "http://auth:8082/verify", "text/html,application/xhtml+xml", map[string]string{"X-Original-Url": app}},
		{Traefik, "http://auth:8082/verify", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
			map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "/a/b?x=1", "X-Forwarded-Proto": "https"}},
		{Caddy, "http://auth:8082/verify", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
			map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Host": "app.example.com"}},
		{API, "http://auth:8082/verify", "application/json", map[string]string{"X-Forwarded-Host": "app.example.com"}},
	} {
		r, err := VerifyRequest(context.Background(), "http://auth:8082/", "tok", "", c.p, app)
		if err != nil {
			t.Fatalf("VerifyRequest(%s) = %v", c.p, err)
		}
		if r.URL.String() != c.wantURL || r.Header.Get("Accept") != c.wantAccept || r.Header.Get("Cookie") != "scimflow_session=tok" {
			t.Errorf("VerifyRequest(%s) = %s Accept %q Cookie %q, want %s Accept %q and the session cookie",
				c.p, r.URL, r.Header.Get("Accept"), r.Header.Get("Cookie"), c.wantURL, c.wantAccept)
		}
		for k, v := range c.wantHeaders {
			if got := r.Header.Get(k); got != v {
				t.Errorf("VerifyRequest(%s) %s = %q, want %q", c.p, k, got, v)
			}
		}
	}
	if r, _ := VerifyRequest(context.Background(), "http://auth", "", "", API, app); r.Header.Get("Cookie") != "" {
		t.Errorf("VerifyRequest without a session sends Cookie %q, want none", r.Header.Get("Cookie"))
	}
}

// TestResultErr checks that Result.Err accepts any 2xx by default and only the listed statuses
// otherwise.
func TestResultErr(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		status int
		want   []int
		ok     bool
	}{
		{http.StatusNoContent, nil, true},
		{http.StatusConflict, nil, false},
		{http.StatusOK, []int{http.StatusCreated}, false},
		{http.StatusCreated, []int{http.StatusCreated}, true},
	} {
		if err := (Result{Status: c.status}).Err(c.want...); (err == nil) != c.ok {
			t.Errorf("Result{%d}.Err(%v) = %v, want ok %v", c.status, c.want, err, c.ok)
		}
	}
}
