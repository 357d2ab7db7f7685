//go:build compose

// The compose tests run deploy/compose/compose.yaml in a real Docker engine: `make compose-test`
// (.ci/run installs Debian's docker.io and docker-compose and starts a private dockerd first). They
// stay out of `go test ./...` through the compose build tag.
//
// No image registry is reachable in CI, so the images the compose file names are built here:
// scimflow and nats-server compiled as static binaries (nats-server at go.mod's version) into
// FROM scratch images with the compose file's tags. Grafana and the containerised Prometheus are
// not started; Debian's Prometheus runs on the host against the published ports instead.

package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/scenario"
	"github.com/scimflow/scimflow/testkit/oidctest"
)

// repoRoot is the repository root relative to this package.
var repoRoot = filepath.Join("..")

// coreServices are the compose services the tests start: everything but Prometheus and Grafana,
// whose images cannot be built here.
var coreServices = []string{"nats", "scim-ingest", "identity-store", "auth"}

// attackerImage is the image of testdata/attacker that TestComposeAttack runs on the compose networks.
const attackerImage = "scimflow-attacker:test"

var (
	imagesOnce sync.Once
	imagesErr  error
)

// buildImages builds the images compose.yaml names, once per test binary.
func buildImages(t *testing.T) {
	t.Helper()
	imagesOnce.Do(func() { imagesErr = doBuildImages(t) })
	if imagesErr != nil {
		t.Fatal(imagesErr)
	}
}

func doBuildImages(t *testing.T) error {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "compose", "compose.yaml"))
	if err != nil {
		return err
	}
	natsImage := regexp.MustCompile(`(?m)^\s+image:\s*(nats:\S+)`).FindSubmatch(raw)
	scimflowImage := regexp.MustCompile(`(?m)^\s+image:\s*(scimflow:\S+)`).FindSubmatch(raw)
	if natsImage == nil || scimflowImage == nil {
		return fmt.Errorf("compose.yaml: no nats:… or scimflow:… image")
	}
	dir, err := os.MkdirTemp("", "scimflow-compose-images")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sdir, ndir, adir := filepath.Join(dir, "scimflow"), filepath.Join(dir, "nats"), filepath.Join(dir, "attacker")
	for _, d := range []string{filepath.Join(sdir, "data"), ndir, adir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	start := time.Now()
	// TestMain built both binaries statically.
	for _, b := range []struct{ from, to string }{{scimflowBin, filepath.Join(sdir, "scimflow")}, {natsBin, filepath.Join(ndir, "nats-server")}} {
		if out, err := exec.Command("cp", b.from, b.to).CombinedOutput(); err != nil {
			return fmt.Errorf("cp %s: %v %s", b.from, err, out)
		}
	}
	// The attacker of TestComposeAttack (testdata/attacker), static like the others.
	build := exec.Command("go", "build", "-o", filepath.Join(adir, "attacker"), "./testdata/attacker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./testdata/attacker: %v\n%s", err, out)
	}
	// The nats image's healthcheck runs wget, which the official alpine image has from busybox;
	// Debian's busybox-static stands in for it here.
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return fmt.Errorf("busybox (apt-get install busybox-static) for the nats image's wget: %w", err)
	}
	if err := os.WriteFile(filepath.Join(ndir, "wget"), busybox, 0o755); err != nil {
		return err
	}
	// The same layout as deploy/Dockerfile's distroless image: /usr/local/bin/scimflow, user
	// 65532, /data owned by it.
	files := map[string]string{
		filepath.Join(sdir, "Dockerfile"): `FROM scratch
COPY scimflow /usr/local/bin/scimflow
COPY --chown=65532:65532 data /data
USER 65532:65532
WORKDIR /data
ENV PATH=/usr/local/bin SCIMFLOW_DATA_DIR=/data
ENTRYPOINT ["/usr/local/bin/scimflow"]
CMD ["serve"]
`,
		filepath.Join(adir, "Dockerfile"): "FROM scratch\nCOPY attacker /attacker\nENTRYPOINT [\"/attacker\"]\n",
		filepath.Join(ndir, "Dockerfile"): `FROM scratch
COPY nats-server /nats-server
COPY wget /usr/bin/wget
ENV PATH=/usr/bin
ENTRYPOINT ["/nats-server"]
`,
	}
	for p, c := range files {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			return err
		}
	}
	for _, b := range []struct{ tag, dir string }{{string(scimflowImage[1]), sdir}, {string(natsImage[1]), ndir}, {attackerImage, adir}} {
		cmd := exec.Command("docker", "build", "-q", "-t", b.tag, b.dir)
		cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("docker build -t %s: %v\n%s", b.tag, err, out)
		}
	}
	t.Logf("FIGURES compose images: %s and %s built in %s", scimflowImage[1], natsImage[1], time.Since(start).Round(time.Second))
	return nil
}

