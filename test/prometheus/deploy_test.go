package prometheus

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"sigs.k8s.io/yaml"
)

// deployDir is deploy/compose relative to this package.
var deployDir = filepath.Join("..", "..", "deploy", "compose")

// TestNATSConfig guards docs/design.md §2.4 in the compose NATS config: JetStream on file storage,
// fsync on every write (sync_interval: always), and the default max_payload the event chunking
// assumes. It uses nats-server's own parser, so what it accepts is what the server will run.
func TestNATSConfig(t *testing.T) {
	t.Parallel()
	opts, err := server.ProcessConfigFile(filepath.Join(deployDir, "nats.conf"))
	if err != nil {
		t.Fatalf("ProcessConfigFile(nats.conf) = %v", err)
	}
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

// TestDashboardShape checks the dashboard JSON: the five rows the operations guide describes, and
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
	want := []string{"SCIM ingest", "Event pipeline", "Registry and seats", "Auth and sessions", "Revocation latency"}
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
