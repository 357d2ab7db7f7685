// Package scimingest is the SCIM 2.0 service provider: one endpoint per IdP, resources in its own
// bbolt file, and every committed change published to the SCIM stream through the outbox.
package scimingest

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
const Name = "scim-ingest"

// Config is the scim_ingest section of the config file.
type Config struct {
	Listen  string `json:"listen"`   // default ":8080"
	BaseURL string `json:"base_url"` // absolute; meta.location and scim_base_url are built from it
	DataDir string `json:"-"`        // set by the wiring from data_dir
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{Listen: ":8080", BaseURL: "http://localhost:8080"}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("scim_ingest.listen: required"))
	}
	if c.BaseURL == "" {
		errs = append(errs, errors.New("scim_ingest.base_url: required"))
	}
	return errors.Join(errs...)
}

// Deps are the service's dependencies.
type Deps = platform.Deps

// Run serves SCIM until ctx ends.
func Run(ctx context.Context, cfg Config, d Deps) error {
	db, err := boltdb.Open(filepath.Join(cfg.DataDir, Name+".db"), outbox.Bucket)
	if err != nil {
		return err
	}
	defer db.Close()
	relay, err := outbox.NewRelay(db, d.JS, outbox.RelayConfig{MetricsPrefix: "scimflow_scim_ingest"}, d.Registry, d.Log(), d.Now)
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
