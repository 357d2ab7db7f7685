package platform_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scimflow/scimflow/internal/platform"
	"github.com/scimflow/scimflow/testkit/natstest"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsOnTheirOwnListener (docs/security.md, finding 11): /metrics answers only on the metrics
// listener, which serves nothing else; the service port keeps /healthz, /readyz and its routes.
func TestMetricsOnTheirOwnListener(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc, js := srv.Connect("platform-test")
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "scimflow_test_things_total", Help: "things"})
	reg.MustRegister(c)
	c.Inc()
	ln, mln := listen(t), listen(t)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "admin") })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- platform.Serve(ctx, platform.Service{Name: "test", Handler: mux},
			platform.Deps{NC: nc, JS: js, Logger: slog.New(slog.DiscardHandler), Registry: reg, Gatherer: reg, Listener: ln, MetricsListener: mln})
	}()
	svc, metrics := "http://"+ln.Addr().String(), "http://"+mln.Addr().String()
	natstest.WaitFor(t, 30*time.Second, func() error {
		if code, body := get(t, svc+"/readyz"); code != 200 {
			return &waitErr{body}
		}
		return nil
	})
	for _, c := range []struct {
		url, want string
		code      int
	}{
		{svc + "/metrics", "", 404},
		{svc + "/healthz", "ok", 200},
		{svc + "/admin", "admin", 200},
		{metrics + "/metrics", "scimflow_test_things_total 1", 200},
		{metrics + "/healthz", "", 404},
		{metrics + "/readyz", "", 404},
		{metrics + "/admin", "", 404},
	} {
		if code, body := get(t, c.url); code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("GET %s = %d %.80q, want %d containing %q", c.url, code, body, c.code, c.want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := http.Get(metrics + "/metrics"); err == nil {
		t.Errorf("metrics listener still answers after Serve returned")
	}
}

type waitErr struct{ s string }

func (e *waitErr) Error() string { return e.s }
