package prometheus

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"sigs.k8s.io/yaml"

	"github.com/scimflow/scimflow/internal/broker"
)

// TestNATSClusterConfig: every node of the cluster variant keeps principle 4 (file store, fsync on
// every write) and routes to all three nodes, by nats-server's own parser, and has the same users
// and permissions as nats.conf (parseNATSConf; not parallel: it sets the password variables).
func TestNATSClusterConfig(t *testing.T) {
	setClusterRouteEnv(t, "route-pw")
	opts := parseNATSConf(t, filepath.Join(deployDir, "nats-cluster.conf"))
	if !opts.JetStream || opts.StoreDir == "" || !opts.SyncAlways || opts.MaxPayload != 0 {
		t.Errorf("nats-cluster.conf: jetstream %v store %q sync always %v max_payload %d; want JetStream on a file store, sync_interval: always, default max_payload",
			opts.JetStream, opts.StoreDir, opts.SyncAlways, opts.MaxPayload)
	}
	if opts.Cluster.Name == "" || len(opts.Routes) != 3 {
		t.Errorf("nats-cluster.conf: cluster %q with %d routes, want a named cluster routing to 3 nodes", opts.Cluster.Name, len(opts.Routes))
	}
	if opts.Cluster.Username != broker.RouteUser || opts.Cluster.Password != "route-pw" {
		t.Errorf("nats-cluster.conf: route authorization user %q password %q, want %q with $%s", opts.Cluster.Username, opts.Cluster.Password, broker.RouteUser, broker.RoutePasswordVar)
	}
	for _, u := range opts.Routes {
		if pw, _ := u.User.Password(); u.User.Username() != broker.RouteUser || pw != "route-pw" {
			t.Errorf("nats-cluster.conf: route %s does not present the route credentials", u.Redacted())
		}
	}
}

// setClusterRouteEnv sets the route variables nats-cluster.conf reads the way the nats services
// of compose.cluster.yaml do: NATS_ROUTE_PASSWORD, and NATS_ROUTES from the compose file's own
// value with the password interpolated (as compose does from .env).
func setClusterRouteEnv(t *testing.T, password string) {
	t.Helper()
	nats := readCompose(t, "compose.cluster.yaml")["nats"]
	routes := nats.Environment[broker.RoutesVar]
	pwRef := "${" + broker.RoutePasswordVar + "}"
	if !strings.Contains(routes, pwRef) || !strings.HasPrefix(nats.Environment[broker.RoutePasswordVar], "${"+broker.RoutePasswordVar+":?") {
		t.Fatalf("compose.cluster.yaml: nats environment %s = %q, %s = %q; want route URLs with %s and the password required from .env",
			broker.RoutesVar, routes, broker.RoutePasswordVar, nats.Environment[broker.RoutePasswordVar], pwRef)
	}
	t.Setenv(broker.RoutePasswordVar, password)
	t.Setenv(broker.RoutesVar, strings.ReplaceAll(routes, pwRef, password))
}

// TestNATSClusterRouteAuth is the attack on the cluster port (docs/security.md): something on the back
// network connects to a node's route port 6222 and tries to join as a route. A node running
// nats-cluster.conf (nats-server's own parser and server, on free loopback ports) refuses a route
// CONNECT without credentials and one with a wrong password, and a second node with the file's
// credentials joins (so the refusal is the credentials, not a broken route). It was seen failing
// with the cluster block's authorization removed: the bare CONNECT was answered PONG.
func TestNATSClusterRouteAuth(t *testing.T) {
	setClusterRouteEnv(t, "0123456789abcdef0123456789abcdef")
	for _, r := range broker.Roles {
		t.Setenv(broker.NATSConfPasswordVar(r), "pw-"+string(r))
	}
	conf := filepath.Join(deployDir, "nats-cluster.conf")
	node := func(name string) *server.Server {
		opts, err := server.ProcessConfigFile(conf)
		if err != nil {
			t.Fatalf("ProcessConfigFile(%s) = %v", conf, err)
		}
		opts.ServerName = name
		opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
		opts.HTTPHost, opts.HTTPPort = "", 0
		opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", server.RANDOM_PORT
		opts.Routes = nil // the compose host names; the second node is pointed at the first below
		// JetStream off: route authorization does not depend on it, and a clustered JetStream
		// node refuses to start without routes.
		opts.JetStream = false
		opts.NoSigs, opts.NoLog = true, true
		return startNode(t, opts)
	}
	first := node("nats-1")
	routeAddr := first.ClusterAddr().String()

	for _, c := range []struct{ name, connect string }{
		{"no credentials", `{"verbose":false,"pedantic":false,"name":"intruder","cluster":"scimflow"}`},
		{"wrong password", `{"verbose":false,"pedantic":false,"user":"route","pass":"guess","name":"intruder","cluster":"scimflow"}`},
		{"a client user's password", `{"verbose":false,"pedantic":false,"user":"auth","pass":"pw-auth","name":"intruder","cluster":"scimflow"}`},
	} {
		if got := rawRouteConnect(t, routeAddr, c.connect); !strings.Contains(got, "-ERR 'Authorization Violation'") {
			t.Errorf("route CONNECT with %s to %s: the node answered %q, want -ERR 'Authorization Violation'", c.name, routeAddr, got)
		}
	}

	// The legitimate second node: the route URL with the credentials compose builds.
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := opts.Routes[0].User.Password()
	opts.Routes = server.RoutesFromStr("nats-route://" + opts.Routes[0].User.Username() + ":" + pw + "@" + routeAddr)
	opts.ServerName = "nats-2"
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.HTTPHost, opts.HTTPPort = "", 0
	opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", server.RANDOM_PORT
	opts.JetStream = false
	opts.NoSigs, opts.NoLog = true, true
	second := startNode(t, opts)
	deadline := time.Now().Add(30 * time.Second)
	for first.NumRoutes() == 0 || second.NumRoutes() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a node with the route credentials did not join: routes %d and %d", first.NumRoutes(), second.NumRoutes())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startNode starts a nats-server and shuts it down when the test ends.
func startNode(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("server.NewServer = %v", err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(20 * time.Second) {
		t.Fatalf("nats-server %s not ready", opts.ServerName)
	}
	return s
}

// rawRouteConnect speaks the route protocol as an intruder would: read the node's INFO, send a
// route CONNECT and a PING, and return what the node answers until it closes the connection or
// answers the PING (the authorization timeout bounds the wait).
func rawRouteConnect(t *testing.T, addr, connect string) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	if info, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(info, "INFO ") {
		t.Fatalf("route port %s: first line %q %v, want INFO", addr, info, err)
	}
	if _, err := fmt.Fprintf(conn, "CONNECT %s\r\nPING\r\n", connect); err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	for {
		line, err := r.ReadString('\n')
		got.WriteString(line)
		if err != nil || strings.HasPrefix(line, "PONG") || strings.HasPrefix(line, "-ERR") {
			return got.String()
		}
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
