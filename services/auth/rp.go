package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/scimflow/scimflow/events"
)

// SupportedSigningAlgs are the only ID-token algorithms auth accepts (docs/design.md §5). HS*, none,
// RS384, PS256, PS384 and EdDSA are refused even when an IdP advertises them.
func SupportedSigningAlgs() []string {
	return []string{"RS256", "RS512", "PS512", "ES256", "ES384", "ES512"}
}

// maxIdPResponse bounds any document fetched from an IdP (discovery, JWKS, userinfo).
const maxIdPResponse = 1 << 20

// limitedTransport fails a response body larger than max instead of reading it whole.
type limitedTransport struct {
	base http.RoundTripper
	max  int64
}

func (t limitedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{rc: resp.Body, left: t.max}
	return resp, nil
}

type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errors.New("idp response too large")
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// newIdPClient is the HTTP client for every call to an IdP: timeouts and bounded bodies.
func newIdPClient() *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: limitedTransport{base: http.DefaultTransport, max: maxIdPResponse},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// keySet verifies ID-token signatures with keys from the IdP's jwks_uri only (never from jwk, jku,
// x5u or x5c headers) and refetches the JWKS, when no cached key verifies, at most once per cooldown
// (docs/design.md §8.2: go-oidc's RemoteKeySet refetches on every failure, so forged tokens with unknown
// kids would proxy 1:1 to the IdP).
//
// With no kid in the header every cached key of the header's algorithm is tried (O13: the
// "test all possible keys" option of rp-id_token-kid-absent-multiple-jwks).
type keySet struct {
	url      string
	algs     []jose.SignatureAlgorithm
	client   *http.Client
	cooldown time.Duration
	now      func() time.Time
	onFetch  func(err error)

	mu   sync.RWMutex // guards keys and gen
	keys []jose.JSONWebKey
	gen  uint64

	fetchMu   sync.Mutex // serialises fetches; guards lastFetch
	lastFetch time.Time
}

// VerifySignature implements oidc.KeySet.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSigned(raw, k.algs)
	if err != nil {
		return nil, fmt.Errorf("malformed jwt: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("want exactly one signature")
	}
	k.mu.RLock()
	keys, gen := k.keys, k.gen
	k.mu.RUnlock()
	if p, ok := tryKeys(jws, keys); ok {
		return p, nil
	}
	if !k.refresh(ctx, gen) {
		return nil, errors.New("no JWKS key verifies the token (refresh in cooldown)")
	}
	k.mu.RLock()
	keys = k.keys
	k.mu.RUnlock()
	if p, ok := tryKeys(jws, keys); ok {
		return p, nil
	}
	return nil, errors.New("no JWKS key verifies the token")
}

func tryKeys(jws *jose.JSONWebSignature, keys []jose.JSONWebKey) ([]byte, bool) {
	h := jws.Signatures[0].Header
	for i := range keys {
		key := &keys[i]
		if h.KeyID != "" && key.KeyID != h.KeyID {
			continue
		}
		if key.Algorithm != "" && key.Algorithm != h.Algorithm {
			continue
		}
		if key.Use != "" && key.Use != "sig" {
			continue
		}
		if p, err := jws.Verify(key); err == nil {
			return p, true
		}
	}
	return nil, false
}

// refresh fetches the JWKS unless another caller already did since gen was read, or the last fetch
// is more recent than the cooldown. It reports whether newer keys may now be cached.
func (k *keySet) refresh(ctx context.Context, gen uint64) bool {
	k.fetchMu.Lock()
	defer k.fetchMu.Unlock()
	k.mu.RLock()
	changed := k.gen != gen
	k.mu.RUnlock()
	if changed {
		return true
	}
	now := k.now()
	if !k.lastFetch.IsZero() && now.Sub(k.lastFetch) < k.cooldown {
		return false
	}
	k.lastFetch = now
	keys, err := k.fetch(ctx)
	if k.onFetch != nil {
		k.onFetch(err)
	}
	if err != nil {
		return false
	}
	k.mu.Lock()
	k.keys = keys
	k.gen++
	k.mu.Unlock()
	return true
}

