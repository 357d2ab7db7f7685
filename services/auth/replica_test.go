package auth

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scimflow/scimflow/internal/platform"
)

// TestReplicaIDDefaultIsPerDataDir: without a configured replica_id each data directory gets its own
// id, generated once and kept across restarts (the hostname default let a second replica on the same
// host take over the first one's durable consumers).
func TestReplicaIDDefaultIsPerDataDir(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	a := h.startReplica("", nil)
	b := h.startReplica("", nil)
	idA, idB := a.srv.cfg.ReplicaID, b.srv.cfg.ReplicaID
	if idA == "" || idB == "" || idA == idB {
		t.Fatalf("default replica ids = %q and %q, want two different non-empty ids", idA, idB)
	}
	dir := a.srv.cfg.DataDir
	a.stop()
	// A restart on the same data directory keeps the id and takes over its own lease at once (the
	// previous process released it; a crashed one could not have, and the token still matches).
	again := h.startReplica("", func(c *Config) { c.DataDir = dir })
	if got := again.srv.cfg.ReplicaID; got != idA {
		t.Errorf("replica id after restart = %q, want %q", got, idA)
	}
}

// TestSecondProcessWithSameReplicaIDRefused: two processes configured with one replica_id (and their
// own data directories) cannot both run; the second fails to start with a clear error, and the
// first keeps its consumers.
func TestSecondProcessWithSameReplicaIDRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{}) // runs replica "r1"
	cfg := DefaultConfig()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.ExternalURL = "http://" + ln.Addr().String()
	cfg.DataDir = t.TempDir()
	cfg.ReplicaID = "r1"
	reg := prometheus.NewRegistry()
	d := platform.Deps{NC: h.n.nc, JS: h.n.js, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registry: reg, Gatherer: reg, Listener: ln}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = Run(ctx, cfg, d)
	if !errors.Is(err, ErrReplicaIDInUse) {
		t.Fatalf("second Run with replica id r1 = %v, want ErrReplicaIDInUse", err)
	}
	// The first replica is untouched: its lease is still its own.
	if _, err := claimLease(ctx, h.n.js, 1, "r1", "someone-else", filepath.Join(t.TempDir(), "x")); !errors.Is(err, ErrReplicaIDInUse) {
		t.Errorf("claimLease(r1) while r1 runs = %v, want ErrReplicaIDInUse", err)
	}
	resp, err := http.Get(h.r.url + "/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("first replica /readyz after the refused start = %v %v, want 200", resp, err)
	}
}