// docker runs the docker CLI and returns its trimmed output; it fails the test on error.
func docker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// composeProject is one compose project: a copy of deploy/compose (with its own .env) and the
// files and variables docker-compose runs with.
type composeProject struct {
	t     *testing.T
	name  string
	dir   string
	files []string
	env   []string // compose variables, on top of .env
	ports map[string]int
}

// newComposeProject copies deploy/compose into a temporary directory, creates .env there with the
// README's own commands, and picks free host ports.
func newComposeProject(t *testing.T, extraFiles ...string) *composeProject {
	t.Helper()
	if out, err := exec.Command("docker", "version", "-f", "{{.Server.Version}}").CombinedOutput(); err != nil {
		t.Fatalf("no Docker engine (make compose-test starts one; see .ci/run): %v\n%s", err, out)
	}
	if _, err := exec.LookPath("docker-compose"); err != nil {
		t.Fatalf("docker-compose (Compose v1, apt-get install docker-compose): %v", err)
	}
	buildImages(t)
	dir := filepath.Join(t.TempDir(), "compose")
	if out, err := exec.Command("cp", "-r", filepath.Join(repoRoot, "deploy", "compose"), dir).CombinedOutput(); err != nil {
		t.Fatalf("copy deploy/compose: %v\n%s", err, out)
	}
	os.Remove(filepath.Join(dir, ".env"))
	runReadmeEnvSetup(t, dir)
	p := &composeProject{t: t, name: fmt.Sprintf("scimflowtest%d", rand.IntN(1<<30)), dir: dir, ports: map[string]int{}}
	p.files = []string{filepath.Join(dir, "compose.yaml")}
	for _, f := range extraFiles {
		if !strings.Contains(f, string(filepath.Separator)) {
			f = filepath.Join(dir, f) // a file of deploy/compose
		}
		abs, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		p.files = append(p.files, abs)
	}
	for _, v := range []string{"SCIMFLOW_PORT_SCIM", "SCIMFLOW_PORT_ADMIN", "SCIMFLOW_PORT_AUTH", "SCIMFLOW_TEST_NATS_PORT",
		"SCIMFLOW_PORT_AUTH_2", "SCIMFLOW_TEST_NATS_2_PORT", "SCIMFLOW_TEST_NATS_3_PORT",
		"SCIMFLOW_TEST_METRICS_SCIM", "SCIMFLOW_TEST_METRICS_ADMIN", "SCIMFLOW_TEST_METRICS_AUTH"} {
		p.ports[v] = freePort(t)
		p.env = append(p.env, fmt.Sprintf("%s=%d", v, p.ports[v]))
	}
	authURL := fmt.Sprintf("http://127.0.0.1:%d", p.ports["SCIMFLOW_PORT_AUTH"])
	p.env = append(p.env,
		fmt.Sprintf("SCIMFLOW_SCIM_BASE_URL=http://127.0.0.1:%d", p.ports["SCIMFLOW_PORT_SCIM"]),
		"SCIMFLOW_AUTH_EXTERNAL_URL="+authURL,
		"SCIMFLOW_ALLOWED_REDIRECT_ORIGINS=http://app.test:3000")
	t.Cleanup(func() {
		if t.Failed() {
			keep := keepDir(t)
			out, _ := p.composeOut("logs", "--no-color")
			os.WriteFile(filepath.Join(keep, "compose.log"), []byte(out), 0o600)
			t.Logf("container logs kept in %s", keep)
		}
		if out, err := p.composeOut("down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			t.Logf("docker-compose down: %v\n%s", err, out)
		}
	})
	return p
}

