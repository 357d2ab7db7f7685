// Package console is identity-store's admin console: server-rendered pages under /ui/ on the admin
// listener (docs/console.md). It is a client of the admin API — every read and every action goes
// through the same handlers, validation and events as a JSON caller's, in process, with the admin
// token — plus read-only views of JetStream for pipeline health. Keeping it behind the narrow Backend
// struct keeps the admin API free of HTML concerns.
//
// Security model: a console session is a random id in an HttpOnly, SameSite=Strict cookie scoped to
// /ui/ (Secure when the request came over https), held in memory (a restart signs everyone out). The
// cookie only opens the console; /api/* still wants the bearer token. Every state-changing form
// carries the session's CSRF token; every page is sent with a strict Content-Security-Policy (no
// inline script or style), X-Frame-Options: DENY and no-store caching.
package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/httpserv"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Prefix is where the console is served.
const Prefix = "/ui/"

// Defaults of Config.
const (
	DefaultSessionTTL = 8 * time.Hour
	maxSessions       = 10000
	cookieName        = "scimflow_console"
	preCookieName     = "scimflow_console_signin" // the sign-in form's CSRF double-submit cookie
)

// Config is the console's part of the identity_store section (flat keys, so SCIMFLOW_IDENTITY_STORE_*
// environment overrides reach each one).
type Config struct {
	// AdminIdP and AdminGroup let members of that group of that IdP in: their app token, passed by
	// the reverse proxy in X-Scimflow-Jwt-Assertion after auth's /verify, opens a console session.
	// Both empty: only the admin token signs in.
	AdminIdP, AdminGroup string
	// AuthURL is auth's external URL: the IdP page's Test button and the sign-in link go there.
	AuthURL string
	// CertsURL is where auth's signing keys are fetched to verify app tokens. Default AuthURL/certs.
	CertsURL string
	// AppAudience is the aud an app token must carry to open the console (auth's app_token_audience,
	// or the console host's entry in auth.app_audiences).
	AppAudience string
	// PrometheusURL, when set, is queried for revocation latency and firing alerts on the overview.
	PrometheusURL string
	// SecretGrace is scim-ingest's secret_grace, shown when a SCIM secret is rotated.
	SecretGrace time.Duration
	// SessionTTL is a console session's absolute lifetime. Default 8h.
	SessionTTL time.Duration
}

// Stats are identity-store's own figures for the overview, read from its registry file and outbox.
type Stats struct {
	IdPs            map[string]IdPStats
	OutboxDepth     int64
	OutboxOldestAge time.Duration
	// Admission is every running scim-ingest's admission-control state, as each published it in the
	// admission bucket (events.AdmissionState), sorted by instance. Empty: no instance reported in
	// the bucket's TTL. AdmissionError says why the bucket could not be read.
	Admission      []events.AdmissionState
	AdmissionError string
}

// AdmissionOn reports whether any scim-ingest instance is refusing bulk writes.
func (s Stats) AdmissionOn() bool {
	for _, a := range s.Admission {
		if a.Active {
			return true
		}
	}
	return false
}

// IdPStats are one IdP's registry counters and its newest provisioning-log row.
type IdPStats struct {
	Users    map[string]int64 // by status: provisioned, active, inactive
	Locked   int64
	Seats    int64
	LastSCIM *LastSCIM
}

// LastSCIM is the newest SCIM request of an IdP as the provisioning log has it.
type LastSCIM struct {
	At         time.Time
	Method     string
	Path       string
	Status     string
	HTTPStatus int
}

// Backend is everything the console needs from identity-store.
type Backend struct {
	// API serves the admin API (/api/...); the console calls it in process with Token.
	API   http.Handler
	Token string
	// JS is read for pipeline health (stream heads, durable consumers); nil hides that panel.
	JS jetstream.JetStream
	// Stats returns identity-store's own figures.
	Stats func(ctx context.Context) (Stats, error)
	// Streams are the streams whose heads and consumers the overview shows.
	Streams []string
	Log     *slog.Logger
	Now     func() time.Time
	// HTTPClient fetches auth's keys and queries Prometheus. Default: a client with a 5 s timeout.
	HTTPClient *http.Client
}

