package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/scimflow/scimflow/internal/broker"
	"github.com/scimflow/scimflow/internal/config"
	"github.com/scimflow/scimflow/internal/logging"
	"github.com/scimflow/scimflow/services/auth"
	identitystore "github.com/scimflow/scimflow/services/identity-store"
	scimingest "github.com/scimflow/scimflow/services/scim-ingest"
)

// File is the whole config file (docs/design.md §5). Environment overrides: SCIMFLOW_<KEY> for top-level
// keys, SCIMFLOW_<SECTION>_<KEY> inside sections (SCIMFLOW_NATS_URL, SCIMFLOW_AUTH_LISTEN, …).
type File struct {
	DataDir           string               `json:"data_dir"`
	AdminToken        string               `json:"admin_token"`
	Log               LogConfig            `json:"log"`
	NATS              NATSConfig           `json:"nats"`
	SCIMIngest        scimingest.Config    `json:"scim_ingest"`
	IdentityStore     identitystore.Config `json:"identity_store"`
	Auth              auth.Config          `json:"auth"`
	IdentityProviders []json.RawMessage    `json:"identity_providers"`
}

// LogConfig selects the log format and level.
type LogConfig struct {
	Format string `json:"format"` // json (default) or text
	Level  string `json:"level"`  // info (default), debug, warn, error
}

// NATSConfig says how to reach NATS, as whom, and how to create the streams. The keys are flat so
// every one has an environment override (SCIMFLOW_NATS_PASSWORD, …).
type NATSConfig struct {
	URL      string          `json:"url"`      // empty: embedded JetStream under data_dir/nats
	Listen   string          `json:"listen"`   // embedded only: also accept TCP clients here
	Replicas int             `json:"replicas"` // stream replicas: 1 on one node, 3 in a cluster
	MaxAge   config.Duration `json:"max_age"`  // stream retention; 0 = unlimited

	// With nats.url: this process's NATS user, by name and password or by an nkey seed file (one
	// of the two). The user's permissions must be its service's role (docs/security.md).
	User            string `json:"user"`
	Password        string `json:"password"`
	CredentialsFile string `json:"credentials_file"`
	// With nats.url: TLS. tls_ca verifies the server; tls_cert and tls_key are the client
	// certificate when the server asks for one.
	TLSCA   string `json:"tls_ca"`
	TLSCert string `json:"tls_cert"`
	TLSKey  string `json:"tls_key"`
	// Embedded only: where serve keeps one nkey seed per role (<role>.nk, mode 0600), generated when
	// missing. Default data_dir/nats-credentials. A separate service connecting to serve's
	// nats.listen uses the file of its role as its nats.credentials_file.
	CredentialsDir string `json:"credentials_dir"`
}

// Defaults returns the documented defaults.
func Defaults() File {
	return File{
		DataDir:       "./data",
		Log:           LogConfig{Format: "json", Level: "info"},
		NATS:          NATSConfig{Replicas: 1},
		SCIMIngest:    scimingest.DefaultConfig(),
		IdentityStore: identitystore.DefaultConfig(),
		Auth:          auth.DefaultConfig(),
	}
}

// Load reads path (empty: defaults only) with ${ENV} expansion and SCIMFLOW_* overrides.
func Load(path string, lookup func(string) (string, bool)) (File, error) {
	f := Defaults()
	if err := config.Load(path, &f, lookup); err != nil {
		return File{}, err
	}
	f.propagate()
	return f, nil
}

