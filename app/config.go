package app

import (
	"encoding/json"
	"errors"
	"fmt"
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

// NATSConfig says how to reach NATS and how to create the streams.
type NATSConfig struct {
	URL      string          `json:"url"`      // empty: embedded JetStream under data_dir/nats
	Listen   string          `json:"listen"`   // embedded only: also accept TCP clients here
	Replicas int             `json:"replicas"` // stream replicas: 1 on one node, 3 in a cluster
	MaxAge   config.Duration `json:"max_age"`  // stream retention; 0 = unlimited
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
	if f.NATS.URL != "" {
		if u, err := url.Parse(f.NATS.URL); err != nil || u.Scheme == "" {
			errs = append(errs, fmt.Errorf("nats.url: %q is not a URL like nats://host:4222", f.NATS.URL))
		}
	}
	for _, s := range services {
		switch s {
		case scimingest.Name:
			errs = append(errs, f.SCIMIngest.Validate())
		case identitystore.Name:
			errs = append(errs, f.IdentityStore.Validate())
		case auth.Name:
			errs = append(errs, f.Auth.Validate())
		}
	}
	return errors.Join(errs...)
}
