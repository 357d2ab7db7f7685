package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHealthcheck runs `scimflow healthcheck` in process against a listener that answers /readyz:
// 200 is healthy (exit 0), anything else or nothing listening is unhealthy (exit 1), and a wrong
// service name is a usage error (exit 2). It sets the environment, so it does not run in parallel.
func TestHealthcheck(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	port := srv.Listener.Addr().String()[strings.LastIndexByte(srv.Listener.Addr().String(), ':'):]
	// ":port" is how compose configures the listener; the check dials loopback.
	t.Setenv("SCIMFLOW_AUTH_LISTEN", port)
	t.Setenv("SCIMFLOW_IDENTITY_STORE_LISTEN", "0.0.0.0"+port)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	t.Setenv("SCIMFLOW_SCIM_INGEST_LISTEN", closed.Listener.Addr().String())

	for _, tc := range []struct {
		status int
		args   []string
		want   int
		stderr string
	}{
		{http.StatusOK, []string{"auth"}, 0, ""},
		{http.StatusOK, []string{"auth", "identity-store"}, 0, ""},
		{http.StatusServiceUnavailable, []string{"auth"}, 1, "auth: GET http://127.0.0.1" + port + "/readyz = 503"},
		{http.StatusOK, []string{"scim-ingest"}, 1, "scim-ingest: "},
		{http.StatusOK, []string{"serve"}, 1, "scim-ingest: "},
		{http.StatusOK, []string{"nats"}, 2, `unknown service "nats"`},
		{http.StatusOK, nil, 2, "name the service"},
	} {
		status = tc.status
		var stdout, stderr bytes.Buffer
		args := append([]string{"healthcheck", "-config", "/dev/null", "-timeout", "2s"}, tc.args...)
		if got := run(args, &stdout, &stderr); got != tc.want || !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("run(%q) with /readyz %d = %d, stderr %q; want %d, stderr containing %q", args, tc.status, got, stderr.String(), tc.want, tc.stderr)
		}
	}
}
