// Package auth is the OIDC relying party and session authority: logins, sessions signed with its own
// keys, revocation projected from the IDENTITY stream, and forward-auth for reverse proxies.
package auth

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/scimflow/scimflow/internal/boltdb"
	"github.com/scimflow/scimflow/internal/outbox"
	"github.com/scimflow/scimflow/internal/platform"
)

// Name is the service name used in logs, metrics and the data file name.
const Name = "auth"

// Config is the auth section of the config file.
type Config struct {
	Listen                 string   `json:"listen"`       // default ":8082"
	ExternalURL            string   `json:"external_url"` // redirect URI is {external_url}/callback
	AllowedRedirectOrigins []string `json:"allowed_redirect_origins"`
	DataDir                string   `json:"-"` // from data_dir
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{Listen: ":8082", ExternalURL: "http://localhost:8082"}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("auth.listen: required"))
	}
	if c.ExternalURL == "" {
		errs = append(errs, errors.New("auth.external_url: required"))
	}
	return errors.Join(errs...)
}

// Deps are the service's dependencies.
type Deps = platform.Deps

// Run serves the auth endpoints until ctx ends.
func Run(ctx context.Context, cfg Config, d Deps) error {
	db, err := boltdb.Open(filepath.Join(cfg.DataDir, Name+".db"), outbox.Bucket)
	if err != nil {
		return err
	}
	defer db.Close()
	relay, err := outbox.NewRelay(db, d.JS, outbox.RelayConfig{MetricsPrefix: "scimflow_auth"}, d.Registry, d.Log(), d.Now)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	return platform.Serve(ctx, platform.Service{
		Name: Name, Addr: cfg.Listen, Handler: mux,
		Start: func(ctx context.Context, g *errgroup.Group) error {
			g.Go(func() error { return relay.Run(ctx) })
			return nil
		},
	}, d)
}