func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read jwks: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch jwks: %s", resp.Status)
	}
	// Decode key by key so one unparseable key (an unknown kty) does not discard the rest.
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("decode jwks: %w", err)
	}
	var out []jose.JSONWebKey
	for _, raw := range doc.Keys {
		var key jose.JSONWebKey
		if json.Unmarshal(raw, &key) == nil && key.Valid() && key.IsPublic() {
			out = append(out, key)
		}
	}
	return out, nil
}

// relyingParty is the OIDC client of one IdP configuration.
type relyingParty struct {
	idp         events.IdP
	issuer      string   // exact iss; empty for the manual form without issuer (see issuerHosts)
	issuerHosts []string // manual form without issuer: iss must be a URL on one of these hosts
	oauth       oauth2.Config
	verifier    *oidc.IDTokenVerifier
	keys        *keySet
	provider    *oidc.Provider // for userinfo; nil when the IdP has no userinfo endpoint
	issParam    bool           // the IdP advertises RFC 9207 iss in authorization responses
	emailClaim  string
	fieldClaims []string
}

// idpEntry is one IdP from the idp_config bucket; its relying party is built on first use (discovery
// needs the network) and rebuilt only when the configuration changes.
type idpEntry struct {
	cfg events.IdP

	mu    sync.Mutex // guards rp, err, errAt
	rp    *relyingParty
	err   error
	errAt time.Time
}

// idpRegistry holds the IdPs of the idp_config bucket, kept current by a KV watch.
type idpRegistry struct {
	mu      sync.RWMutex // guards entries and synced
	entries map[string]*idpEntry
	synced  bool
}

func (r *idpRegistry) get(id string) (*idpEntry, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.entries[id]
	return e, ok
}

func (r *idpRegistry) ids() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for id := range r.entries {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func (r *idpRegistry) put(cfg events.IdP) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.entries[cfg.ID]; ok && sameIdP(old.cfg, cfg) {
		return
	}
	r.entries[cfg.ID] = &idpEntry{cfg: cfg}
}

func (r *idpRegistry) remove(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.entries, id)
}

func sameIdP(a, b events.IdP) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// discoveryDoc is the part of the discovery document go-oidc does not expose.
type discoveryDoc struct {
	IssParam bool `json:"authorization_response_iss_parameter_supported"`
}

// relyingParty returns the entry's RP, building it if needed. A failed build is retried after 5s.
func (e *idpEntry) relyingParty(ctx context.Context, s *server) (*relyingParty, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rp != nil {
		return e.rp, nil
	}
	if e.err != nil && time.Since(e.errAt) < 5*time.Second {
		return nil, e.err
	}
	rp, err := s.buildRP(ctx, e.cfg)
	if err != nil {
		e.err, e.errAt = err, time.Now()
		return nil, err
	}
	e.rp, e.err = rp, nil
	return rp, nil
}

