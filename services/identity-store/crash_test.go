package identitystore

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
)

var crashKills = flag.Int("crash-kills", 8, "SIGKILLs of the identity-store subprocess per phase in TestCrashSIGKILL (nightly: 100)")

// TestMain lets the test binary run identity-store as a child process for the crash test.
func TestMain(m *testing.M) {
	if os.Getenv("IDENTITYSTORE_CHILD") == "1" {
		os.Exit(runChild())
	}
	flag.Parse()
	os.Exit(m.Run())
}

// runChild runs identity-store against NATS_URL on DATA_DIR until SIGTERM.
func runChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	nc, err := broker.Connect(os.Getenv("NATS_URL"), "identity-store-child", nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	js, _ := jetstream.New(nc)
	cfg := DefaultConfig()
	cfg.DataDir, cfg.AdminToken, cfg.Listen = os.Getenv("DATA_DIR"), testToken, "127.0.0.1:0"
	if err := Run(ctx, cfg, Deps{NC: nc, JS: js, Logger: quietLog, Registry: prometheus.NewRegistry()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestCrashSIGKILL kills an identity-store process with SIGKILL at random points of a workload and
// restarts it, many times; after catching up, its file equals a clean replay of the streams (P1), and
// the cursors equal the streams' last sequences.
func TestCrashSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	t.Parallel()
	emb, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Shutdown()
	url := emb.Server.ClientURL()
	nc, _ := emb.Connect("test")
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := broker.EnsureStreams(ctx, js, broker.StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, js: js}
	dir := t.TempDir()
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "IDENTITYSTORE_CHILD=1", "NATS_URL="+url, "DATA_DIR="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	ackFloor := func(stream, durable string) uint64 {
		c, err := js.Consumer(ctx, stream, durable)
		if err != nil {
			return 0
		}
		info, err := c.Info(ctx)
		if err != nil {
			return 0
		}
		return info.AckFloor.Stream
	}
	rng := rand.New(rand.NewPCG(1, 2))
	g := h.gen("okta")
	kills := 0
	for _, phase := range phases(workload(g, 60)) {
		h.publish(phase...)
		stream, durable := events.StreamSCIM, DurableSCIM
		if prefix(phase[0]) == "auth" {
			stream, durable = events.StreamAuth, DurableAuth
		}
		last := h.lastSeq(stream)
		for range *crashKills {
			cmd := start()
			target := uint64(rng.IntN(int(last))) + 1
			deadline := time.Now().Add(20 * time.Second)
			for ackFloor(stream, durable) < target && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			cmd.Process.Kill() // SIGKILL: no graceful shutdown
			cmd.Wait()
			kills++
		}
		cmd := start()
		eventually(t, "phase applied", func() bool { return ackFloor(stream, durable) >= last })
		cmd.Process.Kill()
		cmd.Wait()
	}
	// Final run: catch up everything, including IDENTITY events left in the outbox, then stop.
	started := time.Now()
	cmd := start()
	setUp := func(stream, durable string) bool {
		c, err := js.Consumer(ctx, stream, durable)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.Created.After(started) // the runner re-creates its consumer at start
	}
	eventually(t, "all caught up", func() bool {
		return setUp(events.StreamSCIM, DurableSCIM) && setUp(events.StreamAuth, DurableAuth) && setUp(events.StreamIdentity, DurableIdentity) &&
			ackFloor(events.StreamSCIM, DurableSCIM) >= h.lastSeq(events.StreamSCIM) &&
			ackFloor(events.StreamAuth, DurableAuth) >= h.lastSeq(events.StreamAuth) &&
			ackFloor(events.StreamIdentity, DurableIdentity) >= h.lastSeq(events.StreamIdentity)
	})
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatal(err)
		}
		t.Fatalf("child exited with %v", err)
	}
	var live bytes.Buffer
	if err := DumpFile(filepath.Join(dir, Name+".db"), &live); err != nil {
		t.Fatal(err)
	}
	replayPath := filepath.Join(t.TempDir(), "replay.db")
	if err := Replay(ctx, js, replayPath); err != nil {
		t.Fatal(err)
	}
	var replayed bytes.Buffer
	if err := DumpFile(replayPath, &replayed); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(readable(replayed.String()), readable(live.String())); diff != "" {
		t.Errorf("after %d SIGKILLs the store differs from a clean replay (-replay +live):\n%s", kills, diff)
	}
	t.Logf("%d SIGKILLs", kills)
}