// runReadmeEnvSetup runs the README's compose block up to `docker compose up` in dir (its `cd
// deploy/compose` is where dir stands in), so the documented way to create .env is what the test
// uses, and checks the result.
func runReadmeEnvSetup(t *testing.T, dir string) {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(readme), "## Run it with Docker Compose")
	if !ok {
		t.Fatal(`README.md has no "## Run it with Docker Compose" section`)
	}
	_, block, ok := strings.Cut(sec, "```sh\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("README.md compose section has no sh block")
	}
	setup, up, ok := strings.Cut(block, "docker compose up -d --build")
	if !ok || strings.TrimSpace(up) != "" {
		t.Fatalf("README.md compose block does not end in `docker compose up -d --build`:\n%s", block)
	}
	setup = strings.Replace(setup, "cd deploy/compose\n", "", 1)
	for range 2 { // twice: the second run must keep the first .env ("create .env once")
		cmd := exec.Command("bash", "-euc", setup)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("README compose set-up:\n%s\n= %v\n%s", setup, err, out)
		}
		env, err := os.ReadFile(filepath.Join(dir, ".env"))
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"SCIMFLOW_ADMIN_TOKEN", "GRAFANA_ADMIN_PASSWORD", "NATS_SCIM_INGEST_PASSWORD",
			"NATS_IDENTITY_STORE_PASSWORD", "NATS_AUTH_PASSWORD", "NATS_ROUTE_PASSWORD", "SCIMFLOW_AUTH_KEY_ENCRYPTION_KEY"} {
			m := regexp.MustCompile(`(?m)^` + k + `=(\S*)$`).FindSubmatch(env)
			if m == nil || len(m[1]) < 16 {
				t.Fatalf(".env after the README's set-up: %s = %q, want a generated secret", k, m)
			}
		}
	}
}

// envValue reads a variable of the project's .env.
func (p *composeProject) envValue(k string) string {
	env, err := os.ReadFile(filepath.Join(p.dir, ".env"))
	if err != nil {
		p.t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + k + `=(.*)$`).FindSubmatch(env)
	if m == nil {
		p.t.Fatalf(".env has no %s", k)
	}
	return string(m[1])
}

