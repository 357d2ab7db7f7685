package scenario

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"time"
)

// Browser is a person's browser: a cookie jar and a client that does not follow redirects, so
// each hop of a login is visible. It logs in through auth's /login → the OpenID provider's
// /authorize → auth's /callback.
type Browser struct {
	// AuthURL is auth's external URL, e.g. "http://127.0.0.1:8082".
	AuthURL string
	// SessionCookieName is the session cookie's name. Default "scimflow_session".
	SessionCookieName string

	jar *cookiejar.Jar
	c   *http.Client
}

// NewBrowser returns a browser with an empty cookie jar. transport may be nil.
func NewBrowser(authURL string, transport http.RoundTripper) *Browser {
	jar, _ := cookiejar.New(nil)
	return &Browser{AuthURL: strings.TrimRight(authURL, "/"), jar: jar, c: &http.Client{
		Jar: jar, Timeout: 15 * time.Second, Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// WaitIdP polls /login?idp_id= until auth knows the IdP (it learns of new IdPs from the
// idp_config bucket, asynchronously).
func (b *Browser) WaitIdP(ctx context.Context, idpID string, timeout time.Duration) error {
	return Eventually(ctx, timeout, func() error {
		resp, body, err := b.get(ctx, b.AuthURL+"/login?"+url.Values{"idp_id": {idpID}}.Encode(), nil)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusFound {
			return fmt.Errorf("GET /login = %d %s", resp.StatusCode, body)
		}
		return nil
	})
}

// LoginResult is how the callback answered: 302 with a session cookie, or a refusal (403 with a
// reason such as "locked").
type LoginResult struct {
	Status   int
	Location string
	Body     string
	// Session is the session cookie set by the callback ("" on refusal).
	Session string
}

// OK reports whether the login produced a session.
func (r LoginResult) OK() bool { return r.Status == http.StatusFound && r.Session != "" }

func (b *Browser) get(ctx context.Context, u string, hdr http.Header) (*http.Response, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := b.c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, string(body), err
}

// StartLogin opens /login for idpID and follows the redirect to the provider, where the person
// picks the account sub (devidp's login_hint). It returns the provider's redirect back to
// /callback, not yet followed, so a test can interleave other actions with the callback.
func (b *Browser) StartLogin(ctx context.Context, idpID, sub string) (string, error) {
	q := url.Values{"idp_id": {idpID}}
	resp, body, err := b.get(ctx, b.AuthURL+"/login?"+q.Encode(), http.Header{"Accept": {"text/html"}})
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusFound {
		return "", fmt.Errorf("GET /login = %d %s, want 302 to the provider", resp.StatusCode, body)
	}
	authz, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return "", err
	}
	aq := authz.Query()
	if sub != "" {
		aq.Set("login_hint", sub)
	}
	authz.RawQuery = aq.Encode()
	resp, body, err = b.get(ctx, authz.String(), nil)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusFound {
		return "", fmt.Errorf("GET provider /authorize = %d %s, want 302 to /callback", resp.StatusCode, body)
	}
	cb := resp.Header.Get("Location")
	if cu, err := url.Parse(cb); err != nil || cu.Query().Get("error") != "" {
		return cb, fmt.Errorf("provider refused the login: %s", cb)
	}
	return cb, nil
}

// FinishLogin follows the provider's redirect to auth's /callback.
func (b *Browser) FinishLogin(ctx context.Context, callbackURL string) (LoginResult, error) {
	resp, body, err := b.get(ctx, callbackURL, http.Header{"Accept": {"text/html"}})
	if err != nil {
		return LoginResult{}, err
	}
	r := LoginResult{Status: resp.StatusCode, Location: resp.Header.Get("Location"), Body: body}
	for _, c := range resp.Cookies() {
		if c.Name == b.sessionName() && c.Value != "" {
			r.Session = c.Value
		}
	}
	return r, nil
}

// Login runs a whole login of account sub at idpID.
func (b *Browser) Login(ctx context.Context, idpID, sub string) (LoginResult, error) {
	cb, err := b.StartLogin(ctx, idpID, sub)
	if err != nil {
		return LoginResult{}, err
	}
	return b.FinishLogin(ctx, cb)
}

func (b *Browser) sessionName() string {
	if b.SessionCookieName != "" {
		return b.SessionCookieName
	}
	return "scimflow_session"
}

// Session returns the session cookie the browser holds for auth ("" if none).
func (b *Browser) Session() string {
	u, _ := url.Parse(b.AuthURL)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == b.sessionName() {
			return c.Value
		}
	}
	return ""
}

// SessionIdentity is /get-identity's body (Cloudflare's field names).
type SessionIdentity struct {
	ID         string                    `json:"id"`
	Email      string                    `json:"email"`
	Name       string                    `json:"name"`
	UserUUID   string                    `json:"user_uuid"`
	IdP        struct{ ID, Type string } `json:"idp"`
	Groups     []Group                   `json:"groups"`
	OIDCFields map[string]any            `json:"oidc_fields"`
	IAT        int64                     `json:"iat"`
	Exp        int64                     `json:"exp"`
}

// GroupNames returns the names of the session's groups, in order.
func (i SessionIdentity) GroupNames() []string { return groupNames(i.Groups) }

// GetIdentity calls /get-identity with the browser's cookies. status is 200 with the identity, or
// 401 when the session is not (or no longer) valid.
func (b *Browser) GetIdentity(ctx context.Context) (SessionIdentity, int, error) {
	resp, body, err := b.get(ctx, b.AuthURL+"/get-identity", nil)
	if err != nil {
		return SessionIdentity{}, 0, err
	}
	var id SessionIdentity
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal([]byte(body), &id); err != nil {
			return id, resp.StatusCode, err
		}
	}
	return id, resp.StatusCode, nil
}

