package prometheus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/scimflow/scimflow/testkit/oidctest"
	"github.com/scimflow/scimflow/testkit/proctest"
)

// rateInterval replaces Grafana's $__rate_interval when the test evaluates a panel. The window spans
// the whole test, so every rate sees the traffic the test generated.
const rateInterval = "5m"

// noDataPanels lists dashboard panels that cannot show data for the traffic this test generates,
// with the reason. Every other panel must return at least one non-NaN sample.
var noDataPanels = map[string]string{}

// TestPrometheusIntegration starts `scimflow serve` and a real Prometheus scraping its three
// listeners with deploy/compose/prometheus/rules.yml loaded, drives SCIM and login traffic, and then
// evaluates every rule and every dashboard panel through Prometheus's HTTP API. It fails when an
// expression does not evaluate, refers to a metric name Prometheus has never scraped or recorded, or
// (for panels) returns no data although the traffic should have produced some.
func TestPrometheusIntegration(t *testing.T) {
	t.Parallel()
	promBin := lookPath(t, "prometheus")
	rules := loadRules(t)
	dash := loadDashboard(t)

	// The test OpenID provider and one user who logs in.
	op, err := oidctest.Start(oidctest.Options{ClientID: "prom-client", ClientSecret: "prom-client-secret"})
	if err != nil {
		t.Fatalf("oidctest.Start: %v", err)
	}
	t.Cleanup(func() { op.Close() })
	if err := op.AddUser(oidctest.User{Sub: "alice-sub", Email: "alice@example.com", Name: "Alice"}); err != nil {
		t.Fatal(err)
	}
	if err := op.SetDefaultUser("alice-sub"); err != nil {
		t.Fatal(err)
	}

	sf := startServe(t)
	prom := startPrometheus(t, promBin, sf)

	// Prometheus sees all three services up before any traffic, so every counter has a sample from
	// before the traffic and rate() and increase() cover it.
	prom.waitValue(t, `sum(up{job=~"scim-ingest|identity-store|auth"})`, func(v float64) bool { return v == 3 }, "all three services up")

	tr := newTraffic(t, sf, op)
	tr.round(t, "alice")
	prom.waitScrapedAfter(t, time.Now())
	tr.round(t, "bob")
	tr.stay(t, "carol")
	prom.waitScrapedAfter(t, time.Now())

	// The traffic's effects have reached the metrics and been scraped.
	for _, q := range []string{
		`sum(scimflow_auth_sessions_issued_total)`,
		`sum(scimflow_identity_store_inactive_transitions_total)`,
		`sum(scimflow_identity_store_revocations_total)`,
		`sum(scimflow_auth_revocation_latency_seconds_count)`,
		`sum(scimflow_identity_store_seats)`,
		`sum(scimflow_scim_ingest_outbox_published_total)`,
	} {
		prom.waitValue(t, q, func(v float64) bool { return v > 0 }, q)
	}
	prom.waitRulesEvaluated(t, time.Now())

	names := prom.metricNames(t)
	recorded := map[string]bool{}
	nRules := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			nRules++
			if r.Record != "" {
				recorded[r.Record] = true
			}
		}
	}
	if got := prom.loadedRules(t); got != nRules {
		t.Errorf("Prometheus loaded %d rules, rules.yml has %d", got, nRules)
	}
	checkNames := func(what, expr string) {
		for _, n := range metricNamesIn(expr) {
			if !names[n] && !recorded[n] {
				t.Errorf("%s refers to metric %q, which Prometheus never scraped (expr %s)", what, n, expr)
			}
		}
	}

	// Every rule: evaluates, and names only existing metrics. Alerts are expected not to fire here,
	// so their results are not checked for data.
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			what := "alert " + r.Alert
			if r.Record != "" {
				what = "recording rule " + r.Record
			}
			checkNames(what, r.Expr)
			if _, _, err := prom.query(r.Expr); err != nil {
				t.Errorf("%s: %v", what, err)
			}
		}
	}

	// A healthy system under this traffic raises no alert, not even a pending one. The IdP-refused
	// logins are deliberate, so ScimflowLoginsFailing is left out of this check.
	for _, a := range prom.alerts(t) {
		t.Logf("alert %s %s %v", a.Labels["alertname"], a.State, a.Labels)
		if a.Labels["alertname"] != "ScimflowLoginsFailing" {
			t.Errorf("alert %s is %s for a healthy system: %v", a.Labels["alertname"], a.State, a.Labels)
		}
	}

	// Every dashboard panel: evaluates, names only existing metrics, and shows data. Recording rules
	// and rates need a few evaluations after the traffic, so data is polled with a deadline.
	type target struct{ panel, expr string }
	var targets []target
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			expr := strings.ReplaceAll(tg.Expr, "$__rate_interval", rateInterval)
			targets = append(targets, target{p.Title, expr})
			checkNames(fmt.Sprintf("panel %q query %s", p.Title, tg.RefID), expr)
		}
	}
	panelData, panelNonZero := map[string]bool{}, map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		clear(panelData)
		clear(panelNonZero)
		for _, tg := range targets {
			has, nonZero, err := prom.query(tg.expr)
			if err != nil {
				t.Fatalf("panel %q: %v", tg.panel, err)
			}
			panelData[tg.panel] = panelData[tg.panel] || has
			panelNonZero[tg.panel] = panelNonZero[tg.panel] || nonZero
		}
		missing := 0
		for p, ok := range panelData {
			if _, excused := noDataPanels[p]; !ok && !excused {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond) // poll interval; the deadline bounds the wait
	}
	var titles []string
	for p := range panelData {
		titles = append(titles, p)
	}
	sort.Strings(titles)
	for _, p := range titles {
		reason, excused := noDataPanels[p]
		switch {
		case !panelData[p] && !excused:
			t.Errorf("panel %q shows no data for the generated traffic", p)
			for _, tg := range targets {
				if tg.panel == p {
					data, _ := prom.api("/api/v1/query", url.Values{"query": {tg.expr}})
					t.Logf("  %s = %s", tg.expr, tail(string(data), 600))
				}
			}
		case !panelData[p]:
			t.Logf("panel %q: no data, as expected (%s)", p, reason)
		case excused:
			t.Errorf("panel %q shows data but is listed in noDataPanels (%s): remove it there", p, reason)
		case !panelNonZero[p]:
			// Zero is data (a healthy system shows zero failures), but say which panels the traffic
			// leaves flat, so a reader knows what this test does not exercise.
			t.Logf("panel %q shows only zeros for this traffic", p)
		}
	}
	t.Logf("checked %d rules and %d panel queries in %d panels against %d scraped metric names", nRules, len(targets), len(titles), len(names))
}

