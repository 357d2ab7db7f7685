package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
	"github.com/scimflow/scimflow/testkit/natstest"
	"github.com/scimflow/scimflow/testkit/proctest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "scimflow-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "scimflow")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type proc struct {
	cmd    *exec.Cmd
	stderr *proctest.SyncBuffer
	done   chan struct{} // closed when the process has exited
}

func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr proctest.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stderr: &stderr, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("process still running after %s; stderr:\n%s", d, p.stderr)
		return -1
	}
}

func get(url string) int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

type ports struct{ scim, admin, auth, nats, scimMetrics, adminMetrics, authMetrics string }

func servEnv(dir string, p ports) []string {
	return []string{
		"SCIMFLOW_DATA_DIR=" + dir,
		"SCIMFLOW_SCIM_INGEST_LISTEN=" + p.scim,
		"SCIMFLOW_IDENTITY_STORE_LISTEN=" + p.admin,
		"SCIMFLOW_AUTH_LISTEN=" + p.auth,
		"SCIMFLOW_NATS_LISTEN=" + p.nats,
		"SCIMFLOW_SCIM_INGEST_METRICS_LISTEN=" + p.scimMetrics,
		"SCIMFLOW_IDENTITY_STORE_METRICS_LISTEN=" + p.adminMetrics,
		"SCIMFLOW_AUTH_METRICS_LISTEN=" + p.authMetrics,
	}
}

func newPorts(t *testing.T) ports {
	return ports{freePort(t), freePort(t), freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)}
}

// TestServeReadyStopAndRestartReusesData: serve brings the three services to ready with embedded
// JetStream, exits 0 on SIGINT, and a second start finds the data of the first.
func TestServeReadyStopAndRestartReusesData(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pt := newPorts(t)
	p := startProc(t, servEnv(dir, pt), "serve", "-config", "/dev/null")
	waitReady(t, p, pt)
	if !strings.Contains(p.stderr.String(), `"msg":"config","file":"/dev/null"`) {
		t.Errorf("serve does not log which config file it read:\n%s", p.stderr)
	}
	// Metrics answer on their own listeners only (docs/security.md, finding 11).
	for _, c := range []struct {
		addr string
		code int
	}{{pt.scimMetrics, 200}, {pt.adminMetrics, 200}, {pt.authMetrics, 200}, {pt.scim, 404}, {pt.admin, 404}, {pt.auth, 404}} {
		if code := get("http://" + c.addr + "/metrics"); code != c.code {
			t.Errorf("GET %s/metrics = %d, want %d", c.addr, code, c.code)
		}
	}
	// Publish through the embedded server's TCP listener (as identity-store, with the credential
	// serve generated), then check it survives a restart.
	nc := connectRole(t, dir, pt.nats, "identity-store")
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e := events.New("idp1", time.Now(), "", "", events.SeatRemoved{UserID: "u1", Email: "a@x"})
	b, _ := events.Marshal(e)
	if _, err := js.Publish(ctx, e.Subject, b, jetstream.WithMsgID(e.ID)); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code after SIGINT = %d, want 0; stderr:\n%s", code, p.stderr)
	}

	p2 := startProc(t, servEnv(dir, pt), "serve", "-config", "/dev/null")
	waitReady(t, p2, pt)
	nc = connectRole(t, dir, pt.nats, "identity-store")
	defer nc.Close()
	js, _ = jetstream.New(nc)
	st, err := js.Stream(ctx, events.StreamIdentity)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, 1)
	if err != nil || m.Header.Get("Nats-Msg-Id") != e.ID {
		t.Errorf("after restart, message 1 = %v (err %v), want the event published before", m, err)
	}
	for _, name := range []string{events.StreamSCIM, events.StreamAuth} {
		if _, err := js.Stream(ctx, name); err != nil {
			t.Errorf("stream %s after restart: %v", name, err)
		}
	}
	if _, err := js.KeyValue(ctx, broker.KVIdPConfig); err != nil {
		t.Errorf("kv %s: %v", broker.KVIdPConfig, err)
	}
	p2.cmd.Process.Signal(syscall.SIGTERM)
	if code := p2.wait(t, 30*time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
}

