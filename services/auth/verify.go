package auth

import (
	"context"
	"crypto/sha256"
	"hash/maphash"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scimflow/scimflow/events"
)

// Identity headers /verify sets on success; reverse proxies copy them to the upstream request.
const (
	HeaderUserID       = "X-Scimflow-User-Id"
	HeaderEmail        = "X-Scimflow-Email"
	HeaderGroups       = "X-Scimflow-Groups"
	HeaderJWTAssertion = "X-Scimflow-Jwt-Assertion"
	// HeaderIdP is the id of the IdP that authenticated the session. An email is only unique within
	// one IdP (two IdPs may both vouch for alice@x.com), so apps key on X-Scimflow-User-Id or on
	// (X-Scimflow-Idp, X-Scimflow-Email), never on the email alone.
	HeaderIdP = "X-Scimflow-Idp"
)

// sessionCache remembers verified session tokens so /verify checks a signature once per session
// and replica, not once per request. Only the signature and the static claims are cached: expiry,
// revocation, logout and key retirement are checked on every request. Entries are keyed by the
// SHA-256 of the whole token (never by a part of it, which a forger could reuse). Sharded to keep
// lock contention low; a full shard is simply emptied (bounded memory; those sessions re-verify).
type sessionCache struct {
	seed   maphash.Seed
	shards [64]cacheShard
}

type tokenKey [sha256.Size]byte

type cacheShard struct {
	mu sync.RWMutex // guards m
	m  map[tokenKey]*cachedSession
}

// cacheShardMax bounds the cache at 64 × 1024 sessions per replica (a few tens of MB at most).
const cacheShardMax = 1024

// cachedSession is a verified session and its most recent app token per audience.
type cachedSession struct {
	claims *sessionClaims
	hash   string // hashSID(claims.SID)
	kid    string // the key that signed it: once retired, the cached entry is void too
	ekey   string // emailKey(idp, email) of the login
	app    atomic.Pointer[appTokenCache]
}

type appTokenCache struct {
	audience string
	version  uint64 // user record version the token was built from
	identKey string // snapshot or token identity, to notice a switch between them
	kid      string
	token    string
	refresh  time.Time // mint a new one after this
}

func newSessionCache() *sessionCache {
	c := &sessionCache{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = map[tokenKey]*cachedSession{}
	}
	return c
}

func (c *sessionCache) shard(k tokenKey) *cacheShard {
	return &c.shards[maphash.Comparable(c.seed, k)%uint64(len(c.shards))]
}

func (c *sessionCache) get(tok string) *cachedSession {
	k := tokenKey(sha256.Sum256([]byte(tok)))
	sh := c.shard(k)
	sh.mu.RLock()
	cs := sh.m[k]
	sh.mu.RUnlock()
	return cs
}

func (c *sessionCache) put(tok string, cs *cachedSession) {
	k := tokenKey(sha256.Sum256([]byte(tok)))
	sh := c.shard(k)
	sh.mu.Lock()
	if len(sh.m) >= cacheShardMax {
		clear(sh.m)
	}
	sh.m[k] = cs
	sh.mu.Unlock()
}

func (c *sessionCache) drop(tok string) {
	k := tokenKey(sha256.Sum256([]byte(tok)))
	sh := c.shard(k)
	sh.mu.Lock()
	delete(sh.m, k)
	sh.mu.Unlock()
}

// sessionResult is the outcome of checking a request's session.
type sessionResult int

const (
	sessionValid   sessionResult = iota
	sessionNone                  // no cookie, or a cookie that does not verify
	sessionInvalid               // verified but expired, revoked, locked or logged out
	sessionStale                 // revocation state may be stale: fail closed
)

