package prometheus

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"sigs.k8s.io/yaml"
)

// TestNATSClusterConfig: every node of the cluster variant keeps principle 4 (file store, fsync on
// every write) and routes to all three nodes, by nats-server's own parser.
func TestNATSClusterConfig(t *testing.T) {
	t.Parallel()
	opts, err := server.ProcessConfigFile(filepath.Join(deployDir, "nats-cluster.conf"))
	if err != nil {
		t.Fatalf("ProcessConfigFile(nats-cluster.conf) = %v", err)
	}
	if !opts.JetStream || opts.StoreDir == "" || !opts.SyncAlways || opts.MaxPayload != 0 {
		t.Errorf("nats-cluster.conf: jetstream %v store %q sync always %v max_payload %d; want JetStream on a file store, sync_interval: always, default max_payload",
			opts.JetStream, opts.StoreDir, opts.SyncAlways, opts.MaxPayload)
	}
	if opts.Cluster.Name == "" || len(opts.Routes) != 3 {
		t.Errorf("nats-cluster.conf: cluster %q with %d routes, want a named cluster routing to 3 nodes", opts.Cluster.Name, len(opts.Routes))
	}
}

// composeService is the part of a compose service the defaults test reads.
type composeService struct {
	Image       string            `json:"image"`
	Command     []string          `json:"command"`
	Restart     string            `json:"restart"`
	Environment map[string]string `json:"environment"`
	Ports       []string          `json:"ports"`
	Networks    []string          `json:"networks"`
	DependsOn   map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
	Healthcheck struct {
		Test []string `json:"test"`
	} `json:"healthcheck"`
}

func readCompose(t *testing.T, name string) map[string]composeService {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(deployDir, name))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]composeService `json:"services"`
	}
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("yaml.Unmarshal(%s) = %v", name, err)
	}
	return c.Services
}

// TestComposeSecureDefaults checks what compose.yaml and compose.cluster.yaml promise without a
// Docker engine (reliability/compose_test.go runs them): NATS publishes no port and runs the
// nats-server version of go.mod; every scimflow service checks itself with `scimflow healthcheck`,
// starts after NATS is healthy and restarts; Grafana's password has no default and its port is not
// the application's 3000; every required variable is in .env.example; the build context leaves
// .git out for both builders.
func TestComposeSecureDefaults(t *testing.T) {
	t.Parallel()
	gomod, err := os.ReadFile(filepath.Join("..", "..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`github.com/nats-io/nats-server/v2 v(\S+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod has no nats-server")
	}
	natsImage := "nats:" + string(m[1]) + "-alpine"

	main := readCompose(t, "compose.yaml")
	cluster := readCompose(t, "compose.cluster.yaml")
	for file, services := range map[string]map[string]composeService{"compose.yaml": main, "compose.cluster.yaml": cluster} {
		for name, s := range services {
			if strings.HasPrefix(name, "nats") {
				if s.Image != natsImage {
					t.Errorf("%s: %s image = %q, want %q (go.mod's nats-server, the embedded one)", file, name, s.Image, natsImage)
				}
				if len(s.Ports) != 0 {
					t.Errorf("%s: %s publishes %q; NATS must not be reachable from the host by default", file, name, s.Ports)
				}
				if !slices.Equal(s.Networks, []string{"back"}) {
					t.Errorf("%s: %s networks = %q, want [back]", file, name, s.Networks)
				}
				continue
			}
			if s.Image != "scimflow:local" {
				continue // scimflow services in the override without their own image inherit it
			}
			svc := name
			if len(s.Command) == 1 {
				svc = s.Command[0]
			}
			if want := []string{"CMD", "/usr/local/bin/scimflow", "healthcheck", svc}; !slices.Equal(s.Healthcheck.Test, want) {
				t.Errorf("%s: %s healthcheck = %q, want %q", file, name, s.Healthcheck.Test, want)
			}
			if s.DependsOn["nats"].Condition != "service_healthy" {
				t.Errorf("%s: %s depends_on nats %+v, want condition service_healthy", file, name, s.DependsOn)
			}
			if s.Restart != "unless-stopped" {
				t.Errorf("%s: %s restart = %q, want unless-stopped", file, name, s.Restart)
			}
		}
	}
	for _, n := range []string{"scim-ingest", "identity-store", "auth"} {
		if main[n].Image != "scimflow:local" {
			t.Errorf("compose.yaml: %s image = %q, want scimflow:local", n, main[n].Image)
		}
	}
	if len(cluster) < 6 || cluster["nats-2"].Image == "" || cluster["nats-3"].Image == "" || cluster["auth-2"].Image == "" {
		t.Errorf("compose.cluster.yaml services %v, want nats-2, nats-3 and auth-2 among them", slices.Sorted(mapsKeys(cluster)))
	}
	if got := cluster["auth"].Environment["SCIMFLOW_NATS_REPLICAS"]; got != "3" {
		t.Errorf("compose.cluster.yaml: auth SCIMFLOW_NATS_REPLICAS = %q, want 3", got)
	}

	g := main["grafana"]
	if pw := g.Environment["GF_SECURITY_ADMIN_PASSWORD"]; !strings.HasPrefix(pw, "${GRAFANA_ADMIN_PASSWORD:?") {
		t.Errorf("grafana GF_SECURITY_ADMIN_PASSWORD = %q, want ${GRAFANA_ADMIN_PASSWORD:?…} (from .env, no default)", pw)
	}
	for _, p := range g.Ports {
		if strings.HasSuffix(p, ":3000:3000") || p == "3000:3000" {
			t.Errorf("grafana publishes %q: host port 3000 is the default application origin", p)
		}
	}

	// Every variable compose requires (${VAR:?…}) is in .env.example, so the README's set-up
	// leaves a .env with which every later command works.
	example, err := os.ReadFile(filepath.Join(deployDir, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"compose.yaml", "compose.cluster.yaml"} {
		raw, _ := os.ReadFile(filepath.Join(deployDir, f))
		for _, v := range regexp.MustCompile(`\$\{([A-Z0-9_]+):\?`).FindAllSubmatch(raw, -1) {
			if !regexp.MustCompile(`(?m)^` + string(v[1]) + `=`).Match(example) {
				t.Errorf("%s requires %s, which .env.example does not have", f, v[1])
			}
		}
	}

	ignore, err := os.ReadFile(filepath.Join("..", "..", ".dockerignore"))
	if err != nil {
		t.Fatalf("the classic builder reads only <context>/.dockerignore: %v", err)
	}
	if !slices.Contains(strings.Fields(string(ignore)), ".git") {
		t.Errorf(".dockerignore does not exclude .git")
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
