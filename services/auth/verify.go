package auth

import (
	"context"
	"crypto/sha256"
	"hash/maphash"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scimflow/scimflow/access"
	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/httpserv"
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
	acc    atomic.Pointer[accessIdentCache]
}

// appTokenCache holds the app tokens minted for one identity of a session, one per audience: a
// person moving between applications would otherwise re-sign (ECDSA) on every request. It is
// replaced as a whole when the identity or the signing key changes; at most maxAppAudiences are kept.
type appTokenCache struct {
	version  uint64 // user record version the tokens were built from
	identKey string // snapshot or token identity, to notice a switch between them
	kid      string
	groups   string // X-Scimflow-Groups for this identity
	tokens   map[string]appTokenEntry
}

type appTokenEntry struct {
	token   string
	refresh time.Time // mint a new one after this
}

const maxAppAudiences = 16

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
	if why := s.state.check(cs.claims.Subject, cs.claims.IdP, cs.claims.OIDCSub, cs.ekey, cs.hash, cs.claims.issued(), cs.claims.IdentitySeq); why != "" {
		return nil, sessionInvalid, why
	}
	return cs, sessionValid, ""
}

// identity is the identity a session stands for right now. In automatic mode it is the registry
// snapshot if that is newer than the session (registry changes apply to live sessions at once),
// else what the login computed; in every other mode (and with SCIM off) always what the login
// computed. "Newer" is stream order (projection.go, Ordering): the snapshot was applied after the
// session was built. In reauth a membership change revokes the session instead (userCheck).
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
	// Outside automatic mode each session keeps the identity it was issued with until it
	// re-authenticates (docs/design.md §4): a later snapshot — another browser's login, a SCIM change
	// in no_action or reauth, a login with SCIM off — must not leak into it. Only revocations and locks
	// reach it (session()). A session whose groups did not fit its cookie (Trimmed) has no copy of its
	// own and follows the registry.
	if !s.automatic(c.IdP) && !c.Trimmed {
		return id
	}
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

