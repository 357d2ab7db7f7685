package devidp

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Provider is an honest OpenID provider for the demo, the benchmarks and tests. All methods are safe
// for concurrent use, so tests may change users, keys and knobs while a relying party is mid-flow.
type Provider struct {
	opts    Options // immutable after New
	handler http.Handler
	srv     *http.Server // nil unless Start made it

	closeOnce sync.Once
	closeErr  error

	jwksFetches      atomic.Int64
	discoveryFetches atomic.Int64
	mux              *http.ServeMux

	mu             sync.Mutex // guards the following
	issuer         string
	alg            string
	keys           map[string]*KeyPair // by alg; replaced, never mutated, by RotateKeys
	users          map[string]*user
	defaultSub     string
	codes          map[string]*authCode
	accessTokens   map[string]*accessToken
	flow           Flow
	minter         Minter
	lastAuthorize  url.Values
	lastAuthMethod string
}

// Minter signs the ID token /token issues from the genuine claims (accessToken, when set, is bound
// through at_hash). SetMinter installs one; the default signs genuinely (MintGenuine).
type Minter func(claims map[string]any, accessToken string) (string, error)

// Flow holds ways real providers misbehave at the flow level — errors, missing or different
// parameters, changed discovery — that a relying party must survive (docs/design.md §9.4, O6, O18,
// O22, O24). The zero value is a correct provider. A Flow stays in force until the next SetFlow.
type Flow struct {
	// AuthorizeError, when set, makes /authorize redirect with error=AuthorizeError (e.g.
	// "access_denied", "server_error") instead of a code.
	AuthorizeError string
	// State, when set, replaces the state /authorize returns (O22 state mismatch).
	State string
	// OmitState makes /authorize return no state at all.
	OmitState bool
	// Iss, when set, replaces the RFC 9207 iss parameter of the authorization response (O24).
	Iss string
	// OmitIss drops the iss parameter although discovery advertises it.
	OmitIss bool
	// DiscoveryIssuer, when set, is the issuer discovery reports, so a relying party's
	// provider set-up must fail (O6 discovery issuer mismatch).
	DiscoveryIssuer string
	// TokenError, when set, makes /token answer 400 with error=TokenError without
	// consuming the code.
	TokenError string
	// OmitIDToken makes /token answer without an id_token.
	OmitIDToken bool
	// UserinfoSub, when set, is the sub /userinfo reports instead of the user's (O18).
	UserinfoSub string
	// DiscoveryAlgs, when set, is the id_token_signing_alg_values_supported discovery reports
	// instead of SupportedAlgs: a provider that advertises one algorithm, switches to another
	// (Hydra's RS256 → ES256), or only advertises one a relying party refuses (EdDSA).
	DiscoveryAlgs []string
}

type authCode struct {
	clientID    string
	redirectURI string
	sub         string
	nonce       string
	challenge   string
	expires     time.Time
	authTime    time.Time
	used        bool
	accessToken string // issued on first use; revoked if the code is replayed
}

type accessToken struct {
	sub     string
	expires time.Time
}

// CodeTTL bounds how long an authorization code can be exchanged.
const CodeTTL = 10 * time.Minute

// New makes a provider with a fresh key for every algorithm in SupportedAlgs (plus
// Options.ExtraKeyAlgs). It does not listen: serve Handler yourself (and call SetIssuer) or use Start.
func New(opts Options) (*Provider, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("devidp options: %w", err)
	}
	opts = opts.withDefaults()
	keys, err := GenerateKeys(append(SupportedAlgs(), opts.ExtraKeyAlgs...), "")
	if err != nil {
		return nil, err
	}
	p := &Provider{
		opts:         opts,
		issuer:       opts.Issuer,
		alg:          opts.Alg,
		keys:         keys,
		users:        map[string]*user{},
		codes:        map[string]*authCode{},
		accessTokens: map[string]*accessToken{},
	}
	p.handler = p.routes()
	return p, nil
}

