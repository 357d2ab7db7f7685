package devidp

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// routes lists every endpoint. The mux sees paths relative to the issuer, so an issuer with
// a path ("http://host/realms/a") serves "/realms/a/token" and so on.
func (p *Provider) routes() http.Handler {
	mux := http.NewServeMux()
	p.mux = mux
	mux.HandleFunc("GET /.well-known/openid-configuration", p.handleDiscovery)
	mux.HandleFunc("GET /jwks", p.handleJWKS)
	mux.HandleFunc("GET /authorize", p.handleAuthorize)
	mux.HandleFunc("POST /authorize", p.handleAuthorize)
	mux.HandleFunc("POST /token", p.handleToken)
	mux.HandleFunc("GET /userinfo", p.handleUserinfo)
	mux.HandleFunc("POST /userinfo", p.handleUserinfo)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		issuer := p.Issuer()
		if issuer == "" {
			http.Error(w, "devidp: issuer not set: call SetIssuer or use Start", http.StatusInternalServerError)
			return
		}
		u, err := url.Parse(issuer)
		if err != nil {
			http.Error(w, "devidp: bad issuer", http.StatusInternalServerError)
			return
		}
		if prefix := strings.TrimSuffix(u.Path, "/"); prefix != "" {
			http.StripPrefix(prefix, mux).ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// A write error means the client went away; there is no one left to tell.
	_ = json.NewEncoder(w).Encode(v)
}

func (p *Provider) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	p.discoveryFetches.Add(1)
	p.mu.Lock()
	issuer, flow := p.issuer, p.flow
	p.mu.Unlock()
	base := strings.TrimSuffix(issuer, "/")
	if flow.DiscoveryIssuer != "" {
		issuer = flow.DiscoveryIssuer
	}
	algs := SupportedAlgs()
	if flow.DiscoveryAlgs != nil {
		algs = slices.Clone(flow.DiscoveryAlgs)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                         issuer,
		"authorization_endpoint":                         base + "/authorize",
		"token_endpoint":                                 base + "/token",
		"jwks_uri":                                       base + "/jwks",
		"userinfo_endpoint":                              base + "/userinfo",
		"response_types_supported":                       []string{"code"},
		"response_modes_supported":                       []string{"query"},
		"grant_types_supported":                          []string{"authorization_code"},
		"subject_types_supported":                        []string{"public"},
		"id_token_signing_alg_values_supported":          algs,
		"scopes_supported":                               []string{"openid", "email", "profile", "groups"},
		"token_endpoint_auth_methods_supported":          p.opts.ClientAuthMethods,
		"claims_supported":                               []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "email", "email_verified", "name", "groups"},
		"code_challenge_methods_supported":               []string{"S256"},
		"authorization_response_iss_parameter_supported": true,
	})
}

func (p *Provider) handleJWKS(w http.ResponseWriter, r *http.Request) {
	p.jwksFetches.Add(1)
	p.mu.Lock()
	keys := p.keys
	p.mu.Unlock()
	w.Header().Set("Cache-Control", "no-cache")
	writeJSON(w, http.StatusOK, JWKS(keys))
}

// JWKS publishes keys sorted by alg, so the document is stable for a given key set.
func JWKS(keys map[string]*KeyPair) jose.JSONWebKeySet {
	var set jose.JSONWebKeySet
	for _, k := range keys {
		set.Keys = append(set.Keys, k.JWK())
	}
	sort.Slice(set.Keys, func(i, j int) bool { return set.Keys[i].Algorithm < set.Keys[j].Algorithm })
	return set
}