// LoadEnviron is Load with the process environment as a list (os.Environ()): besides the
// overrides, it reports every SCIMFLOW_<SECTION>_<KEY> whose section exists but whose key does not,
// naming the closest key.
func LoadEnviron(path string, environ []string) (File, error) {
	vars := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	f, err := Load(path, func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	return f, errors.Join(err, config.UnknownEnv(&File{}, "SCIMFLOW", environ))
}

// propagate copies the top-level settings each service needs into its section.
func (f *File) propagate() {
	f.SCIMIngest.DataDir = f.DataDir
	f.IdentityStore.DataDir = f.DataDir
	f.IdentityStore.AdminToken = f.AdminToken
	f.IdentityStore.IdentityProviders = f.IdentityProviders
	f.IdentityStore.SCIMBaseURL = f.SCIMIngest.BaseURL
	f.IdentityStore.AuthURL = f.Auth.ExternalURL
	f.IdentityStore.SecretGrace = f.SCIMIngest.SecretGrace.D()
	if f.IdentityStore.ConsoleAppAudience == "" {
		f.IdentityStore.ConsoleAppAudience = f.Auth.AppTokenAudience
	}
	f.Auth.DataDir = f.DataDir
}

// Streams is the stream set-up derived from the nats section.
func (f File) Streams() broker.StreamsConfig {
	return broker.StreamsConfig{Replicas: f.NATS.Replicas, MaxAge: f.NATS.MaxAge.D()}
}

// DefaultMetricsPorts are the services' metrics ports: 9080, 9081, 9082 beside 8080, 8081, 8082.
var DefaultMetricsPorts = map[string]string{scimingest.Name: "9080", identitystore.Name: "9081", auth.Name: "9082"}

// ApplyMetricsDefaults fills every empty <section>.metrics_listen of the given services: on loopback
// when one process runs them all (serve: a host-local Prometheus or agent scrapes it), on all
// interfaces when a service runs alone (a container, scraped over the network; keep that port off
// the internet — compose publishes none). Run calls it; it is exported for tools that need the
// addresses before Run.
func (f *File) ApplyMetricsDefaults(services []string) {
	host := ""
	if len(services) > 1 {
		host = "127.0.0.1"
	}
	for _, s := range services {
		addr := net.JoinHostPort(host, DefaultMetricsPorts[s])
		switch s {
		case scimingest.Name:
			if f.SCIMIngest.MetricsListen == "" {
				f.SCIMIngest.MetricsListen = addr
			}
		case identitystore.Name:
			if f.IdentityStore.MetricsListen == "" {
				f.IdentityStore.MetricsListen = addr
			}
		case auth.Name:
			if f.Auth.MetricsListen == "" {
				f.Auth.MetricsListen = addr
			}
		}
	}
}

// MinAdminTokenLen is the shortest admin_token accepted: the admin API can rewrite IdPs and unlock
// people, so its token must not be guessable (32 characters of `openssl rand -hex 32` are 128 bits).
const MinAdminTokenLen = 32

func (n NATSConfig) validate() error {
	var errs []error
	if n.URL != "" {
		if u, err := url.Parse(n.URL); err != nil || u.Scheme == "" {
			errs = append(errs, fmt.Errorf("nats.url: %q is not a URL like nats://host:4222", n.URL))
		}
	}
	if (n.User == "") != (n.Password == "") {
		errs = append(errs, errors.New("nats.user and nats.password: set both or neither"))
	}
	if n.User != "" && n.CredentialsFile != "" {
		errs = append(errs, errors.New("nats.user and nats.credentials_file: choose one way to authenticate"))
	}
	if (n.TLSCert == "") != (n.TLSKey == "") {
		errs = append(errs, errors.New("nats.tls_cert and nats.tls_key: set both or neither"))
	}
	if n.URL == "" && (n.User != "" || n.CredentialsFile != "" || n.TLSCA != "" || n.TLSCert != "") {
		errs = append(errs, errors.New("nats.user, nats.password, nats.credentials_file and nats.tls_*: only with nats.url; the embedded server uses one generated credential per role in nats.credentials_dir"))
	}
	if n.URL != "" && n.CredentialsDir != "" {
		errs = append(errs, errors.New("nats.credentials_dir: only for the embedded server (nats.url empty); use nats.credentials_file"))
	}
	return errors.Join(errs...)
}

// Validate reports every problem of the sections the given services use, at once.
func (f File) Validate(services ...string) error {
	var errs []error
	if f.DataDir == "" {
		errs = append(errs, errors.New("data_dir: required"))
	}
	if _, err := logging.New(nil, f.Log.Format, f.Log.Level); err != nil {
		errs = append(errs, fmt.Errorf("log: %w", err))
	}
	if f.NATS.Replicas < 1 || f.NATS.Replicas > 5 {
		errs = append(errs, fmt.Errorf("nats.replicas: %d, want 1 to 5", f.NATS.Replicas))
	}
	if f.NATS.MaxAge < 0 {
		errs = append(errs, errors.New("nats.max_age: must not be negative"))
	} else if d := f.NATS.MaxAge.D(); d > 0 && d < broker.DuplicateWindow {
		// JetStream refuses a stream whose duplicate window exceeds its max age, and the window is
		// what makes a republished outbox record harmless.
		errs = append(errs, fmt.Errorf("nats.max_age: %v is below the %v duplicate window; use 0 (unlimited) or at least %v", d, broker.DuplicateWindow, broker.DuplicateWindow))
	}
	errs = append(errs, f.NATS.validate())
	if f.AdminToken != "" && len(f.AdminToken) < MinAdminTokenLen {
		errs = append(errs, fmt.Errorf("admin_token: %d characters, want at least %d (e.g. openssl rand -hex 32), or leave it empty to have one generated", len(f.AdminToken), MinAdminTokenLen))
	}
	for _, s := range services {
		switch s {
		case scimingest.Name:
			errs = append(errs, f.SCIMIngest.Validate())
		case identitystore.Name:
			errs = append(errs, f.IdentityStore.Validate())
		case auth.Name:
			errs = append(errs, f.Auth.Validate())
			if f.NATS.URL != "" && f.Auth.KeyEncryptionKey == "" && f.Auth.KeyEncryptionKeyFile == "" {
				errs = append(errs, errors.New("auth.key_encryption_key or auth.key_encryption_key_file: required with nats.url; it seals the signing keys kept in NATS, never travels over NATS, and every auth replica needs the same one (serve generates one under data_dir only with its embedded NATS); see docs/security.md"))
			}
		}
	}
	return errors.Join(errs...)
}
