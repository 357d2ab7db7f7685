// Package e2e is scimflow's end-to-end suite: it builds the scimflow binary once, runs
// `scimflow serve` as a subprocess on a fresh data dir with free loopback ports, starts the test
// OpenID provider in the test process, and drives everything through public HTTP only (admin API,
// SCIM, auth with a cookie jar, /metrics) — the way an operator, an IdP and a browser meet it.
//
// Most tests share one serve process and give each case its own IdP, so the whole docs/design.md §4
// matrix runs in parallel; the restart, replica and load tests own their processes. Every wait is a
// poll with a deadline; nothing asserts on timing (latency is measured by `scimflow bench revocation`).
package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scimflow/scimflow/internal/devidp"
	"github.com/scimflow/scimflow/internal/scenario"
	"github.com/scimflow/scimflow/testkit/proctest"
)

// binary is the scimflow binary built by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "scimflow-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "scimflow")
	build := exec.Command("go", "build", "-o", binary, "github.com/scimflow/scimflow/cmd/scimflow")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/scimflow: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	shared.stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is one `scimflow serve` subprocess. Its data dir and ports survive restarts.
type server struct {
	dataDir string
	ep      scenario.Endpoints
	env     []string
	stderr  *proctest.SyncBuffer

	mu   sync.Mutex // guards cmd and done
	cmd  *exec.Cmd
	done chan struct{}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// newServer prepares (does not start) a serve process on dataDir with three free loopback ports.
func newServer(dataDir string) (*server, error) {
	var addrs [3]string
	for i := range addrs {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	s := &server{dataDir: dataDir, stderr: &proctest.SyncBuffer{}}
	s.ep = scenario.Endpoints{
		SCIM: "http://" + addrs[0], Admin: "http://" + addrs[1], Auth: "http://" + addrs[2],
		AdminToken: "e2e-admin-" + scenario.RandomString(24),
	}
	s.env = []string{
		"SCIMFLOW_DATA_DIR=" + dataDir,
		"SCIMFLOW_SCIM_INGEST_LISTEN=" + addrs[0],
		"SCIMFLOW_SCIM_INGEST_BASE_URL=" + s.ep.SCIM,
		"SCIMFLOW_IDENTITY_STORE_LISTEN=" + addrs[1],
		"SCIMFLOW_AUTH_LISTEN=" + addrs[2],
		"SCIMFLOW_AUTH_EXTERNAL_URL=" + s.ep.Auth,
		"SCIMFLOW_ADMIN_TOKEN=" + s.ep.AdminToken,
		"SCIMFLOW_LOG_LEVEL=warn",
	}
	return s, nil
}

// start runs the process and waits until every listener is ready.
func (s *server) start() error { return s.startCmd("serve") }

// startCmd runs `scimflow <command>` (serve, or one service) with the server's environment and
// waits until the listeners in s.ep answer /readyz.
func (s *server) startCmd(command string) error {
	cmd := exec.Command(binary, command, "-config", "/dev/null")
	cmd.Env = append(os.Environ(), s.env...)
	cmd.SysProcAttr = childAttr()
	cmd.Stdout = s.stderr
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	ctx := context.Background()
	ep := s.ep
	if command == "auth" {
		ep.SCIM, ep.Admin = ep.Auth, ep.Auth // only auth listens
	}
	err := ep.WaitReady(ctx, 60*time.Second)
	if err != nil {
		select {
		case <-done:
			return fmt.Errorf("scimflow serve exited (%v) before it was ready; output:\n%s", cmd.ProcessState, s.stderr)
		default:
		}
		return fmt.Errorf("scimflow serve not ready: %w; output:\n%s", err, s.stderr)
	}
	return nil
}

// stop sends sig and waits for the exit; it returns the exit code (-1 if it had to be killed).
func (s *server) stop(sig syscall.Signal) int {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return 0
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
		return cmd.ProcessState.ExitCode()
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		return -1
	}
}

// env is what a test needs: a running server, the provider, and the provider's client secret.
type env struct {
	srv    *server
	op     *devidp.Provider
	secret string
	admin  *scenario.Admin
}

// sharedEnv is the serve process and provider most tests share, started on first use.
type sharedEnv struct {
	once sync.Once
	e    *env
	err  error
	dir  string
}

var shared sharedEnv

func (s *sharedEnv) get(t *testing.T) *env {
	t.Helper()
	s.once.Do(func() {
		s.dir, s.err = os.MkdirTemp("", "scimflow-e2e-data")
		if s.err != nil {
			return
		}
		s.e, s.err = startEnv(s.dir)
	})
	if s.err != nil {
		t.Fatalf("start shared scimflow: %v", s.err)
	}
	return s.e
}

func (s *sharedEnv) stop() {
	if s.e != nil {
		s.e.srv.stop(syscall.SIGTERM)
		s.e.op.Close()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// startEnv starts a provider and a serve process on dataDir.
func startEnv(dataDir string) (*env, error) {
	op, secret, err := scenario.StartProvider()
	if err != nil {
		return nil, err
	}
	srv, err := newServer(dataDir)
	if err != nil {
		op.Close()
		return nil, err
	}
	if err := srv.start(); err != nil {
		op.Close()
		return nil, err
	}
	return &env{srv: srv, op: op, secret: secret, admin: srv.ep.AdminClient()}, nil
}

// ownEnv starts a provider and a serve process only for t (stopped at cleanup).
func ownEnv(t *testing.T) *env {
	t.Helper()
	e, err := startEnv(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.srv.stop(syscall.SIGKILL)
		e.op.Close()
	})
	return e
}

// dumpOnFailure prints the server's output if t failed.
func (e *env) dumpOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("scimflow output (tail):\n%s", tail(e.srv.stderr.String(), 8000))
		}
	})
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

var httpClient = &http.Client{Timeout: 10 * time.Second}
