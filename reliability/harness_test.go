package reliability

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binaries built once by TestMain.
var (
	scimflowBin string
	natsBin     string
	// long is true under SCIMFLOW_RELIABILITY_LONG=1: more iterations, longer outages.
	long bool
)

func TestMain(m *testing.M) {
	long = os.Getenv("SCIMFLOW_RELIABILITY_LONG") == "1"
	dir, err := os.MkdirTemp("", "scimflow-reliability-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scimflowBin = filepath.Join(dir, "scimflow")
	natsBin = filepath.Join(dir, "nats-server")
	for _, b := range [][]string{
		{"go", "build", "-o", scimflowBin, "github.com/scimflow/scimflow/cmd/scimflow"},
		{"go", "build", "-o", natsBin, "github.com/nats-io/nats-server/v2"},
	} {
		// Static (CGO_ENABLED=0), so the compose tests (compose_test.go) put the same binaries
		// into FROM scratch images instead of compiling a third variant.
		cmd := exec.Command(b[0], b[1:]...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n%s", strings.Join(b, " "), err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// iterations returns short in the default run and long under SCIMFLOW_RELIABILITY_LONG=1.
func iterations(short, longN int) int {
	if long {
		return longN
	}
	return short
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a subprocess whose output goes to a log file; it can be killed and started again with the
// same command line.
type proc struct {
	name string
	args []string
	env  []string
	log  string // path of the combined output file

	mu   sync.Mutex // guards cmd and done
	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status once done is closed
}

func (p *proc) start(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			t.Fatalf("%s: start while running", p.name)
		}
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "---- start %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), strings.Join(p.args, " "))
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	// If the test binary dies (a panic, a timeout), its children die with it instead of holding
	// ports, data dirs and tmpfs mounts.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("%s: %v", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
}

// running reports whether the process is alive.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		if sig != syscall.SIGKILL {
			t.Errorf("%s: did not stop within 30s of %v; killed", p.name, sig)
		}
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill(t testing.TB) { p.signal(t, syscall.SIGKILL) }

// stop sends SIGTERM (graceful shutdown) and waits.
func (p *proc) stop(t testing.TB) { p.signal(t, syscall.SIGTERM) }

// waitExit waits up to d for the process to exit by itself and returns its exit error.
func (p *proc) waitExit(d time.Duration) (error, bool) {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err, true
	case <-time.After(d):
		return nil, false
	}
}

// logTail returns the last n lines of the process's log.
func (p *proc) logTail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// natsNode is one nats-server process with JetStream on a file store and sync_interval: always.
type natsNode struct {
	proc
	name        string
	port        int
	clusterPort int
	dir         string
}

// url is the client URL of the node.
func (n *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// writeConfig writes the node's configuration; routes are the cluster URLs it dials (empty: no cluster).
func (n *natsNode) writeConfig(t testing.TB, routes []string, advertise string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\n", n.name, n.port)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n  sync_interval: always\n}\n", filepath.Join(n.dir, "js"))
	if len(routes) > 0 {
		fmt.Fprintf(&b, "cluster {\n  name: reliability\n  listen: 127.0.0.1:%d\n  no_advertise: true\n", n.clusterPort)
		if advertise != "" {
			fmt.Fprintf(&b, "  advertise: %q\n", advertise)
		}
		b.WriteString("  routes: [\n")
		for _, r := range routes {
			fmt.Fprintf(&b, "    %q\n", r)
		}
		b.WriteString("  ]\n}\n")
	}
	path := filepath.Join(n.dir, "nats.conf")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// newNATS prepares (without starting) a single node under dir.
func newNATS(t testing.TB, dir, name string) *natsNode {
	t.Helper()
	n := &natsNode{name: name, port: freePort(t), clusterPort: freePort(t), dir: filepath.Join(dir, name)}
	if err := os.MkdirAll(n.dir, 0o750); err != nil {
		t.Fatal(err)
	}
	n.proc = proc{name: name, log: filepath.Join(n.dir, "nats.log")}
	return n
}

// startSingle writes a single-node config and starts the node, waiting until it accepts clients.
func (n *natsNode) startSingle(t testing.TB) {
	t.Helper()
	conf := n.writeConfig(t, nil, "")
	n.args = []string{natsBin, "-c", conf}
	n.proc.start(t)
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", n.port), 20*time.Second)
}

// restart starts the node again with the config written before.
func (n *natsNode) restart(t testing.TB) {
	t.Helper()
	n.proc.start(t)
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", n.port), 20*time.Second)
}

func waitTCP(t testing.TB, addr string, d time.Duration) {
	t.Helper()
	err := poll(context.Background(), d, func() error {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		t.Fatalf("%s not accepting connections: %v", addr, err)
	}
}

// poll calls f until it returns nil or d passes; it returns the last error. The pause between calls
// is a poll interval, not a synchronisation.
func poll(ctx context.Context, d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	wait := 10 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(wait*2, 200*time.Millisecond)
	}
}

// service is one scimflow service process, or under the compose tests (compose_test.go) one
// container of a compose project.
type service struct {
	proc
	svc     string // scim-ingest, identity-store, auth
	addr    string // listen address (a container's published address)
	dataDir string
	// container is the container id when the service runs in Docker; proc is then unused.
	container string
}

// running reports whether the service's process, or its container, is alive.
func (s *service) running() bool {
	if s.container == "" {
		return s.proc.running()
	}
	out, err := exec.Command("docker", "inspect", "-f", "{{.State.Running}}", s.container).Output()
	return err == nil && strings.TrimSpace(string(out)) == "true"
}

// baseURL is the service's HTTP base URL.
func (s *service) baseURL() string { return "http://" + s.addr }

// waitReady polls /readyz until 200.
func (s *service) waitReady(t testing.TB, d time.Duration) {
	t.Helper()
	c := &http.Client{Timeout: time.Second}
	err := poll(context.Background(), d, func() error {
		if !s.running() {
			return fmt.Errorf("%s exited", s.svc)
		}
		resp, err := c.Get(s.baseURL() + "/readyz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz = %d %s", resp.StatusCode, body)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s not ready: %v\n%s", s.svc, err, s.logTail(30))
	}
}

// metrics scrapes /metrics and returns the sum of every series of the named metric whose labels
// contain all of the given label pairs ("consumer=\"x\"").
func metric(base, name string, labels ...string) (float64, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("/metrics = %d", resp.StatusCode)
	}
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(rest, l)
		}
		if !ok {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum += v
		found = true
	}
	if !found {
		return 0, fmt.Errorf("metric %s%v not found", name, labels)
	}
	return sum, sc.Err()
}