func (p *Provider) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad authorization request: "+err.Error(), http.StatusBadRequest)
		return
	}
	q := r.Form
	// Without a known client and a usable redirect URI there is nowhere safe to send an
	// error, so these answer the browser directly (RFC 6749 §4.1.2.1).
	clientID, redirectURI := q.Get("client_id"), q.Get("redirect_uri")
	switch {
	case clientID == "":
		http.Error(w, "client_id is required", http.StatusBadRequest)
		return
	case clientID != p.opts.ClientID:
		http.Error(w, "unknown client_id", http.StatusBadRequest)
		return
	case redirectURI == "":
		http.Error(w, "redirect_uri is required", http.StatusBadRequest)
		return
	case checkAbsoluteURL(redirectURI) != nil:
		http.Error(w, "redirect_uri is not an absolute http(s) URL", http.StatusBadRequest)
		return
	case len(p.opts.RedirectURIs) > 0 && !slices.Contains(p.opts.RedirectURIs, redirectURI):
		http.Error(w, "redirect_uri is not registered", http.StatusBadRequest)
		return
	}

	p.mu.Lock()
	p.lastAuthorize = cloneValues(q)
	flow, issuer := p.flow, p.issuer
	p.mu.Unlock()

	reply := func(params url.Values) {
		if state := q.Get("state"); !flow.OmitState && (state != "" || flow.State != "") {
			if flow.State != "" {
				state = flow.State
			}
			params.Set("state", state)
		}
		if !flow.OmitIss {
			iss := issuer
			if flow.Iss != "" {
				iss = flow.Iss
			}
			params.Set("iss", iss)
		}
		u, _ := url.Parse(redirectURI) // checked above
		merged := u.Query()
		for k, v := range params {
			merged[k] = v
		}
		u.RawQuery = merged.Encode()
		http.Redirect(w, r, u.String(), http.StatusFound)
	}
	fail := func(code, desc string) {
		reply(url.Values{"error": {code}, "error_description": {desc}})
	}

	if flow.AuthorizeError != "" {
		fail(flow.AuthorizeError, "forced by Flow.AuthorizeError")
		return
	}
	if rt := q.Get("response_type"); rt != "code" {
		fail("unsupported_response_type", fmt.Sprintf("response_type %q is not code", rt))
		return
	}
	if !slices.Contains(strings.Fields(q.Get("scope")), "openid") {
		fail("invalid_scope", "scope must include openid")
		return
	}
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	switch {
	case challenge == "" && method != "":
		fail("invalid_request", "code_challenge_method without code_challenge")
		return
	case challenge != "" && method != "S256":
		// A missing method means plain (RFC 7636 §4.3), which exposes the verifier.
		fail("invalid_request", fmt.Sprintf("code_challenge_method %q is not S256", method))
		return
	case challenge != "" && (len(challenge) < 43 || len(challenge) > 128):
		fail("invalid_request", "code_challenge must be 43 to 128 characters")
		return
	}

	sub := q.Get("login_hint")
	p.mu.Lock()
	if sub == "" {
		sub = p.defaultSub
	}
	u, ok := p.users[sub]
	if !ok || u.denied {
		p.mu.Unlock()
		fail("access_denied", "user is not registered or is denied")
		return
	}
	now := p.opts.Now()
	code := rand.Text() + rand.Text()
	p.codes[code] = &authCode{
		clientID:    clientID,
		redirectURI: redirectURI,
		sub:         sub,
		nonce:       q.Get("nonce"),
		challenge:   challenge,
		expires:     now.Add(CodeTTL),
		authTime:    now,
	}
	p.mu.Unlock()
	reply(url.Values{"code": {code}})
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

// oauthError is an RFC 6749 §5.2 error response.
type oauthError struct {
	status int
	code   string
	desc   string
}

func (e *oauthError) Error() string { return e.code + ": " + e.desc }

