package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/boltdb"
	"github.com/scimflow/scimflow/internal/broker"
	"github.com/scimflow/scimflow/internal/consumer"
	"github.com/scimflow/scimflow/internal/httpserv"
	"github.com/scimflow/scimflow/internal/idpwatch"
	"github.com/scimflow/scimflow/internal/outbox"
)

var errMissingUserID = errors.New("event has no user id")

// server is one auth replica.
type server struct {
	cfg         Config
	d           Deps
	log         *slog.Logger
	now         func() time.Time // request clock (Deps.Now)
	db          *bolt.DB
	leaseToken  string // this data directory's claim on its replica id (replica.go)
	relay       *outbox.Relay
	state       *revState
	metrics     *metrics
	ready       *httpserv.Ready
	redirects   redirectPolicy
	issuer      string // iss of auth's own tokens: the external URL
	redirectURI string
	secure      bool // external URL is https: __Host- cookies with Secure
	sessionName string
	cookieDom   string // Domain of the session cookie; empty: host-only
	loginPrefix string
	idpClient   *http.Client
	idps        *idpRegistry
	cache       *sessionCache
	apps        appWatcher
	alog        *accessLog
	trusted     []netip.Prefix // auth.trusted_proxies

	// Set by start; the routes are served only once up is true.
	up         atomic.Bool
	keys       *keyManager
	keks       *kekRing // from the config; never sent anywhere
	txnKV      jetstream.KeyValue
	identityRn *consumer.Runner
	authRn     *consumer.Runner
	prioRn     *consumer.Runner // IDENTITY_PRIORITY: security facts ahead of the IDENTITY backlog

	snapMetrics *snapshotMetrics
	snapObs     jetstream.ObjectStore // set by start when snapshots are published
	restored    string                // the snapshot this replica's file was restored from; "" if none
}

