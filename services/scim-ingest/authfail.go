package scimingest

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// authFailures counts SCIM requests that failed authentication, per IdP. Nothing about them goes to a
// stream (an unauthenticated client must not be able to write to one kept forever) and they are not
// logged one by one (a client retrying a wrong secret would flood the log): each counts in
// scimflow_scim_ingest_auth_failures_total{idp}, and flush logs one aggregated entry per IdP per
// interval. The idp label only takes ids of configured IdPs (a request for an unknown IdP is a 404,
// counted as "unknown"), so its cardinality is bounded.
type authFailures struct {
	total    *prometheus.CounterVec
	log      *slog.Logger
	interval time.Duration

	mu      sync.Mutex // guards pending
	pending map[string]int
}

func newAuthFailures(log *slog.Logger) *authFailures {
	return &authFailures{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scimflow_scim_ingest_auth_failures_total",
			Help: "SCIM requests refused before authentication, by IdP (\"unknown\": no such IdP). Logged once per IdP per minute, never put on a stream."},
			[]string{"idp"}),
		log: log, interval: time.Minute, pending: map[string]int{},
	}
}

// add counts one failed request for idp ("" for no such IdP).
func (a *authFailures) add(idp string) {
	if idp == "" {
		idp = "unknown"
	}
	a.total.WithLabelValues(idp).Inc()
	a.mu.Lock()
	a.pending[idp]++
	a.mu.Unlock()
}

// flush logs one entry per IdP with failures since the last flush.
func (a *authFailures) flush() {
	a.mu.Lock()
	pending := a.pending
	a.pending = map[string]int{}
	a.mu.Unlock()
	for _, idp := range slices.Sorted(maps.Keys(pending)) {
		a.log.Warn("SCIM requests failed authentication", "idp_id", idp, "requests", pending[idp], "window", a.interval.String())
	}
}

// run flushes every interval until ctx ends, and once more then.
func (a *authFailures) run(ctx context.Context) error {
	t := time.NewTicker(a.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.flush()
			return nil
		case <-t.C:
			a.flush()
		}
	}
}