// Console serves the pages. Create it with New.
type Console struct {
	cfg   Config
	b     Backend
	pages map[string]*template.Template
	mux   http.Handler
	token [32]byte // SHA-256 of the admin token, compared in constant time
	keys  *keySet  // auth's app-token keys; nil without AdminIdP/AdminGroup

	mu       sync.Mutex // guards sessions
	sessions map[string]*session
}

// session is one signed-in browser.
type session struct {
	Who     string // "admin token" or the app token's email
	Via     string // "token" or "oidc"
	sub     string // app token subject (oidc)
	csrf    string
	expires time.Time
}

// New builds the console.
func New(cfg Config, b Backend) (*Console, error) {
	if b.API == nil || b.Token == "" {
		return nil, errors.New("console: the admin API and token are required")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.AppAudience == "" {
		cfg.AppAudience = "scimflow" // auth's default app_token_audience
	}
	if b.Log == nil {
		b.Log = slog.New(slog.DiscardHandler)
	}
	if b.Now == nil {
		b.Now = time.Now
	}
	if b.HTTPClient == nil {
		b.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	c := &Console{cfg: cfg, b: b, sessions: map[string]*session{}, token: sha256.Sum256([]byte(b.Token))}
	if err := c.parseTemplates(); err != nil {
		return nil, err
	}
	c.mux = c.routes()
	if cfg.AdminIdP != "" && cfg.AdminGroup != "" {
		certs := cfg.CertsURL
		if certs == "" {
			certs = strings.TrimRight(cfg.AuthURL, "/") + "/certs"
		}
		c.keys = newKeySet(certs, b.HTTPClient, b.Now)
	}
	return c, nil
}

// parseTemplates parses each page together with the layout, so every page has its own set.
func (c *Console) parseTemplates() error {
	funcs := template.FuncMap{
		"since":  c.since,
		"ts":     formatTime,
		"join":   strings.Join,
		"add":    func(a, b int) int { return a + b },
		"pretty": prettyJSON,
		"query":  withQuery,
	}
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return err
	}
	c.pages = map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimPrefix(n, "templates/")
		if base == "layout.html" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(assets, "templates/layout.html", n)
		if err != nil {
			return err
		}
		c.pages[base] = t
	}
	return nil
}

// ServeHTTP serves everything under Prefix.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	c.mux.ServeHTTP(w, r)
}

func (c *Console) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /ui/signin", c.signinPage)
	mux.HandleFunc("POST /ui/signin", c.signin)
	mux.HandleFunc("POST /ui/signout", c.auth(c.signout))
	mux.HandleFunc("GET /ui/{$}", c.auth(c.overview))
	mux.HandleFunc("GET /ui/idps", c.auth(c.idpList))
	mux.HandleFunc("GET /ui/idps/new", c.auth(c.idpNew))
	mux.HandleFunc("POST /ui/idps", c.auth(c.idpCreate))
	mux.HandleFunc("GET /ui/idps/{id}", c.auth(c.idpEdit))
	mux.HandleFunc("POST /ui/idps/{id}", c.auth(c.idpUpdate))
	mux.HandleFunc("GET /ui/idps/{id}/{action}", c.auth(c.idpConfirm))
	mux.HandleFunc("POST /ui/idps/{id}/delete", c.auth(c.idpDelete))
	mux.HandleFunc("POST /ui/idps/{id}/rotate", c.auth(c.idpRotate))
	mux.HandleFunc("GET /ui/people", c.auth(c.people))
	mux.HandleFunc("GET /ui/people/{id}", c.auth(c.person))
	mux.HandleFunc("GET /ui/people/{id}/{action}", c.auth(c.personConfirm))
	mux.HandleFunc("POST /ui/people/{id}/{action}", c.auth(c.personAction))
	mux.HandleFunc("GET /ui/logs", c.auth(c.logs))
	mux.HandleFunc("GET /ui/logs/caused", c.auth(c.logCaused))
	mux.HandleFunc("GET /ui/access", c.auth(c.accessList))
	mux.HandleFunc("GET /ui/access/new", c.auth(c.accessNew))
	mux.HandleFunc("GET /ui/access/log", c.auth(c.accessLog))
	mux.HandleFunc("POST /ui/access", c.auth(c.accessSave))
	mux.HandleFunc("GET /ui/access/{id}", c.auth(c.accessEdit))
	mux.HandleFunc("POST /ui/access/{id}", c.auth(c.accessSave))
	mux.HandleFunc("GET /ui/access/{id}/delete", c.auth(c.accessConfirmDelete))
	mux.HandleFunc("POST /ui/access/{id}/delete", c.auth(c.accessDelete))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		c.errorPage(w, r, nil, http.StatusNotFound, "No such page.")
	})
	return mux
}

