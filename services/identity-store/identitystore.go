// Package identitystore keeps the user registry: it projects the SCIM and AUTH streams into its own
// bbolt file, applies each IdP's update policy, publishes IDENTITY events and serves the admin API.
//
// Three consumers feed the projection, each with its cursor in the same bbolt transaction as the state
// it produced: identitystore-scim (SCIM stream: users, groups, provisioning log), identitystore-auth
// (AUTH stream: logins take seats and rebuild identities) and identitystore-identity (IDENTITY
// stream, of which only the admin API's facts are applied). A fourth, identitystore-scim-priority,
// reads the SCIM_PRIORITY lane and publishes the revocations and locks of security facts on
// IDENTITY_PRIORITY ahead of the backlog, changing no registry state (priority.go). Admin actions that change a user (revoke,
// remove seat) are published to IDENTITY first and applied from there, so a replay of the streams
// rebuilds them too.
package identitystore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
	"github.com/scimflow/scimflow/internal/config"
	"github.com/scimflow/scimflow/internal/consumer"
	"github.com/scimflow/scimflow/internal/httpserv"
	"github.com/scimflow/scimflow/internal/idpwatch"
	"github.com/scimflow/scimflow/internal/oidcprobe"
	"github.com/scimflow/scimflow/internal/outbox"
	"github.com/scimflow/scimflow/internal/platform"
)

// Name is the service name used in logs, metrics and the data file name.
const Name = "identity-store"

// Durable consumer names. They are API: renaming one reprocesses its stream.
const (
	DurableSCIM     = "identitystore-scim"
	DurableAuth     = "identitystore-auth"
	DurableIdentity = "identitystore-identity"
)

const metricsPrefix = "scimflow_identity_store"

// DefaultSCIMLogRetention is how long SCIM provisioning-log rows are kept (by event time).
const DefaultSCIMLogRetention = 30 * 24 * time.Hour

