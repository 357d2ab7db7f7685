// Package platform holds what every service's Run receives and the start-up sequence they share, so
// the three services stay alike: bind the listener first (health answers at once, a port in use fails
// fast), wait for the NATS streams, then start the service's own work and report ready.
package platform

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/scimflow/scimflow/internal/broker"
	"github.com/scimflow/scimflow/internal/httpserv"
)

// Deps are a service's dependencies, built by the wiring (app) and by tests.
type Deps struct {
	NC       *nats.Conn           // embedded (in-process) or URL connection
	JS       jetstream.JetStream  // on NC
	Streams  broker.StreamsConfig // how streams are created if missing
	Logger   *slog.Logger         // already carries service=<name>
	Registry prometheus.Registerer
	Gatherer prometheus.Gatherer // served at /metrics; nil: no /metrics
	Listener net.Listener        // optional; else the service listens on its configured address
	Now      func() time.Time    // wall clock for request handling, never for projections
}

// Clock returns d.Now or time.Now.
func (d Deps) Clock() func() time.Time {
	if d.Now != nil {
		return d.Now
	}
	return time.Now
}

// Log returns d.Logger or the default logger.
func (d Deps) Log() *slog.Logger {
	if d.Logger != nil {
		return d.Logger
	}
	return slog.Default()
}

// Service describes one service's start-up to Serve.
type Service struct {
	Name    string
	Addr    string
	Handler http.Handler
	Ready   *httpserv.Ready
	// Start runs once the streams exist. It starts long-running work with g.Go and registers
	// readiness checks; returning an error stops the service.
	Start func(ctx context.Context, g *errgroup.Group) error
}

// Serve runs the service until ctx ends, then shuts the listener down gracefully and waits for the
// goroutines Start launched.
func Serve(ctx context.Context, s Service, d Deps) error {
	log := d.Log()
	if s.Ready == nil {
		s.Ready = &httpserv.Ready{}
	}
	srv, err := httpserv.Listen(httpserv.Config{Service: s.Name, Addr: s.Addr, Listener: d.Listener, Handler: s.Handler,
		Gatherer: d.Gatherer, Ready: s.Ready, Logger: log})
	if err != nil {
		return err
	}
	s.Ready.Set("nats", func() error {
		if d.NC == nil || !d.NC.IsConnected() {
			return errors.New("not connected")
		}
		return nil
	})
	s.Ready.Set("setup", func() error { return errors.New("streams not set up yet") })
	log.Info("listening", "addr", srv.Addr().String())
	// Shutdown order: the HTTP server drains in-flight requests first, and only then is the work
	// Start launched (relays, consumers, commit loops) cancelled, so no request loses what it needs.
	httpCtx, stopHTTP := context.WithCancel(ctx)
	defer stopHTTP()
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	g, gctx := errgroup.WithContext(workCtx)
	go func() {
		<-gctx.Done() // a failed worker stops the service
		stopHTTP()
	}()
	streams := d.Streams
	streams.OnDrift = driftGauge(s.Name, d.Registry)
	g.Go(func() error {
		if err := broker.WaitSetup(gctx, d.JS, streams, log); err != nil {
			if gctx.Err() != nil {
				return nil
			}
			return err
		}
		if s.Start != nil {
			if err := s.Start(gctx, g); err != nil {
				return err
			}
		}
		s.Ready.Set("setup", func() error { return nil })
		log.Info("ready")
		return nil
	})
	httpErr := srv.Serve(httpCtx)
	stopWork()
	return errors.Join(httpErr, g.Wait())
}

// driftGauge registers scimflow_<service>_stream_config_drift{stream,field}: 1 for each setting in
// which a live stream differs from this service's nats section (services never change it; an operator
// runs `scimflow streams apply`). It returns the function WaitSetup reports the drift to.
func driftGauge(service string, reg prometheus.Registerer) func([]broker.Drift) {
	if reg == nil {
		return nil
	}
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "scimflow_" + strings.ReplaceAll(service, "-", "_") + "_stream_config_drift",
		Help: "1 for each stream setting in which the live stream differs from this service's nats config (left unchanged; see `scimflow streams apply`).",
	}, []string{"stream", "field"})
	if err := reg.Register(g); err != nil {
		return nil
	}
	return func(drift []broker.Drift) {
		g.Reset()
		for _, d := range drift {
			g.WithLabelValues(d.Stream, d.Field).Set(1)
		}
	}
}