// session returns the request's valid session, or why there is none.
func (s *server) session(ctx context.Context, r *http.Request, now time.Time) (*cachedSession, sessionResult, string) {
	c, err := r.Cookie(s.sessionName)
	if err != nil || c.Value == "" {
		return nil, sessionNone, "no_session"
	}
	if err := s.staleness(); err != nil {
		return nil, sessionStale, "stale"
	}
	cs := s.cache.get(c.Value)
	if cs == nil {
		claims, kid, err := s.verifySession(ctx, c.Value, now)
		if err == errExpired {
			return nil, sessionInvalid, "expired"
		}
		if err != nil {
			return nil, sessionNone, "invalid_token"
		}
		cs = &cachedSession{claims: claims, hash: hashSID(claims.SID), kid: kid, ekey: emailKey(claims.IdP, claims.Email)}
		s.cache.put(c.Value, cs)
	} else if _, ok := s.keys.keys().byKID[cs.kid]; !ok {
		s.cache.drop(c.Value)
		return nil, sessionNone, "invalid_token"
	}
	if !now.Before(cs.claims.expires()) {
		s.cache.drop(c.Value)
		return nil, sessionInvalid, "expired"
	}
	if why := s.state.check(cs.claims.Subject, cs.ekey, cs.hash, cs.claims.issued(), cs.claims.IdentitySeq); why != "" {
		return nil, sessionInvalid, why
	}
	return cs, sessionValid, ""
}

// identity is the identity a session stands for right now: the registry snapshot if it is newer
// than the session (automatic updates apply at once), else what the login computed. "Newer" is
// stream order (projection.go, Ordering): the snapshot was applied after the session was built.
// The snapshot is identity-store's registry identity, which already follows the IdP's mode: in
// automatic mode its groups are the current SCIM groups; in reauth and no_action they are what the
// latest login read (rebuilt by identity-store from the latest SCIM state it had), so a session
// converges on the registry in every mode. In reauth a membership change also revokes the session
// (userCheck), so its groups are never read after that change.
type identity struct {
	UserID     string
	Email      string
	Name       string
	IdP        string
	Groups     []events.Group
	OIDCFields map[string]any
	version    uint64
	fromSnap   bool
}

func (s *server) identityOf(c *sessionClaims) identity {
	id := identity{UserID: c.Subject, Email: c.Email, Name: c.Name, IdP: c.IdP, Groups: c.Groups, OIDCFields: c.OIDCFields}
	u, ok := s.state.user(c.Subject)
	if !ok {
		return id
	}
	id.version = u.Version
	if u.Identity != nil && snapshotNewer(&u, c) {
		snap := u.Identity
		id.fromSnap = true
		if snap.Email != "" {
			id.Email = snap.Email
		}
		if snap.Name != "" {
			id.Name = snap.Name
		}
		id.Groups = snap.Groups
		if snap.OIDCFields != nil {
			id.OIDCFields = snap.OIDCFields
		}
	}
	return id
}

// snapshotNewer reports whether u's snapshot was applied after the session c was built. Tokens
// without the sequence claim (minted before it existed) compare event times, as they always did.
func snapshotNewer(u *userRecord, c *sessionClaims) bool {
	if c.IdentitySeq != nil {
		return u.IdentitySeq > *c.IdentitySeq
	}
	return !u.IdentityAt.Before(c.issued())
}

func groupNames(gs []events.Group) []string {
	out := make([]string, 0, len(gs))
	for _, g := range gs {
		out = append(out, g.Name)
	}
	return out
}

// groupsHeader joins group names with commas; a comma or percent sign inside a name is
// percent-encoded so the list splits unambiguously.
func groupsHeader(gs []events.Group) string {
	var b strings.Builder
	for i, g := range gs {
		if i > 0 {
			b.WriteByte(',')
		}
		n := g.Name
		if strings.ContainsAny(n, ",%\r\n") {
			n = strings.NewReplacer("%", "%25", ",", "%2C", "\r", "%0D", "\n", "%0A").Replace(n)
		}
		b.WriteString(n)
	}
	return b.String()
}

// appToken returns a cached or fresh app token for the session and audience. It is re-minted when
// half its lifetime has passed, when the user's record changed, or when the signing key rotated.
func (s *server) appToken(cs *cachedSession, id identity, aud string, now time.Time) (string, error) {
	ring := s.keys.keys()
	identKey := "t"
	if id.fromSnap {
		identKey = "s"
	}
	if a := cs.app.Load(); a != nil && a.audience == aud && a.version == id.version && a.identKey == identKey &&
		a.kid == ring.current.kid && now.Before(a.refresh) {
		return a.token, nil
	}
	ttl := s.cfg.AppTokenTTL.D()
	exp := now.Add(ttl)
	if e := cs.claims.expires(); exp.After(e) {
		exp = e
	}
	tok, err := ring.sign(appClaims{
		Issuer: s.issuer, Audience: []string{aud}, Type: typApp, Subject: id.UserID, Email: id.Email, Name: id.Name,
		Groups: groupNames(id.Groups), IdP: idpRef{ID: id.IdP, Type: "oidc"}, OIDCFields: id.OIDCFields,
		IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: exp.Unix(),
	})
	if err != nil {
		return "", err
	}
	cs.app.Store(&appTokenCache{audience: aud, version: id.version, identKey: identKey, kid: ring.current.kid, token: tok,
		refresh: now.Add(ttl / 2)})
	return tok, nil
}