// newServer opens the replica's file at dbPath and builds the replica; its readiness checks go into
// ready (the listener's, which serves /readyz before the replica exists).
func newServer(cfg Config, d Deps, dbPath string, ready *httpserv.Ready) (*server, error) {
	keks, err := cfg.loadKEKs()
	if err != nil {
		return nil, err
	}
	db, err := boltdb.Open(dbPath, outbox.Bucket, bucketUsers, bucketEmails, bucketLoggedOut, bucketLoggedOutExp, bucketIdPs, bucketCommitMarks)
	if err != nil {
		return nil, err
	}
	replicaID, leaseToken, err := replicaIdentity(db, cfg.ReplicaID)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("replica identity: %w", err)
	}
	cfg.ReplicaID = replicaID
	reg := d.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &server{
		cfg: cfg, d: d, log: d.Log(), now: d.Clock(), db: db, state: newRevState(db), keks: keks,
		ready:      ready,
		redirects:  newRedirectPolicy(cfg.ExternalURL, cfg.AllowedRedirectOrigins),
		issuer:     strings.TrimSuffix(cfg.ExternalURL, "/"),
		idpClient:  newIdPClient(),
		idps:       &idpRegistry{entries: map[string]*idpEntry{}},
		cache:      newSessionCache(),
		leaseToken: leaseToken,
	}
	s.redirectURI = s.issuer + "/callback"
	s.cookieDom = strings.TrimPrefix(strings.ToLower(cfg.CookieDomain), ".")
	if u, _ := url.Parse(cfg.ExternalURL); u != nil && u.Scheme == "https" {
		s.secure = true
		s.sessionName = "__Host-" + cfg.SessionCookie
		if s.cookieDom != "" {
			s.sessionName = "__Secure-" + cfg.SessionCookie
		}
		s.loginPrefix = "__Host-" + cfg.LoginCookie + "-"
	} else {
		s.sessionName = cfg.SessionCookie
		s.loginPrefix = cfg.LoginCookie + "-"
	}
	fail := func(err error) (*server, error) {
		db.Close()
		return nil, err
	}
	if err := db.View(s.state.load); err != nil {
		return fail(fmt.Errorf("load revocation state: %w", err))
	}
	if s.metrics, err = newMetrics(reg, s); err != nil {
		return fail(err)
	}
	s.alog = newAccessLog(s.metrics.accessLogDropped)
	s.trusted, _ = parseTrusted(cfg.TrustedProxies) // validated by Config.Validate
	// Every auth replica publishes to AUTH, so a replica's messages cannot claim their place in the
	// stream (internal/outbox, RelayConfig.SharedStreams).
	s.relay, err = outbox.NewRelay(db, d.JS, outbox.RelayConfig{MetricsPrefix: "scimflow_auth", SharedStreams: true}, reg, s.log, d.Now)
	if err != nil {
		return fail(err)
	}
	idle := min(time.Second, max(s.cfg.RevocationMaxStaleness.D()/4, 10*time.Millisecond))
	// The consumers and the staleness check use the process clock: staleness is elapsed real time,
	// and must not jump when a test moves the request clock.
	s.identityRn, err = consumer.New(db, d.JS, consumer.Config{Stream: events.StreamIdentity, Durable: "auth-" + cfg.ReplicaID, StateKey: consumerStateKeys[events.StreamIdentity],
		MetricsPrefix: "scimflow_auth", IdleCheck: idle}, s.applyIdentity, reg, s.log, time.Now)
	if err != nil {
		return fail(err)
	}
	s.authRn, err = consumer.New(db, d.JS, consumer.Config{Stream: events.StreamAuth, Durable: "auth-logout-" + cfg.ReplicaID, StateKey: consumerStateKeys[events.StreamAuth],
		MetricsPrefix: "scimflow_auth", IdleCheck: idle}, s.applyAuth, reg, s.log, time.Now)
	if err != nil {
		return fail(err)
	}
	s.prioRn, err = consumer.New(db, d.JS, consumer.Config{Stream: events.StreamIdentityPriority, Durable: "auth-priority-" + cfg.ReplicaID, StateKey: consumerStateKeys[events.StreamIdentityPriority],
		MetricsPrefix: "scimflow_auth", IdleCheck: idle}, s.applyPriority, reg, s.log, time.Now)
	if err != nil {
		return fail(err)
	}
	s.ready.Set("revocation_state", func() error { return s.staleness() })
	s.ready.Set("started", func() error {
		if !s.up.Load() {
			return errors.New("signing keys and projections not started")
		}
		return nil
	})
	s.ready.Set("access_apps", func() error {
		if !s.apps.synced.Load() {
			return errors.New("access_apps not read yet")
		}
		return nil
	})
	s.ready.Set("idp_config", func() error {
		s.idps.mu.RLock()
		defer s.idps.mu.RUnlock()
		if !s.idps.synced {
			return errors.New("idp_config not read yet")
		}
		return nil
	})
	return s, nil
}

func (s *server) close() { s.db.Close() }