// Config is the identity_store section of the config file.
type Config struct {
	Listen string `json:"listen"` // default ":8081"
	// MetricsListen is where /metrics is served, apart from the admin port. app fills the default:
	// 127.0.0.1:9081 in serve, :9081 when identity-store runs alone.
	MetricsListen string `json:"metrics_listen"`
	// SCIMLogRetention is how long provisioning-log rows are kept, measured in event time: each new row
	// prunes the rows older than its own time minus the retention. Default 720h (30 days).
	SCIMLogRetention config.Duration `json:"scim_log_retention"`

	// The admin console (docs/console.md). Members of ConsoleAdminGroup of ConsoleAdminIdP may sign in
	// with the app token auth's /verify gives the reverse proxy; both empty: admin token only.
	ConsoleAdminIdP   string `json:"console_admin_idp"`
	ConsoleAdminGroup string `json:"console_admin_group"`
	// ConsoleCertsURL is where app tokens' keys are fetched; default auth.external_url + /certs.
	ConsoleCertsURL string `json:"console_certs_url"`
	// ConsoleAppAudience is the aud an app token must carry to open the console; default
	// auth.app_token_audience ("scimflow"). Set it to the console host's auth.app_audiences entry.
	ConsoleAppAudience string `json:"console_app_audience"`
	// ConsolePrometheusURL, when set, is queried for revocation latency and firing alerts.
	ConsolePrometheusURL string `json:"console_prometheus_url"`
	// ConsoleSessionTTL is a console session's absolute lifetime. Default 8h.
	ConsoleSessionTTL config.Duration `json:"console_session_ttl"`

	AuthURL     string        `json:"-"` // from auth.external_url: the console's Test links and app-token issuer
	SecretGrace time.Duration `json:"-"` // from scim_ingest.secret_grace, shown when a secret is rotated

	DataDir           string            `json:"-"` // from data_dir
	AdminToken        string            `json:"-"` // from admin_token; empty: generated into <data_dir>/admin_token
	IdentityProviders []json.RawMessage `json:"-"` // from identity_providers: seeded at start
	SCIMBaseURL       string            `json:"-"` // from scim_ingest.base_url; scim_base_url = it + /populations/{id}/scim/v2
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{Listen: ":8081", SCIMLogRetention: config.Duration(DefaultSCIMLogRetention)}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("identity_store.listen: required"))
	}
	if c.SCIMLogRetention < 0 {
		errs = append(errs, errors.New("identity_store.scim_log_retention: must not be negative"))
	}
	errs = append(errs, c.validateConsole()...)
	for i, raw := range c.IdentityProviders {
		if _, err := parseSeed(raw); err != nil {
			errs = append(errs, fmt.Errorf("identity_providers[%d]: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

func (c Config) retention() time.Duration {
	if c.SCIMLogRetention == 0 {
		return DefaultSCIMLogRetention
	}
	return c.SCIMLogRetention.D()
}

// Deps are the service's dependencies.
type Deps = platform.Deps

// service is one running identity-store: the registry file, its consumers and the admin API.
type service struct {
	cfg   Config
	d     Deps
	db    *bolt.DB
	proj  *projector
	relay *outbox.Relay
	token string
	now   func() time.Time
	idpc  *idpCache // the idp_config bucket in memory (idpcache.go)

	scim, auth, ident, prio *consumer.Runner

	appsMu          sync.Mutex    // serialises the admin API's access-app writes (validation against the set)
	appSyncKick     chan struct{} // wakes runAppSync after an app change committed
	appSyncFailures prometheus.Counter

	// beforeApply, when set (tests only), runs before each event is applied; an error it returns is
	// handled like an apply error (a transient one makes the runner nak and redeliver).
	beforeApply func(events.Event) error
	// probe checks an IdP's OIDC configuration against the provider (discovery, key set) when it is
	// saved or seeded; see idp.go, checkAgainstProvider.
	probe func(context.Context, events.OIDCConfig) oidcprobe.Result
}

// Run serves the admin API and runs the projection until ctx ends.
func Run(ctx context.Context, cfg Config, d Deps) error {
	s, err := newService(cfg, d)
	if err != nil {
		return err
	}
	defer s.db.Close()
	return s.serve(ctx)
}

func newService(cfg Config, d Deps) (*service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	token, err := adminToken(cfg, d)
	if err != nil {
		return nil, err
	}
	db, err := openStore(filepath.Join(cfg.DataDir, Name+".db"))
	if err != nil {
		return nil, err
	}
	if err := backfillIndexes(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("build search indexes: %w", err)
	}
	if err := backfillAccessIdent(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("build access identity index: %w", err)
	}
	s := &service{cfg: cfg, d: d, db: db, proj: &projector{logRetention: cfg.retention()}, token: token, now: d.Clock(),
		idpc:        newIdPCache(),
		probe:       defaultProbe,
		appSyncKick: make(chan struct{}, 1),
		appSyncFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: metricsPrefix + "_access_apps_sync_failures_total",
			Help: "Failed attempts to mirror the access applications into the access_apps KV bucket (retried)."})}
	fail := func(err error) (*service, error) {
		db.Close()
		return nil, err
	}
	if s.relay, err = outbox.NewRelay(db, d.JS, outbox.RelayConfig{MetricsPrefix: metricsPrefix}, d.Registry, d.Log(), d.Now); err != nil {
		return fail(err)
	}
	mk := func(stream, durable string) (*consumer.Runner, error) {
		return consumer.New(db, d.JS, consumer.Config{Stream: stream, Durable: durable, MetricsPrefix: metricsPrefix}, s.handle, d.Registry, d.Log(), d.Now)
	}
	if s.scim, err = mk(events.StreamSCIM, DurableSCIM); err != nil {
		return fail(err)
	}
	if s.auth, err = mk(events.StreamAuth, DurableAuth); err != nil {
		return fail(err)
	}
	if s.ident, err = mk(events.StreamIdentity, DurableIdentity); err != nil {
		return fail(err)
	}
	if s.prio, err = consumer.New(db, d.JS, consumer.Config{Stream: events.StreamSCIMPriority, Durable: DurableSCIMPriority, MetricsPrefix: metricsPrefix}, s.handlePriority, d.Registry, d.Log(), d.Now); err != nil {
		return fail(err)
	}
	if d.Registry != nil {
		if err := d.Registry.Register(&statsCollector{db: db}); err != nil {
			return fail(fmt.Errorf("register metrics: %w", err))
		}
		if err := d.Registry.Register(s.appSyncFailures); err != nil {
			return fail(fmt.Errorf("register metrics: %w", err))
		}
	}
	return s, nil
}

// handle is the consumers' handler: apply, then put the derived IDENTITY events in the outbox in the
// same transaction, and wake the relay once it committed.
func (s *service) handle(_ context.Context, tx *bolt.Tx, m consumer.Msg) error {
	if s.beforeApply != nil {
		if err := s.beforeApply(m.Event); err != nil {
			return err
		}
	}
	out, prio, err := s.proj.apply(tx, m.Event)
	if err != nil {
		return err
	}
	if _, ok := m.Event.Data.(events.AccessAppChanged); ok {
		tx.OnCommit(s.kickAppSync)
	}
	if len(out) == 0 {
		return nil
	}
	// Both lanes in one transaction: a kill between publishing one and the other leaves the other's
	// records in the outbox for the restarted relay (docs/architecture.md, "Lanes").
	if len(prio) > 0 {
		if err := outbox.AppendPriority(tx, s.now(), prio...); err != nil {
			return err
		}
	}
	if err := outbox.Append(tx, s.now(), out...); err != nil {
		return err
	}
	tx.OnCommit(s.relay.Notify)
	return nil
}

func (s *service) serve(ctx context.Context) error {
	ready := &httpserv.Ready{}
	h, err := s.handler()
	if err != nil {
		return err
	}
	return platform.Serve(ctx, platform.Service{
		Name: Name, Addr: s.cfg.Listen, MetricsAddr: s.cfg.MetricsListen, Handler: h, Ready: ready,
		Start: func(ctx context.Context, g *errgroup.Group) error {
			kv, err := s.kv(ctx)
			if err != nil {
				return fmt.Errorf("idp_config bucket: %w", err)
			}
			g.Go(func() error { return s.runIdPCache(ctx, kv) })
			if err := s.seed(ctx); err != nil {
				return err
			}
			// Seeded IdPs are checked against their providers like saved ones, but only warn, and
			// after start: a provider that is down never delays or blocks identity-store.
			g.Go(func() error { s.probeSeeds(ctx); return nil })
			if s.d.NC != nil {
				g.Go(func() error { return broker.ServeBarrier(ctx, s.d.NC, events.BarrierIdentitySubjects, s.barrier) })
			}
			g.Go(func() error { return s.relay.Run(ctx) })
			g.Go(func() error { return s.runAppSync(ctx) })
			for name, r := range map[string]*consumer.Runner{DurableSCIM: s.scim, DurableAuth: s.auth, DurableIdentity: s.ident, DurableSCIMPriority: s.prio} {
				ready.Set("consumer "+name, consumerCheck(r))
				g.Go(func() error { return r.Run(ctx) })
			}
			return nil
		},
	}, s.d)
}

// runIdPCache keeps the in-memory copy of idp_config (idpcache.go) until ctx ends.
func (s *service) runIdPCache(ctx context.Context, kv jetstream.KeyValue) error {
	w := idpwatch.NewRev(kv, s.idpc.apply, s.d.Log())
	go func() {
		if w.WaitSynced(ctx) == nil {
			s.idpc.markSynced()
		}
	}()
	return w.Run(ctx)
}

func consumerCheck(r *consumer.Runner) httpserv.Check {
	return func() error {
		if err := r.Halted(); err != nil {
			return err
		}
		if !r.Ready() {
			return errors.New("not set up yet")
		}
		return nil
	}
}

// adminToken returns the configured token or, when none is configured, the one stored in
// <data_dir>/admin_token, generating it (256 random bits, file mode 0600) on first start. The token is
// never logged; its path is.
func adminToken(cfg Config, d Deps) (string, error) {
	if cfg.AdminToken != "" {
		return cfg.AdminToken, nil
	}
	path := filepath.Join(cfg.DataDir, "admin_token")
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		d.Log().Info("admin_token not configured; using the generated one", "path", path)
		return string(trimNL(b)), nil
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(raw[:])
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	d.Log().Warn("admin_token not configured; generated one", "path", path)
	return tok, nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// kv returns the idp_config bucket.
func (s *service) kv(ctx context.Context) (jetstream.KeyValue, error) {
	return s.d.JS.KeyValue(ctx, broker.KVIdPConfig)
}