// Logout ends the session (GET /logout).
func (b *Browser) Logout(ctx context.Context) error {
	resp, body, err := b.get(ctx, b.AuthURL+"/logout", nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /logout = %d %s", resp.StatusCode, body)
	}
	return nil
}

// Proxy names a reverse proxy whose forward-auth subrequest /verify imitates.
type Proxy string

// The reverse proxies of docs/reverse-proxies.md, and a bare API caller.
const (
	// Nginx is auth_request with ?redirect=false and X-Original-URL plus X-Forwarded-*.
	Nginx Proxy = "nginx"
	// NginxLogin is nginx's @scimflow_login location: /verify as a normal browser request.
	NginxLogin Proxy = "nginx-login"
	// Traefik is ForwardAuth: X-Forwarded-Method/Proto/Host/Uri and the browser's headers.
	Traefik Proxy = "traefik"
	// Caddy is forward_auth: a GET with X-Forwarded-Method/Uri/Host/Proto and the browser's headers.
	Caddy Proxy = "caddy"
	// API is a script or XHR calling a protected API: no text/html in Accept.
	API Proxy = "api"
)

// IdentityHeaders are the headers /verify answers on 200 that every proxy snippet of
// docs/reverse-proxies.md and docs/getting-started.md copies onto the request to the application —
// overwriting whatever the client sent, so a client can forge none of them.
func IdentityHeaders() []string {
	return []string{"X-Scimflow-User-Id", "X-Scimflow-Idp", "X-Scimflow-Email", "X-Scimflow-Groups", "X-Scimflow-Jwt-Assertion", "X-Scimflow-App"}
}

// VerifyResult is /verify's answer.
type VerifyResult struct {
	Status int
	Header http.Header
}

// Verify asks /verify about the browser's session as proxy p would, for the original request
// GET {appURL}. The browser's cookies for auth are passed as the proxy passes them.
func (b *Browser) Verify(ctx context.Context, p Proxy, appURL string) (VerifyResult, error) {
	return Verify(ctx, b.c.Transport, b.AuthURL, b.Session(), b.sessionName(), p, appURL)
}

// Verify is Browser.Verify for a session token held elsewhere (a benchmark's users). session may
// be empty (no cookie).
func Verify(ctx context.Context, rt http.RoundTripper, authURL, session, cookieName string, p Proxy, appURL string) (VerifyResult, error) {
	req, err := VerifyRequest(ctx, authURL, session, cookieName, p, appURL)
	if err != nil {
		return VerifyResult{}, err
	}
	if rt == nil {
		rt = http.DefaultTransport
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return VerifyResult{}, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return VerifyResult{Status: resp.StatusCode, Header: resp.Header}, nil
}

// VerifyRequest builds the forward-auth subrequest proxy p sends for GET {appURL}.
func VerifyRequest(ctx context.Context, authURL, session, cookieName string, p Proxy, appURL string) (*http.Request, error) {
	app, err := url.Parse(appURL)
	if err != nil {
		return nil, err
	}
	target := strings.TrimRight(authURL, "/") + "/verify"
	if p == Nginx {
		target += "?redirect=false"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	if cookieName == "" {
		cookieName = "scimflow_session"
	}
	if session != "" {
		req.Header.Set("Cookie", cookieName+"="+session)
	}
	uri := app.RequestURI()
	switch p {
	case Nginx, NginxLogin:
		req.Header.Set("X-Original-URL", appURL)
		if p == Nginx {
			req.Header.Set("X-Forwarded-Proto", app.Scheme)
			req.Header.Set("X-Forwarded-Host", app.Host)
			req.Header.Set("X-Forwarded-Uri", uri)
		}
		req.Header.Set("Accept", "text/html,application/xhtml+xml")
	case Traefik, Caddy:
		req.Header.Set("X-Forwarded-Method", http.MethodGet)
		req.Header.Set("X-Forwarded-Proto", app.Scheme)
		req.Header.Set("X-Forwarded-Host", app.Host)
		req.Header.Set("X-Forwarded-Uri", uri)
		req.Header.Set("X-Forwarded-For", "203.0.113.7")
		req.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
	case API:
		req.Header.Set("X-Forwarded-Proto", app.Scheme)
		req.Header.Set("X-Forwarded-Host", app.Host)
		req.Header.Set("X-Forwarded-Uri", uri)
		req.Header.Set("Accept", "application/json")
	}
	return req, nil
}
