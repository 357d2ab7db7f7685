package prometheus

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"sigs.k8s.io/yaml"

	"github.com/scimflow/scimflow/app"
	"github.com/scimflow/scimflow/internal/broker"
)

// deployDir is deploy/compose relative to this package.
var deployDir = filepath.Join("..", "..", "deploy", "compose")

// parseNATSConf parses a NATS config of the deployment with nats-server's parser and checks the
// trust boundary every node shares (docs/security.md): one password user per role, read from the
// environment, with exactly the permissions internal/broker/permissions.go gives the role; no
// anonymous access; the unauthenticated monitoring port bound inside the container only. It sets
// the password variables, so its callers are not parallel.
func parseNATSConf(t *testing.T, path string) *server.Options {
	t.Helper()
	if _, err := server.ProcessConfigFile(path); err == nil || !strings.Contains(err.Error(), "NATS_") {
		t.Errorf("ProcessConfigFile(%s) without the password variables = %v, want an error naming the missing variable", path, err)
	}
	for _, r := range broker.Roles {
		t.Setenv(broker.NATSConfPasswordVar(r), "pw-"+string(r))
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("ProcessConfigFile(%s) = %v", path, err)
	}
	if opts.NoAuthUser != "" || len(opts.Nkeys) != 0 || len(opts.Users) != len(broker.Roles) {
		t.Errorf("%s: no_auth_user %q, %d nkeys, %d users; want no anonymous user and one user per role", path, opts.NoAuthUser, len(opts.Nkeys), len(opts.Users))
	}
	for _, u := range opts.Users {
		r := broker.Role(u.Username)
		if u.Password != "pw-"+u.Username {
			t.Errorf("%s: user %s does not read its password from $%s", path, u.Username, broker.NATSConfPasswordVar(r))
		}
		want := broker.RolePermissions(r, broker.Permissions)
		if u.Permissions == nil || u.Permissions.Publish == nil || u.Permissions.Subscribe == nil ||
			!slices.Equal(u.Permissions.Publish.Allow, want.Publish.Allow) || !slices.Equal(u.Permissions.Subscribe.Allow, want.Subscribe.Allow) ||
			len(u.Permissions.Publish.Deny) != 0 || len(u.Permissions.Subscribe.Deny) != 0 ||
			(u.Permissions.Response == nil) != (want.Response == nil) || (want.Response != nil && *u.Permissions.Response != *want.Response) {
			t.Errorf("%s: user %s permissions differ from internal/broker/permissions.go", path, u.Username)
		}
	}
	if opts.HTTPHost != "127.0.0.1" {
		t.Errorf("%s: monitoring listens on %q, want 127.0.0.1 (it has no authentication)", path, opts.HTTPHost)
	}
	return opts
}

// TestNATSConfig guards docs/design.md §2.4 in the compose NATS config: JetStream on file storage,
// fsync on every write (sync_interval: always), and the default max_payload the event chunking
// assumes. It uses nats-server's own parser, so what it accepts is what the server will run.
//
// It also checks the trust boundary (docs/security.md): one password user per role, read from the
// environment, with exactly the permissions internal/broker/permissions.go gives the role; no
// anonymous access; the unauthenticated monitoring port bound inside the container only.
// (Not parallel: the passwords come from the process environment, as in the container.)
func TestNATSConfig(t *testing.T) {
	opts := parseNATSConf(t, filepath.Join(deployDir, "nats.conf"))
	if !opts.JetStream {
		t.Errorf("nats.conf: jetstream = false, want enabled")
	}
	if opts.StoreDir == "" {
		t.Errorf("nats.conf: jetstream store_dir is empty, want a file store directory on a volume")
	}
	if !opts.SyncAlways {
		t.Errorf("nats.conf: SyncAlways = false, want sync_interval: always")
	}
	if opts.MaxPayload != 0 {
		t.Errorf("nats.conf: max_payload = %d, want the 1 MiB default (unset)", opts.MaxPayload)
	}
}

// composeFile is the part of compose.yaml the test checks.
type composeFile struct {
	Services map[string]struct {
		Image       string            `json:"image"`
		Command     []string          `json:"command"`
		Environment map[string]string `json:"environment"`
		Volumes     []string          `json:"volumes"`
		Ports       []string          `json:"ports"`
	} `json:"services"`
	Volumes map[string]any `json:"volumes"`
}