// originalURL rebuilds the URL the browser asked the reverse proxy for: X-Original-URL (nginx
// snippet), else X-Forwarded-Proto/Host/Uri (Traefik, Caddy). Empty if unknown.
func originalURL(r *http.Request) string {
	if u := r.Header.Get("X-Original-Url"); u != "" {
		return u
	}
	host := r.Header.Get("X-Forwarded-Host")
	if host == "" {
		return ""
	}
	proto := r.Header.Get("X-Forwarded-Proto")
	if proto != "http" && proto != "https" {
		proto = "https"
	}
	uri := r.Header.Get("X-Forwarded-Uri")
	if uri == "" || uri[0] != '/' {
		uri = "/"
	}
	return proto + "://" + host + uri
}

// forwardedHost is the protected application's host, for picking its audience.
func forwardedHost(r *http.Request) string {
	if h := r.Header.Get("X-Forwarded-Host"); h != "" {
		return strings.ToLower(h)
	}
	if u, err := url.Parse(r.Header.Get("X-Original-Url")); err == nil {
		return strings.ToLower(u.Host)
	}
	return ""
}

func (s *server) audienceFor(r *http.Request) string {
	if len(s.cfg.AppAudiences) > 0 {
		if a, ok := s.cfg.AppAudiences[forwardedHost(r)]; ok {
			return a
		}
	}
	return s.cfg.AppTokenAudience
}

// isBrowser decides between a 302 to the login page and a 401: API callers (XHR, non-HTML Accept,
// bearer credentials) get 401 like Cloudflare Access answers X-Requested-With requests.
func isBrowser(r *http.Request) bool {
	if r.URL.Query().Get("redirect") == "false" || r.Header.Get("X-Requested-With") != "" || r.Header.Get("Authorization") != "" {
		return false
	}
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// handleVerify is the forward-auth endpoint for nginx auth_request, Traefik ForwardAuth and Caddy
// forward_auth.
func (s *server) handleVerify(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	now := s.now()
	cs, res, _ := s.session(r.Context(), r, now)
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	switch res {
	case sessionValid:
		id := s.identityOf(cs.claims)
		tok, err := s.appToken(cs, id, s.audienceFor(r), now)
		if err != nil {
			s.log.Error("mint app token", "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		h.Set(HeaderUserID, id.UserID)
		h.Set(HeaderIdP, id.IdP)
		h.Set(HeaderEmail, id.Email)
		h.Set(HeaderGroups, groupsHeader(id.Groups))
		h.Set(HeaderJWTAssertion, tok)
		w.WriteHeader(http.StatusOK)
		s.metrics.verifyOK.Inc()
	case sessionStale:
		s.metrics.failClosed.WithLabelValues("verify").Inc()
		s.metrics.verify.WithLabelValues("fail_closed").Inc()
		h.Set("Retry-After", "1")
		http.Error(w, "revocation state unavailable", http.StatusServiceUnavailable)
	default:
		if isBrowser(r) {
			s.metrics.verify.WithLabelValues("redirect").Inc()
			http.Redirect(w, r, s.loginURL("", originalURL(r)), http.StatusFound)
		} else {
			s.metrics.verify.WithLabelValues("unauthenticated").Inc()
			h.Set("WWW-Authenticate", `Cookie realm="scimflow"`)
			http.Error(w, "unauthenticated", http.StatusUnauthorized)
		}
	}
	s.metrics.verifyLatency.Observe(time.Since(start).Seconds())
}

// loginURL is auth's /login for idp (empty: the only IdP, or a chooser) returning to target.
func (s *server) loginURL(idp, target string) string {
	q := url.Values{}
	if idp != "" {
		q.Set("idp_id", idp)
	}
	if target != "" {
		q.Set("redirect_url", target)
	}
	u := s.issuer + "/login"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}