// ---- scimflow serve ----------------------------------------------------------------------------

// serve is a running `scimflow serve` subprocess.
type serve struct {
	scim, admin, auth string // base URLs
	scimAddr          string
	adminAddr         string
	authAddr          string
	metricsAddr       map[string]string // service name → its metrics listener (/metrics is not on the service ports)
	token             string
	stderr            *proctest.SyncBuffer
}

func startServe(t *testing.T) *serve {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "scimflow")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/scimflow/scimflow/cmd/scimflow").CombinedOutput(); err != nil {
		t.Fatalf("go build scimflow: %v\n%s", err, out)
	}
	return retryPorts(t, "scimflow serve", func() (*serve, error) { return tryServe(t, bin) })
}

// retryPorts retries a start whose free loopback port another process took in the meantime.
func retryPorts[T any](t *testing.T, what string, start func() (T, error)) T {
	t.Helper()
	for attempt := 1; ; attempt++ {
		v, err := start()
		if err == nil {
			return v
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("start %s: %v", what, err)
		}
		t.Logf("start %s: a port was taken, retrying with others: %v", what, err)
	}
}

func tryServe(t *testing.T, bin string) (*serve, error) {
	t.Helper()
	s := &serve{scimAddr: freeAddr(t), adminAddr: freeAddr(t), authAddr: freeAddr(t), token: "prometheus-test-admin-token-0123456789", stderr: &proctest.SyncBuffer{}}
	s.scim, s.admin, s.auth = "http://"+s.scimAddr, "http://"+s.adminAddr, "http://"+s.authAddr
	s.metricsAddr = map[string]string{"scim-ingest": freeAddr(t), "identity-store": freeAddr(t), "auth": freeAddr(t)}
	cmd := exec.Command(bin, "serve", "-config", "/dev/null")
	cmd.Env = append(os.Environ(),
		"SCIMFLOW_DATA_DIR="+t.TempDir(),
		"SCIMFLOW_ADMIN_TOKEN="+s.token,
		"SCIMFLOW_LOG_FORMAT=text",
		"SCIMFLOW_SCIM_INGEST_LISTEN="+s.scimAddr,
		"SCIMFLOW_SCIM_INGEST_BASE_URL="+s.scim,
		"SCIMFLOW_IDENTITY_STORE_LISTEN="+s.adminAddr,
		"SCIMFLOW_AUTH_LISTEN="+s.authAddr,
		"SCIMFLOW_AUTH_EXTERNAL_URL="+s.auth,
		"SCIMFLOW_SCIM_INGEST_METRICS_LISTEN="+s.metricsAddr["scim-ingest"],
		"SCIMFLOW_IDENTITY_STORE_METRICS_LISTEN="+s.metricsAddr["identity-store"],
		"SCIMFLOW_AUTH_METRICS_LISTEN="+s.metricsAddr["auth"],
	)
	cmd.Stdout, cmd.Stderr = s.stderr, s.stderr
	done, err := startProcess(t, cmd)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("scimflow serve output (tail):\n%s", tail(s.stderr.String(), 6000))
		}
	})
	for _, base := range []string{s.scim, s.admin, s.auth} {
		err := poll(60*time.Second, func() error {
			select {
			case <-done:
				return errStop{fmt.Errorf("scimflow serve exited: %s", tail(s.stderr.String(), 4000))}
			default:
			}
			resp, err := http.Get(base + "/readyz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return errors.New(resp.Status)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("%s/readyz: %w", base, err)
		}
	}
	return s, nil
}

// startProcess starts cmd, kills it at the end of the test, and returns a channel closed when it exits.
func startProcess(t *testing.T, cmd *exec.Cmd) (<-chan struct{}, error) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	return done, nil
}

