// Package identitystore keeps the user registry: it projects the SCIM and AUTH streams into its own
// bbolt file, applies each IdP's update policy, publishes IDENTITY events and serves the admin API.
package identitystore

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/scimflow/scimflow/internal/boltdb"
	"github.com/scimflow/scimflow/internal/outbox"
	"github.com/scimflow/scimflow/internal/platform"
)

// Name is the service name used in logs, metrics and the data file name.
const Name = "identity-store"

// Config is the identity_store section of the config file.
type Config struct {
	Listen            string            `json:"listen"` // default ":8081"
	DataDir           string            `json:"-"`      // from data_dir
	AdminToken        string            `json:"-"`      // from admin_token
	IdentityProviders []json.RawMessage `json:"-"`      // from identity_providers: seeded at start
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config { return Config{Listen: ":8081"} }

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("identity_store.listen: required"))
	}
	return errors.Join(errs...)
}

// Deps are the service's dependencies.
type Deps = platform.Deps

// Run serves the admin API and runs the projection until ctx ends.
func Run(ctx context.Context, cfg Config, d Deps) error {
	db, err := boltdb.Open(filepath.Join(cfg.DataDir, Name+".db"), outbox.Bucket)
	if err != nil {
		return err
	}
	defer db.Close()
	relay, err := outbox.NewRelay(db, d.JS, outbox.RelayConfig{MetricsPrefix: "scimflow_identity_store"}, d.Registry, d.Log(), d.Now)
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
