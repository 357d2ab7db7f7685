package scimingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
	"github.com/scimflow/scimflow/internal/config"
	"github.com/scimflow/scimflow/internal/platform"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// harness runs scim-ingest over HTTP against a real embedded JetStream and a real bbolt file.
type harness struct {
	t       testing.TB
	emb     *broker.Embedded
	natsDir string
	natsURL string
	nc      *nats.Conn
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	url     string
	cfg     Config
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
	secrets map[string]string

	evMu    sync.Mutex // guards the following
	evCache []events.Event
	nextSeq uint64
}

type harnessOpt func(*Config)

// newHarness starts NATS (listening on a TCP port, so the service's connection survives a NATS
// restart), creates IdP "idp1" with secret "s3cret-idp1" and starts the service.
func newHarness(t testing.TB, opts ...harnessOpt) *harness {
	t.Helper()
	h := &harness{t: t, natsDir: t.TempDir(), secrets: map[string]string{}}
	h.startNATS("127.0.0.1:-1")
	nc, err := broker.Connect(h.natsURL, "scim-ingest-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	h.nc = nc
	t.Cleanup(nc.Close)
	h.js, err = jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := broker.EnsureStreams(ctx, h.js, broker.StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	h.kv, err = h.js.KeyValue(ctx, broker.KVIdPConfig)
	if err != nil {
		t.Fatal(err)
	}
	h.putIdP("idp1", true, "s3cret-idp1", "")
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.BaseURL = "https://scim.example.test/"
	// Admission by lag would refuse bulk writes whenever this loaded machine lets the outbox age a
	// second; the tests that exercise admission control set their own bounds.
	cfg.AdmissionMaxLag = config.Duration(time.Minute)
	for _, o := range opts {
		o(&cfg)
	}
	h.cfg = cfg
	h.startService()
	return h
}

func (h *harness) startNATS(listen string) {
	h.t.Helper()
	emb, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: h.natsDir, Listen: listen}, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	h.emb = emb
	h.natsURL = emb.Server.ClientURL()
	h.t.Cleanup(emb.Shutdown)
}

func (h *harness) startService() {
	h.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	h.url = "http://" + ln.Addr().String()
	h.reg = prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	d := platform.Deps{NC: h.nc, JS: h.js, Logger: slog.New(slog.DiscardHandler), Registry: h.reg, Gatherer: h.reg, Listener: ln}
	go func() { h.done <- Run(ctx, h.cfg, d) }()
	h.t.Cleanup(h.stopService)
	eventually(h.t, "service ready", func() bool {
		resp, err := http.Get(h.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func (h *harness) stopService() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	if err := <-h.done; err != nil {
		h.t.Errorf("Run() = %v", err)
	}
}

func (h *harness) putIdP(id string, enabled bool, secret, previous string) {
	h.t.Helper()
	sum := func(s string) string {
		if s == "" {
			return ""
		}
		b := sha256.Sum256([]byte(s))
		return hex.EncodeToString(b[:])
	}
	h.secrets[id] = secret
	idp := events.IdP{ID: id, Name: id, Type: "oidc", SCIMConfig: events.SCIMConfig{
		Enabled: enabled, UserDeprovision: true, IdentityUpdateBehavior: events.UpdateAutomatic,
		SecretSHA256: sum(secret), PreviousSecretSHA256: sum(previous), SecretRotatedAt: time.Now(),
	}}
	b, _ := json.Marshal(idp)
	if _, err := h.kv.Put(context.Background(), id, b); err != nil {
		h.t.Fatal(err)
	}
}

// resp is a decoded HTTP response.
type resp struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
	reqID  string
}

// do sends a request to idp1 with its secret and records the request id scimflow assigned.
func (h *harness) do(method, path string, body any) resp {
	return h.doAs("idp1", h.secrets["idp1"], method, path, body, nil)
}

func (h *harness) doAs(idp, secret, method, path string, body any, hdr map[string]string) resp {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, h.url+"/populations/"+idp+"/scim/v2"+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/scim+json; charset=utf-8")
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	// scimflow mints the request id (the events' correlation id); it never takes the client's.
	out := resp{status: res.StatusCode, header: res.Header, raw: raw, reqID: res.Header.Get("X-Request-Id")}
	if len(raw) > 0 {
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if err := d.Decode(&out.body); err != nil {
			h.t.Fatalf("%s %s: response is not JSON: %q", method, path, raw)
		}
	}
	return out
}

// allEvents reads the whole SCIM stream; messages already read are cached.
func (h *harness) allEvents() []events.Event {
	h.t.Helper()
	h.evMu.Lock()
	defer h.evMu.Unlock()
	ctx := context.Background()
	st, err := h.js.Stream(ctx, events.StreamSCIM)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	if h.nextSeq == 0 {
		h.nextSeq = 1
	}
	for ; h.nextSeq <= info.State.LastSeq; h.nextSeq++ {
		m, err := st.GetMsg(ctx, h.nextSeq)
		if err != nil {
			h.t.Fatalf("GetMsg(%d) = %v", h.nextSeq, err)
		}
		evs, err := events.DecodeMessage(m.Subject, m.Data)
		if err != nil {
			h.t.Fatalf("Decode(%s) = %v", m.Subject, err)
		}
		h.evCache = append(h.evCache, evs...)
	}
	return slices.Clone(h.evCache)
}

// eventsOf waits for the provisioning-log record of the request (always its last event) and returns
// every event the request caused, in stream order.
func (h *harness) eventsOf(r resp) []events.Event {
	h.t.Helper()
	var got []events.Event
	eventually(h.t, "scimlog event of "+r.reqID, func() bool {
		got = got[:0]
		logged := false
		for _, e := range h.allEvents() {
			if e.CorrelationID == r.reqID {
				got = append(got, e)
				if e.Type == events.TypeSCIMLog {
					logged = true
				}
			}
		}
		return logged
	})
	return got
}

// eventTypes lists the types of evs.
func eventTypes(evs []events.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

func logOf(t testing.TB, evs []events.Event) events.SCIMLog {
	t.Helper()
	for _, e := range evs {
		if l, ok := e.Data.(events.SCIMLog); ok {
			return l
		}
	}
	t.Fatalf("no scimlog event in %v", eventTypes(evs))
	return events.SCIMLog{}
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func jsonNumber(n int) json.Number { return json.Number(fmt.Sprint(n)) }

// seedUsers creates n users over HTTP concurrently and returns their ids.
func (h *harness) seedUsers(n int) []string {
	h.t.Helper()
	ids := make([]string, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r := h.do("POST", "/Users", map[string]any{"schemas": []string{scimschema.User}, "userName": fmt.Sprintf("seed%06d@x.test", i)})
			if r.status != http.StatusCreated {
				h.t.Errorf("seed POST = %d %s", r.status, r.raw)
				return
			}
			ids[i] = str(r.body["id"])
		}()
	}
	wg.Wait()
	return ids
}

func noRateLimit(c *Config) { c.RateLimit = 0 }

// waitDrained waits until both lanes of the service's outbox are empty, as their depth gauges say.
func (h *harness) waitDrained() {
	h.t.Helper()
	eventually(h.t, "outbox drained", func() bool {
		mfs, err := h.reg.Gather()
		if err != nil {
			h.t.Fatal(err)
		}
		seen := 0
		for _, mf := range mfs {
			switch mf.GetName() {
			case "scimflow_scim_ingest_outbox_depth", "scimflow_scim_ingest_outbox_priority_depth":
				if mf.GetMetric()[0].GetGauge().GetValue() != 0 {
					return false
				}
				seen++
			}
		}
		return seen == 2
	})
}