// TestComposeFile checks what the compose file promises without a Docker engine: it parses (YAML
// anchors and merge keys included), each scimflow service runs its own command against the NATS
// container with its own data volume, and every file it mounts exists.
func TestComposeFile(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(deployDir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("yaml.Unmarshal(compose.yaml) = %v", err)
	}
	want := map[string]string{"scim-ingest": "8080", "identity-store": "8081", "auth": "8082"}
	seenVolumes := map[string]string{}
	for name, port := range want {
		s, ok := c.Services[name]
		if !ok {
			t.Errorf("compose.yaml: no service %q", name)
			continue
		}
		if !slices.Equal(s.Command, []string{name}) {
			t.Errorf("service %s: command = %q, want [%q]", name, s.Command, name)
		}
		if got := s.Environment["SCIMFLOW_NATS_URL"]; got != "nats://nats:4222" {
			t.Errorf("service %s: SCIMFLOW_NATS_URL = %q, want nats://nats:4222", name, got)
		}
		// Each service is its own NATS user, named as its role (docs/security.md).
		if got := s.Environment["SCIMFLOW_NATS_USER"]; got != name {
			t.Errorf("service %s: SCIMFLOW_NATS_USER = %q, want %q", name, got, name)
		}
		if want := "${" + broker.NATSConfPasswordVar(broker.Role(name)) + ":?"; !strings.HasPrefix(s.Environment["SCIMFLOW_NATS_PASSWORD"], want) {
			t.Errorf("service %s: SCIMFLOW_NATS_PASSWORD = %q, want it from .env (%s…})", name, s.Environment["SCIMFLOW_NATS_PASSWORD"], want)
		}
		if s.Environment["SCIMFLOW_DATA_DIR"] == "" {
			t.Errorf("service %s: SCIMFLOW_DATA_DIR unset", name)
		}
		var data string
		for _, v := range s.Volumes {
			if strings.HasSuffix(v, ":"+s.Environment["SCIMFLOW_DATA_DIR"]) {
				data = strings.SplitN(v, ":", 2)[0]
			}
		}
		if _, ok := c.Volumes[data]; data == "" || !ok {
			t.Errorf("service %s: data_dir %q is not on a named volume (volumes %q)", name, s.Environment["SCIMFLOW_DATA_DIR"], s.Volumes)
		} else if other, dup := seenVolumes[data]; dup {
			t.Errorf("services %s and %s share volume %s: each service owns its bbolt file", name, other, data)
		}
		seenVolumes[data] = name
		if !slices.ContainsFunc(s.Ports, func(p string) bool { return strings.HasSuffix(p, ":"+port) }) {
			t.Errorf("service %s: ports %q do not publish %s", name, s.Ports, port)
		}
	}
	nats, ok := c.Services["nats"]
	if !ok || !strings.HasPrefix(nats.Image, "nats:2.") {
		t.Errorf("compose.yaml: nats service image = %q, want the official nats:2.x image", nats.Image)
	}
	if len(nats.Ports) != 0 {
		t.Errorf("compose.yaml: nats publishes %q; want nothing published (4222 is for the scimflow containers, 8222 has no authentication)", nats.Ports)
	}
	for _, r := range broker.Roles {
		if v := broker.NATSConfPasswordVar(r); !strings.HasPrefix(nats.Environment[v], "${"+v+":?") {
			t.Errorf("compose.yaml: nats environment %s = %q, want it from .env", v, nats.Environment[v])
		}
	}
	if !strings.HasPrefix(c.Services["auth"].Environment["SCIMFLOW_AUTH_KEY_ENCRYPTION_KEY"], "${SCIMFLOW_AUTH_KEY_ENCRYPTION_KEY:?") {
		t.Errorf("compose.yaml: auth gets no key-encryption key from .env")
	}
	// Every secret compose requires is in .env.example.
	example, err := os.ReadFile(filepath.Join(deployDir, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\$\{([A-Z0-9_]+):\?`).FindAllStringSubmatch(string(raw), -1) {
		if !regexp.MustCompile(`(?m)^#? ?` + m[1] + `=`).Match(example) {
			t.Errorf(".env.example does not list %s, which compose.yaml requires", m[1])
		}
	}
	// Grafana loads the dashboard from where compose mounts it.
	rawProv, err := os.ReadFile(filepath.Join(deployDir, "grafana", "provisioning", "dashboards", "scimflow.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var prov struct {
		Providers []struct {
			Options struct {
				Path string `json:"path"`
			} `json:"options"`
		} `json:"providers"`
	}
	if err := yaml.Unmarshal(rawProv, &prov); err != nil || len(prov.Providers) != 1 {
		t.Fatalf("grafana dashboard provisioning: %v, %d providers, want 1", err, len(prov.Providers))
	}
	if want := "./grafana/dashboards:" + prov.Providers[0].Options.Path + ":ro"; !slices.Contains(c.Services["grafana"].Volumes, want) {
		t.Errorf("grafana volumes = %q, want %q (the dashboard provider's path)", c.Services["grafana"].Volumes, want)
	}
	for _, s := range c.Services {
		for _, v := range s.Volumes {
			src := strings.SplitN(v, ":", 2)[0]
			if strings.HasPrefix(src, "./") {
				if _, err := os.Stat(filepath.Join(deployDir, src)); err != nil {
					t.Errorf("compose.yaml mounts %s: %v", src, err)
				}
			}
		}
	}
}

// TestPrometheusScrapesMetricsListeners: the compose Prometheus scrapes each service's metrics
// listener (its default port when run alone), not the service port, which does not serve /metrics.
func TestPrometheusScrapesMetricsListeners(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(deployDir, "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, j := range cfg.ScrapeConfigs {
		port, ok := app.DefaultMetricsPorts[j.JobName]
		if !ok {
			continue
		}
		seen++
		for _, sc := range j.StaticConfigs {
			for _, target := range sc.Targets {
				if !strings.HasSuffix(target, ":"+port) {
					t.Errorf("prometheus.yml job %s scrapes %s, want its metrics listener on port %s", j.JobName, target, port)
				}
			}
		}
	}
	if seen != len(app.DefaultMetricsPorts) {
		t.Errorf("prometheus.yml has %d scimflow jobs, want %d", seen, len(app.DefaultMetricsPorts))
	}
}

// TestPromtool runs the same promtool checks as .ci/run, so `go test` alone catches a broken rule.
func TestPromtool(t *testing.T) {
	t.Parallel()
	promtool := lookPath(t, "promtool")
	dir := filepath.Join(deployDir, "prometheus")
	for _, args := range [][]string{
		{"check", "config", "prometheus.yml"},
		{"check", "rules", "rules.yml"},
		{"test", "rules", "rules_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s = %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestDashboardShape checks the dashboard JSON: the six rows the operations guide describes, and
// every panel on the provisioned datasource with at least one query.
func TestDashboardShape(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	var rows []string
	for _, p := range d.Panels {
		if p.Type == "row" {
			rows = append(rows, p.Title)
			continue
		}
		if p.Datasource.UID != "prometheus" {
			t.Errorf("panel %q: datasource uid = %q, want prometheus (provisioning/datasources)", p.Title, p.Datasource.UID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
	}
	want := []string{"SCIM ingest", "Event pipeline", "Registry and seats", "Auth and sessions", "Revocation latency", "Revocation under load"}
	if !slices.Equal(rows, want) {
		t.Errorf("dashboard rows = %q, want %q", rows, want)
	}
}

// dashboard is the part of a Grafana dashboard JSON the tests read.
type dashboard struct {
	Panels []panel `json:"panels"`
}

type panel struct {
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(deployDir, "grafana", "dashboards", "scimflow.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("json.Unmarshal(scimflow.json) = %v", err)
	}
	// Flatten collapsed rows so every caller sees every panel.
	var flat []panel
	for _, p := range d.Panels {
		flat = append(flat, p)
		flat = append(flat, p.Panels...)
	}
	d.Panels = flat
	return d
}

// rulesFile is the part of rules.yml the tests read.
type rulesFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Record string `json:"record"`
			Alert  string `json:"alert"`
			Expr   string `json:"expr"`
		} `json:"rules"`
	} `json:"groups"`
}

func loadRules(t *testing.T) rulesFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(deployDir, "prometheus", "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var r rulesFile
	if err := yaml.Unmarshal(raw, &r); err != nil {
		t.Fatalf("yaml.Unmarshal(rules.yml) = %v", err)
	}
	return r
}

// lookPath finds a Prometheus binary or fails: nothing here is skipped silently.
func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not on PATH: .ci/run installs it (Debian package prometheus); locally run "+
			"`apt-get install -y --no-install-recommends prometheus`", name)
	}
	return p
}