// traffic generates what the dashboard shows against one IdP created through the admin API.
type traffic struct {
	s       *serve
	op      *oidctest.Provider
	c       *http.Client
	idp     string
	scimURL string
	bearer  string
	eng     string // a group every round adds its user to
}

// newTraffic creates the IdP (deprovisioning on, so a deactivation revokes and locks) and waits
// until scim-ingest and auth know it.
func newTraffic(t *testing.T, s *serve, op *oidctest.Provider) *traffic {
	t.Helper()
	tr := &traffic{s: s, op: op, c: &http.Client{Timeout: 20 * time.Second}}
	body := map[string]any{
		"name": "Prometheus test OP", "type": "oidc",
		"config": map[string]any{"client_id": "prom-client", "client_secret": "prom-client-secret", "issuer": op.Issuer(), "pkce_enabled": true},
		"scim_config": map[string]any{"enabled": true, "user_deprovision": true, "seat_deprovision": true,
			"identity_update_behavior": "automatic"},
	}
	status, raw := doJSON(t, tr.c, http.MethodPost, s.admin+"/api/v1/identity_providers", "Bearer "+s.token, body)
	if status != http.StatusCreated && status != http.StatusOK {
		t.Fatalf("POST /api/v1/identity_providers = %d %s", status, raw)
	}
	// The admin API answers in Cloudflare's envelope: {"success", "errors", "messages", "result"}.
	var created struct {
		Result struct {
			ID         string `json:"id"`
			SCIMConfig struct {
				Secret      string `json:"secret"`
				SCIMBaseURL string `json:"scim_base_url"`
			} `json:"scim_config"`
		} `json:"result"`
	}
	err := json.Unmarshal(raw, &created)
	idp := created.Result
	if err != nil || idp.ID == "" || idp.SCIMConfig.Secret == "" {
		t.Fatalf("POST /api/v1/identity_providers: id %q, secret set %v, err %v: %s", idp.ID, idp.SCIMConfig.Secret != "", err, raw)
	}
	tr.idp, tr.scimURL, tr.bearer = idp.ID, idp.SCIMConfig.SCIMBaseURL, "Bearer "+idp.SCIMConfig.Secret
	if want := s.scim + "/populations/" + idp.ID + "/scim/v2"; tr.scimURL != want {
		t.Fatalf("scim_base_url = %q, want %q", tr.scimURL, want)
	}
	waitFor(t, "scim-ingest accepts the new IdP's secret", 30*time.Second, func() error {
		st, b := doJSON(t, tr.c, http.MethodGet, tr.scimURL+"/Users", tr.bearer, nil)
		if st != http.StatusOK {
			return fmt.Errorf("GET /Users = %d %s", st, b)
		}
		return nil
	})
	b := newBrowser()
	waitFor(t, "auth knows the new IdP", 30*time.Second, func() error {
		resp, _ := b.get(t, s.auth+"/login?idp_id="+url.QueryEscape(tr.idp))
		if resp.StatusCode != http.StatusFound {
			return errors.New(resp.Status)
		}
		return nil
	})
	tr.eng = tr.scim(t, http.MethodPost, "/Groups", map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:Group"},
		"displayName": "eng"}, http.StatusCreated)["id"].(string)
	return tr
}

