package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/scimflow/scimflow/app"
)

const healthcheckUsage = `Usage: scimflow healthcheck [flags] <service>...

Asks each named service (scim-ingest, identity-store, auth; serve means all three) for /readyz on
its own listener, read from the same config and SCIMFLOW_* environment as the service, and exits 0
only if every one answers 200. It is the container healthcheck of deploy/compose/compose.yaml: the
distroless image has no shell and no curl.

Flags:
`

// runHealthcheck is `scimflow healthcheck`. A listen address without a host (":8082") or with an
// unspecified one ("0.0.0.0:8082") is asked on loopback, which is where the check runs: inside the
// service's container.
func runHealthcheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", defaultConfig, "config file (YAML); the default is used only if it exists")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for each answer")
	fs.Usage = func() {
		fmt.Fprint(stderr, healthcheckUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "scimflow healthcheck: name the service to check (scim-ingest, identity-store, auth or serve)")
		return 2
	}
	f, _, err := loadConfig(fs, *configPath)
	if err != nil {
		fmt.Fprintf(stderr, "scimflow: invalid config:\n%v\n", err)
		return 2
	}
	listen := map[string]string{
		"scim-ingest":    f.SCIMIngest.Listen,
		"identity-store": f.IdentityStore.Listen,
		"auth":           f.Auth.Listen,
	}
	var services []string
	for _, name := range fs.Args() {
		switch {
		case name == "serve":
			services = append(services, app.AllServices...)
		case listen[name] != "":
			services = append(services, name)
		default:
			fmt.Fprintf(stderr, "scimflow healthcheck: unknown service %q (want scim-ingest, identity-store, auth or serve)\n", name)
			return 2
		}
	}
	client := &http.Client{Timeout: *timeout}
	failed := false
	for _, name := range services {
		u := "http://" + loopback(listen[name]) + "/readyz"
		if err := ready(client, u); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			failed = true
			continue
		}
		fmt.Fprintf(stdout, "%s: ready\n", name)
	}
	if failed {
		return 1
	}
	return 0
}

// loopback turns a listen address into one to dial from the same host.
func loopback(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func ready(c *http.Client, u string) error {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s = %d %s", u, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}
