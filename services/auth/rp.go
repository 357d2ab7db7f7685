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
	"golang.org/x/oauth2"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/fault"
	"github.com/scimflow/scimflow/internal/oidcprobe"
)

// SupportedSigningAlgs are the only ID-token algorithms auth accepts (docs/design.md §5). HS*, none,
// RS384, PS256, PS384 and EdDSA are refused even when an IdP advertises them. The list is shared
// with identity-store's save-time check (internal/oidcprobe).
func SupportedSigningAlgs() []string { return oidcprobe.SupportedSigningAlgs() }

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

// configError is an IdP configuration that cannot work whatever the network does; its message is
// safe to show on the login error page and at /test, where an admin trying the IdP looks.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

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
		return nil, &configError{fmt.Errorf("type %q is not oidc", cfg.Type)}
	}
	if c.ClientID == "" {
		return nil, &configError{errors.New("client_id is required")}
	}
	manual := c.AuthURL != "" && c.TokenURL != "" && c.CertsURL != ""
	if c.Issuer == "" && !manual {
		return nil, &configError{errors.New("issuer is required for discovery (or set auth_url, token_url and certs_url)")}
	}
	rp := &relyingParty{idp: cfg, issuer: c.Issuer, emailClaim: c.EmailClaimName, fieldClaims: c.Claims}
	if c.Issuer == "" {
		for _, raw := range []string{c.AuthURL, c.TokenURL, c.CertsURL} {
			u, err := url.Parse(raw)
			if err != nil || u.Host == "" {
				return nil, &configError{fmt.Errorf("endpoint %q is not an absolute URL", raw)}
			}
			rp.issuerHosts = append(rp.issuerHosts, strings.ToLower(u.Host))
		}
	}
	if rp.emailClaim == "" {
		rp.emailClaim = "email"
	}
	var advertised []string // nil: every supported algorithm (manual endpoints)
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
		var meta oidcprobe.Discovery
		if err := p.Claims(&meta); err != nil {
			return nil, fmt.Errorf("idp %s: discovery: %w", cfg.ID, err)
		}
		if advertised = meta.UsableAlgs(); len(advertised) == 0 {
			return nil, &configError{fmt.Errorf("the identity provider signs ID tokens only with %v, none of which scimflow accepts (%v)", meta.Algs, SupportedSigningAlgs())}
		}
		endpoint = p.Endpoint()
		if c.AuthURL != "" {
			endpoint.AuthURL = c.AuthURL
		}
		if c.TokenURL != "" {
			endpoint.TokenURL = c.TokenURL
		}
		if jwksURL == "" {
			jwksURL = meta.JWKSURI
		}
		rp.issParam = meta.IssParam
		if meta.UserInfo != "" {
			rp.provider = p
		}
	}
	if jwksURL == "" {
		return nil, &configError{errors.New("no JWKS URL: discovery names no jwks_uri; set certs_url")}
	}
	idpID := cfg.ID
	rp.keys = &keySet{url: jwksURL, client: s.idpClient,
		jwks:  refetchGate{cooldown: s.cfg.JWKSRefreshCooldown.D(), now: s.now},
		disco: refetchGate{cooldown: s.cfg.JWKSRefreshCooldown.D(), now: s.now},
		onFetch: func(err error) {
			res := "ok"
			if err != nil {
				res = "error"
			}
			s.metrics.jwksFetches.WithLabelValues(idpID, res).Inc()
		}}
	if advertised != nil {
		rp.keys.advertised.Store(&advertised)
		issuer := c.Issuer
		rp.keys.rediscover = func(ctx context.Context) ([]string, error) {
			d, err := oidcprobe.Discover(ctx, s.idpClient, issuer)
			if err != nil {
				return nil, err
			}
			algs := d.UsableAlgs()
			s.log.Info("identity provider discovery re-read for a token in an unadvertised algorithm", "idp_id", idpID, "algs", algs)
			return algs, nil
		}
	}
	skew := s.cfg.ClockSkew.D()
	rp.verifier = oidc.NewVerifier(c.Issuer, rp.keys, &oidc.Config{
		ClientID: c.ClientID,
		// The hard allow-list; the IdP's advertised subset is checked by the key set, which re-reads
		// discovery when the IdP starts using another algorithm (idpkeys.go).
		SupportedSigningAlgs: SupportedSigningAlgs(),
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

// deny is a login refused for reason (recorded in metrics and events, shown to the user); the
// formatted explanation is the cause, for the log only.
func deny(reason string, format string, args ...any) error {
	return refusal(fault.Forbidden, reason, fmt.Errorf(format, args...))
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