func (tr *traffic) scim(t *testing.T, method, path string, body any, want int) map[string]any {
	t.Helper()
	st, b := doJSON(t, tr.c, method, tr.scimURL+path, tr.bearer, body)
	if st != want {
		t.Fatalf("SCIM %s %s = %d %s, want %d", method, path, st, b, want)
	}
	var out map[string]any
	json.Unmarshal(b, &out)
	return out
}

func scimUser(email, given string) map[string]any {
	return map[string]any{
		"schemas":  []string{"urn:ietf:params:scim:schemas:core:2.0:User"},
		"userName": email, "active": true,
		"name":   map[string]any{"givenName": given, "familyName": "Example"},
		"emails": []map[string]any{{"value": email, "type": "work", "primary": true}},
	}
}

func scimPatch(ops ...map[string]any) map[string]any {
	return map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"}, "Operations": ops}
}

// stay provisions a user who logs in and stays active, so a seat remains held.
func (tr *traffic) stay(t *testing.T, name string) {
	t.Helper()
	email := name + "@example.com"
	if err := tr.op.AddUser(oidctest.User{Sub: name + "-sub", Email: email, Name: name}); err != nil {
		t.Fatal(err)
	}
	if err := tr.op.SetDefaultUser(name + "-sub"); err != nil {
		t.Fatal(err)
	}
	tr.scim(t, http.MethodPost, "/Users", scimUser(email, name), http.StatusCreated)
	if st := newBrowser().login(t, tr.s.auth, tr.idp); st != http.StatusFound {
		t.Fatalf("login of %s = %d, want 302", name, st)
	}
}