func writeOAuthError(w http.ResponseWriter, e *oauthError) {
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="devidp"`)
	}
	writeJSON(w, e.status, map[string]string{"error": e.code, "error_description": e.desc})
}

func (p *Provider) handleToken(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, &oauthError{http.StatusBadRequest, "invalid_request", err.Error()})
		return
	}
	method, oerr := p.authenticateClient(r)
	if oerr != nil {
		writeOAuthError(w, oerr)
		return
	}
	resp, oerr := p.exchange(r.PostForm, method)
	if oerr != nil {
		writeOAuthError(w, oerr)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// authenticateClient checks the client's credentials and returns the method it used.
// Using both methods at once is refused (RFC 6749 §2.3: "MUST NOT use more than one").
func (p *Provider) authenticateClient(r *http.Request) (string, *oauthError) {
	basicID, basicSecret, hasBasic := r.BasicAuth()
	postID, postSecret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	var method, id, secret string
	switch {
	case hasBasic && postSecret != "":
		return "", &oauthError{http.StatusBadRequest, "invalid_request", "more than one client authentication method"}
	case hasBasic:
		// RFC 6749 §2.3.1: Basic credentials are form-urlencoded first.
		var err1, err2 error
		id, err1 = url.QueryUnescape(basicID)
		secret, err2 = url.QueryUnescape(basicSecret)
		if err1 != nil || err2 != nil {
			return "", &oauthError{http.StatusUnauthorized, "invalid_client", "malformed basic credentials"}
		}
		if postID != "" && postID != id {
			return "", &oauthError{http.StatusBadRequest, "invalid_request", "client_id differs between header and body"}
		}
		method = ClientSecretBasic
	case postSecret != "":
		id, secret, method = postID, postSecret, ClientSecretPost
	default:
		return "", &oauthError{http.StatusUnauthorized, "invalid_client", "no client authentication"}
	}
	if !slices.Contains(p.opts.ClientAuthMethods, method) {
		return "", &oauthError{http.StatusUnauthorized, "invalid_client", method + " is not allowed"}
	}
	idOK := subtle.ConstantTimeCompare([]byte(id), []byte(p.opts.ClientID)) == 1
	secretOK := subtle.ConstantTimeCompare([]byte(secret), []byte(p.opts.ClientSecret)) == 1
	if !idOK || !secretOK {
		return "", &oauthError{http.StatusUnauthorized, "invalid_client", "bad client credentials"}
	}
	return method, nil
}

// tokenResponse is the RFC 6749 §5.1 / OIDC Core §3.1.3.3 success body.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	IDToken     string `json:"id_token,omitempty"`
	Scope       string `json:"scope,omitempty"`
}

// exchange redeems an authorization code. Any presentation of a code consumes it, so a
// failed PKCE attempt cannot be retried, and a replayed code also revokes the access token
// issued for it (RFC 6749 §4.1.2).
func (p *Provider) exchange(form url.Values, method string) (*tokenResponse, *oauthError) {
	bad := func(desc string) *oauthError { return &oauthError{http.StatusBadRequest, "invalid_grant", desc} }

	p.mu.Lock()
	flow := p.flow
	if flow.TokenError != "" {
		p.mu.Unlock()
		return nil, &oauthError{http.StatusBadRequest, flow.TokenError, "forced by Flow.TokenError"}
	}
	if gt := form.Get("grant_type"); gt != "authorization_code" {
		p.mu.Unlock()
		return nil, &oauthError{http.StatusBadRequest, "unsupported_grant_type", fmt.Sprintf("grant_type %q", gt)}
	}
	c, ok := p.codes[form.Get("code")]
	if !ok {
		p.mu.Unlock()
		return nil, bad("unknown code")
	}
	if c.used {
		delete(p.accessTokens, c.accessToken)
		p.mu.Unlock()
		return nil, bad("code already used")
	}
	c.used = true
	now := p.opts.Now()
	if err := checkCode(c, form, now); err != nil {
		p.mu.Unlock()
		return nil, bad(err.Error())
	}
	u, ok := p.users[c.sub]
	if !ok {
		p.mu.Unlock()
		return nil, bad("user no longer registered")
	}
	at := rand.Text() + rand.Text()
	p.accessTokens[at] = &accessToken{sub: c.sub, expires: now.Add(p.opts.TokenTTL)}
	c.accessToken = at
	minter := p.minter
	p.lastAuthMethod = method
	p.mu.Unlock()

	resp := &tokenResponse{
		AccessToken: at,
		TokenType:   "Bearer",
		ExpiresIn:   int64(p.opts.TokenTTL.Seconds()),
		Scope:       "openid email profile groups",
	}
	if flow.OmitIDToken {
		return resp, nil
	}
	claims, err := p.claimsFor(u, c.nonce, now, c.authTime)
	if err == nil {
		if minter == nil {
			minter = p.MintGenuine
		}
		resp.IDToken, err = minter(claims, at)
	}
	if err != nil {
		return nil, &oauthError{http.StatusInternalServerError, "server_error", err.Error()}
	}
	return resp, nil
}

// checkCode validates a code redemption against the authorization request it came from.
func checkCode(c *authCode, form url.Values, now time.Time) error {
	if now.After(c.expires) {
		return errors.New("code expired")
	}
	if form.Get("redirect_uri") != c.redirectURI {
		return errors.New("redirect_uri does not match the authorization request")
	}
	verifier := form.Get("code_verifier")
	switch {
	case c.challenge == "" && verifier != "":
		// RFC 9700 §2.1.1: refuse a verifier when no challenge was sent (PKCE downgrade).
		return errors.New("code_verifier without code_challenge")
	case c.challenge != "" && verifier == "":
		return errors.New("code_verifier is required")
	case c.challenge != "":
		sum := sha256.Sum256([]byte(verifier))
		if subtle.ConstantTimeCompare([]byte(b64(sum[:])), []byte(c.challenge)) != 1 {
			return errors.New("code_verifier does not match code_challenge")
		}
	}
	return nil
}

func (p *Provider) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	p.mu.Lock()
	at, ok := p.accessTokens[tok]
	valid := ok && strings.EqualFold(scheme, "Bearer") && p.opts.Now().Before(at.expires)
	var u *user
	if valid {
		u, valid = p.users[at.sub]
	}
	flow := p.flow
	p.mu.Unlock()
	if !valid {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
		return
	}
	claims, err := u.identityClaims()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "server_error"})
		return
	}
	claims["sub"] = u.sub
	if flow.UserinfoSub != "" {
		claims["sub"] = flow.UserinfoSub
	}
	writeJSON(w, http.StatusOK, claims)
}