// start runs once the streams exist: it creates auth's KV buckets, loads the keys, and starts the
// relay, both consumers, the key rotation and the idp_config watch.
func (s *server) start(ctx context.Context, g *errgroup.Group) error {
	replicas := max(s.d.Streams.Replicas, 1)
	kctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	keysKV, err := s.d.JS.CreateOrUpdateKeyValue(kctx, jetstream.KeyValueConfig{
		Bucket: KVKeys, Description: "scimflow auth signing keys (current and previous)", History: 5,
		Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return fmt.Errorf("kv %s: %w", KVKeys, err)
	}
	s.txnKV, err = s.d.JS.CreateOrUpdateKeyValue(kctx, jetstream.KeyValueConfig{
		Bucket: KVLoginTxn, Description: "scimflow auth: login transactions already used", History: 1,
		TTL: s.cfg.LoginTimeout.D() + 2*MaxClockSkew, Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return fmt.Errorf("kv %s: %w", KVLoginTxn, err)
	}
	s.keys, err = newKeyManager(kctx, keysKV, s.keks, s.cfg.KeyRotationInterval.D(), s.now, s.log)
	if err != nil {
		return err
	}
	idpKV, err := s.d.JS.KeyValue(kctx, broker.KVIdPConfig)
	if err != nil {
		return fmt.Errorf("kv %s: %w", broker.KVIdPConfig, err)
	}
	// The lease on the replica id comes before the consumers: a second process with this id must be
	// refused before it deletes and recreates this replica's durable consumers.
	l, err := claimLease(kctx, s.d.JS, replicas, s.cfg.ReplicaID, s.leaseToken, s.cfg.DataDir)
	if err != nil {
		return err
	}
	s.log.Info("replica id", "replica_id", s.cfg.ReplicaID)
	g.Go(func() error { return l.run(ctx) })
	g.Go(func() error { return s.relay.Run(ctx) })
	g.Go(func() error { return s.identityRn.Run(ctx) })
	g.Go(func() error { return s.authRn.Run(ctx) })
	g.Go(func() error { return s.prioRn.Run(ctx) })
	g.Go(func() error { return s.keys.run(ctx) })
	idpw := idpwatch.New(idpKV, s.applyIdP, s.log)
	g.Go(func() error { return idpw.Run(ctx) })
	g.Go(func() error {
		if idpw.WaitSynced(ctx) == nil {
			s.idps.mu.Lock()
			s.idps.synced = true
			s.idps.mu.Unlock()
		}
		return nil
	})
	appsKV, err := s.d.JS.KeyValue(kctx, broker.KVAccessApps)
	if err != nil {
		return fmt.Errorf("kv %s: %w", broker.KVAccessApps, err)
	}
	g.Go(func() error { return s.watchApps(ctx, appsKV) })
	if s.cfg.snapshotPublish() {
		if s.snapObs, err = snapshotStore(kctx, s.d.JS, replicas); err != nil {
			return err
		}
		g.Go(func() error { return s.runSnapshots(ctx) })
	}
	g.Go(func() error { return s.runAccessLog(ctx) })
	s.up.Store(true)
	return nil
}

// applyIdP keeps the IdP registry equal to the idp_config bucket, so IdP changes apply without a
// restart. A changed IdP gets a fresh relying party (new discovery, new JWKS cache). An entry that
// does not decode disables the IdP (internal/idpwatch): logins through it fail until it is saved again.
func (s *server) applyIdP(id string, idp *events.IdP) {
	if idp == nil {
		s.idps.remove(id)
		return
	}
	s.idps.put(*idp)
}

// staleness returns an error when the revocation state may be stale (docs/design.md §2.5): a consumer is
// halted, never caught up, or last caught up longer ago than revocation_max_staleness.
func (s *server) staleness() error {
	for _, r := range []*consumer.Runner{s.identityRn, s.authRn, s.prioRn} {
		if err := r.Halted(); err != nil {
			return err
		}
		at := r.CaughtUpAt()
		if at.IsZero() {
			return errors.New("revocation state not caught up yet")
		}
		if age := time.Since(at); age > s.cfg.RevocationMaxStaleness.D() {
			return fmt.Errorf("revocation state is %s old (max %s)", age.Round(time.Millisecond), s.cfg.RevocationMaxStaleness.D())
		}
	}
	return nil
}

// stalenessSeconds is the age of the older of the two projections, for the gauge.
func (s *server) stalenessSeconds() float64 {
	var worst time.Duration
	for _, r := range []*consumer.Runner{s.identityRn, s.authRn, s.prioRn} {
		at := r.CaughtUpAt()
		if at.IsZero() {
			return -1
		}
		worst = max(worst, time.Since(at))
	}
	return worst.Seconds()
}

func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// metrics are auth's own series; the consumers and the outbox register theirs under scimflow_auth.
type metrics struct {
	logins            *prometheus.CounterVec
	verify            *prometheus.CounterVec
	verifyOK          prometheus.Counter
	verifyLatency     prometheus.Histogram
	sessions          *prometheus.CounterVec
	failClosed        *prometheus.CounterVec
	revocationLatency prometheus.Histogram
	jwksFetches       *prometheus.CounterVec
	catchUpWait       prometheus.Histogram
	barrierWait       prometheus.Histogram
	catchUpRefused    *prometheus.CounterVec
	accessDecisions   *prometheus.CounterVec
	accessLogDropped  prometheus.Counter
	logoutRefused     prometheus.Counter
	// priorityRevocations counts revocations that arrived first by the priority lane.
	priorityRevocations prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *server) (*metrics, error) {
	m := &metrics{
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scimflow_auth_logins_total",
			Help: "Login attempts that reached the callback, by IdP, result (success, denied, error) and reason."}, []string{"idp", "result", "reason"}),
		verify: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scimflow_auth_verify_requests_total",
			Help: "Forward-auth /verify requests by result (ok, unauthenticated, redirect, fail_closed)."}, []string{"result"}),
		verifyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "scimflow_auth_verify_duration_seconds",
			Help: "Time to answer /verify.", Buckets: prometheus.ExponentialBuckets(0.00002, 2, 16)}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scimflow_auth_sessions_issued_total",
			Help: "Sessions created by successful logins, by IdP."}, []string{"idp"}),
		failClosed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scimflow_auth_fail_closed_total",
			Help: "Requests refused because the revocation state may be stale, by endpoint."}, []string{"endpoint"}),
		revocationLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "scimflow_auth_revocation_latency_seconds",
			Help:    "Time from a sessions_revoked or locked event's occurred_at to its commit in this replica's projection.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18)}),
		jwksFetches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scimflow_auth_idp_jwks_fetches_total",
			Help: "IdP JWKS fetches by IdP and result; bounded by the refresh cooldown."}, []string{"idp", "result"}),
		catchUpWait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "scimflow_auth_login_catch_up_seconds",
			Help:    "Time a login callback waited for the IDENTITY projection to apply what the stream held when the callback began.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 17)}),
		priorityRevocations: prometheus.NewCounter(prometheus.CounterOpts{Name: "scimflow_auth_priority_revocations_total",
			Help: "Revocations applied from the IDENTITY_PRIORITY lane before the IDENTITY stream delivered them."}),
		barrierWait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "scimflow_auth_login_scim_barrier_seconds",
			Help:    "Time a login callback's read-your-writes barrier took (scim-ingest outbox, then identity-store), running alongside the code exchange.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 17)}),
		catchUpRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scimflow_auth_login_catch_up_refused_total",
			Help: "Logins refused with 503 because the IDENTITY projection could not catch up (timeout) or the stream could not be read (unavailable)."}, []string{"reason"}),
		accessDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scimflow_auth_access_decisions_total",
			Help: "Access decisions of /verify by application id (none: no application matched), decision (allow, deny, bypass, login) and reason (the deciding policy's name, no_policy, no_application, idp_not_allowed, no_session, session_duration)."},
			[]string{"app", "decision", "reason"}),
		accessLogDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "scimflow_auth_access_log_dropped_total",
			Help: "Sampled access-log records dropped because the queue to the outbox was full."}),
		logoutRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "scimflow_auth_logout_cross_site_refused_total",
			Help: "Logout requests refused because the browser marked them cross-site (answered with a confirmation page)."}),
	}
	m.verifyOK = m.verify.WithLabelValues("ok")
	// Create the series up front so dashboards and alerts see zeros, not absent series.
	for _, r := range []string{"redirect", "unauthenticated", "fail_closed", "forbidden", "bypass"} {
		m.verify.WithLabelValues(r)
	}
	for _, e := range []string{"verify", "get_identity", "callback"} {
		m.failClosed.WithLabelValues(e)
	}
	for _, r := range []string{"timeout", "unavailable"} {
		m.catchUpRefused.WithLabelValues(r)
	}
	staleness := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "scimflow_auth_revocation_staleness_seconds",
		Help: "Seconds since the revocation projection (IDENTITY, IDENTITY_PRIORITY and AUTH consumers) was last known caught up; -1 before the first catch-up."},
		s.stalenessSeconds)
	for _, c := range []prometheus.Collector{m.logins, m.verify, m.verifyLatency, m.sessions, m.failClosed, m.revocationLatency, m.jwksFetches, m.catchUpWait, m.barrierWait, m.catchUpRefused, m.accessDecisions, m.accessLogDropped, m.logoutRefused, m.priorityRevocations, staleness} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register auth metrics: %w", err)
		}
	}
	return m, nil
}