// Start makes a provider and serves it on opts.Addr (default 127.0.0.1:0) until Close.
// With no opts.Issuer, the issuer is "http://" plus the listener's address, which is what an
// end-to-end test hands to a `scimflow serve` subprocess.
func Start(opts Options) (*Provider, error) {
	p, err := New(opts)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", p.opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", p.opts.Addr, err)
	}
	if p.opts.Issuer == "" {
		addr := ln.Addr().(*net.TCPAddr)
		host := addr.IP.String()
		if addr.IP.IsUnspecified() {
			// Listening on every interface (":9000"): loopback is the address that works
			// from the same host, which is where the relying party under test runs.
			host = "127.0.0.1"
		}
		if err := p.SetIssuer("http://" + net.JoinHostPort(host, strconv.Itoa(addr.Port))); err != nil {
			ln.Close()
			return nil, err
		}
	}
	p.srv = &http.Server{
		Handler:           p.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
	}
	go func() {
		// Serve returns http.ErrServerClosed after Close; any other error leaves the test
		// with connection failures it will report itself.
		_ = p.srv.Serve(ln)
	}()
	return p, nil
}

// Close stops the listener Start opened and drops open connections. The provider stays
// usable in-process (SignIDToken). Close on a provider made by New does nothing, and a
// second Close returns the first one's result, so tests can both defer and check it.
func (p *Provider) Close() error {
	if p.srv == nil {
		return nil
	}
	p.closeOnce.Do(func() {
		if err := p.srv.Close(); err != nil {
			p.closeErr = fmt.Errorf("close devidp server: %w", err)
		}
	})
	return p.closeErr
}

// Handler serves the provider's endpoints under the issuer's path. It is what an httptest
// server wraps in-process.
func (p *Provider) Handler() http.Handler { return p.handler }

// Issuer returns the issuer URL, exactly as it appears in discovery and in genuine tokens.
func (p *Provider) Issuer() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.issuer
}

// SetIssuer sets the issuer URL; a test serving Handler through httptest calls it with the
// server's URL before the first request.
func (p *Provider) SetIssuer(issuer string) error {
	if err := checkIssuer(issuer); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.issuer = issuer
	return nil
}

// endpoint joins the issuer and a path the way discovery publishes it.
func (p *Provider) endpoint(path string) string {
	return strings.TrimSuffix(p.Issuer(), "/") + path
}

// AuthURL returns the authorization endpoint, for relying-party configurations that take
// endpoints rather than discovery (scimflow's auth_url).
func (p *Provider) AuthURL() string { return p.endpoint("/authorize") }

// TokenURL returns the token endpoint (scimflow's token_url).
func (p *Provider) TokenURL() string { return p.endpoint("/token") }

// JWKSURL returns the JWKS endpoint (scimflow's certs_url).
func (p *Provider) JWKSURL() string { return p.endpoint("/jwks") }

// UserinfoURL returns the userinfo endpoint.
func (p *Provider) UserinfoURL() string { return p.endpoint("/userinfo") }

// AddUser registers u, replacing any user with the same Sub (which is how a test changes a
// user's groups between logins). The first user added becomes the default user.
func (p *Provider) AddUser(u User) error {
	stored, err := newUser(u)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if old, ok := p.users[u.Sub]; ok {
		stored.denied = old.denied
	}
	p.users[u.Sub] = stored
	if p.defaultSub == "" {
		p.defaultSub = u.Sub
	}
	return nil
}

// SetDefaultUser chooses who /authorize logs in when the request has no login_hint.
func (p *Provider) SetDefaultUser(sub string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.users[sub]; !ok {
		return fmt.Errorf("set default user: no user %q", sub)
	}
	p.defaultSub = sub
	return nil
}

// DenyUser makes /authorize answer access_denied for sub, as an IdP does for a user who
// is unassigned from the application.
func (p *Provider) DenyUser(sub string) error { return p.setDenied(sub, true) }

// AllowUser undoes DenyUser.
func (p *Provider) AllowUser(sub string) error { return p.setDenied(sub, false) }

func (p *Provider) setDenied(sub string, denied bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	u, ok := p.users[sub]
	if !ok {
		return fmt.Errorf("no user %q", sub)
	}
	u.denied = denied
	return nil
}

// SetAlg chooses the algorithm (one of SupportedAlgs) that signs the next ID tokens.
func (p *Provider) SetAlg(alg string) error {
	if !slices.Contains(SupportedAlgs(), alg) {
		return fmt.Errorf("set alg: %q is not one of %v", alg, SupportedAlgs())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.alg = alg
	return nil
}

// Alg returns the algorithm that signs the next genuine ID token.
func (p *Provider) Alg() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.alg
}

