package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
)

// peopleConfig are the flags of `bench people`.
type peopleConfig struct {
	n        int
	batch    int
	dataDir  string
	logLevel string
	timeout  time.Duration
}

// benchPeople measures what a large registry costs an auth replica: time to ready when it starts on
// an empty data directory (replaying the IDENTITY stream, or restoring a snapshot), when it restarts
// on its own file, and its memory. The people are written straight to the IDENTITY stream through
// the real event encoding (what identity-store's relay publishes), so a million take a minute, not
// the hours the SCIM path would.
func benchPeople(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c peopleConfig
	fs := flag.NewFlagSet("bench people", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.n, "n", 100_000, "people to generate (one identity_changed event each)")
	fs.IntVar(&c.batch, "batch", 200, "events per JetStream message (identity-store's relay sends one message per transaction)")
	fs.StringVar(&c.dataDir, "data-dir", "", "data directory (default: a temporary one, removed at exit)")
	fs.StringVar(&c.logLevel, "log-level", "warn", "log level of the auth replicas (their stderr goes to this command's stderr)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Minute, "give up after this long")
	if code, ok := parseFlags(fs, args, "Usage: scimflow bench people [flags]\n"+
		"\nStarts JetStream in this process (fsync on, the permission table enforced), writes -n people to\n"+
		"the IDENTITY stream, then runs `scimflow auth` replicas as child processes and reports, with a\n"+
		"baseline replica on empty streams started the same way:\n"+
		"  - a fresh replica's time to ready replaying the stream (snapshots off);\n"+
		"  - the snapshot it then publishes (time, size);\n"+
		"  - its warm restart on its own data directory;\n"+
		"  - a fresh replica's time to ready restoring that snapshot;\n"+
		"and each replica's resident memory (VmRSS when ready, VmHWM: the peak).\n", stderr); !ok {
		return code
	}
	if !noArgs(fs, "bench people", stderr) {
		return 2
	}
	if c.n < 1 || c.batch < 1 {
		fmt.Fprintln(stderr, "scimflow bench people: -n and -batch must be positive")
		return 2
	}
	dir, cleanup, err := benchDir(c.dataDir, "scimflow-bench-people-")
	if err != nil {
		fmt.Fprintf(stderr, "scimflow bench: %v\n", err)
		return 1
	}
	defer cleanup()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := people(ctx, c, dir, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "scimflow bench people: %v\n", err)
		return 1
	}
	return 0
}

// replicaRun is one measured start of an auth replica.
type replicaRun struct {
	name  string
	ready time.Duration
	rss   int64 // kB, when ready
	anon  int64 // kB, when ready: the anonymous part of rss (heap, stacks)
	hwm   int64 // kB, peak
}

