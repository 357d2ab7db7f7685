package oidctest

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

const (
	testClientID = "scimflow"
	// testSecret is shorter than 32 bytes on purpose: go-jose refuses such HS256 keys, the
	// provider's HS256 forgery must not.
	testSecret   = "s3cret"
	testRedirect = "https://rp.example.com/callback"
)

func testOptions() Options {
	return Options{ClientID: testClientID, ClientSecret: testSecret, RedirectURIs: []string{testRedirect}}
}

// newTestProvider serves a provider through httptest, the in-process path auth's tests use,
// with users alice (default, with nested claims), bob and a denied mallory.
func newTestProvider(t *testing.T, opts Options) *Provider {
	t.Helper()
	p, err := New(opts)
	if err != nil {
		t.Fatalf("New(%+v) = %v", opts, err)
	}
	srv := httptest.NewServer(p.Handler())
	t.Cleanup(srv.Close)
	if err := p.SetIssuer(srv.URL); err != nil {
		t.Fatalf("SetIssuer(%q) = %v", srv.URL, err)
	}
	for _, u := range testUsers() {
		if err := p.AddUser(u); err != nil {
			t.Fatalf("AddUser(%+v) = %v", u, err)
		}
	}
	if err := p.DenyUser("mallory"); err != nil {
		t.Fatalf("DenyUser(mallory) = %v", err)
	}
	return p
}

func testUsers() []User {
	return []User{
		{
			Sub: "alice", Email: "alice@example.com", Name: "Alice", Groups: []string{"eng", "Admins"},
			Claims: map[string]any{
				"department": "R&D",
				"roles":      []any{"viewer", "editor"},
				"org":        map[string]any{"unit": map[string]any{"id": 7, "path": []any{"a", "b"}}},
			},
		},
		{Sub: "bob", Email: "bob@example.com", Name: "Bob"},
		{Sub: "mallory", Email: "mallory@example.com"},
	}
}

// rp is a minimal relying party built the way docs/design.md §8 tells auth to build one:
// discovery, PKCE S256, state, nonce, and a verifier limited to scimflow's algorithms.
type rp struct {
	p        *Provider
	op       *oidc.Provider
	cfg      oauth2.Config
	verifier *oidc.IDTokenVerifier
	browser  *http.Client
}

func newRP(t *testing.T, p *Provider, clientID, secret string) *rp {
	t.Helper()
	op, err := oidc.NewProvider(t.Context(), p.Issuer())
	if err != nil {
		t.Fatalf("oidc.NewProvider(%q) = %v", p.Issuer(), err)
	}
	return &rp{
		p:  p,
		op: op,
		cfg: oauth2.Config{
			ClientID: clientID, ClientSecret: secret, Endpoint: op.Endpoint(), RedirectURL: testRedirect,
			Scopes: []string{oidc.ScopeOpenID, "email", "profile", "groups"},
		},
		verifier: op.Verifier(&oidc.Config{ClientID: clientID, SupportedSigningAlgs: SupportedAlgs()}),
		browser: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
	}
}

// login is one login transaction as the relying party remembers it, plus the callback.
type login struct {
	state, nonce, pkce string
	callback           url.Values
}

// authorize runs the front channel and returns the callback parameters.
func (r *rp) authorize(t *testing.T, opts ...oauth2.AuthCodeOption) login {
	t.Helper()
	l := login{state: rand.Text(), nonce: rand.Text(), pkce: oauth2.GenerateVerifier()}
	opts = append([]oauth2.AuthCodeOption{oauth2.S256ChallengeOption(l.pkce), oidc.Nonce(l.nonce)}, opts...)
	l.callback = r.follow(t, r.cfg.AuthCodeURL(l.state, opts...))
	return l
}

// follow requests an authorization URL and returns the query of the redirect to the RP.
func (r *rp) follow(t *testing.T, authURL string) url.Values {
	t.Helper()
	resp, err := r.browser.Get(authURL)
	if err != nil {
		t.Fatalf("GET %s = %v", authURL, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("GET %s status = %d, want 302", authURL, resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatalf("parse Location: %v", err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != testRedirect {
		t.Fatalf("redirect to %s, want %s", got, testRedirect)
	}
	return loc.Query()
}

// exchange redeems the login's code with its PKCE verifier.
func (r *rp) exchange(t *testing.T, l login, opts ...oauth2.AuthCodeOption) (*oauth2.Token, error) {
	t.Helper()
	code := l.callback.Get("code")
	if code == "" {
		t.Fatalf("callback %v has no code", l.callback)
	}
	opts = append([]oauth2.AuthCodeOption{oauth2.VerifierOption(l.pkce)}, opts...)
	return r.cfg.Exchange(t.Context(), code, opts...)
}

// loginToken runs a whole login and returns the token response, failing on any error.
func (r *rp) loginToken(t *testing.T) (login, *oauth2.Token, string) {
	t.Helper()
	l := r.authorize(t)
	tok, err := r.exchange(t, l)
	if err != nil {
		t.Fatalf("Exchange = %v", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	return l, tok, raw
}

func oauthErrorCode(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

// jwtParts decodes a compact token without verifying it: the header, the claims (nil if
// they are not a JSON object) and the raw payload bytes.
func jwtParts(t *testing.T, raw string) (header, claims map[string]any, payload []byte) {
	t.Helper()
	parts := strings.SplitN(raw, ".", 3)
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	h, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatalf("decode header: %v", err)
	}
	if err := json.Unmarshal(h, &header); err != nil {
		t.Fatalf("unmarshal header: %v", err)
	}
	payload, err = base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("decode payload: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if dec.Decode(&claims) != nil {
		claims = nil
	}
	return header, claims, payload
}

func claimInt(t *testing.T, claims map[string]any, name string) int64 {
	t.Helper()
	n, ok := claims[name].(json.Number)
	if !ok {
		t.Fatalf("claim %s = %#v, want a number", name, claims[name])
	}
	v, err := n.Int64()
	if err != nil {
		t.Fatalf("claim %s: %v", name, err)
	}
	return v
}

// fakeClock is an injectable clock for expiry boundaries; it moves only when told.
type fakeClock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
