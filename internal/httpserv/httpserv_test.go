package httpserv

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestServerHealthReadyRecoverAndShutdown(t *testing.T) {
	t.Parallel()
	ready := &Ready{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) { panic("boom") })
	mux.HandleFunc("GET /id", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, RequestIDFrom(r.Context())) })
	srv, err := Listen(Config{Service: "t", Addr: "127.0.0.1:0", Handler: mux, Ready: ready, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	base := "http://" + srv.Addr().String()
	status := func(path string, hdr ...string) (int, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		if len(hdr) == 2 {
			req.Header.Set(hdr[0], hdr[1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if c, _ := status("/healthz"); c != 200 {
		t.Errorf("/healthz = %d, want 200", c)
	}
	if c, _ := status("/readyz"); c != 503 {
		t.Errorf("/readyz with no checks = %d, want 503", c)
	}
	ready.Set("nats", func() error { return errors.New("down") })
	if c, body := status("/readyz"); c != 503 || !strings.Contains(body, "nats: down") {
		t.Errorf("/readyz = %d %q, want 503 naming the failing check", c, body)
	}
	ready.Set("nats", func() error { return nil })
	if c, _ := status("/readyz"); c != 200 {
		t.Errorf("/readyz when ready = %d, want 200", c)
	}
	if c, _ := status("/boom"); c != 500 {
		t.Errorf("panicking handler = %d, want 500", c)
	}
	if _, id := status("/id", "X-Request-Id", "abc"); id == "abc" || len(id) != 32 {
		t.Errorf("request id = %q, want a fresh id, never the client's", id)
	}
	if _, id := status("/id"); len(id) != 32 {
		t.Errorf("generated request id = %q, want 32 hex chars", id)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}