// connectRole connects to serve's nats.listen as role, with the nkey serve generated for it under
// dataDir; anonymous clients are refused.
func connectRole(t *testing.T, dataDir, addr, role string) *nats.Conn {
	t.Helper()
	seed, err := nats.NkeyOptionFromSeed(filepath.Join(dataDir, "nats-credentials", role+".nk"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect("nats://"+addr, seed, nats.CustomInboxPrefix("_INBOX."+role))
	if err != nil {
		t.Fatalf("connect to serve's NATS as %s: %v", role, err)
	}
	return nc
}

func waitReady(t *testing.T, p *proc, pt ports) {
	t.Helper()
	natstest.WaitFor(t, 60*time.Second, func() error {
		select {
		case <-p.done:
			t.Fatalf("serve exited early: %s", p.stderr)
		default:
		}
		for _, a := range []string{pt.scim, pt.admin, pt.auth} {
			if code := get("http://" + a + "/readyz"); code != 200 {
				return fmt.Errorf("%s/readyz = %d", a, code)
			}
		}
		return nil
	})
}

// TestStartFailuresAreFastAndClear covers the bad-input cases of the foundation issue.
func TestStartFailuresAreFastAndClear(t *testing.T) {
	t.Parallel()
	t.Run("second serve on the same data dir", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		pt := newPorts(t)
		p := startProc(t, servEnv(dir, pt), "serve", "-config", "/dev/null")
		waitReady(t, p, pt)
		p2 := startProc(t, servEnv(dir, newPorts(t)), "serve", "-config", "/dev/null")
		if code := p2.wait(t, 30*time.Second); code == 0 || !strings.Contains(p2.stderr.String(), "in use by another scimflow process") {
			t.Errorf("second serve: exit %d, stderr %q; want non-zero and a clear message", code, p2.stderr)
		}
	})
	t.Run("port in use", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		pt := newPorts(t)
		pt.admin = ln.Addr().String()
		p := startProc(t, servEnv(t.TempDir(), pt), "serve", "-config", "/dev/null")
		if code := p.wait(t, 30*time.Second); code == 0 || !strings.Contains(p.stderr.String(), "address already in use") {
			t.Errorf("port in use: exit %d, stderr %q", code, p.stderr)
		}
	})
	t.Run("unwritable data dir", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "ro")
		os.Mkdir(dir, 0o500)
		if os.Geteuid() == 0 {
			// root ignores permissions; a path under a regular file cannot be created by anyone.
			f := filepath.Join(t.TempDir(), "file")
			os.WriteFile(f, nil, 0o600)
			dir = filepath.Join(f, "data")
		}
		p := startProc(t, servEnv(dir, newPorts(t)), "serve", "-config", "/dev/null")
		if code := p.wait(t, 30*time.Second); code == 0 || !strings.Contains(p.stderr.String(), "data dir") {
			t.Errorf("unwritable data dir: exit %d, stderr %q", code, p.stderr)
		}
	})
	t.Run("invalid config lists every problem", func(t *testing.T) {
		t.Parallel()
		cfg := filepath.Join(t.TempDir(), "bad.yaml")
		os.WriteFile(cfg, []byte("data_dir: \"\"\nnats:\n  replicas: 9\nscim_ingest:\n  listen: \"\"\nauth:\n  external_url: \"\"\n"), 0o600)
		p := startProc(t, nil, "serve", "-config", cfg)
		code := p.wait(t, 30*time.Second)
		for _, want := range []string{"data_dir", "nats.replicas", "scim_ingest.listen", "auth.external_url"} {
			if !strings.Contains(p.stderr.String(), want) {
				t.Errorf("stderr does not mention %s:\n%s", want, p.stderr)
			}
		}
		if code != 2 {
			t.Errorf("exit code = %d, want 2", code)
		}
	})
	t.Run("short admin token", func(t *testing.T) {
		t.Parallel()
		p := startProc(t, append(servEnv(t.TempDir(), newPorts(t)), "SCIMFLOW_ADMIN_TOKEN=only-20-characters!!"), "serve", "-config", "/dev/null")
		if code := p.wait(t, 30*time.Second); code != 2 || !strings.Contains(p.stderr.String(), "admin_token: 20 characters, want at least 32") {
			t.Errorf("short admin_token: exit %d, stderr %q; want 2 and a clear message", code, p.stderr)
		}
	})
	t.Run("auth alone without a key-encryption key", func(t *testing.T) {
		t.Parallel()
		p := startProc(t, []string{"SCIMFLOW_DATA_DIR=" + t.TempDir(), "SCIMFLOW_NATS_URL=nats://127.0.0.1:4222"}, "auth", "-config", "/dev/null")
		if code := p.wait(t, 30*time.Second); code != 2 || !strings.Contains(p.stderr.String(), "auth.key_encryption_key or auth.key_encryption_key_file: required") {
			t.Errorf("auth without a KEK: exit %d, stderr %q; want 2 and a clear message", code, p.stderr)
		}
	})
	t.Run("unknown key", func(t *testing.T) {
		t.Parallel()
		cfg := filepath.Join(t.TempDir(), "bad.yaml")
		os.WriteFile(cfg, []byte("data_dri: x\nauth:\n  externalurl: http://a\n"), 0o600)
		p := startProc(t, []string{"SCIMFLOW_AUTH_EXTERNALURL=http://b", "SCIMFLOW_RELIABILITY_LONG=1"}, "serve", "-config", cfg)
		code := p.wait(t, 30*time.Second)
		// Every typo at once: both keys of the file with their lines, and the environment's.
		for _, want := range []string{
			cfg + ":1: unknown key data_dri (did you mean data_dir?)",
			cfg + ":3: unknown key auth.externalurl (did you mean external_url?)",
			"SCIMFLOW_AUTH_EXTERNALURL: auth has no key EXTERNALURL (did you mean SCIMFLOW_AUTH_EXTERNAL_URL?)",
		} {
			if code != 2 || !strings.Contains(p.stderr.String(), want) {
				t.Errorf("unknown keys: exit %d, stderr %q; want 2 and %q", code, p.stderr, want)
			}
		}
		if strings.Contains(p.stderr.String(), "RELIABILITY") {
			t.Errorf("a SCIMFLOW_ name outside the config sections was reported: %s", p.stderr)
		}
	})
	t.Run("service error printed once", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		pt := newPorts(t)
		pt.auth = ln.Addr().String() // taken
		p := startProc(t, servEnv(t.TempDir(), pt), "serve", "-config", "/dev/null")
		code := p.wait(t, 30*time.Second)
		msg := "auth: listen " + pt.auth
		if code == 0 || strings.Count(p.stderr.String(), msg) != 1 || strings.Contains(p.stderr.String(), "auth: auth:") {
			t.Errorf("port in use: exit %d, stderr %q; want %q exactly once, with one prefix", code, p.stderr, msg)
		}
	})
}

