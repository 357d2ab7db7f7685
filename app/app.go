// Package app wires scimflow's services together: the embedded or remote NATS connection, one
// Prometheus registry per process, the logger, and each service's Run. cmd/scimflow and the
// end-to-end tests call the same functions, so what the tests start is what users run.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sync/errgroup"

	"github.com/scimflow/scimflow/internal/broker"
	"github.com/scimflow/scimflow/internal/platform"
	"github.com/scimflow/scimflow/services/auth"
	identitystore "github.com/scimflow/scimflow/services/identity-store"
	scimingest "github.com/scimflow/scimflow/services/scim-ingest"
)

// AllServices lists the services `serve` runs, in start order.
var AllServices = []string{scimingest.Name, identitystore.Name, auth.Name}

// Run runs the named services until ctx ends. With nats.url empty it starts the embedded JetStream
// under data_dir/nats (only `serve` may do that); otherwise it connects to the URL and keeps retrying.
func Run(ctx context.Context, f File, services []string, log *slog.Logger) error {
	if err := f.Validate(services...); err != nil {
		return err
	}
	unlock, err := LockDataDir(f.DataDir)
	if err != nil {
		return err
	}
	defer unlock()
	f.ApplyMetricsDefaults(services)
	if err := f.ensureKEK(services, log); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	connect, shutdown, err := natsConnector(f, log)
	if err != nil {
		return err
	}
	defer shutdown()

	g, gctx := errgroup.WithContext(ctx)
	for _, name := range services {
		role, err := broker.ServiceRole(name)
		if err != nil {
			return err
		}
		nc, err := connect("scimflow-"+name, role)
		if err != nil {
			return fmt.Errorf("%s: connect nats: %w", name, err)
		}
		// Closed after the services returned: their relays and consumers have finished by then.
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("%s: jetstream: %w", name, err)
		}
		streams := f.Streams()
		streams.Role = role
		d := platform.Deps{
			NC: nc, JS: js, Streams: streams,
			Logger:   log.With("service", name),
			Registry: prometheus.WrapRegistererWith(prometheus.Labels{"service": name}, reg),
			Gatherer: serviceGatherer{reg, name},
		}
		switch name {
		case scimingest.Name:
			g.Go(func() error { return wrap(name, scimingest.Run(gctx, f.SCIMIngest, d)) })
		case identitystore.Name:
			g.Go(func() error { return wrap(name, identitystore.Run(gctx, f.IdentityStore, d)) })
		case auth.Name:
			g.Go(func() error { return wrap(name, auth.Run(gctx, f.Auth, d)) })
		default:
			return fmt.Errorf("unknown service %q", name)
		}
	}
	return g.Wait()
}

func wrap(name string, err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return fmt.Errorf("%s: %w", name, err)
}

// serviceGatherer serves one service's metrics (label service=<name>) plus the process-wide ones
// without a service label, so in the all-in-one process each listener reports its own service and a
// Prometheus scraping all three does not count a series three times.
type serviceGatherer struct {
	g    prometheus.Gatherer
	name string
}

func (s serviceGatherer) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := s.g.Gather()
	var out []*dto.MetricFamily
	for _, mf := range mfs {
		var keep []*dto.Metric
		for _, m := range mf.Metric {
			svc, has := "", false
			for _, l := range m.Label {
				if l.GetName() == "service" {
					svc, has = l.GetValue(), true
				}
			}
			if !has || svc == s.name {
				keep = append(keep, m)
			}
		}
		if len(keep) > 0 {
			mf.Metric = keep
			out = append(out, mf)
		}
	}
	return out, err
}

// LockDataDir takes an exclusive, non-blocking lock on data_dir/.lock so a second process on the same
// data dir fails at once with a clear error instead of fighting over the files.
func LockDataDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir %s is not writable: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data dir %s is in use by another scimflow process", dir)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