type ctxKey struct{}

// auth lets signed-in browsers through. Unauthenticated page loads are redirected to the sign-in
// page; anything else (a form post, a fetch) gets 401. A state-changing request must carry the
// session's CSRF token (and, when the browser sends one, a same-origin Origin header).
func (c *Console) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := c.current(w, r)
		if s == nil {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				http.Redirect(w, r, "/ui/signin?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.errorPage(w, r, nil, http.StatusUnauthorized, "Sign in first: this console session has ended or never began.")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
			if !sameOrigin(r) || !equalSecret(r.PostFormValue("csrf"), s.csrf) {
				c.errorPage(w, r, s, http.StatusForbidden, "This form is out of date or did not come from the console (CSRF check failed). Reload the page and try again.")
				return
			}
		}
		next(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, s)))
	}
}

func sessionOf(r *http.Request) *session {
	s, _ := r.Context().Value(ctxKey{}).(*session)
	return s
}

// current returns the browser's console session: its cookie's, or one opened from a valid app
// token of a console admin (the reverse-proxy sign-in).
func (c *Console) current(w http.ResponseWriter, r *http.Request) *session {
	now := c.b.Now()
	var s *session
	if ck, err := r.Cookie(cookieName); err == nil {
		c.mu.Lock()
		s = c.sessions[ck.Value]
		if s != nil && !now.Before(s.expires) {
			delete(c.sessions, ck.Value)
			s = nil
		}
		c.mu.Unlock()
	}
	if tok := r.Header.Get(headerAssertion); tok != "" && c.keys != nil {
		id, err := c.verifyAppToken(r.Context(), tok)
		if err != nil {
			c.b.Log.Info("console: app token refused", "err", err, "request_id", httpserv.RequestIDFrom(r.Context()))
			return s
		}
		if s != nil && s.Via == "oidc" && s.sub == id.Subject {
			return s
		}
		return c.open(w, r, "oidc", id.Email, id.Subject)
	}
	return s
}

// open starts a session and sets its cookie.
func (c *Console) open(w http.ResponseWriter, r *http.Request, via, who, sub string) *session {
	now := c.b.Now()
	id, csrf := randomToken(), randomToken()
	s := &session{Who: who, Via: via, sub: sub, csrf: csrf, expires: now.Add(c.cfg.SessionTTL)}
	c.mu.Lock()
	if len(c.sessions) >= maxSessions {
		for k, old := range c.sessions {
			if !now.Before(old.expires) || len(c.sessions) >= maxSessions {
				delete(c.sessions, k)
			}
		}
	}
	c.sessions[id] = s
	c.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: Prefix, HttpOnly: true, Secure: isHTTPS(r),
		SameSite: http.SameSiteStrictMode, MaxAge: int(c.cfg.SessionTTL.Seconds())})
	return s
}

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	if s := c.current(w, r); s != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	c.renderSignin(w, r, http.StatusOK, "")
}