func (p *composeProject) composeOut(args ...string) (string, error) {
	full := []string{"-p", p.name}
	for _, f := range p.files {
		full = append(full, "-f", f)
	}
	cmd := exec.Command("docker-compose", append(full, args...)...)
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), p.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// compose runs docker-compose with the project's files and variables; it fails the test on error.
func (p *composeProject) compose(args ...string) string {
	p.t.Helper()
	out, err := p.composeOut(args...)
	if err != nil {
		p.t.Fatalf("docker-compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// container returns the id of a service's container.
func (p *composeProject) container(svc string) string {
	p.t.Helper()
	id := strings.TrimSpace(p.compose("ps", "-q", svc))
	if id == "" {
		p.t.Fatalf("service %s has no container", svc)
	}
	return id
}

// health returns a container's health status (starting, healthy, unhealthy) or its state.
func health(id string) string {
	out, err := exec.Command("docker", "inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}", id).Output()
	if err != nil {
		return "inspect: " + err.Error()
	}
	return strings.TrimSpace(string(out))
}

// waitHealthy polls until every named service's container reports healthy and returns how long
// that took.
func (p *composeProject) waitHealthy(d time.Duration, svcs ...string) time.Duration {
	p.t.Helper()
	start := time.Now()
	err := poll(context.Background(), d, func() error {
		for _, s := range svcs {
			id, err := p.composeOut("ps", "-q", s)
			if err != nil || strings.TrimSpace(id) == "" {
				return fmt.Errorf("%s: no container yet", s)
			}
			if h := health(strings.TrimSpace(id)); h != "healthy" {
				return fmt.Errorf("%s: %s", s, h)
			}
		}
		return nil
	})
	if err != nil {
		p.t.Fatalf("not healthy within %s: %v\n%s", d, err, p.compose("ps"))
	}
	return time.Since(start)
}

// composeStack binds the reliability stack (oracles, workload, IdP set-up) to the project's
// containers through their published ports.
func (p *composeProject) composeStack(providerAddr string) *stack {
	t := p.t
	mk := func(svc, portVar, metricsVar string) *service {
		return &service{svc: svc, addr: fmt.Sprintf("127.0.0.1:%d", p.ports[portVar]),
			metricsAddr: fmt.Sprintf("127.0.0.1:%d", p.ports[metricsVar]), container: p.container(svc)}
	}
	// The oracle and `scimflow replay` read every stream as identity-store, the role that may
	// (docs/security.md); NATS refuses anonymous clients.
	s := &stack{t: t, dir: t.TempDir(), opts: stackOptions{
		natsURL: fmt.Sprintf("nats://identity-store:%s@127.0.0.1:%d", url.QueryEscape(p.envValue("NATS_IDENTITY_STORE_PASSWORD")),
			p.ports["SCIMFLOW_TEST_NATS_PORT"]),
		providerAddr: providerAddr,
	}}
	s.ingest = mk("scim-ingest", "SCIMFLOW_PORT_SCIM", "SCIMFLOW_TEST_METRICS_SCIM")
	s.store = mk("identity-store", "SCIMFLOW_PORT_ADMIN", "SCIMFLOW_TEST_METRICS_ADMIN")
	s.auth = mk("auth", "SCIMFLOW_PORT_AUTH", "SCIMFLOW_TEST_METRICS_AUTH")
	return s
}

// gateway is the host's address on a compose network: a listener there is reached at the same URL
// from the host and from the containers on that network.
func (p *composeProject) gateway(network string) string {
	return docker(p.t, "network", "inspect", p.name+"_"+network, "-f", "{{(index .IPAM.Config 0).Gateway}}")
}

// hostPrometheus runs Debian's Prometheus on the host with the repository's rules, scraping the
// published ports as compose's prometheus.yml scrapes the containers, and waits until every
// service's target is up with scimflow series.
func hostPrometheus(t *testing.T, targets map[string]string) time.Duration {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus (apt-get install prometheus): %v", err)
	}
	rules, err := filepath.Abs(filepath.Join(repoRoot, "deploy", "compose", "prometheus", "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [%q]\nscrape_configs:\n", rules)
	jobs := slices.Sorted(func(yield func(string) bool) {
		for j := range targets {
			if !yield(j) {
				return
			}
		}
	})
	for _, j := range jobs {
		fmt.Fprintf(&b, "  - job_name: %s\n    static_configs: [{targets: [%q]}]\n", j, targets[j])
	}
	conf := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	pr := &proc{name: "prometheus", log: filepath.Join(dir, "prometheus.log"), args: []string{bin,
		"--config.file=" + conf, "--storage.tsdb.path=" + filepath.Join(dir, "data"), "--web.listen-address=" + addr}}
	pr.start(t)
	t.Cleanup(func() { pr.kill(t) })
	start := time.Now()
	query := func(q string) ([]map[string]any, error) {
		resp, err := http.Get("http://" + addr + "/api/v1/query?" + url.Values{"query": {q}}.Encode())
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var r struct {
			Status string `json:"status"`
			Data   struct {
				Result []map[string]any `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.Status != "success" {
			return nil, fmt.Errorf("query %s: %v %s", q, err, r.Status)
		}
		return r.Data.Result, nil
	}
	err = poll(context.Background(), 90*time.Second, func() error {
		up, err := query(`up == 1`)
		if err != nil {
			return err
		}
		if len(up) != len(targets) {
			return fmt.Errorf("up == 1 for %d of %d targets", len(up), len(targets))
		}
		series, err := query(`count by (job) ({__name__=~"scimflow_.+"})`)
		if err != nil {
			return err
		}
		if len(series) != len(targets) {
			return fmt.Errorf("scimflow series from %d of %d jobs", len(series), len(targets))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("host Prometheus against the containers: %v\n%s", err, pr.logTail(20))
	}
	// The rules load and evaluate against the containers' series.
	if firing, err := query(`ALERTS{alertname="ScimflowServiceDown"}`); err != nil || len(firing) != 0 {
		t.Errorf("ScimflowServiceDown with every container up: %v %v", firing, err)
	}
	return time.Since(start)
}

// TestComposeStack is the compose stack end to end: the README's set-up, every container healthy
// (healthchecks, depends_on service_healthy), Prometheus scraping each service, docker kill of
// identity-store and of nats in the middle of a SCIM workload with the oracles of the process
// tests (nothing lost, nothing applied twice, the live registry equal to a replay of the
// streams), a crash that the restart policy recovers, and a person's whole lifecycle: SCIM
// provisioning → OIDC login → /verify 200 → deprovision → 401.
func TestComposeStack(t *testing.T) {
	p := newComposeProject(t, filepath.Join("testdata", "compose.test.yaml"))
	start := time.Now()
	p.compose(append([]string{"up", "-d"}, coreServices...)...)
	healthy := p.waitHealthy(3*time.Minute, coreServices...)
	t.Logf("FIGURES compose up: every container healthy %s after `up -d` was called (up itself returned after %s)",
		time.Since(start).Round(time.Millisecond), (time.Since(start) - healthy).Round(time.Millisecond))
	// NATS is on the back network only and publishes nothing but the test's loopback port.
	if ports := docker(t, "port", p.container("nats")); strings.Count(ports, "\n") != 0 || !strings.Contains(ports, fmt.Sprintf("127.0.0.1:%d", p.ports["SCIMFLOW_TEST_NATS_PORT"])) {
		t.Errorf("nats publishes %q, want only the test override's loopback port", ports)
	}

	scrape := hostPrometheus(t, map[string]string{
		"scim-ingest":    fmt.Sprintf("127.0.0.1:%d", p.ports["SCIMFLOW_TEST_METRICS_SCIM"]),
		"identity-store": fmt.Sprintf("127.0.0.1:%d", p.ports["SCIMFLOW_TEST_METRICS_ADMIN"]),
		"auth":           fmt.Sprintf("127.0.0.1:%d", p.ports["SCIMFLOW_TEST_METRICS_AUTH"]),
	})
	t.Logf("host Prometheus: every target up with scimflow series after %s", scrape.Round(time.Millisecond))

	// The admin token is the one the README's set-up generated.
	tokenCheck := &scenario.Admin{BaseURL: fmt.Sprintf("http://127.0.0.1:%d", p.ports["SCIMFLOW_PORT_ADMIN"]), Token: p.envValue("SCIMFLOW_ADMIN_TOKEN")}
	if _, err := tokenCheck.Users(t.Context(), "nobody@example.com", ""); err != nil {
		t.Fatalf("admin API with the token from .env: %v", err)
	}

	s := p.composeStack(p.gateway("front") + ":0")
	s.adminToken = p.envValue("SCIMFLOW_ADMIN_TOKEN")
	s.createIdP()
	closeProvider(t, s)
	nc, js := jsConnect(t, s.opts.natsURL)
	defer nc.Close()

	// Paced: the kills take minutes (waiting for healthy), and the oracle reads back every user.
	w := newWorkload(s.scim(), "compose", 3)
	w.pace = 300 * time.Millisecond
	w.start(1 << 20)
	// docker kill is an operator's stop: the restart policy does not apply, so the test starts
	// the container again as an operator would, a second after the kill, in the middle of the
	// workload.
	killRestart := func(svc string, wait ...string) {
		time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond)
		docker(t, "kill", p.container(svc))
		killed := time.Now()
		time.Sleep(time.Second)
		p.compose("start", svc)
		p.waitHealthy(3*time.Minute, wait...)
		t.Logf("FIGURES compose docker kill %s: healthy again %s after the kill (%d users so far)", svc, time.Since(killed).Round(time.Millisecond), w.count())
	}
	killRestart("identity-store", "identity-store")
	killRestart("nats", coreServices...)
	// A crash, not an operator's kill: the restart policy brings the container back by itself.
	id := p.container("identity-store")
	restarts := docker(t, "inspect", "-f", "{{.RestartCount}}", id)
	pid := docker(t, "inspect", "-f", "{{.State.Pid}}", id)
	crashed := time.Now()
	if out, err := exec.Command("kill", "-KILL", pid).CombinedOutput(); err != nil {
		t.Fatalf("kill -KILL %s (identity-store's process): %v %s", pid, err, out)
	}
	if err := poll(context.Background(), 2*time.Minute, func() error {
		if r := docker(t, "inspect", "-f", "{{.RestartCount}}", id); r == restarts {
			return fmt.Errorf("restart count still %s", r)
		}
		return nil
	}); err != nil {
		t.Fatalf("identity-store crashed and restart: unless-stopped did not restart it: %v", err)
	}
	p.waitHealthy(3*time.Minute, "identity-store")
	t.Logf("FIGURES compose crash of identity-store (SIGKILL of its process): restarted by the restart policy and healthy %s later", time.Since(crashed).Round(time.Millisecond))

	target := w.count() + 8
	if err := poll(t.Context(), 2*time.Minute, func() error {
		if w.count() < target {
			return fmt.Errorf("%d users, want %d", w.count(), target)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	w.finish()
	f := p.verify(s, js, w)
	if f.Lost+f.Duplicated+f.Unexpected+f.StoredTwice > 0 {
		t.Errorf("compose kills: %s", f)
	}

	// Start again after the replay oracle's stop, and walk one person's lifecycle.
	p.compose("start", "scim-ingest", "identity-store", "auth")
	p.waitHealthy(3*time.Minute, coreServices...)
	composeLifecycle(t, s)
}

// verify is stack.verify for containers: drain, both halves of oracle (1), then oracle (2) with
// the services stopped, identity-store's file copied out of its container and `scimflow replay`
// run on the host against the published NATS port.
func (p *composeProject) verify(s *stack, js jetstream.JetStream, w *workload) figures {
	t := p.t
	t.Helper()
	s.waitDrained(t, js, 2*time.Minute)
	f := checkStream(t, w, readStream(t, js, events.StreamSCIM))
	s.checkRegistry(t, w, &f)
	s.waitDrained(t, js, 2*time.Minute)
	t.Logf("FIGURES compose: %s; %s", f, w.summary())

	p.compose("stop", "-t", "10", "scim-ingest", "identity-store", "auth")
	live := filepath.Join(s.dir, "identity-store-live.db")
	docker(t, "cp", s.store.container+":/data/identity-store.db", live)
	out := filepath.Join(s.dir, "replay.db")
	cmd := exec.Command(scimflowBin, "replay", "identity-store", "-out", out, "-config", "/dev/null")
	cmd.Env = append(os.Environ(), "SCIMFLOW_NATS_URL="+s.opts.natsURL, "SCIMFLOW_DATA_DIR="+filepath.Join(s.dir, "replay-data"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scimflow replay identity-store: %v\n%s", err, b)
	}
	if l, r := dump(t, live), dump(t, out); l != r {
		t.Errorf("identity-store's file in its container differs from a clean replay of the streams:\n%s", firstDiff(l, r))
	}
	return f
}

// closeProvider closes the stack's current test OpenID provider when the test ends.
func closeProvider(t *testing.T, s *stack) {
	prov := s.provider
	t.Cleanup(func() { prov.Close() })
}

// composeLifecycle: SCIM provisioning → OIDC login at the test provider (reached by host and
// containers at one issuer URL) → /verify 200 with the identity → SCIM deprovision → /verify 401.
func composeLifecycle(t *testing.T, s *stack) {
	ctx := t.Context()
	s.idpName = "compose-lifecycle"
	s.createIdP()
	closeProvider(t, s)
	const email = "ada.compose@example.com"
	if err := s.provider.AddUser(oidctest.User{Sub: "ada", Email: email, Name: "Ada Compose"}); err != nil {
		t.Fatal(err)
	}
	sc := s.scim()
	r := sc.do(ctx, http.MethodPost, "/Users", userBody(email, "Ada"))
	if r.status != http.StatusCreated {
		t.Fatalf("SCIM POST /Users = %d %v %s", r.status, r.err, r.body)
	}
	var created struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(r.body, &created); err != nil {
		t.Fatal(err)
	}
	b := scenario.NewBrowser(s.auth.baseURL(), nil)
	if err := b.WaitIdP(ctx, s.idp.ID, time.Minute); err != nil {
		t.Fatal(err)
	}
	res, err := b.Login(ctx, s.idp.ID, "ada")
	if err != nil || !res.OK() {
		t.Fatalf("login through the containers: %+v %v", res, err)
	}
	const app = "http://app.test:3000/dashboard"
	v, err := b.Verify(ctx, scenario.Nginx, app)
	if err != nil || v.Status != http.StatusOK || v.Header.Get("X-Scimflow-Email") != email || v.Header.Get("X-Scimflow-User-Id") == "" {
		t.Fatalf("/verify after login = %d %v (email %q, user id %q), want 200 with the identity", v.Status, err, v.Header.Get("X-Scimflow-Email"), v.Header.Get("X-Scimflow-User-Id"))
	}
	deprovisioned := time.Now()
	r = sc.do(ctx, http.MethodPatch, "/Users/"+created.ID, patchBody("active", false))
	if r.status/100 != 2 {
		t.Fatalf("SCIM PATCH active=false = %d %v %s", r.status, r.err, r.body)
	}
	if err := poll(ctx, 30*time.Second, func() error {
		v, err := b.Verify(ctx, scenario.Nginx, app)
		if err != nil {
			return err
		}
		if v.Status != http.StatusUnauthorized {
			return fmt.Errorf("/verify = %d", v.Status)
		}
		return nil
	}); err != nil {
		t.Fatalf("/verify after the SCIM deprovision: %v, want 401", err)
	}
	t.Logf("FIGURES compose lifecycle: /verify 401 %s after the deprovisioning PATCH was sent", time.Since(deprovisioned).Round(time.Millisecond))
}

// TestComposeCluster is the cluster variant (compose.cluster.yaml): three NATS servers, R3 streams,
// two auth replicas. Under a SCIM workload it SIGKILLs (docker kill) the SCIM stream's leader and
// cuts auth-2 from the back network. auth-2 must fail closed (503) once its revocation state is
// older than revocation_max_staleness, catch up on reconnect (a person deprovisioned meanwhile
// gets 401 there), and no acknowledged write may be lost or applied twice.
func TestComposeCluster(t *testing.T) {
	p := newComposeProject(t, "compose.cluster.yaml", filepath.Join("testdata", "compose.test.yaml"), filepath.Join("testdata", "compose.cluster.test.yaml"))
	all := []string{"nats", "nats-2", "nats-3", "scim-ingest", "identity-store", "auth", "auth-2"}
	start := time.Now()
	p.compose(append([]string{"up", "-d"}, all...)...)
	p.waitHealthy(5*time.Minute, all...)
	t.Logf("FIGURES compose cluster up: every container healthy %s after `up -d` was called", time.Since(start).Round(time.Millisecond))

	s := p.composeStack(p.gateway("front") + ":0")
	// As identity-store, the role that reads every stream; every node has the same users.
	pw := url.QueryEscape(p.envValue("NATS_IDENTITY_STORE_PASSWORD"))
	s.opts.natsURL = fmt.Sprintf("nats://identity-store:%s@127.0.0.1:%d,nats://identity-store:%s@127.0.0.1:%d,nats://identity-store:%s@127.0.0.1:%d",
		pw, p.ports["SCIMFLOW_TEST_NATS_PORT"], pw, p.ports["SCIMFLOW_TEST_NATS_2_PORT"], pw, p.ports["SCIMFLOW_TEST_NATS_3_PORT"])
	s.adminToken = p.envValue("SCIMFLOW_ADMIN_TOKEN")
	s.createIdP()
	closeProvider(t, s)
	nc, js := jsConnect(t, s.opts.natsURL)
	defer nc.Close()
	ctx := t.Context()
	if err := waitReplicasCurrent(ctx, js, 2*time.Minute); err != nil {
		t.Fatalf("streams not R3 with current replicas: %v", err)
	}

	// A person logged in, whose session auth-2 (the same service behind the balancer) honours.
	const email = "grace.cluster@example.com"
	if err := s.provider.AddUser(oidctest.User{Sub: "grace", Email: email, Name: "Grace Cluster"}); err != nil {
		t.Fatal(err)
	}
	sc := s.scim()
	r := sc.do(ctx, http.MethodPost, "/Users", userBody(email, "Grace"))
	if r.status != http.StatusCreated {
		t.Fatalf("SCIM POST /Users = %d %v %s", r.status, r.err, r.body)
	}
	var created struct {
		ID string `json:"id"`
	}
	json.Unmarshal(r.body, &created)
	b := scenario.NewBrowser(s.auth.baseURL(), nil)
	if err := b.WaitIdP(ctx, s.idp.ID, time.Minute); err != nil {
		t.Fatal(err)
	}
	if res, err := b.Login(ctx, s.idp.ID, "grace"); err != nil || !res.OK() {
		t.Fatalf("login: %+v %v", res, err)
	}
	auth2 := fmt.Sprintf("http://127.0.0.1:%d", p.ports["SCIMFLOW_PORT_AUTH_2"])
	const app = "http://app.test:3000/"
	verify2 := func() int {
		v, err := scenario.Verify(ctx, nil, auth2, b.Session(), "", scenario.Nginx, app)
		if err != nil {
			return 0
		}
		return v.Status
	}
	if err := poll(ctx, time.Minute, func() error {
		if c := verify2(); c != http.StatusOK {
			return fmt.Errorf("auth-2 /verify = %d", c)
		}
		return nil
	}); err != nil {
		t.Fatalf("auth-2 does not honour the session: %v", err)
	}

	w := newWorkload(sc, "cluster", 3)
	w.pace = 300 * time.Millisecond
	// Grace is the oracle's user too (same IdP): her last acknowledged state is the create.
	w.mu.Lock()
	w.users[email] = &userModel{UserName: email, ID: created.ID, Given: "Grace"}
	w.order = append(w.order, email)
	w.mu.Unlock()
	w.start(1 << 20)
	waitUsers(t, w, 20)

	// Kill the SCIM stream's leader.
	info, err := streamLeader(ctx, js, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	old := info.Cluster.Leader
	victim := map[string]string{"nats-1": "nats", "nats-2": "nats-2", "nats-3": "nats-3"}[old]
	if victim == "" {
		t.Fatalf("SCIM leader %q is not a compose NATS node", old)
	}
	docker(t, "kill", p.container(victim))
	killed := time.Now()
	var leader string
	if err := poll(ctx, time.Minute, func() error {
		info, err := streamLeader(ctx, js, 2*time.Second)
		if err != nil {
			return err
		}
		if leader = info.Cluster.Leader; leader == old {
			return fmt.Errorf("still %s", old)
		}
		return nil
	}); err != nil {
		t.Fatalf("no new SCIM leader after docker kill of %s: %v", old, err)
	}
	election := time.Since(killed)
	t.Logf("FIGURES compose cluster: SCIM leader %s killed; %s leads %s later (%d users so far)", old, leader, election.Round(time.Millisecond), w.count())
	waitUsers(t, w, w.count()+20)

	// Cut auth-2 from NATS; the test still reaches it on the front network.
	a2 := p.container("auth-2")
	docker(t, "network", "disconnect", p.name+"_back", a2)
	cut := time.Now()
	staleness := 10 * time.Second // auth's default revocation_max_staleness, which compose keeps
	if err := poll(ctx, staleness+20*time.Second, func() error {
		if c := verify2(); c != http.StatusServiceUnavailable {
			return fmt.Errorf("auth-2 /verify = %d", c)
		}
		return nil
	}); err != nil {
		t.Fatalf("auth-2 cut from NATS does not fail closed: %v", err)
	}
	failClosed := time.Since(cut)
	t.Logf("FIGURES compose cluster: auth-2 cut from NATS answers 503 %s after the cut (revocation_max_staleness %s)", failClosed.Round(time.Millisecond), staleness)
	if failClosed > staleness+5*time.Second {
		t.Errorf("auth-2 failed closed %s after the cut; revocation_max_staleness is %s", failClosed, staleness)
	}
	// While it is cut off, the person is deprovisioned; auth-1 revokes at once.
	r = sc.do(ctx, http.MethodPatch, "/Users/"+created.ID, patchBody("active", false))
	if r.status/100 != 2 {
		t.Fatalf("SCIM PATCH active=false = %d %v %s", r.status, r.err, r.body)
	}
	if err := poll(ctx, time.Minute, func() error {
		v, err := b.Verify(ctx, scenario.Nginx, app)
		if err != nil || v.Status != http.StatusUnauthorized {
			return fmt.Errorf("auth-1 /verify = %d %v", v.Status, err)
		}
		return nil
	}); err != nil {
		t.Fatalf("auth-1 after the deprovision: %v", err)
	}
	if c := verify2(); c != http.StatusServiceUnavailable {
		t.Errorf("auth-2, still cut off, answers %d for the deprovisioned session, want 503", c)
	}
	docker(t, "network", "connect", p.name+"_back", a2)
	reconnected := time.Now()
	if err := poll(ctx, 2*time.Minute, func() error {
		if c := verify2(); c != http.StatusUnauthorized {
			return fmt.Errorf("auth-2 /verify = %d", c)
		}
		return nil
	}); err != nil {
		t.Fatalf("auth-2 after reconnecting: %v, want 401 for the session deprovisioned meanwhile", err)
	}
	t.Logf("FIGURES compose cluster: auth-2 caught up (401 for the deprovisioned session) %s after reconnecting", time.Since(reconnected).Round(time.Millisecond))

	p.compose("start", victim)
	if err := waitReplicasCurrent(ctx, js, 3*time.Minute); err != nil {
		t.Fatalf("replicas not current after %s restarted: %v", victim, err)
	}
	waitUsers(t, w, w.count()+20)
	w.finish()
	f := p.verify(s, js, w)
	// A relay retry across a leader change may be stored twice (figures.StoredTwice); consumers
	// skip it by event id, so it is reported, not failed.
	if f.Lost+f.Duplicated+f.Unexpected > 0 {
		t.Errorf("compose cluster: %s", f)
	}
}

// TestComposeBuildContext: the classic builder (docker-compose v1 builds with it) honours the
// repository's .dockerignore: the context of deploy/Dockerfile carries the sources but not .git,
// local data, the compose directory or a locally built binary.
func TestComposeBuildContext(t *testing.T) {
	if out, err := exec.Command("docker", "version", "-f", "{{.Server.Version}}").CombinedOutput(); err != nil {
		t.Fatalf("no Docker engine (make compose-test starts one; see .ci/run): %v\n%s", err, out)
	}
	dir := t.TempDir()
	df := filepath.Join(dir, "Dockerfile")
	if err := os.WriteFile(df, []byte("FROM scratch\nCOPY . /ctx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("scimflow-context-check:%d", rand.IntN(1<<30))
	cmd := exec.Command("docker", "build", "-q", "-f", df, "-t", tag, repoRoot)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker build of the repository context: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", tag).Run() })
	id := docker(t, "create", tag, "/none")
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", id).Run() })
	out, err := exec.Command("sh", "-c", "docker export "+id+" | tar -t").Output()
	if err != nil {
		t.Fatalf("docker export | tar -t: %v", err)
	}
	files := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		files[strings.TrimSuffix(l, "/")] = true
	}
	for _, want := range []string{"ctx/go.mod", "ctx/cmd/scimflow/main.go", "ctx/deploy/Dockerfile"} {
		if !files[want] {
			t.Errorf("build context lacks %s", want)
		}
	}
	for _, not := range []string{"ctx/.git", "ctx/deploy/compose", "ctx/data", "ctx/scimflow"} {
		if files[not] {
			t.Errorf("build context has %s, which .dockerignore excludes", not)
		}
	}
}
