package auth

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
	"github.com/scimflow/scimflow/internal/config"
	"github.com/scimflow/scimflow/internal/platform"
	"github.com/scimflow/scimflow/testkit/oidctest"
)

// testClock is a wall clock a test can move forward; the provider and auth share it. Once frozen
// (Freeze) it stands still except for Advance, so a boundary can be tested to the nanosecond however
// slowly the machine runs.
type testClock struct {
	off    atomic.Int64
	frozen atomic.Int64 // UnixNano of the frozen instant; 0 while the clock follows real time
}

func (c *testClock) Now() time.Time {
	if f := c.frozen.Load(); f != 0 {
		return time.Unix(0, f+c.off.Load())
	}
	return time.Now().Add(time.Duration(c.off.Load()))
}
func (c *testClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// Freeze stops the clock at t (Advance still moves it).
func (c *testClock) Freeze(t time.Time) { c.off.Store(0); c.frozen.Store(t.UnixNano()) }

// waitFor polls cond until it returns nil or the deadline passes (no sleeps in assertions).
func waitFor(t testing.TB, what string, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not an assertion
	}
	t.Fatalf("%s: not true after %s: %v", what, d, err)
}

// natsEnv is an embedded JetStream with the streams set up.
type natsEnv struct {
	emb *broker.Embedded
	nc  *nats.Conn
	js  jetstream.JetStream
}

func newNATS(t testing.TB) *natsEnv {
	t.Helper()
	emb, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(emb.Shutdown)
	nc, err := emb.Connect("auth-test")
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := broker.EnsureStreams(ctx, js, broker.StreamsConfig{}); err != nil {
		t.Fatalf("EnsureStreams: %v", err)
	}
	return &natsEnv{emb: emb, nc: nc, js: js}
}

// putIdP writes idp into the idp_config bucket, as identity-store's admin API does.
func (n *natsEnv) putIdP(t testing.TB, idp events.IdP) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := n.js.KeyValue(ctx, broker.KVIdPConfig)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(idp)
	if _, err := kv.Put(ctx, idp.ID, b); err != nil {
		t.Fatalf("put idp %s: %v", idp.ID, err)
	}
}

// publish puts e on its stream the way identity-store's relay does.
func (n *natsEnv) publish(t testing.TB, e events.Event) {
	t.Helper()
	b, err := events.Marshal(e)
	if err != nil {
		t.Fatalf("Marshal(%s): %v", e.Type, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.js.Publish(ctx, e.Subject, b, jetstream.WithMsgID(e.ID)); err != nil {
		t.Fatalf("publish %s: %v", e.Subject, err)
	}
}

// streamEvents returns every event on stream so far.
func (n *natsEnv) streamEvents(t testing.TB, stream string) []events.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := n.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []events.Event
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		evs, err := events.DecodeMessage(m.Subject, m.Data)
		if err != nil {
			t.Fatalf("decode seq %d: %v", seq, err)
		}
		out = append(out, evs...)
	}
	return out
}

// op is a test OpenID provider registered with auth as one IdP.
type op struct {
	*oidctest.Provider
	idp events.IdP
}

const (
	alice      = "alice-sub"
	aliceEmail = "alice@example.com"
)

func newOP(t testing.TB, clock *testClock, id string, mutate func(*events.IdP)) *op {
	t.Helper()
	p, err := oidctest.Start(oidctest.Options{ClientID: "client-" + id, ClientSecret: "secret-" + id, Now: clock.Now})
	if err != nil {
		t.Fatalf("oidctest.Start: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	if err := p.AddUser(oidctest.User{Sub: alice, Email: aliceEmail, Name: "Alice", Groups: []string{"eng", "ops"},
		Claims: map[string]any{"department": "R&D", "roles": []string{"admin", "dev"}}}); err != nil {
		t.Fatal(err)
	}
	idp := events.IdP{ID: id, Name: "IdP " + id, Type: "oidc", Config: events.OIDCConfig{
		ClientID: "client-" + id, ClientSecret: "secret-" + id, Issuer: p.Issuer(), PKCEEnabled: true,
		Claims: []string{"department", "roles"}, Scopes: []string{"openid", "email", "profile", "groups"},
	}}
	if mutate != nil {
		mutate(&idp)
	}
	return &op{Provider: p, idp: idp}
}

// replica is one running auth replica.
type replica struct {
	srv        *server
	url        string
	metricsURL string // the metrics listener: /metrics is not on the auth port
	reg        *prometheus.Registry
	stop       func()
}

type harnessOpts struct {
	cfg    func(*Config)
	idpMut func(*events.IdP)
}

// harness is embedded NATS, one test OP registered as IdP "idp-a", and one auth replica.
type harness struct {
	t     testing.TB
	n     *natsEnv
	clock *testClock
	op    *op
	r     *replica
}

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, n: newNATS(t), clock: &testClock{}}
	h.op = newOP(t, h.clock, "idp-a", o.idpMut)
	h.n.putIdP(t, h.op.idp)
	h.r = h.startReplica("r1", o.cfg)
	return h
}

func (h *harness) startReplica(id string, mut func(*Config)) *replica {
	return h.startReplicaWait(id, mut, true)
}