// TestServiceWithUnreachableNATS keeps retrying: /healthz 200, /readyz 503, until NATS appears, and then
// becomes ready.
func TestServiceWithUnreachableNATS(t *testing.T) {
	t.Parallel()
	natsAddr := freePort(t)
	listen := freePort(t)
	p := startProc(t, []string{"SCIMFLOW_DATA_DIR=" + t.TempDir(), "SCIMFLOW_NATS_URL=nats://" + natsAddr, "SCIMFLOW_SCIM_INGEST_LISTEN=" + listen,
		"SCIMFLOW_SCIM_INGEST_METRICS_LISTEN=" + freePort(t)}, "scim-ingest", "-config", "/dev/null")
	natstest.WaitFor(t, 60*time.Second, func() error {
		if c := get("http://" + listen + "/healthz"); c != 200 {
			return fmt.Errorf("healthz %d", c)
		}
		return nil
	})
	if c := get("http://" + listen + "/readyz"); c != 503 {
		t.Errorf("/readyz without NATS = %d, want 503", c)
	}
	emb, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: t.TempDir(), Listen: natsAddr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Shutdown()
	natstest.WaitFor(t, 60*time.Second, func() error {
		if c := get("http://" + listen + "/readyz"); c != 200 {
			return fmt.Errorf("readyz %d", c)
		}
		return nil
	})
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Errorf("exit = %d, stderr %s", code, p.stderr)
	}
}

func TestCommandLine(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"version"}, 0, "scimflow"},
		{[]string{"--help"}, 0, "serve"},
		{[]string{"bogus"}, 2, "unknown command"},
		{[]string{"serve", "-h"}, 0, "-config"},
		{[]string{"auth", "-config", "/dev/null"}, 2, "nats.url: required"},
		{[]string{"serve", "-config", "/dev/null", "extra"}, 2, `scimflow serve: unexpected argument "extra"`},
		{[]string{"replay", "identity-store", "-h"}, 0, "Usage: scimflow replay identity-store -out FILE"},
		{[]string{"replay", "identity-store", "-out", "x.db", "y.db"}, 2, `unexpected argument "y.db"`},
		{[]string{"replay", "dump", "-h"}, 0, "Usage: scimflow replay dump FILE"},
		{[]string{"replay", "dump"}, 2, "want exactly one FILE"},
		{[]string{"replay", "dump", "a.db", "b.db"}, 2, "want exactly one FILE"},
		{[]string{"healthcheck", "-h"}, 0, "Usage: scimflow healthcheck"},
		{[]string{"demo", "now"}, 2, `scimflow demo: unexpected argument "now"`},
	} {
		var out, errb bytes.Buffer
		code := run(c.args, &out, &errb)
		if code != c.code || !strings.Contains(out.String()+errb.String(), c.out) {
			t.Errorf("run(%v) = %d, %q; want %d and %q", c.args, code, out.String()+errb.String(), c.code, c.out)
		}
	}
}