// round runs one round of traffic for the named user: SCIM creates, reads, patches and deletes of
// users and groups (and a conflict and a wrong secret), the user's login and /verify, then the
// user's deactivation (an inactive transition, a revocation, a lock), the revoked session refused
// and a refused login. A counter series appears with its first increment, and rate() counts only
// increments after a series' first sample, so the test runs two rounds with a scrape between them.
func (tr *traffic) round(t *testing.T, name string) {
	t.Helper()
	email := name + "@example.com"
	if err := tr.op.AddUser(oidctest.User{Sub: name + "-sub", Email: email, Name: name}); err != nil {
		t.Fatal(err)
	}
	if err := tr.op.SetDefaultUser(name + "-sub"); err != nil {
		t.Fatal(err)
	}
	doJSON(t, tr.c, http.MethodGet, tr.scimURL+"/Users", "Bearer wrong", nil) // 401, idp "unknown"
	uid := tr.scim(t, http.MethodPost, "/Users", scimUser(email, name), http.StatusCreated)["id"].(string)
	tr.scim(t, http.MethodPost, "/Users", scimUser(email, name), http.StatusConflict)
	tmpUser := tr.scim(t, http.MethodPost, "/Users", scimUser("tmp-"+email, "Tmp"), http.StatusCreated)["id"].(string)
	tmpGroup := tr.scim(t, http.MethodPost, "/Groups", map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:Group"},
		"displayName": "tmp-" + name}, http.StatusCreated)["id"].(string)
	tr.scim(t, http.MethodPatch, "/Groups/"+tr.eng, scimPatch(map[string]any{"op": "add", "path": "members", "value": []map[string]any{{"value": uid}}}), http.StatusNoContent)
	tr.scim(t, http.MethodPatch, "/Users/"+uid, scimPatch(map[string]any{"op": "replace", "path": "name.familyName", "value": "Renamed"}), http.StatusOK)
	tr.scim(t, http.MethodGet, "/Users?filter="+url.QueryEscape(`userName eq "`+email+`"`), nil, http.StatusOK)
	tr.scim(t, http.MethodGet, "/Groups/"+tr.eng, nil, http.StatusOK)
	tr.scim(t, http.MethodDelete, "/Groups/"+tmpGroup, nil, http.StatusNoContent)
	tr.scim(t, http.MethodDelete, "/Users/"+tmpUser, nil, http.StatusNoContent)

	b := newBrowser()
	if st := b.login(t, tr.s.auth, tr.idp); st != http.StatusFound {
		t.Fatalf("login of %s = %d, want 302", name, st)
	}
	if resp, body := b.get(t, tr.s.auth+"/verify"); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /verify with %s's session = %d %s, want 200", name, resp.StatusCode, body)
	}
	newBrowser().get(t, tr.s.auth+"/verify") // no session

	// A user the IdP refuses: a login failure the IdP side causes (reason idp_error).
	denied := name + "-denied-sub"
	if err := tr.op.AddUser(oidctest.User{Sub: denied, Email: "denied-" + email}); err != nil {
		t.Fatal(err)
	}
	if err := tr.op.DenyUser(denied); err != nil {
		t.Fatal(err)
	}
	if err := tr.op.SetDefaultUser(denied); err != nil {
		t.Fatal(err)
	}
	if st := newBrowser().login(t, tr.s.auth, tr.idp); st == http.StatusFound {
		t.Errorf("login refused by the IdP = 302, want it refused")
	}
	if err := tr.op.SetDefaultUser(name + "-sub"); err != nil {
		t.Fatal(err)
	}

	tr.scim(t, http.MethodPatch, "/Users/"+uid, scimPatch(map[string]any{"op": "replace", "path": "active", "value": false}), http.StatusOK)
	waitFor(t, "auth refuses "+name+"'s revoked session", 30*time.Second, func() error {
		resp, _ := b.get(t, tr.s.auth+"/verify")
		if resp.StatusCode == http.StatusOK {
			return errors.New("still 200")
		}
		return nil
	})
	if st := b.login(t, tr.s.auth, tr.idp); st == http.StatusFound {
		t.Errorf("login of deactivated %s = 302, want it refused", name)
	}
}

// ---- Prometheus ---------------------------------------------------------------------------------

// promServer is a running Prometheus.
type promServer struct {
	url    string
	c      *http.Client
	stderr *proctest.SyncBuffer
}