// startReplicaWait starts a replica and, when ready is set, waits until /readyz says it caught up.
func (h *harness) startReplicaWait(id string, mut func(*Config), ready bool) *replica {
	t := h.t
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	cfg := DefaultConfig()
	cfg.ExternalURL = base
	cfg.DataDir = t.TempDir()
	cfg.ReplicaID = id
	cfg.AllowedRedirectOrigins = []string{"https://app.example.com"}
	cfg.RevocationMaxStaleness = config.Duration(10 * time.Second)
	cfg.KeyEncryptionKey = testKEK // every replica of the harness shares the bucket, so the KEK
	cfg.noSCIMBarrier = true       // no scim-ingest or identity-store here; e2e tests the barrier
	if mut != nil {
		mut(&cfg)
	}
	if cfg.ExternalURL != base {
		// A test of https cookies still talks plain HTTP to the listener.
		base = "http://" + ln.Addr().String()
	}
	reg := prometheus.NewRegistry()
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := platform.Deps{NC: h.n.nc, JS: h.n.js, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registry: reg, Gatherer: reg, Listener: ln, MetricsListener: mln, Now: h.clock.Now}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan *server, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, d, func(s *server) { started <- s }) }()
	var s *server
	select {
	case s = <-started:
	case err := <-done:
		t.Fatalf("auth run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("auth did not start")
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Errorf("auth did not stop")
		}
	}
	t.Cleanup(stop)
	r := &replica{srv: s, url: base, metricsURL: "http://" + mln.Addr().String(), reg: reg, stop: stop}
	if !ready {
		return r
	}
	waitFor(t, "auth ready", 30*time.Second, func() error {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return errors.New(string(b))
		}
		return nil
	})
	return r
}

// secondReplica starts another replica behind the same external URL (as behind a load balancer).
func (h *harness) secondReplica() *replica {
	ext := h.r.srv.cfg.ExternalURL
	return h.startReplica("r2", func(c *Config) { c.ExternalURL = ext })
}

// browser is a cookie-keeping HTTP client that does not follow redirects.
type browser struct {
	c   *http.Client
	jar *cookiejar.Jar
}

func newBrowser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{jar: jar, c: &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) do(t testing.TB, method, u string, hdr http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

func (b *browser) get(t testing.TB, u string) (*http.Response, string) {
	t.Helper()
	return b.do(t, http.MethodGet, u, nil)
}

// cookie returns the value of the named cookie the browser would send to u.
func (b *browser) cookie(u, name string) string {
	pu, _ := url.Parse(u)
	for _, c := range b.jar.Cookies(pu) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// authorize runs /login and the provider's /authorize and returns the callback URL the provider
// sent the browser to (not yet visited).
func (h *harness) authorize(b *browser, r *replica, idp, redirect string) string {
	t := h.t
	t.Helper()
	q := url.Values{"idp_id": {idp}}
	if redirect != "" {
		q.Set("redirect_url", redirect)
	}
	resp, body := b.get(t, r.url+"/login?"+q.Encode())
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("GET /login = %d %s, want 302", resp.StatusCode, body)
	}
	resp, body = b.get(t, resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("GET authorize = %d %s, want 302", resp.StatusCode, body)
	}
	return resp.Header.Get("Location")
}

// login runs a whole login and returns the callback's response.
func (h *harness) login(b *browser, r *replica, idp, redirect string) (*http.Response, string) {
	h.t.Helper()
	cb := h.authorize(b, r, idp, redirect)
	return b.get(h.t, cb)
}

// mustLogin logs in and returns the session cookie value.
func (h *harness) mustLogin(b *browser, r *replica, idp string) string {
	h.t.Helper()
	resp, body := h.login(b, r, idp, "")
	if resp.StatusCode != http.StatusFound {
		h.t.Fatalf("login via %s = %d %s, want 302", idp, resp.StatusCode, body)
	}
	tok := b.cookie(r.url, r.srv.sessionName)
	if tok == "" {
		h.t.Fatalf("login via %s: no session cookie", idp)
	}
	return tok
}

// verify calls /verify with the session token as cookie (empty: none) and extra headers.
func verify(t testing.TB, r *replica, tok string, hdr map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.url+"/verify", nil)
	if tok != "" {
		req.AddCookie(&http.Cookie{Name: r.srv.sessionName, Value: tok})
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET /verify: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// waitVerify polls /verify until it answers want.
func waitVerify(t testing.TB, r *replica, tok string, want int) *http.Response {
	t.Helper()
	var last *http.Response
	waitFor(t, "verify status", 20*time.Second, func() error {
		last = verify(t, r, tok, nil)
		if last.StatusCode != want {
			return errors.New(last.Status)
		}
		return nil
	})
	return last
}

// metricValue sums the samples of a counter, gauge or histogram count named name with labels.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.Metric {
			for k, v := range labels {
				found := false
				for _, l := range m.Label {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			sum += sampleValue(m)
		}
	}
	return sum
}

func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func identityEvent(idp string, at time.Time, ident events.Identity) events.Event {
	return events.New(idp, at, "corr", "", events.IdentityChanged{Identity: ident, Changed: []string{"groups"}})
}
