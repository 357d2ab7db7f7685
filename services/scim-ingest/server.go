package scimingest

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
	"github.com/scimflow/scimflow/internal/idpwatch"
	"github.com/scimflow/scimflow/internal/outbox"
)

// server is one scim-ingest instance: the store, the IdP registry, limits and metrics.
type server struct {
	cfg     Config
	baseURL string
	db      *bolt.DB
	relay   *outbox.Relay
	commits *committer // run by Run; the store writes through it
	store   *store
	js      jetstream.JetStream
	nc      *nats.Conn // for the read-your-writes barrier (barrier.go); nil in tests without it
	log     *slog.Logger
	now     func() time.Time
	sc      schemas
	m       metrics
	logs    logBuffer
	adm     *admission
	authErr *authFailures

	mu       sync.RWMutex // guards the following
	idps     map[string]events.IdP
	loaded   bool // the initial contents of the idp_config bucket were read
	limiters map[string]*rate.Limiter
}

func newServer(cfg Config, d Deps, db *bolt.DB, relay *outbox.Relay) (*server, error) {
	s := &server{
		cfg: cfg, baseURL: strings.TrimRight(cfg.BaseURL, "/"), db: db, relay: relay, js: d.JS, nc: d.NC,
		log: d.Log(), now: d.Clock(), sc: newSchemas(),
		idps: map[string]events.IdP{}, limiters: map[string]*rate.Limiter{},
	}
	shared, err := migrate(db)
	if err != nil {
		return nil, fmt.Errorf("migrate %s indexes: %w", Name, err)
	}
	if shared > 0 {
		s.log.Warn("users share a userName or a linked person with an older user of their IdP; the older keeps it, the others cannot move onto another taken one",
			"users", shared)
	}
	s.m = newMetrics()
	s.adm = newAdmission(cfg, relay, d.JS, s.now, d.Streams.Replicas, s.log)
	s.authErr = newAuthFailures(s.log)
	if d.Registry != nil {
		if err := s.m.register(d.Registry); err != nil {
			return nil, err
		}
		if err := s.adm.register(d.Registry); err != nil {
			return nil, fmt.Errorf("register scim-ingest metrics: %w", err)
		}
		if err := d.Registry.Register(s.authErr.total); err != nil {
			return nil, fmt.Errorf("register scim-ingest metrics: %w", err)
		}
	}
	s.logs.flush = func(evs []events.Event) {
		s.store.submitLogs(evs, func(err error) {
			s.log.Error("provisioning log records not recorded", "records", len(evs), "err", err)
		})
	}
	s.commits = newCommitter(db, cfg.MaxCommitBatch, func(n int) {
		s.m.commitBatch.Observe(float64(n))
		relay.Refresh()
		relay.Notify()
	})
	s.store = newStore(db, s.commits, s.now)
	return s, nil
}

// start runs once the streams exist: it loads the IdP definitions (and keeps watching them), counts
// the stored resources for the gauges, and starts the outbox relay.
func (s *server) start(relay *outbox.Relay) func(ctx context.Context, g *errgroup.Group) error {
	return func(ctx context.Context, g *errgroup.Group) error {
		kv, err := s.js.KeyValue(ctx, broker.KVIdPConfig)
		if err != nil {
			return fmt.Errorf("idp_config bucket: %w", err)
		}
		w := idpwatch.New(kv, s.applyIdP, s.log)
		g.Go(func() error { return w.Run(ctx) })
		g.Go(func() error { return s.authErr.run(ctx) })
		if s.nc != nil {
			g.Go(func() error { return broker.ServeBarrier(ctx, s.nc, events.BarrierSCIMSubjects, s.barrier) })
		}
		if err := w.WaitSynced(ctx); err != nil {
			return err
		}
		s.mu.Lock()
		s.loaded = true
		s.mu.Unlock()
		g.Go(func() error { return relay.Run(ctx) })
		g.Go(func() error { return s.adm.run(ctx, 250*time.Millisecond) })
		return s.initGauges()
	}
}