// buildRP makes the relying party of cfg: manual endpoints when auth_url, token_url and certs_url
// are all set, otherwise discovery from issuer. Discovery fails when the document's issuer differs
// from the configured one (O6).
//
// The manual form may omit issuer (Cloudflare's generic OIDC shape has no such field). iss is then
// not compared exactly but must be a URL on the host of one of the three endpoints: every major IdP
// (Okta, Entra ID, JumpCloud, OneLogin, Auth0, Keycloak) serves its issuer on its endpoints' host,
// and a token from another IdP (another host) is still refused. Google is the exception: set its
// issuer (or use discovery).
func (s *server) buildRP(ctx context.Context, cfg events.IdP) (*relyingParty, error) {
	c := cfg.Config
	if cfg.Type != "" && cfg.Type != "oidc" {
		return nil, fmt.Errorf("idp %s: type %q is not oidc", cfg.ID, cfg.Type)
	}
	if c.ClientID == "" {
		return nil, fmt.Errorf("idp %s: client_id is required", cfg.ID)
	}
	manual := c.AuthURL != "" && c.TokenURL != "" && c.CertsURL != ""
	if c.Issuer == "" && !manual {
		return nil, fmt.Errorf("idp %s: issuer is required for discovery (or set auth_url, token_url and certs_url)", cfg.ID)
	}
	rp := &relyingParty{idp: cfg, issuer: c.Issuer, emailClaim: c.EmailClaimName, fieldClaims: c.Claims}
	if c.Issuer == "" {
		for _, raw := range []string{c.AuthURL, c.TokenURL, c.CertsURL} {
			u, err := url.Parse(raw)
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("idp %s: endpoint %q is not an absolute URL", cfg.ID, raw)
			}
			rp.issuerHosts = append(rp.issuerHosts, strings.ToLower(u.Host))
		}
	}
	if rp.emailClaim == "" {
		rp.emailClaim = "email"
	}
	algs := SupportedSigningAlgs()
	var endpoint oauth2.Endpoint
	jwksURL := c.CertsURL
	if manual {
		endpoint = oauth2.Endpoint{AuthURL: c.AuthURL, TokenURL: c.TokenURL}
	} else {
		dctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, s.idpClient), 10*time.Second)
		defer cancel()
		p, err := oidc.NewProvider(dctx, c.Issuer)
		if err != nil {
			return nil, fmt.Errorf("idp %s: discovery: %w", cfg.ID, err)
		}
		var meta struct {
			discoveryDoc
			JWKS  string   `json:"jwks_uri"`
			Algs  []string `json:"id_token_signing_alg_values_supported"`
			UInfo string   `json:"userinfo_endpoint"`
		}
		if err := p.Claims(&meta); err != nil {
			return nil, fmt.Errorf("idp %s: discovery: %w", cfg.ID, err)
		}
		if len(meta.Algs) > 0 {
			algs = slices.DeleteFunc(algs, func(a string) bool { return !slices.Contains(meta.Algs, a) })
			if len(algs) == 0 {
				return nil, fmt.Errorf("idp %s: it signs ID tokens only with %v, none of which auth accepts", cfg.ID, meta.Algs)
			}
		}
		endpoint = p.Endpoint()
		if c.AuthURL != "" {
			endpoint.AuthURL = c.AuthURL
		}
		if c.TokenURL != "" {
			endpoint.TokenURL = c.TokenURL
		}
		if jwksURL == "" {
			jwksURL = meta.JWKS
		}
		rp.issParam = meta.IssParam
		if meta.UInfo != "" {
			rp.provider = p
		}
	}
	if jwksURL == "" {
		return nil, fmt.Errorf("idp %s: no JWKS URL (certs_url)", cfg.ID)
	}
	var joseAlgs []jose.SignatureAlgorithm
	for _, a := range algs {
		joseAlgs = append(joseAlgs, jose.SignatureAlgorithm(a))
	}
	idpID := cfg.ID
	rp.keys = &keySet{url: jwksURL, algs: joseAlgs, client: s.idpClient, cooldown: s.cfg.JWKSRefreshCooldown.D(), now: s.now,
		onFetch: func(err error) {
			res := "ok"
			if err != nil {
				res = "error"
			}
			s.metrics.jwksFetches.WithLabelValues(idpID, res).Inc()
		}}
	skew := s.cfg.ClockSkew.D()
	rp.verifier = oidc.NewVerifier(c.Issuer, rp.keys, &oidc.Config{
		ClientID:             c.ClientID,
		SupportedSigningAlgs: algs,
		SkipIssuerCheck:      c.Issuer == "", // checked by host in verifyIDToken
		// go-oidc has no exp leeway; moving its clock back by the skew gives exactly that.
		Now: func() time.Time { return s.now().Add(-skew) },
	})
	scopes := c.Scopes
	if len(scopes) == 0 {
		scopes = []string{oidc.ScopeOpenID, "email", "profile"}
	}
	if !slices.Contains(scopes, oidc.ScopeOpenID) {
		scopes = append([]string{oidc.ScopeOpenID}, scopes...)
	}
	rp.oauth = oauth2.Config{
		ClientID:     c.ClientID,
		ClientSecret: c.ClientSecret,
		Endpoint:     endpoint,
		RedirectURL:  s.redirectURI,
		Scopes:       scopes,
	}
	return rp, nil
}

// idToken is what the RP accepted from a login: the checked claims and the raw claim set.
type idToken struct {
	sub    string
	claims map[string]any
}