// RotateKeys replaces every key with a new one under a new kid; the old keys leave the
// JWKS at once. Tokens minted before the call then fail verification, and tokens minted
// after it make a relying party with a cached JWKS refetch (O15).
func (p *Provider) RotateKeys() error {
	keys, err := GenerateKeys(append(SupportedAlgs(), p.opts.ExtraKeyAlgs...), "")
	if err != nil {
		return fmt.Errorf("rotate keys: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = keys
	return nil
}

// KeyIDs returns the kid of the current key of every algorithm, so tests can assert which
// key signed a token.
func (p *Provider) KeyIDs() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]string, len(p.keys))
	for alg, k := range p.keys {
		out[alg] = k.Kid
	}
	return out
}

// JWKSFetches returns how many times /jwks has been served, so tests can assert a relying
// party's refetch cooldown (O14) without timing anything.
func (p *Provider) JWKSFetches() int { return int(p.jwksFetches.Load()) }

// DiscoveryFetches returns how many times the discovery document has been served, so tests can
// assert when a relying party re-reads it.
func (p *Provider) DiscoveryFetches() int { return int(p.discoveryFetches.Load()) }

// SetFlow puts f's flow-level faults in force; SetFlow(Flow{}) restores a correct provider.
func (p *Provider) SetFlow(f Flow) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.flow = f
}

// ValidClaims returns the claims of a genuine ID token for the registered user sub, as
// /token would issue it now (without at_hash).
func (p *Provider) ValidClaims(sub, nonce string) (map[string]any, error) {
	p.mu.Lock()
	u, ok := p.users[sub]
	p.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("valid claims: no user %q", sub)
	}
	now := p.opts.Now()
	return p.claimsFor(u, nonce, now, now)
}

// claimsFor builds the genuine claim set of an ID token for u.
func (p *Provider) claimsFor(u *user, nonce string, now, authTime time.Time) (map[string]any, error) {
	c, err := u.identityClaims()
	if err != nil {
		return nil, err
	}
	c["iss"] = p.Issuer()
	c["sub"] = u.sub
	c["aud"] = p.opts.ClientID
	c["iat"] = now.Unix()
	c["exp"] = now.Add(p.opts.TokenTTL).Unix()
	c["auth_time"] = authTime.Unix()
	if nonce != "" {
		c["nonce"] = nonce
	}
	return c, nil
}

// LastAuthorizeRequest returns the parameters of the latest authorization request, so
// tests can assert what the relying party sent (O23: code_challenge_method=S256, nonce, state).
func (p *Provider) LastAuthorizeRequest() url.Values {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := url.Values{}
	maps.Copy(out, p.lastAuthorize)
	for k, v := range out {
		out[k] = slices.Clone(v)
	}
	return out
}

// LastClientAuthMethod returns ClientSecretBasic or ClientSecretPost: how the client
// authenticated at the latest successful token request.
func (p *Provider) LastClientAuthMethod() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastAuthMethod
}

// CurrentKey returns the key that signs this provider's next genuine token.
func (p *Provider) CurrentKey() *KeyPair {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.keys[p.alg]
}

// Keys returns the current key of every algorithm (including Options.ExtraKeyAlgs), by alg.
func (p *Provider) Keys() map[string]*KeyPair {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.keys
}

// Options returns the options the provider runs with (defaults filled in).
func (p *Provider) Options() Options { return p.opts }

// SetMinter replaces how /token signs ID tokens; nil restores genuine signing. Test kits use it.
func (p *Provider) SetMinter(m Minter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.minter = m
}

// Mount serves h under pattern (relative to the issuer's path) beside the provider's endpoints.
func (p *Provider) Mount(pattern string, h http.HandlerFunc) { p.mux.HandleFunc(pattern, h) }

// MintGenuine signs claims with the current key of the current algorithm, binding accessToken
// through at_hash when set: what /token issues.
func (p *Provider) MintGenuine(claims map[string]any, accessToken string) (string, error) {
	k := p.CurrentKey()
	if accessToken != "" {
		claims["at_hash"] = ATHash(k.Alg, accessToken)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encode claims: %w", err)
	}
	return SignCompact(map[string]any{"alg": k.Alg, "typ": "JWT", "kid": k.Kid}, payload, k.Alg, k.Private)
}