func (c *Console) renderSignin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	pre := randomToken()
	http.SetCookie(w, &http.Cookie{Name: preCookieName, Value: pre, Path: "/ui/signin", HttpOnly: true, Secure: isHTTPS(r),
		SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	data := map[string]any{"CSRF": pre, "Error": msg, "Next": safeNext(r.FormValue("next"))}
	if c.keys != nil && c.cfg.AuthURL != "" {
		data["OIDC"] = map[string]string{"IdP": c.cfg.AdminIdP, "Group": c.cfg.AdminGroup,
			"URL": strings.TrimRight(c.cfg.AuthURL, "/") + "/login?idp_id=" + urlQueryEscape(c.cfg.AdminIdP)}
	}
	c.render(w, r, nil, status, "signin.html", "Sign in", data)
}

// signin checks the pasted admin token (constant time on digests) and opens a session. The form's
// CSRF token must equal the sign-in cookie set with the form (double submit), so another site cannot
// sign a browser into a session it chose.
func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	ck, err := r.Cookie(preCookieName)
	if err != nil || !sameOrigin(r) || !equalSecret(r.PostFormValue("csrf"), ck.Value) {
		c.errorPage(w, r, nil, http.StatusForbidden, "This sign-in form is out of date or did not come from the console (CSRF check failed). Reload the page and try again.")
		return
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(r.PostFormValue("token"))))
	if subtle.ConstantTimeCompare(got[:], c.token[:]) != 1 {
		c.renderSignin(w, r, http.StatusUnauthorized, "That is not the admin token.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: preCookieName, Path: "/ui/signin", MaxAge: -1})
	c.open(w, r, "token", "admin token", "")
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(cookieName); err == nil {
		c.mu.Lock()
		delete(c.sessions, ck.Value)
		c.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Path: Prefix, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
}

// page is what every template receives.
type page struct {
	Title   string
	Nav     string
	Session *session
	CSRF    string
	Data    any
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, s *session, status int, name, title string, data any) {
	t := c.pages[name]
	p := page{Title: title, Nav: strings.TrimSuffix(name, ".html"), Session: s, Data: data}
	if s != nil {
		p.CSRF = s.csrf
	}
	var buf strings.Builder
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		c.b.Log.Error("console: render", "page", name, "err", err, "request_id", httpserv.RequestIDFrom(r.Context()))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(buf.String()))
}

// errorPage shows msg (and, for an admin API refusal, its messages) as an HTML page.
func (c *Console) errorPage(w http.ResponseWriter, r *http.Request, s *session, status int, msg string, details ...string) {
	if status >= 500 {
		c.b.Log.Error("console: error page", "status", status, "msg", msg, "details", details, "request_id", httpserv.RequestIDFrom(r.Context()))
	}
	c.render(w, r, s, status, "error.html", http.StatusText(status), map[string]any{"Status": status, "Message": msg, "Details": details,
		"RequestID": httpserv.RequestIDFrom(r.Context())})
}

// fail shows an error from an admin API call or from the console itself.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		c.errorPage(w, r, sessionOf(r), ae.Status, "The admin API refused the request.", ae.Messages...)
		return
	}
	c.errorPage(w, r, sessionOf(r), http.StatusInternalServerError, "Internal error.", err.Error())
}

func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func equalSecret(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	x, y := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(x[:], y[:]) == 1
}

func isHTTPS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// sameOrigin refuses a request whose Origin header (browsers send it on every POST) names another
// origin than the one it was sent to; no Origin header is left to the CSRF token alone.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	host := r.Header.Get("X-Forwarded-Host")
	if host == "" {
		host = r.Host
	}
	o = strings.TrimPrefix(strings.TrimPrefix(o, "https://"), "http://")
	return strings.EqualFold(o, host)
}

// safeNext keeps a post-sign-in redirect inside the console.
func safeNext(n string) string {
	if !strings.HasPrefix(n, Prefix) || strings.HasPrefix(n, "//") || strings.ContainsAny(n, "\\\r\n") {
		return Prefix
	}
	return n
}