// loginError is a refused login with the reason recorded in metrics and events.
type loginError struct {
	reason string
	err    error
}

func (e *loginError) Error() string { return e.reason + ": " + e.err.Error() }

func deny(reason string, format string, args ...any) error {
	return &loginError{reason: reason, err: fmt.Errorf(format, args...)}
}

// verifyIDToken runs go-oidc's checks (signature with an allow-listed alg, iss, aud, exp with leeway,
// nbf) and then the ones it leaves to the RP (docs/design.md §8.1): nonce, iat, sub, azp, at_hash.
func (rp *relyingParty) verifyIDToken(ctx context.Context, raw, nonce, accessToken string, now time.Time, skew time.Duration) (*idToken, error) {
	if len(raw) > maxTokenLen*8 {
		return nil, deny("token_too_large", "id token of %d bytes", len(raw))
	}
	tok, err := rp.verifier.Verify(ctx, raw)
	if err != nil {
		return nil, deny("invalid_id_token", "%v", err)
	}
	claims := map[string]any{}
	if err := tok.Claims(&claims); err != nil {
		return nil, deny("invalid_id_token", "claims: %v", err)
	}
	if !rp.issuerAllowed(tok.Issuer) {
		return nil, deny("invalid_id_token", "iss %q is not this IdP's", tok.Issuer)
	}
	// nonce: present and equal to this transaction's, compared in constant time.
	n, _ := claims["nonce"].(string)
	if n == "" || !constantTimeEqual(n, nonce) {
		return nil, deny("nonce_mismatch", "nonce missing or not this login's")
	}
	// sub: a non-empty string of at most 255 characters (OIDC Core §2).
	sub, ok := claims["sub"].(string)
	if !ok || sub == "" || len(sub) > 255 {
		return nil, deny("invalid_sub", "sub missing, empty or longer than 255")
	}
	// iat: present, not in the future beyond the skew, not older than the login timeout would allow.
	iatN, ok := claims["iat"].(float64)
	if !ok {
		return nil, deny("invalid_iat", "iat missing")
	}
	iat := time.Unix(int64(iatN), 0)
	if iat.After(now.Add(skew)) {
		return nil, deny("invalid_iat", "iat %s is in the future", iat.UTC())
	}
	if iat.Before(now.Add(-10*time.Minute - skew)) {
		return nil, deny("invalid_iat", "iat %s is too old for a fresh token", iat.UTC())
	}
	// azp: required to be the client when there are several audiences; if present, must be the client.
	azp, hasAZP := claims["azp"]
	if len(tok.Audience) > 1 && !hasAZP {
		return nil, deny("invalid_azp", "several audiences and no azp")
	}
	if hasAZP {
		if a, ok := azp.(string); !ok || a != rp.oauth.ClientID {
			return nil, deny("invalid_azp", "azp is not this client")
		}
	}
	// at_hash: when present, it must match the access token of this exchange.
	if tok.AccessTokenHash != "" {
		if err := tok.VerifyAccessToken(accessToken); err != nil {
			return nil, deny("invalid_at_hash", "%v", err)
		}
	}
	return &idToken{sub: sub, claims: claims}, nil
}

// issuerAllowed reports whether iss names this IdP: equal to the configured issuer, or — manual form
// without issuer — an http(s) URL on one of the endpoints' hosts.
func (rp *relyingParty) issuerAllowed(iss string) bool {
	if rp.issuer != "" {
		return iss == rp.issuer
	}
	u, err := url.Parse(iss)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return false
	}
	return slices.Contains(rp.issuerHosts, strings.ToLower(u.Host))
}

// groupsClaim returns the value of the claim named "groups" in any letter case, as strings.
func groupsClaim(claims map[string]any) []string {
	for k, v := range claims {
		if !strings.EqualFold(k, "groups") {
			continue
		}
		switch g := v.(type) {
		case string:
			if g != "" {
				return []string{g}
			}
		case []any:
			var out []string
			for _, x := range g {
				if s, ok := x.(string); ok && s != "" {
					out = append(out, s)
				}
			}
			return out
		}
	}
	return nil
}