// applyIdP records one change of the idp_config bucket (nil: deleted or undecodable, so the IdP is
// gone — see internal/idpwatch for the rule every service shares).
func (s *server) applyIdP(id string, idp *events.IdP) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if idp == nil {
		delete(s.idps, id)
		delete(s.limiters, id)
		return
	}
	s.idps[id] = *idp
}

// lookupIdP returns the IdP whose SCIM endpoint id names, if it exists with SCIM enabled.
func (s *server) lookupIdP(id string) (events.IdP, bool, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	idp, ok := s.idps[id]
	return idp, ok && idp.SCIMConfig.Enabled, s.loaded
}

// authenticate checks the bearer secret against the IdP's stored SHA-256 digest, and against the
// previous digest while the grace period after a refresh lasts. The digests have equal length, so
// the constant-time comparison never returns early.
func (s *server) authenticate(r *http.Request, idp events.IdP) bool {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	match := func(hexDigest string) bool {
		want, err := hex.DecodeString(hexDigest)
		if err != nil || len(want) != len(sum) {
			return false
		}
		return subtle.ConstantTimeCompare(sum[:], want) == 1
	}
	sc := idp.SCIMConfig
	cur := match(sc.SecretSHA256)
	prev := false
	if sc.PreviousSecretSHA256 != "" && s.cfg.SecretGrace > 0 && s.now().Before(sc.SecretRotatedAt.Add(s.cfg.SecretGrace.D())) {
		prev = match(sc.PreviousSecretSHA256)
	}
	return cur || prev
}

// allow takes a token from the IdP's bucket; when none is left it returns how long to wait.
func (s *server) allow(idp string) (time.Duration, bool) {
	if s.cfg.RateLimit <= 0 {
		return 0, true
	}
	s.mu.Lock()
	l := s.limiters[idp]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(s.cfg.RateLimit), s.cfg.RateBurst)
		s.limiters[idp] = l
	}
	s.mu.Unlock()
	res := l.ReserveN(s.now(), 1)
	if !res.OK() {
		return time.Second, false
	}
	if d := res.DelayFrom(s.now()); d > 0 {
		res.CancelAt(s.now())
		return d, false
	}
	return 0, true
}

// initGauges counts the stored users and groups of every IdP.
func (s *server) initGauges() error {
	return s.db.View(func(tx *bolt.Tx) error {
		for _, b := range []struct {
			name  string
			gauge *prometheus.GaugeVec
		}{{bucketUsers, s.m.users}, {bucketGroups, s.m.groups}} {
			counts := map[string]int{}
			tx.Bucket([]byte(b.name)).ForEach(func(k, _ []byte) error {
				idp, _, _ := strings.Cut(string(k), "\x00")
				counts[idp]++
				return nil
			})
			for idp, n := range counts {
				b.gauge.WithLabelValues(idp).Set(float64(n))
			}
		}
		return nil
	})
}

// metrics are scim-ingest's own metrics; the outbox relay registers scimflow_scim_ingest_outbox_*.
type metrics struct {
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	users       *prometheus.GaugeVec
	groups      *prometheus.GaugeVec
	commitBatch prometheus.Histogram
}

func newMetrics() metrics {
	const p = "scimflow_scim_ingest_"
	return metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: p + "requests_total",
			Help: "SCIM requests by IdP, method, resource endpoint and HTTP status (idp is \"unknown\" before the IdP is authenticated)."},
			[]string{"idp", "method", "resource", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: p + "request_duration_seconds",
			Help: "SCIM request latency until the response is written (writes include their durable commit).", Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)},
			[]string{"method", "resource"}),
		users:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: p + "users", Help: "SCIM users stored per IdP."}, []string{"idp"}),
		groups: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: p + "groups", Help: "SCIM groups stored per IdP."}, []string{"idp"}),
		commitBatch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: p + "commit_batch_size",
			Help: "Writes grouped into one bbolt commit.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
	}
}

func (m metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.users, m.groups, m.commitBatch} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register scim-ingest metrics: %w", err)
		}
	}
	return nil
}