func startPrometheus(t *testing.T, bin string, s *serve) *promServer {
	t.Helper()
	return retryPorts(t, "prometheus", func() (*promServer, error) { return tryPrometheus(t, bin, s) })
}

func tryPrometheus(t *testing.T, bin string, s *serve) (*promServer, error) {
	t.Helper()
	dir := t.TempDir()
	rulesPath, err := filepath.Abs(filepath.Join(deployDir, "prometheus", "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	// deploy/compose/prometheus/prometheus.yml itself, with the test's addresses, a 1s interval and
	// the absolute path of rules.yml: the jobs (and so the job labels the rules match) are the
	// deployment's.
	addr := freeAddr(t)
	raw, err := os.ReadFile(filepath.Join(deployDir, "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("yaml.Unmarshal(prometheus.yml) = %v", err)
	}
	cfg["global"] = map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s"}
	cfg["rule_files"] = []string{rulesPath}
	targets := map[string]string{"scim-ingest": s.metricsAddr["scim-ingest"], "identity-store": s.metricsAddr["identity-store"],
		"auth": s.metricsAddr["auth"], "prometheus": addr}
	jobs, _ := cfg["scrape_configs"].([]any)
	var seen []string
	for _, j := range jobs {
		job, _ := j.(map[string]any)
		name, _ := job["job_name"].(string)
		target, ok := targets[name]
		if !ok {
			t.Fatalf("prometheus.yml: job %q is not one the test knows how to point at scimflow serve", name)
		}
		job["static_configs"] = []any{map[string]any{"targets": []string{target}}}
		seen = append(seen, name)
	}
	if len(seen) != len(targets) {
		t.Fatalf("prometheus.yml jobs = %q, want %d jobs: scim-ingest, identity-store, auth, prometheus", seen, len(targets))
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, out, 0o600); err != nil {
		t.Fatal(err)
	}
	p := &promServer{url: "http://" + addr, c: &http.Client{Timeout: 10 * time.Second}, stderr: &proctest.SyncBuffer{}}
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = p.stderr, p.stderr
	done, err := startProcess(t, cmd)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("prometheus stderr (tail):\n%s", tail(p.stderr.String(), 4000))
		}
	})
	err = poll(60*time.Second, func() error {
		select {
		case <-done:
			return errStop{fmt.Errorf("prometheus exited: %s", tail(p.stderr.String(), 4000))}
		default:
		}
		resp, err := p.c.Get(p.url + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("/-/ready: %w", err)
	}
	return p, nil
}

// apiResponse is the envelope of Prometheus's HTTP API.
type apiResponse struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Data      json.RawMessage `json:"data"`
}

func (p *promServer) api(path string, q url.Values) (json.RawMessage, error) {
	u := p.url + path
	if q != nil {
		u += "?" + q.Encode()
	}
	resp, err := p.c.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r apiResponse
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("GET %s: %d, decode: %w", path, resp.StatusCode, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("GET %s: %s: %s", path, r.ErrorType, r.Error)
	}
	return r.Data, nil
}

// query evaluates expr now and reports whether it returned at least one sample that is a number,
// and whether one of those is not zero.
func (p *promServer) query(expr string) (data, nonZero bool, err error) {
	raw, err := p.api("/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return false, false, fmt.Errorf("query %s: %w", expr, err)
	}
	var d struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return false, false, err
	}
	var values []string
	switch d.ResultType {
	case "vector":
		var v []struct {
			Value [2]any `json:"value"`
		}
		if err := json.Unmarshal(d.Result, &v); err != nil {
			return false, false, err
		}
		for _, s := range v {
			values = append(values, fmt.Sprint(s.Value[1]))
		}
	case "scalar":
		var s [2]any
		if err := json.Unmarshal(d.Result, &s); err != nil {
			return false, false, err
		}
		values = append(values, fmt.Sprint(s[1]))
	default:
		return false, false, fmt.Errorf("query %s: result type %s, want vector or scalar", expr, d.ResultType)
	}
	for _, v := range values {
		if f, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(f) {
			data = true
			nonZero = nonZero || f != 0
		}
	}
	return data, nonZero, nil
}

