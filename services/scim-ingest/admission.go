package scimingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/fault"
	"github.com/scimflow/scimflow/internal/outbox"
)

// identityStoreSCIMDurable is identity-store's durable consumer of the SCIM stream. Durable names are
// API (services/identity-store/identitystore.go); services never import each other, so it is
// repeated here.
const identityStoreSCIMDurable = "identitystore-scim"

// Admission control by lag (docs/architecture.md, "Admission control"). The pipeline lags when the
// oldest record of the outbox's ordered lane, the oldest SCIM event identity-store has not applied
// yet, or the oldest IDENTITY message a live auth replica has not applied yet (admission_auth.go) is
// older than admission_max_lag. While it lags, bulk writes get 429 with Retry-After (IdPs honour it
// and retry), so the backlog stays within about the bound's worth of writes end to end and a
// deactivation never queues behind minutes of bulk work. Security facts — a user set inactive, a
// user deleted, a membership removal under the reauth policy — are always admitted: refusing them
// would keep access that should be gone. The classification reads the body, so it runs after the
// body is read. outbox_max_depth still caps the outbox for bulk writes (429 too).
type admission struct {
	maxLag   time.Duration
	maxDepth int64
	relay    *outbox.Relay
	js       jetstream.JetStream
	now      func() time.Time
	replicas int // of the admission bucket, as the streams'
	log      *slog.Logger

	meas   atomic.Pointer[measurement] // the downstream hops as last measured (nil: none yet)
	leases leases                      // the auth replicas' leases (watchLeases)

	identity jetstream.Stream // IDENTITY's handle, looked up once by run's goroutine

	nRejected, nAdmitted atomic.Uint64 // the counters below, readable for the published state

	// The published state (publish, called from run's goroutine only).
	pub publication

	lagG     prometheus.GaugeFunc
	activeG  prometheus.GaugeFunc
	hops     *hopCollector
	rejected prometheus.Counter
	admitted prometheus.Counter
}

// measurement is one check of the hops downstream of the outbox. It is not changed once stored.
type measurement struct {
	identityStore time.Duration            // identity-store's oldest unapplied SCIM event
	replicas      map[string]time.Duration // each live auth replica's oldest unapplied IDENTITY message
	auth          time.Duration            // the largest of replicas (computed once: check reads it per request)
	authReplica   string                   // its replica id ("" when none lags)
}

func newMeasurement(identityStore time.Duration, replicas map[string]time.Duration) *measurement {
	m := &measurement{identityStore: identityStore, replicas: replicas}
	for _, r := range sortedKeys(replicas) {
		if replicas[r] > m.auth {
			m.auth, m.authReplica = replicas[r], r
		}
	}
	return m
}

// authLag returns the largest auth replica lag and its replica id ("" when none lags).
func (m *measurement) authLag() (time.Duration, string) { return m.auth, m.authReplica }

func sortedKeys(m map[string]time.Duration) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func newAdmission(cfg Config, relay *outbox.Relay, js jetstream.JetStream, now func() time.Time, replicas int, log *slog.Logger) *admission {
	a := &admission{maxLag: cfg.AdmissionMaxLag.D(), maxDepth: cfg.OutboxMaxDepth, relay: relay, js: js, now: now, replicas: replicas, log: log}
	a.pub.instance, a.pub.host = instanceName()
	const p = "scimflow_scim_ingest_admission_"
	a.lagG = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: p + "lag_seconds",
		Help: "Pipeline lag admission control compares with admission_max_lag: the largest of the outbox's oldest record, identity-store's oldest unapplied SCIM event and the live auth replicas' oldest unapplied IDENTITY message (per hop: " + p + "hop_lag_seconds)."},
		func() float64 { return a.lag().Seconds() })
	a.activeG = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: p + "active",
		Help: "1 while admission control refuses bulk writes (the pipeline lags beyond admission_max_lag or the outbox is at outbox_max_depth)."},
		func() float64 {
			if a.lagging() {
				return 1
			}
			return 0
		})
	a.hops = &hopCollector{a: a, desc: prometheus.NewDesc(p+"hop_lag_seconds",
		"Lag of one hop of the pipeline as admission control last measured it: hop scim_outbox (scim-ingest's outbox), identity_store (its SCIM consumer) or auth_replica (one live auth replica's IDENTITY consumer, replica_id set).",
		[]string{"hop", "replica_id"}, nil)}
	a.rejected = prometheus.NewCounter(prometheus.CounterOpts{Name: p + "rejected_total",
		Help: "Bulk writes answered 429 by admission control."})
	a.admitted = prometheus.NewCounter(prometheus.CounterOpts{Name: p + "security_admitted_total",
		Help: "Security-fact writes admitted while admission control was refusing bulk writes."})
	return a
}

func (a *admission) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{a.lagG, a.activeG, a.hops, a.rejected, a.admitted} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// hopCollector exports the lag per hop; an auth replica whose lease ended disappears from it.
type hopCollector struct {
	a    *admission
	desc *prometheus.Desc
}

func (c *hopCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *hopCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, c.a.relay.OldestAge().Seconds(), hopOutbox, "")
	m := c.a.measured()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, m.identityStore.Seconds(), hopIdentityStore, "")
	for _, id := range sortedKeys(m.replicas) {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, m.replicas[id].Seconds(), hopAuthReplica, id)
	}
}

// measured returns the last measurement (zero before the first).
func (a *admission) measured() *measurement {
	if m := a.meas.Load(); m != nil {
		return m
	}
	return &measurement{}
}

