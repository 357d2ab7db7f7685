// Package httpserv runs a service's HTTP listener with the endpoints every service has — /healthz,
// /readyz and /metrics — explicit timeouts, request ids, panic recovery and graceful shutdown.
package httpserv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition; it returns nil when satisfied.
type Check func() error

// Ready collects readiness conditions. /readyz is 200 only when every check passes.
type Ready struct {
	mu     sync.Mutex // guards checks
	checks map[string]Check
}

// Set adds or replaces the named check.
func (r *Ready) Set(name string, c Check) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.checks == nil {
		r.checks = map[string]Check{}
	}
	r.checks[name] = c
}

// Err returns the first failing check, or nil when ready. Without checks nothing is ready.
func (r *Ready) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.checks) == 0 {
		return errors.New("starting")
	}
	var errs []error
	for name, c := range r.checks {
		if err := c(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// Config configures a Server.
type Config struct {
	Service  string // service name, for logs
	Addr     string // listen address, e.g. ":8080"
	Listener net.Listener
	Handler  http.Handler // the service's routes; /healthz, /readyz and /metrics are added
	Gatherer prometheus.Gatherer
	Ready    *Ready
	Logger   *slog.Logger
	// ReadTimeout etc. default to 15s / 30s / 120s.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
}

// Server is a listening HTTP server.
type Server struct {
	srv *http.Server
	ln  net.Listener
	log *slog.Logger
}

// Listen binds the address now, so a port in use is reported at start, before anything else runs.
func Listen(cfg Config) (*Server, error) {
	ln := cfg.Listener
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", cfg.Addr, err) // the caller (app) names the service
		}
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 15 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 120 * time.Second
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if cfg.Ready == nil {
			w.Write([]byte(`{"status":"ready"}` + "\n"))
			return
		}
		if err := cfg.Ready.Err(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "{\"status\":\"not ready\",\"reason\":%q}\n", err.Error())
			return
		}
		w.Write([]byte(`{"status":"ready"}` + "\n"))
	})
	if cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	if cfg.Handler != nil {
		mux.Handle("/", cfg.Handler)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Server{
		ln:  ln,
		log: log,
		srv: &http.Server{
			Handler:           Recover(log, RequestID(mux)),
			ReadTimeout:       cfg.ReadTimeout,
			ReadHeaderTimeout: 10 * time.Second,
			WriteTimeout:      cfg.WriteTimeout,
			IdleTimeout:       cfg.IdleTimeout,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
	}, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until ctx ends, then lets in-flight requests finish (up to 8 s).
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		s.srv.Close()
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}

type ctxKey struct{}

// RequestID gives each request a fresh id, returns it in X-Request-Id and stores it in the context.
// The id becomes the correlation id of the events a request causes, so it is never taken from the
// client: a caller could otherwise reuse another request's id and blur the audit trail.
func RequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := NewRequestID()
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, id)))
	})
}

// NewRequestID returns 16 random bytes, hex-encoded.
func NewRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// RequestIDFrom returns the request id stored by RequestID.
func RequestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

// Recover turns a handler panic into a 500 and an error log instead of a dropped connection.
func Recover(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("handler panic", "panic", fmt.Sprint(v), "path", r.URL.Path, "request_id", RequestIDFrom(r.Context()))
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusInternalServerError)
				fmt.Fprintf(w, "{\"error\":\"internal error\",\"request_id\":%q}\n", RequestIDFrom(r.Context()))
			}
		}()
		next.ServeHTTP(w, r)
	})
}