// waitValue polls a single-valued query until ok accepts its value.
func (p *promServer) waitValue(t *testing.T, expr string, ok func(float64) bool, what string) {
	t.Helper()
	waitFor(t, what, 60*time.Second, func() error {
		data, err := p.api("/api/v1/query", url.Values{"query": {expr}})
		if err != nil {
			return errStop{err}
		}
		var d struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		}
		if err := json.Unmarshal(data, &d); err != nil {
			return errStop{err}
		}
		if len(d.Result) != 1 {
			return fmt.Errorf("%d samples", len(d.Result))
		}
		f, err := strconv.ParseFloat(fmt.Sprint(d.Result[0].Value[1]), 64)
		if err != nil || !ok(f) {
			return fmt.Errorf("value %v", d.Result[0].Value[1])
		}
		return nil
	})
}

// waitScrapedAfter waits until Prometheus has scraped every scimflow target after since.
func (p *promServer) waitScrapedAfter(t *testing.T, since time.Time) {
	t.Helper()
	at := float64(since.UnixNano()) / 1e9
	p.waitValue(t, `min(timestamp(up{job=~"scim-ingest|identity-store|auth"}))`, func(v float64) bool { return v > at },
		"a scrape of every target after "+since.Format(time.RFC3339Nano))
}

// rulesAPI is the part of /api/v1/rules the test reads.
type rulesAPI struct {
	Groups []struct {
		Name           string    `json:"name"`
		LastEvaluation time.Time `json:"lastEvaluation"`
		Rules          []struct {
			Name      string `json:"name"`
			Health    string `json:"health"`
			LastError string `json:"lastError"`
		} `json:"rules"`
	} `json:"groups"`
}

func (p *promServer) rules(t *testing.T) rulesAPI {
	t.Helper()
	data, err := p.api("/api/v1/rules", nil)
	if err != nil {
		t.Fatal(err)
	}
	var r rulesAPI
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// waitRulesEvaluated waits until every rule group was evaluated after since, then fails on any rule
// Prometheus itself reports unhealthy.
func (p *promServer) waitRulesEvaluated(t *testing.T, since time.Time) {
	t.Helper()
	waitFor(t, "rule groups evaluated after the traffic", 30*time.Second, func() error {
		r := p.rules(t)
		if len(r.Groups) == 0 {
			return errors.New("no rule groups loaded")
		}
		for _, g := range r.Groups {
			if !g.LastEvaluation.After(since) {
				return fmt.Errorf("group %s last evaluated %v", g.Name, g.LastEvaluation)
			}
		}
		return nil
	})
	for _, g := range p.rules(t).Groups {
		for _, r := range g.Rules {
			if r.Health != "ok" {
				t.Errorf("Prometheus reports rule %s (group %s) %s: %s", r.Name, g.Name, r.Health, r.LastError)
			}
		}
	}
}

func (p *promServer) loadedRules(t *testing.T) int {
	t.Helper()
	n := 0
	for _, g := range p.rules(t).Groups {
		n += len(g.Rules)
	}
	return n
}

// alert is one entry of /api/v1/alerts.
type alert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

// alerts returns the pending and firing alerts.
func (p *promServer) alerts(t *testing.T) []alert {
	t.Helper()
	data, err := p.api("/api/v1/alerts", nil)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Alerts []alert `json:"alerts"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	return d.Alerts
}

// metricNames returns every metric name Prometheus holds: scraped or recorded.
func (p *promServer) metricNames(t *testing.T) map[string]bool {
	t.Helper()
	data, err := p.api("/api/v1/label/__name__/values", nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := json.Unmarshal(data, &names); err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

// ---- PromQL metric names ------------------------------------------------------------------------

var (
	reString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	reMatchers = regexp.MustCompile(`\{[^}]*\}`)
	reRange    = regexp.MustCompile(`\[[^\]]*\]`)
	reGrouping = regexp.MustCompile(`(?i)\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	reToken    = regexp.MustCompile(`[0-9][0-9.eE+\-]*[a-zA-Z]*|[A-Za-z_:][A-Za-z0-9_:]*`)
	keywords   = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
		"group_left", "group_right", "inf", "nan", "atan2", "start", "end"}
)