func people(ctx context.Context, c peopleConfig, dir string, stdout, stderr io.Writer) error {
	creds, _, err := broker.RoleSeeds(filepath.Join(dir, "nats-credentials"))
	if err != nil {
		return err
	}
	emb, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: filepath.Join(dir, "nats"), Listen: "127.0.0.1:0", Users: creds}, nil)
	if err != nil {
		return err
	}
	defer emb.Shutdown()
	connect := func(r broker.Role) (jetstream.JetStream, *nats.Conn, error) {
		opts, err := creds[r].ClientOptions(r)
		if err != nil {
			return nil, nil, err
		}
		nc, err := nats.Connect(emb.ClientURL(), append(opts, nats.Name("bench-"+string(r)))...)
		if err != nil {
			return nil, nil, err
		}
		js, err := jetstream.New(nc)
		return js, nc, err
	}
	// identity-store's role creates the streams and writes the IDENTITY stream, as it does in a
	// deployment; the auth role reads the snapshot bucket.
	js, nc, err := connect(broker.RoleIdentityStore)
	if err != nil {
		return err
	}
	defer nc.Close()
	ajs, anc, err := connect(broker.RoleAuth)
	if err != nil {
		return err
	}
	defer anc.Close()
	if _, err := broker.EnsureStreams(ctx, js, broker.StreamsConfig{Role: broker.RoleIdentityStore}); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	kek := make([]byte, 32)
	rand.Read(kek)
	confPath := filepath.Join(dir, "empty.yaml")
	if err := os.WriteFile(confPath, []byte("{}\n"), 0o600); err != nil {
		return err
	}
	r := &replicaRunner{exe: exe, conf: confPath, natsURL: emb.ClientURL(), creds: broker.RoleSeedPath(filepath.Join(dir, "nats-credentials"), broker.RoleAuth),
		kek: base64.StdEncoding.EncodeToString(kek), logLevel: c.logLevel, stderr: stderr}

	fmt.Fprintf(stdout, "baseline: a fresh auth replica on empty streams\n")
	base, err := r.run(ctx, "baseline (empty streams)", filepath.Join(dir, "auth-baseline"), "off", nil)
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "writing %d people to the IDENTITY stream (%d events per message)\n", c.n, c.batch)
	start := time.Now()
	last, bytes, err := generatePeople(ctx, js, c.n, c.batch)
	if err != nil {
		return err
	}
	gen := time.Since(start)
	fmt.Fprintf(stdout, "  %d people in %s (%.0f/s), %d messages, %.1f MB, last sequence %d\n", c.n, gen.Round(time.Millisecond),
		float64(c.n)/gen.Seconds(), (c.n+c.batch-1)/c.batch, float64(bytes)/1e6, last)

	fmt.Fprintf(stdout, "fresh replica replaying the stream (it publishes a snapshot once ready)\n")
	replayDir := filepath.Join(dir, "auth-replay")
	var snapTook time.Duration
	var snapSize uint64
	replay, err := r.run(ctx, "fresh, replaying the stream", replayDir, "on", func(ready time.Time) error {
		si, err := waitSnapshot(ctx, ajs, last)
		if err != nil {
			return err
		}
		snapTook, snapSize = time.Since(ready), si.Size
		return nil
	})
	if err != nil {
		return err
	}
	warm, err := r.run(ctx, "warm restart (own data dir)", replayDir, "on", nil)
	if err != nil {
		return err
	}
	restored, err := r.run(ctx, "fresh, restoring the snapshot", filepath.Join(dir, "auth-restored"), "restore_only", nil)
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "\nauth replica, %d people (IDENTITY sequence %d), measured on this machine:\n\n", c.n, last)
	fmt.Fprintf(stdout, "| start | time to ready | VmRSS when ready | of which anonymous (RssAnon) | VmHWM (peak) |\n|---|---|---|---|---|\n")
	for _, x := range []replicaRun{base, replay, warm, restored} {
		fmt.Fprintf(stdout, "| %s | %s | %.0f MB | %.0f MB | %.0f MB |\n", x.name, x.ready.Round(10*time.Millisecond),
			float64(x.rss)/1024, float64(x.anon)/1024, float64(x.hwm)/1024)
	}
	fmt.Fprintf(stdout, "\nVmRSS counts the pages of the bbolt file the replica touched (memory-mapped, reclaimable page\ncache); RssAnon is its own memory.\n")
	fmt.Fprintf(stdout, "\nsnapshot: %.1f MB (gzip), in the bucket %s after the replaying replica was ready\n", float64(snapSize)/1e6, snapTook.Round(10*time.Millisecond))
	fmt.Fprintf(stdout, "fresh replica: restoring is %.1fx faster than replaying; times are from process start to /readyz 200\n",
		replay.ready.Seconds()/max(restored.ready.Seconds(), 1e-9))
	return nil
}

