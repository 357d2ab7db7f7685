// Package auth is the OIDC relying party and session authority: logins, sessions signed with its own
// keys, revocation projected from the IDENTITY stream, and forward-auth for reverse proxies.
//
// Every replica is self-sufficient on the hot path: a session cookie is a token signed with keys all
// replicas share through the auth_keys KV bucket, and the revocation state (per user revoked_before,
// lock, identity snapshot; logged-out session hashes) is a projection of the IDENTITY and AUTH streams
// in the replica's own bbolt file, mirrored in memory. /verify therefore costs a cache lookup and two
// map reads, and fails closed when the projection may be stale (docs/design.md §2.5).
package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/scimflow/scimflow/internal/config"
	"github.com/scimflow/scimflow/internal/httpserv"
	"github.com/scimflow/scimflow/internal/platform"
)

// Name is the service name used in logs, metrics and the data file name.
const Name = "auth"

// MaxClockSkew is the largest leeway accepted for ID-token time claims (docs/design.md §8.3).
const MaxClockSkew = 60 * time.Second

// Config is the auth section of the config file.
type Config struct {
	Listen string `json:"listen"` // default ":8082"
	// MetricsListen is where /metrics is served, apart from the auth port. app fills the default:
	// 127.0.0.1:9082 in serve, :9082 when auth runs alone.
	MetricsListen          string   `json:"metrics_listen"`
	ExternalURL            string   `json:"external_url"` // redirect URI is {external_url}/callback
	AllowedRedirectOrigins []string `json:"allowed_redirect_origins"`
	DataDir                string   `json:"-"` // from data_dir

	// ReplicaID names this replica's durable consumers and appears in logs. Every replica needs its
	// own (and its own data_dir). Default: an id generated once per data directory and stored there.
	// Two running processes with one id are refused (a lease in the auth_replicas bucket).
	ReplicaID string `json:"replica_id"`
	// SessionTTL is the absolute lifetime of a browser session. Default 24h.
	SessionTTL config.Duration `json:"session_ttl"`
	// RevocationMaxStaleness is how old the revocation state may be before sessions are refused
	// (fail closed). Default 10s.
	RevocationMaxStaleness config.Duration `json:"revocation_max_staleness"`
	// AppTokenAudience is the aud of the X-Scimflow-Jwt-Assertion token. Default "scimflow".
	AppTokenAudience string `json:"app_token_audience"`
	// AppAudiences maps a protected application's host (as in X-Forwarded-Host) to its own
	// audience, so a token minted for one app is useless at another.
	AppAudiences map[string]string `json:"app_audiences"`
	// AppTokenTTL is the lifetime of an app token. Default 5m.
	AppTokenTTL config.Duration `json:"app_token_ttl"`
	// KeyRotationInterval is how often the session and app-token signing key is replaced. The
	// previous key keeps verifying for one more interval, so it must be at least SessionTTL.
	// Default 168h.
	KeyRotationInterval config.Duration `json:"key_rotation_interval"`
	// KeyEncryptionKey seals the signing keys and the login-transaction key that every replica
	// shares through the auth_keys bucket (AES-256-GCM), so reading the bucket is not enough to sign
	// a session. 32 random bytes in base64 (openssl rand -base64 32); several keys separated by
	// commas rotate it: the first seals, the others only open (docs/security.md). Every replica
	// needs the same keys. Required unless serve embeds NATS (it then generates
	// data_dir/auth-kek).
	KeyEncryptionKey string `json:"key_encryption_key"`
	// KeyEncryptionKeyFile is the same in a file, one key per line (a mounted secret).
	KeyEncryptionKeyFile string `json:"key_encryption_key_file"`
	// SessionCookie is the session cookie's name; "__Host-" is prepended when external_url is https.
	// Default "scimflow_session".
	SessionCookie string `json:"session_cookie"`
	// CookieDomain, when set (e.g. "example.com"), scopes the session cookie to that domain so a
	// reverse proxy in front of any app under it (app.example.com) receives it and can pass it to
	// /verify. The cookie is then "__Secure-" prefixed instead of "__Host-" (which forbids Domain).
	// Empty: a host-only cookie on external_url's host; apps must then be served on that host.
	CookieDomain string `json:"cookie_domain"`
	// LoginCookie is the prefix of the login-transaction cookies. Default "scimflow_login".
	LoginCookie string `json:"login_cookie"`
	// LoginTimeout bounds a login from /login to /callback. Default 10m.
	LoginTimeout config.Duration `json:"login_timeout"`
	// ClockSkew is the leeway on ID-token exp and iat, at most 60s. Default 60s.
	ClockSkew config.Duration `json:"clock_skew"`
	// JWKSRefreshCooldown is how long a kid (or a signing algorithm) that a JWKS (or discovery)
	// fetch made after the token arrived did not contain causes no further fetch. New kids fetch at
	// once, at most once a second per IdP (idpkeys.go). Default 30s.
	JWKSRefreshCooldown config.Duration `json:"jwks_refresh_cooldown"`
	// LoginCatchUpTimeout bounds how long a login callback waits for this replica's IDENTITY
	// projection to apply everything the stream held when the callback began, so a change
	// identity-store already published (a group removal) shapes the new session. A login that
	// cannot catch up in time is refused with 503 (fail closed). For an IdP with SCIM enabled it also
	// bounds, from the callback's start, the read-your-writes barrier through scim-ingest and
	// identity-store (catchup.go). Default 2s.
	LoginCatchUpTimeout config.Duration `json:"login_catch_up_timeout"`

	// Snapshots: "on" (default) publishes projection snapshots to the auth_snapshots object store
	// and restores a fresh replica (empty data directory) from the newest one that verifies;
	// "restore_only" never publishes; "publish_only" publishes but a fresh replica replays the
	// streams; "off" does neither (docs/operations.md, "Snapshots").
	Snapshots string `json:"snapshots"`
	// SnapshotInterval: a snapshot is published when the newest in the bucket, whichever replica
	// wrote it, is this old and this replica has applied events it does not cover. Streams with a
	// max_age need snapshots more often than max_age, or a fresh replica cannot start. Default 10m.
	SnapshotInterval config.Duration `json:"snapshot_interval"`
	// SnapshotEveryEvents publishes earlier, once this many IDENTITY events were applied beyond the
	// newest snapshot. 0: by interval only. Default 500000.
	SnapshotEveryEvents int `json:"snapshot_every_events"`
	// SnapshotKeep is how many snapshots the bucket keeps (older ones are deleted). Default 3.
	SnapshotKeep int `json:"snapshot_keep"`

	// noSCIMBarrier turns the login's read-your-writes barrier off: tests of auth alone, with no
	// scim-ingest or identity-store answering on NATS, set it. Not configurable: a deployment
	// always runs both, and a login without the barrier could miss an acknowledged SCIM write.
	noSCIMBarrier bool

	// TrustedProxies lists the addresses or CIDRs of the reverse proxies in front of /verify. When
	// the peer of a /verify request is one of them, the client address of the ip access selector is
	// the right-most X-Forwarded-For entry that is not; otherwise it is the peer itself.
	// Empty: X-Forwarded-For is never read.
	TrustedProxies []string `json:"trusted_proxies"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Listen:                 ":8082",
		ExternalURL:            "http://localhost:8082",
		SessionTTL:             config.Duration(24 * time.Hour),
		RevocationMaxStaleness: config.Duration(10 * time.Second),
		AppTokenAudience:       "scimflow",
		AppTokenTTL:            config.Duration(5 * time.Minute),
		KeyRotationInterval:    config.Duration(7 * 24 * time.Hour),
		SessionCookie:          "scimflow_session",
		LoginCookie:            "scimflow_login",
		LoginTimeout:           config.Duration(10 * time.Minute),
		ClockSkew:              config.Duration(MaxClockSkew),
		JWKSRefreshCooldown:    config.Duration(30 * time.Second),
		LoginCatchUpTimeout:    config.Duration(2 * time.Second),
		Snapshots:              SnapshotsOn,
		SnapshotInterval:       config.Duration(10 * time.Minute),
		SnapshotEveryEvents:    500_000,
		SnapshotKeep:           3,
	}
}

// withDefaults fills zero values with the defaults, so a Config built in code (tests, other wiring)
// only names what it changes.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.SessionTTL == 0 {
		c.SessionTTL = d.SessionTTL
	}
	if c.RevocationMaxStaleness == 0 {
		c.RevocationMaxStaleness = d.RevocationMaxStaleness
	}
	if c.AppTokenAudience == "" {
		c.AppTokenAudience = d.AppTokenAudience
	}
	if c.AppTokenTTL == 0 {
		c.AppTokenTTL = d.AppTokenTTL
	}
	if c.KeyRotationInterval == 0 {
		c.KeyRotationInterval = d.KeyRotationInterval
	}
	if c.SessionCookie == "" {
		c.SessionCookie = d.SessionCookie
	}
	if c.LoginCookie == "" {
		c.LoginCookie = d.LoginCookie
	}
	if c.LoginTimeout == 0 {
		c.LoginTimeout = d.LoginTimeout
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = d.ClockSkew
	}
	if c.JWKSRefreshCooldown == 0 {
		c.JWKSRefreshCooldown = d.JWKSRefreshCooldown
	}
	if c.LoginCatchUpTimeout == 0 {
		c.LoginCatchUpTimeout = d.LoginCatchUpTimeout
	}
	if c.Snapshots == "" {
		c.Snapshots = d.Snapshots
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = d.SnapshotInterval
	}
	if c.SnapshotKeep == 0 {
		c.SnapshotKeep = d.SnapshotKeep
	}
	if c.ReplicaID != "" {
		c.ReplicaID = sanitizeName(c.ReplicaID)
	}
	return c
}

// sanitizeName makes s usable in a JetStream durable name (no dots, spaces or wildcards).
func sanitizeName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '-'
	}, s)
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("auth.listen: required"))
	}
	if c.ExternalURL == "" {
		errs = append(errs, errors.New("auth.external_url: required"))
	} else if u, err := url.Parse(c.ExternalURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("auth.external_url: %q is not an absolute http(s) URL", c.ExternalURL))
	}
	if c.CookieDomain != "" {
		d := strings.TrimPrefix(strings.ToLower(c.CookieDomain), ".")
		u, err := url.Parse(c.ExternalURL)
		if err != nil || !(strings.EqualFold(u.Hostname(), d) || strings.HasSuffix(strings.ToLower(u.Hostname()), "."+d)) {
			errs = append(errs, fmt.Errorf("auth.cookie_domain: external_url's host is not within %q", c.CookieDomain))
		}
	}
	if _, err := parseTrusted(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	for _, o := range c.AllowedRedirectOrigins {
		if _, err := parseOrigin(o); err != nil {
			errs = append(errs, fmt.Errorf("auth.allowed_redirect_origins: %w", err))
		}
	}
	if c.KeyEncryptionKey != "" || c.KeyEncryptionKeyFile != "" {
		if _, err := c.loadKEKs(); err != nil {
			errs = append(errs, err)
		}
	}
	c = c.withDefaults()
	if c.SessionTTL < 0 || c.AppTokenTTL < 0 || c.RevocationMaxStaleness < 0 || c.LoginTimeout < 0 || c.JWKSRefreshCooldown < 0 || c.LoginCatchUpTimeout < 0 {
		errs = append(errs, errors.New("auth: durations must not be negative"))
	}
	switch c.Snapshots {
	case SnapshotsOn, SnapshotsRestoreOnly, SnapshotsPublishOnly, SnapshotsOff:
	default:
		errs = append(errs, fmt.Errorf("auth.snapshots: %q, want %s, %s, %s or %s", c.Snapshots, SnapshotsOn, SnapshotsRestoreOnly, SnapshotsPublishOnly, SnapshotsOff))
	}
	if c.SnapshotInterval < 0 || c.SnapshotEveryEvents < 0 || c.SnapshotKeep < 0 {
		errs = append(errs, errors.New("auth.snapshot_interval, snapshot_every_events, snapshot_keep: must not be negative"))
	}
	if c.ClockSkew < 0 || c.ClockSkew.D() > MaxClockSkew {
		errs = append(errs, fmt.Errorf("auth.clock_skew: %s, want 0 to %s", c.ClockSkew.D(), MaxClockSkew))
	}
	if c.KeyRotationInterval.D() < c.SessionTTL.D() {
		errs = append(errs, fmt.Errorf("auth.key_rotation_interval: %s is shorter than session_ttl %s; sessions would outlive their key", c.KeyRotationInterval.D(), c.SessionTTL.D()))
	}
	if c.AppTokenTTL.D() > time.Hour {
		errs = append(errs, fmt.Errorf("auth.app_token_ttl: %s; app tokens are meant to be short-lived (at most 1h)", c.AppTokenTTL.D()))
	}
	return errors.Join(errs...)
}

// servedReplica is the replica behind the listener once Start has opened it.
type servedReplica struct {
	s *server
	h http.Handler
}

// Deps are the service's dependencies.
type Deps = platform.Deps

// Run serves the auth endpoints until ctx ends.
func Run(ctx context.Context, cfg Config, d Deps) error { return run(ctx, cfg, d, nil) }

// run is Run with a hook that receives the replica once it has started (tests reach its internals).
func run(ctx context.Context, cfg Config, d Deps, started func(*server)) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	sm, err := newSnapshotMetrics(d.Registry)
	if err != nil {
		return err
	}
	dbPath := filepath.Join(cfg.DataDir, Name+".db")
	if cfg.DataDir != "" {
		// app locks data_dir (app.LockDataDir) before any service runs, so no other process is
		// writing these files.
		removeSnapshotLeftovers(cfg.DataDir, d.Log())
	}
	// The replica listens at once; the projection (restored from a snapshot on a fresh data
	// directory, which takes seconds at a million people) is opened in Start, once NATS and the
	// streams are there. Until then /healthz answers, /readyz says why not, and the auth endpoints
	// answer 503.
	ready := &httpserv.Ready{}
	var live atomic.Pointer[servedReplica]
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sr := live.Load()
		if sr == nil {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		sr.h.ServeHTTP(w, r)
	})
	defer func() {
		if sr := live.Load(); sr != nil {
			sr.s.close()
		}
	}()
	return platform.Serve(ctx, platform.Service{
		Name: Name, Addr: cfg.Listen, MetricsAddr: cfg.MetricsListen, Handler: handler, Ready: ready,
		Start: func(ctx context.Context, g *errgroup.Group) error {
			restored := ""
			if cfg.snapshotRestore() && cfg.DataDir != "" {
				if _, err := os.Stat(dbPath); errors.Is(err, os.ErrNotExist) {
					// A fresh data directory: restore before the file exists, so everything below
					// (replica identity, consumers, the in-memory state) starts from the restored
					// projection.
					ready.Set("snapshot", func() error { return errors.New("restoring the projection from a snapshot") })
					if restored, err = restoreWithRetry(ctx, d, dbPath, sm); err != nil {
						return err
					}
					ready.Set("snapshot", func() error { return nil })
				}
			}
			s, err := newServer(cfg, d, dbPath, ready)
			if err != nil {
				return err
			}
			s.snapMetrics, s.restored = sm, restored
			live.Store(&servedReplica{s: s, h: s.routes()})
			if err := s.start(ctx, g); err != nil {
				return err
			}
			if started != nil {
				started(s)
			}
			return nil
		},
	}, d)
}