// metricNamesIn returns the metric names a PromQL expression selects. It is a tokenizer, not a
// parser: it drops strings, label matchers, ranges and grouping clauses, then keeps identifiers that
// are not keywords and not followed by "(" (functions and aggregations). That is exact for the
// expressions in rules.yml and the dashboard, which select metrics by name only.
func metricNamesIn(expr string) []string {
	s := reString.ReplaceAllString(expr, `""`)
	s = reMatchers.ReplaceAllString(s, " ")
	s = reRange.ReplaceAllString(s, " ")
	s = reGrouping.ReplaceAllString(s, " ")
	var out []string
	for _, loc := range reToken.FindAllStringIndex(s, -1) {
		tok := s[loc[0]:loc[1]]
		if tok[0] >= '0' && tok[0] <= '9' || slices.Contains(keywords, strings.ToLower(tok)) {
			continue
		}
		if rest := strings.TrimLeft(s[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue
		}
		if !slices.Contains(out, tok) {
			out = append(out, tok)
		}
	}
	return out
}

// TestMetricNamesIn pins the tokenizer the integration test relies on.
func TestMetricNamesIn(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`up{job=~"a|b"} == 0`, []string{"up"}},
		{`sum by (idp, status) (rate(x_total{status=~"5.."}[5m])) / on (idp) group_left y`, []string{"x_total", "y"}},
		{`histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m]))) > 1e-3`, []string{"h_bucket"}},
		{`a:b:rate5m > 0.05 and deriv(c[10m]) > 0 or d offset 5m`, []string{"a:b:rate5m", "c", "d"}},
		{"sum(rate(x[1m])) by (instance)", []string{"x"}},
	} {
		if got := metricNamesIn(c.expr); !slices.Equal(got, c.want) {
			t.Errorf("metricNamesIn(%q) = %q, want %q", c.expr, got, c.want)
		}
	}
}

// ---- helpers ------------------------------------------------------------------------------------

// errStop ends a waitFor at once: the condition can no longer become true.
type errStop struct{ error }

// waitFor polls cond until it returns nil, failing the test at the deadline with cond's last error.
func waitFor(t *testing.T, what string, d time.Duration, cond func() error) {
	t.Helper()
	if err := poll(d, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// poll calls cond until it returns nil (then nil), an errStop (then its error), or the deadline
// passes (then cond's last error).
func poll(d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		var stop errStop
		if errors.As(err, &stop) {
			return stop.error
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %s: %w", d, err)
		}
		time.Sleep(100 * time.Millisecond) // poll interval; the deadline bounds the wait
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func doJSON(t *testing.T, c *http.Client, method, u, auth string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/scim+json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// browser follows no redirects by itself and keeps cookies, like the auth tests' browser.
type browser struct{ c *http.Client }

func newBrowser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{c: &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) get(t *testing.T, u string) (*http.Response, string) {
	t.Helper()
	resp, err := b.c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// login runs /login, the provider's /authorize and auth's /callback, and returns the callback's status.
func (b *browser) login(t *testing.T, authURL, idp string) int {
	t.Helper()
	resp, body := b.get(t, authURL+"/login?idp_id="+url.QueryEscape(idp))
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("GET /login = %d %s, want 302", resp.StatusCode, body)
	}
	resp, body = b.get(t, resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("GET authorize = %d %s, want 302", resp.StatusCode, body)
	}
	resp, _ = b.get(t, resp.Header.Get("Location"))
	return resp.StatusCode
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