// generatePeople publishes n identity_changed events, batch per message, and returns the stream's
// last sequence and the bytes written.
func generatePeople(ctx context.Context, js jetstream.JetStream, n, batch int) (uint64, int64, error) {
	at := time.Now().UTC()
	var (
		last    uint64
		written int64
		pending []jetstream.PubAckFuture
	)
	flush := func() error {
		for _, f := range pending {
			select {
			case ack := <-f.Ok():
				last = max(last, ack.Sequence)
			case err := <-f.Err():
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		pending = pending[:0]
		return nil
	}
	evs := make([]events.Event, 0, batch)
	for i := 0; i < n; i += batch {
		evs = evs[:0]
		for j := i; j < min(i+batch, n); j++ {
			email := fmt.Sprintf("person%07d@bench.example.com", j)
			e := events.New("bench", at, "bench-people", "", events.IdentityChanged{Changed: []string{"email", "name", "groups", "status"},
				Identity: events.Identity{UserID: events.UserID("bench", email), Email: email, Name: fmt.Sprintf("Person %d", j),
					Status: events.StatusActive, SeatHeld: true, SCIMUserID: fmt.Sprintf("scim-%07d", j), SCIMLinked: true,
					Groups:     []events.Group{{ID: "g-all", Name: "Everyone"}, {ID: fmt.Sprintf("g-%d", j%50), Name: fmt.Sprintf("Team %d", j%50)}},
					SCIMGroups: []events.Group{{ID: "g-all", Name: "Everyone"}, {ID: fmt.Sprintf("g-%d", j%50), Name: fmt.Sprintf("Team %d", j%50)}},
				}})
			e.Commit = uint64(j + 1)
			evs = append(evs, e)
		}
		body, err := events.MarshalBatch(evs)
		if err != nil {
			return 0, 0, err
		}
		f, err := js.PublishAsync(evs[0].Subject, body, jetstream.WithMsgID(fmt.Sprintf("%s+%d", evs[0].ID, len(evs))))
		if err != nil {
			return 0, 0, err
		}
		written += int64(len(body))
		pending = append(pending, f)
		if len(pending) >= 64 {
			if err := flush(); err != nil {
				return 0, 0, err
			}
		}
	}
	return last, written, flush()
}

// waitSnapshot waits until the snapshot bucket holds a snapshot covering IDENTITY sequence seq.
func waitSnapshot(ctx context.Context, js jetstream.JetStream, seq uint64) (*jetstream.ObjectInfo, error) {
	for {
		if obs, err := js.ObjectStore(ctx, broker.ObjectAuthSnapshots); err == nil {
			if objs, err := obs.List(ctx); err == nil {
				for _, o := range objs {
					if s, _ := strconv.ParseUint(o.Metadata["seq."+events.StreamIdentity], 10, 64); s >= seq && !o.Deleted {
						return o, nil
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no snapshot covering IDENTITY sequence %d: %w", seq, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// replicaRunner starts `scimflow auth` child processes against the bench's NATS.
type replicaRunner struct {
	exe, conf, natsURL, creds, kek, logLevel string
	stderr                                   io.Writer
}

// run starts a replica on dataDir with the given snapshots mode, measures its time to ready and its
// memory, runs after (if any) while it is up, and stops it.
func (r *replicaRunner) run(ctx context.Context, name, dataDir, snapshots string, after func(ready time.Time) error) (replicaRun, error) {
	res := replicaRun{name: name}
	addr, err := freeLocalAddr()
	if err != nil {
		return res, err
	}
	maddr, err := freeLocalAddr()
	if err != nil {
		return res, err
	}
	cmd := exec.CommandContext(ctx, r.exe, "auth", "-config", r.conf)
	cmd.Env = append(os.Environ(),
		"SCIMFLOW_DATA_DIR="+dataDir,
		"SCIMFLOW_NATS_URL="+r.natsURL,
		"SCIMFLOW_NATS_CREDENTIALS_FILE="+r.creds,
		"SCIMFLOW_AUTH_KEY_ENCRYPTION_KEY="+r.kek,
		"SCIMFLOW_AUTH_LISTEN="+addr,
		"SCIMFLOW_AUTH_METRICS_LISTEN="+maddr,
		"SCIMFLOW_AUTH_EXTERNAL_URL=http://"+addr,
		"SCIMFLOW_AUTH_SNAPSHOTS="+snapshots,
		"SCIMFLOW_AUTH_SNAPSHOT_INTERVAL=1s",
		"SCIMFLOW_AUTH_SNAPSHOT_EVERY_EVENTS=0",
		"SCIMFLOW_LOG_LEVEL="+r.logLevel,
	)
	cmd.Stdout = io.Discard
	cmd.Stderr = r.stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return res, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			return fmt.Errorf("%s: did not stop within 30s", name)
		}
	}
	hc := &http.Client{Timeout: time.Second}
	for {
		resp, err := hc.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			return res, fmt.Errorf("%s: replica exited before ready: %v", name, err)
		case <-ctx.Done():
			_ = stop()
			return res, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	ready := time.Now()
	res.ready = ready.Sub(start)
	res.rss, res.anon, res.hwm = procMemory(cmd.Process.Pid)
	if after != nil {
		if err := after(ready); err != nil {
			_ = stop()
			return res, err
		}
		_, _, res.hwm = procMemory(cmd.Process.Pid)
	}
	if err := stop(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return res, err
		}
		return res, fmt.Errorf("%s: replica exited with %v", name, err)
	}
	return res, nil
}

// procMemory reads VmRSS, RssAnon and VmHWM (kB) of pid from /proc (Linux); zeros elsewhere.
func procMemory(pid int) (rss, anon, hwm int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "RssAnon":
			anon = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, anon, hwm
}

func freeLocalAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