// automatic reports whether idp is in automatic mode now: SCIM enabled with identity_update_behavior
// automatic, the one mode in which registry changes reach live sessions (a deliberate departure from
// the product scimflow mirrors; docs/auth.md, "Sessions").
func (s *server) automatic(idp string) bool {
	e, ok := s.idps.get(idp)
	return ok && e.cfg.SCIMConfig.Enabled && e.cfg.SCIMConfig.IdentityUpdateBehavior == events.UpdateAutomatic
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

// groupsHeader joins group names with commas; a comma, a percent sign or a control character
// inside a name is percent-encoded so the list splits unambiguously and the header value stays
// valid (a raw NUL or newline would make a proxy reject the whole response).
func groupsHeader(gs []events.Group) string {
	var b strings.Builder
	for i, g := range gs {
		if i > 0 {
			b.WriteByte(',')
		}
		for j := 0; j < len(g.Name); j++ {
			c := g.Name[j]
			if c == ',' || c == '%' || c < 0x20 || c == 0x7f {
				b.WriteByte('%')
				b.WriteByte("0123456789ABCDEF"[c>>4])
				b.WriteByte("0123456789ABCDEF"[c&15])
				continue
			}
			b.WriteByte(c)
		}
	}
	return b.String()
}

// identityCache returns the session's token cache for identity id, replacing it when the identity
// or the signing key changed since it was filled.
func (s *server) identityCache(cs *cachedSession, id identity, kid string) *appTokenCache {
	identKey := "t"
	if id.fromSnap {
		identKey = "s"
	}
	if a := cs.app.Load(); a != nil && a.version == id.version && a.identKey == identKey && a.kid == kid {
		return a
	}
	a := &appTokenCache{version: id.version, identKey: identKey, kid: kid, groups: groupsHeader(id.Groups)}
	cs.app.Store(a)
	return a
}

// appToken returns a cached or fresh app token for the session and audience. It is re-minted when
// half its lifetime has passed, when the user's record changed, or when the signing key rotated.
func (s *server) appToken(cs *cachedSession, id identity, aud string, now time.Time) (string, *appTokenCache, error) {
	ring := s.keys.keys()
	a := s.identityCache(cs, id, ring.current.kid)
	if e, ok := a.tokens[aud]; ok && now.Before(e.refresh) {
		return e.token, a, nil
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
		return "", nil, err
	}
	// Copy on write: concurrent requests of one session read the map without a lock. A lost race
	// only costs one more signature later.
	next := &appTokenCache{version: a.version, identKey: a.identKey, kid: a.kid, groups: a.groups,
		tokens: make(map[string]appTokenEntry, min(len(a.tokens)+1, maxAppAudiences))}
	if len(a.tokens) < maxAppAudiences {
		for k, v := range a.tokens {
			next.tokens[k] = v
		}
	}
	next.tokens[aud] = appTokenEntry{token: tok, refresh: now.Add(ttl / 2)}
	cs.app.Store(next)
	return tok, next, nil
}

// forwarded is the request the browser made to the reverse proxy: X-Forwarded-Host, -Uri and -Proto
// when X-Forwarded-Host is present (Traefik, Caddy, and the nginx snippet sets them), else nginx's
// X-Original-URL. One source serves the app match, the audience and the login redirect, so they can
// never disagree about which application a request is for.
type forwarded struct {
	proto, host, uri string // host as sent (any case, maybe a port); uri with its query
}

func forwardedOf(r *http.Request) forwarded {
	if host := r.Header.Get("X-Forwarded-Host"); host != "" {
		if i := strings.IndexByte(host, ','); i >= 0 {
			host = host[:i]
		}
		f := forwarded{proto: r.Header.Get("X-Forwarded-Proto"), host: strings.TrimSpace(host), uri: r.Header.Get("X-Forwarded-Uri")}
		if f.proto != "http" && f.proto != "https" {
			f.proto = "https"
		}
		if f.uri == "" || f.uri[0] != '/' {
			f.uri = "/"
		}
		return f
	}
	if u, err := url.Parse(r.Header.Get("X-Original-Url")); err == nil && u.Host != "" && (u.Scheme == "http" || u.Scheme == "https") {
		return forwarded{proto: u.Scheme, host: u.Host, uri: u.RequestURI()}
	}
	return forwarded{}
}

// url is the original URL, or "" when the proxy did not say.
func (f forwarded) url() string {
	if f.host == "" {
		return ""
	}
	return f.proto + "://" + f.host + f.uri
}

// originalURL rebuilds the URL the browser asked the reverse proxy for. Empty if unknown.
func originalURL(r *http.Request) string { return forwardedOf(r).url() }

func (s *server) audienceFor(f forwarded) string {
	if len(s.cfg.AppAudiences) > 0 {
		if a, ok := s.cfg.AppAudiences[strings.ToLower(f.host)]; ok {
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
// forward_auth. Without access applications every valid session passes; with them, the request's
// application decides (verifyApp).
func (s *server) handleVerify(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	now := s.now()
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	fw := forwardedOf(r)
	set := s.apps.cur.Load()
	switch {
	case set == nil || !s.apps.synced.Load():
		// Until the access_apps bucket was read, this replica cannot know whether a request is
		// allowed: fail closed, like a stale revocation state.
		s.metrics.failClosed.WithLabelValues("verify").Inc()
		s.metrics.verify.WithLabelValues("fail_closed").Inc()
		h.Set("Retry-After", "1")
		http.Error(w, "access applications not loaded yet", http.StatusServiceUnavailable)
	case set.reg.Len() > 0:
		s.verifyApp(w, r, fw, set, now)
	default:
		cs, res, _ := s.session(r.Context(), r, now)
		switch res {
		case sessionValid:
			s.allow(w, r, cs, s.identityOf(cs.claims), fw, now)
		case sessionStale:
			s.failClosed(w)
		default:
			s.toLogin(w, r, fw, "")
		}
	}
	s.metrics.verifyLatency.Observe(time.Since(start).Seconds())
}

// allow answers 200 with the identity headers and the app token.
func (s *server) allow(w http.ResponseWriter, r *http.Request, cs *cachedSession, id identity, fw forwarded, now time.Time) {
	tok, cache, err := s.appToken(cs, id, s.audienceFor(fw), now)
	if err != nil {
		s.log.Error("mint app token", "err", err, "request_id", httpserv.RequestIDFrom(r.Context()))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	if _, ok := h[HeaderApp]; !ok {
		h[HeaderApp] = []string{""} // no access applications: present and empty, so the proxy clears it
	}
	h.Set(HeaderUserID, id.UserID)
	h.Set(HeaderIdP, id.IdP)
	h.Set(HeaderEmail, id.Email)
	h.Set(HeaderGroups, cache.groups)
	h.Set(HeaderJWTAssertion, tok)
	w.WriteHeader(http.StatusOK)
	s.metrics.verifyOK.Inc()
}

func (s *server) failClosed(w http.ResponseWriter) {
	s.metrics.failClosed.WithLabelValues("verify").Inc()
	s.metrics.verify.WithLabelValues("fail_closed").Inc()
	w.Header().Set("Retry-After", "1")
	http.Error(w, "revocation state unavailable", http.StatusServiceUnavailable)
}

// toLogin answers a request without a usable session: 302 to the login page (of idp, when the app
// allows only some IdPs) for browsers, 401 for API callers.
func (s *server) toLogin(w http.ResponseWriter, r *http.Request, fw forwarded, idp string) {
	if isBrowser(r) {
		s.metrics.verify.WithLabelValues("redirect").Inc()
		http.Redirect(w, r, s.loginURL(idp, fw.url()), http.StatusFound)
		return
	}
	s.metrics.verify.WithLabelValues("unauthenticated").Inc()
	w.Header().Set("WWW-Authenticate", `Cookie realm="scimflow"`)
	http.Error(w, "unauthenticated", http.StatusUnauthorized)
}

// verifyApp enforces the request's application (docs/access-policies.md, "Evaluation"): no app →
// 403 no_application; a bypass policy → 200 without identity; no session, or one older than the
// app's session_duration → login; a session from an IdP the app does not allow → login with an
// allowed IdP (browsers) or 403; then the allow and deny policies decide.
func (s *server) verifyApp(w http.ResponseWriter, r *http.Request, fw forwarded, set *appSet, now time.Time) {
	path := access.NormalizePath(fw.uri)
	ip := s.clientAddr(r)
	rec := events.AccessDecided{Host: fw.host, Path: path} // completed by record, only when sampled
	c := set.reg.Match(fw.host, path)
	if c == nil {
		set.noApp.Inc()
		rec.AppID, rec.Decision, rec.Reason = events.NoApp, access.Deny, access.ReasonNoApplication
		s.record(r, now, "", ip, rec)
		s.forbid(w, r, access.ReasonNoApplication, nil, nil)
		return
	}
	ac := &set.perApp[c.Index]
	rec.AppID, rec.AppName = c.App.ID, c.App.Name
	w.Header().Set(HeaderApp, c.App.ID)
	if b := c.BypassFor(path, ip); b != nil {
		ac.policy[b.Index].Inc()
		rec.Decision, rec.Reason = access.Bypass, b.Reason
		s.record(r, now, "", ip, rec)
		// No identity on a bypass: the identity headers are sent empty so every proxy snippet
		// clears whatever the client put in them.
		h := w.Header()
		for _, k := range []string{HeaderUserID, HeaderIdP, HeaderEmail, HeaderGroups, HeaderJWTAssertion} {
			h[k] = []string{""}
		}
		w.WriteHeader(http.StatusOK)
		s.metrics.verify.WithLabelValues("bypass").Inc()
		return
	}
	firstIdP := ""
	if len(c.App.AllowedIdPs) > 0 {
		firstIdP = c.App.AllowedIdPs[0]
	}
	cs, res, _ := s.session(r.Context(), r, now)
	switch res {
	case sessionValid:
	case sessionStale:
		s.failClosed(w)
		return
	default:
		ac.noSession.Inc()
		s.toLogin(w, r, fw, firstIdP)
		return
	}
	if c.SessionDuration > 0 && now.Sub(cs.claims.issued()) > c.SessionDuration {
		ac.sessionTooOld.Inc()
		s.toLogin(w, r, fw, firstIdP)
		return
	}
	id := s.identityOf(cs.claims)
	rec.UserID, rec.Email, rec.UserIdP = id.UserID, id.Email, id.IdP
	if !c.IdPAllowed(id.IdP) {
		ac.idpNotAllow.Inc()
		rec.Decision, rec.Reason = access.Deny, access.ReasonIdPNotAllowed
		s.record(r, now, cs.hash, ip, rec)
		if isBrowser(r) {
			s.metrics.verify.WithLabelValues("redirect").Inc()
			http.Redirect(w, r, s.loginURL(firstIdP, fw.url()), http.StatusFound)
			return
		}
		s.forbid(w, r, access.ReasonIdPNotAllowed, &id, c)
		return
	}
	d := c.Decide(path, ip, s.accessIdentity(cs, id, set.reg))
	if d.Policy != nil {
		ac.policy[d.Index].Inc()
	} else {
		ac.noPolicy.Inc()
	}
	rec.Decision, rec.Reason = d.Decision, d.Reason
	s.record(r, now, cs.hash, ip, rec)
	if d.Decision != access.Allow {
		s.forbid(w, r, d.Reason, &id, c)
		return
	}
	s.allow(w, r, cs, id, fw, now)
}

// accessIdentity is the session's identity prepared for policy evaluation, cached on the session
// until the identity it was built from changes (a new snapshot version, or a switch between the
// token's and the snapshot's identity) or the apps change. The cached identity is never modified
// after it is stored, so concurrent requests of one session may read it.
func (s *server) accessIdentity(cs *cachedSession, id identity, reg *access.Registry) *access.Identity {
	if a := cs.acc.Load(); a != nil && a.version == id.version && a.fromSnap == id.fromSnap && a.reg == reg {
		return a.id
	}
	ai := access.NewIdentity(id.Email, id.IdP, groupNames(id.Groups), id.OIDCFields)
	reg.Prepare(ai) // group selectors become bit tests for this generation of the apps
	cs.acc.Store(&accessIdentCache{version: id.version, fromSnap: id.fromSnap, reg: reg, id: ai})
	return ai
}

type accessIdentCache struct {
	version  uint64
	fromSnap bool
	reg      *access.Registry // the apps the identity was prepared for
	id       *access.Identity
}

// forbid answers 403 with the reason in X-Scimflow-Deny-Reason; browsers get a small page naming
// the signed-in person and offering to switch account.
func (s *server) forbid(w http.ResponseWriter, r *http.Request, reason string, id *identity, c *access.Compiled) {
	s.metrics.verify.WithLabelValues("forbidden").Inc()
	h := w.Header()
	h.Set(HeaderDenyReason, reason)
	if !isBrowser(r) {
		http.Error(w, "forbidden: "+reason, http.StatusForbidden)
		return
	}
	page := forbiddenPage{Reason: reason}
	if c != nil {
		page.App = c.App.Name
	}
	if id != nil {
		page.Email, page.IdP = id.Email, id.IdP
		if e, ok := s.idps.get(id.IdP); ok && e.cfg.Name != "" {
			page.IdP = e.cfg.Name
		}
		page.SwitchURL = s.issuer + "/logout?" + url.Values{"redirect_url": {s.loginURL("", originalURL(r))}}.Encode()
	}
	writePage(w, http.StatusForbidden, forbiddenTmpl, page)
}

type forbiddenPage struct {
	App, Email, IdP, Reason, SwitchURL string
}

var forbiddenTmpl = template.Must(template.New("forbidden").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer"><title>Access denied</title></head>
<body>
<h1>Access denied</h1>
{{if .Email}}<p>You are signed in as <strong>{{.Email}}</strong> via <strong>{{.IdP}}</strong>, which is not allowed to reach {{if .App}}<strong>{{.App}}</strong>{{else}}this application{{end}}.</p>
<p><a href="{{.SwitchURL}}">Switch account</a></p>
{{else}}<p>No application is configured for this address.</p>{{end}}
<p>Reason code: <code>{{.Reason}}</code></p>
</body></html>
`))

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