// lag is the largest lag of the hops, and the hop it is (as published: the hop name, with
// ":<replica_id>" for an auth replica; "" when nothing lags).
func (a *admission) lagHop() (time.Duration, string) {
	m := a.measured()
	d, hop := a.relay.OldestAge(), hopOutbox
	if m.identityStore > d {
		d, hop = m.identityStore, hopIdentityStore
	}
	if ad, id := m.authLag(); ad > d {
		d, hop = ad, hopAuthReplica+":"+id
	}
	if d <= 0 {
		return 0, ""
	}
	return d, hop
}

func (a *admission) lag() time.Duration {
	d, _ := a.lagHop()
	return d
}

func (a *admission) lagging() bool {
	return a.lag() > a.maxLag || a.relay.Depth() >= a.maxDepth
}

// check decides a write: nil to admit it, a 429 for a bulk write while the pipeline lags.
func (a *admission) check(security bool) error {
	if !a.lagging() {
		return nil
	}
	if security {
		a.admitted.Inc()
		a.nAdmitted.Add(1)
		return nil
	}
	a.rejected.Inc()
	a.nRejected.Add(1)
	wait := max(time.Duration(math.Ceil(a.lag().Seconds()))*time.Second, retryAfter)
	return &fault.Error{Kind: fault.RateLimited, Message: "the provisioning pipeline is behind; retry later", RetryAfter: wait}
}

// run measures the downstream hops every interval until ctx ends. The state is published to the
// admission bucket from a goroutine of its own (runPublish), so a slow or refused write there never
// delays the measurement admission control decides on; the auth replicas' leases are followed by
// another (watchLeases).
func (a *admission) run(ctx context.Context, interval time.Duration) error {
	published := make(chan struct{})
	go func() { defer close(published); a.runPublish(ctx, interval) }()
	defer func() { <-published }() // a clean stop removes the entry before Run returns
	watched := make(chan struct{})
	go func() { defer close(watched); a.watchLeases(ctx) }()
	defer func() { <-watched }()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			mctx, cancel := context.WithTimeout(ctx, interval*4)
			prev := a.measured()
			ids := prev.identityStore
			if d, err := a.measure(mctx); err == nil {
				ids = d
			}
			replicas := a.measureReplicas(mctx, prev.replicas)
			cancel()
			a.meas.Store(newMeasurement(ids, replicas))
		}
	}
}

// measure returns the age of the oldest SCIM event identity-store's consumer has not acknowledged
// (0 when none is pending or the consumer does not exist yet).
func (a *admission) measure(ctx context.Context) (time.Duration, error) {
	cons, err := a.js.Consumer(ctx, events.StreamSCIM, identityStoreSCIMDurable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	info := cons.CachedInfo() // fetched by Consumer just now
	if info.NumPending == 0 && info.NumAckPending == 0 {
		return 0, nil
	}
	st, err := a.js.Stream(ctx, events.StreamSCIM)
	if err != nil {
		return 0, err
	}
	m, err := st.GetMsg(ctx, info.AckFloor.Stream+1)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return max(a.now().Sub(m.Time), 0), nil
}

// securityWrite classifies a write request (its body already read) as a security fact: a DELETE of
// a user; a PUT of a user with active false; a PATCH of a user any of whose operations sets active
// false (a mixed PATCH counts); and, when the IdP's policy is reauth, a group DELETE, a group PUT
// (it may drop members) or a group PATCH with a remove operation or a members replacement.
func securityWrite(method string, kind string, hasID bool, body []byte, reauth bool) bool {
	if !hasID {
		return false // a create takes nothing away
	}
	switch kind {
	case kindUser:
		switch method {
		case http.MethodDelete:
			return true
		case http.MethodPut:
			var v map[string]any
			return json.Unmarshal(body, &v) == nil && isFalse(lookupFold(v, "active"))
		case http.MethodPatch:
			for _, op := range patchOps(body) {
				o := strings.ToLower(asString(lookupFold(op, "op")))
				if o != "replace" && o != "add" {
					continue
				}
				path := strings.ToLower(strings.TrimSpace(asString(lookupFold(op, "path"))))
				val := lookupFold(op, "value")
				switch {
				case path == "active" || strings.HasSuffix(path, ":active"):
					if isFalse(val) {
						return true
					}
				case path == "":
					if m, ok := val.(map[string]any); ok && isFalse(lookupFold(m, "active")) {
						return true
					}
				}
			}
		}
	case kindGroup:
		if !reauth {
			return false
		}
		switch method {
		case http.MethodDelete, http.MethodPut:
			return true
		case http.MethodPatch:
			for _, op := range patchOps(body) {
				o := strings.ToLower(asString(lookupFold(op, "op")))
				path := strings.ToLower(asString(lookupFold(op, "path")))
				if o == "remove" || o == "replace" && (path == "" || strings.HasPrefix(path, "members")) {
					return true
				}
			}
		}
	}
	return false
}

func patchOps(body []byte) []map[string]any {
	var req map[string]any
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if d.Decode(&req) != nil {
		return nil
	}
	raw, _ := lookupFold(req, "Operations").([]any)
	var out []map[string]any
	for _, r := range raw {
		if m, ok := r.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// lookupFold reads a JSON attribute case-insensitively (SCIM attribute names are).
func lookupFold(m map[string]any, name string) any {
	if v, ok := m[name]; ok {
		return v
	}
	for k, v := range m {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return nil
}

// isFalse accepts the boolean false and, as some IdPs send it, the string "false" (any case).
func isFalse(v any) bool {
	switch x := v.(type) {
	case bool:
		return !x
	case string:
		return strings.EqualFold(strings.TrimSpace(x), "false")
	}
	return false
}

func asString(v any) string {
	s, _ := v.(string)
	return s
}
