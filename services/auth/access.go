package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/access"
	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/httpserv"
	"github.com/scimflow/scimflow/internal/outbox"
)

// Access enforcement (docs/access-policies.md). Every replica watches the access_apps KV bucket that
// identity-store keeps equal to its registry of apps, compiles the apps into an access.Registry and
// swaps it in atomically, so /verify reads it without a lock and a change applies within the watch's
// latency without a restart.

// HeaderApp names the application /verify matched; HeaderDenyReason says why it answered 403.
const (
	HeaderApp        = "X-Scimflow-App"
	HeaderDenyReason = "X-Scimflow-Deny-Reason"
)

// Decision labels of scimflow_auth_access_decisions_total beyond access.Allow/Deny/Bypass: "login"
// means the person was sent to log in (no session, or one older than the app's session_duration).
const decisionLogin = "login"

// appSet is one compiled generation of the apps with the counters of every decision it can take.
type appSet struct {
	reg     *access.Registry
	perApp  []appCounters
	noApp   prometheus.Counter // deny, no_application
	counter *prometheus.CounterVec
}

type appCounters struct {
	policy        []prometheus.Counter // by index in App.Policies: the policy's decision, its name
	noPolicy      prometheus.Counter
	idpNotAllow   prometheus.Counter
	noSession     prometheus.Counter
	sessionTooOld prometheus.Counter
}

// appWatcher holds the current appSet and the apps it was compiled from.
type appWatcher struct {
	cur    atomic.Pointer[appSet]
	synced atomic.Bool // the bucket's initial contents were read

	mu   sync.Mutex // guards apps
	apps map[string]access.App
}

func newAppSet(apps []access.App, vec *prometheus.CounterVec, log func(msg string, args ...any)) *appSet {
	slices.SortFunc(apps, func(a, b access.App) int { return strings.Compare(a.ID, b.ID) })
	// An app that is invalid on its own, or a second app on a domain already taken, is left out and
	// logged: its requests then get no_application (fail closed) instead of a guess.
	var keep []access.App
	for _, a := range apps {
		if probs := a.Validate(); len(probs) > 0 {
			log("access app ignored: invalid", "app_id", a.ID, "problems", strings.Join(probs, "; "))
			continue
		}
		if probs := access.ValidateSet(append(slices.Clone(keep), a)); len(probs) > 0 {
			log("access app ignored: domain taken", "app_id", a.ID, "problems", strings.Join(probs, "; "))
			continue
		}
		keep = append(keep, a)
	}
	reg, err := access.Compile(keep)
	if err != nil { // cannot happen after the checks above; fail closed with no app but one
		log("access apps ignored", "err", err)
		reg, _ = access.Compile(nil)
	}
	set := &appSet{reg: reg, counter: vec, noApp: vec.WithLabelValues(events.NoApp, access.Deny, access.ReasonNoApplication)}
	for _, c := range reg.Apps() {
		id := c.App.ID
		ac := appCounters{
			noPolicy:      vec.WithLabelValues(id, access.Deny, access.ReasonNoPolicy),
			idpNotAllow:   vec.WithLabelValues(id, access.Deny, access.ReasonIdPNotAllowed),
			noSession:     vec.WithLabelValues(id, decisionLogin, "no_session"),
			sessionTooOld: vec.WithLabelValues(id, decisionLogin, access.ReasonSessionTooOld),
		}
		for _, p := range c.App.Policies {
			ac.policy = append(ac.policy, vec.WithLabelValues(id, p.Decision, p.Name))
		}
		set.perApp = append(set.perApp, ac)
	}
	return set
}

// watchApps keeps the app registry equal to the access_apps bucket.
func (s *server) watchApps(ctx context.Context, kv jetstream.KeyValue) error {
	for ctx.Err() == nil {
		w, err := kv.WatchAll(ctx)
		if err != nil {
			s.log.Warn("watch access_apps failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		initial := true
		s.apps.mu.Lock()
		s.apps.apps = map[string]access.App{}
		s.apps.mu.Unlock()
		for e := range w.Updates() {
			if e == nil {
				initial = false
				s.rebuildApps()
				s.apps.synced.Store(true)
				continue
			}
			s.apps.mu.Lock()
			switch e.Operation() {
			case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
				delete(s.apps.apps, e.Key())
			default:
				var a access.App
				if err := json.Unmarshal(e.Value(), &a); err != nil {
					s.log.Error("access_apps entry ignored: not an app", "app_id", e.Key(), "err", err)
					delete(s.apps.apps, e.Key())
				} else {
					a.ID = e.Key()
					s.apps.apps[e.Key()] = a
				}
			}
			s.apps.mu.Unlock()
			// Compile once per burst: while more updates are already queued (an admin importing
			// 100 apps), rebuilding after each would cost O(apps²).
			if !initial && len(w.Updates()) == 0 {
				s.rebuildApps()
			}
		}
		w.Stop()
	}
	return nil
}

func (s *server) rebuildApps() {
	s.apps.mu.Lock()
	apps := make([]access.App, 0, len(s.apps.apps))
	for _, a := range s.apps.apps {
		apps = append(apps, a)
	}
	s.apps.mu.Unlock()
	s.apps.cur.Store(newAppSet(apps, s.metrics.accessDecisions, s.log.Error))
}

// trustedProxies parses auth.trusted_proxies.
func parseTrusted(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, s := range list {
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("auth.trusted_proxies: %q is not an IP address or CIDR", s))
				continue
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("auth.trusted_proxies: %q is not a CIDR", s))
			continue
		}
		out = append(out, p.Masked())
	}
	return out, errors.Join(errs...)
}

func trusted(list []netip.Prefix, a netip.Addr) bool {
	for _, p := range list {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr is the address of the person's browser: the peer when it is not a trusted proxy, else
// the right-most X-Forwarded-For entry that is not a trusted proxy (entries left of it could be
// written by anyone). Invalid when it cannot be known.
func (s *server) clientAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	peer = peer.Unmap()
	if !trusted(s.trusted, peer) {
		return peer
	}
	hops := r.Header.Values("X-Forwarded-For")
	var last netip.Addr
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return netip.Addr{} // a garbled chain: the client is unknown, ip selectors do not match
			}
			a = a.Unmap()
			if !trusted(s.trusted, a) {
				return a
			}
			last = a
		}
	}
	if last.IsValid() {
		return last
	}
	return peer
}

// --- access log ---

// Sampling windows of the access log (docs/access-policies.md): the log cannot carry every decision
// at tens of thousands of /verify per second.
const (
	denyLogEvery  = 10 * time.Second
	allowLogEvery = 10 * time.Minute
	logShardMax   = 4096 // entries per shard of the sampler; a full shard is emptied
	logQueue      = 10000
)

type sampleEntry struct {
	next    time.Time // log again at or after this
	repeats int
}

// sampleKey identifies like decisions: the session (or, without one, the client address), the app
// and, for denies, the reason. Its strings point at the session's and the app's own, so building a
// key allocates nothing on the hot path.
type sampleKey struct {
	session string
	client  netip.Addr
	app     string
	reason  string
}

type logSampler struct {
	seed   maphash.Seed
	shards [64]struct {
		mu sync.Mutex // guards m
		m  map[sampleKey]*sampleEntry
	}
}

func newLogSampler() *logSampler {
	l := &logSampler{seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].m = map[sampleKey]*sampleEntry{}
	}
	return l
}

// admit reports whether a decision with key k is recorded now, and how many like decisions were
// skipped since the last record.
func (l *logSampler) admit(k sampleKey, now time.Time, every time.Duration) (bool, int) {
	sh := &l.shards[maphash.Comparable(l.seed, k)%uint64(len(l.shards))]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[k]
	if e == nil {
		if len(sh.m) >= logShardMax {
			clear(sh.m)
		}
		sh.m[k] = &sampleEntry{next: now.Add(every)}
		return true, 0
	}
	if now.Before(e.next) {
		e.repeats++
		return false, 0
	}
	n := e.repeats
	e.next, e.repeats = now.Add(every), 0
	return true, n
}

// accessLog queues sampled decisions and writes them in batches through auth's outbox, so the
// request never waits for a disk write. A full queue drops the record and counts it
// (scimflow_auth_access_log_dropped_total), with a warning at most once a minute.
type accessLog struct {
	sampler  *logSampler
	queue    chan events.Event
	dropped  prometheus.Counter
	lastWarn atomic.Int64
}

func newAccessLog(dropped prometheus.Counter) *accessLog {
	return &accessLog{sampler: newLogSampler(), queue: make(chan events.Event, logQueue), dropped: dropped}
}

// record samples and queues one decision of a session (its hash; empty without a session, when
// the client address ip identifies the caller instead).
func (s *server) record(r *http.Request, now time.Time, session string, ip netip.Addr, d events.AccessDecided) {
	k := sampleKey{session: session, app: d.AppID}
	if session == "" {
		k.client = ip
	}
	every := allowLogEvery
	if d.Decision == access.Deny {
		every = denyLogEvery
		k.reason = d.Reason
	}
	ok, n := s.alog.sampler.admit(k, now, every)
	if !ok {
		return
	}
	d.Repeats, d.Replica, d.Host = n, s.cfg.ReplicaID, strings.ToLower(d.Host)
	if ip.IsValid() {
		d.ClientIP = ip.String()
	}
	e := events.New(events.AccessScope, now, httpserv.RequestIDFrom(r.Context()), "", d)
	select {
	case s.alog.queue <- e:
	default:
		s.alog.dropped.Inc()
		if last := s.alog.lastWarn.Load(); now.Unix()-last >= 60 && s.alog.lastWarn.CompareAndSwap(last, now.Unix()) {
			s.log.Warn("access log queue full; records dropped (see scimflow_auth_access_log_dropped_total)")
		}
	}
}

// runAccessLog moves queued records into the outbox, one bbolt transaction per batch.
func (s *server) runAccessLog(ctx context.Context) error {
	batch := make([]events.Event, 0, 256)
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-s.alog.queue:
			batch = append(batch[:0], e)
		drain:
			for len(batch) < cap(batch) {
				select {
				case e := <-s.alog.queue:
					batch = append(batch, e)
				default:
					break drain
				}
			}
			for {
				err := s.db.Update(func(tx *bolt.Tx) error { return outbox.Append(tx, s.now(), batch...) })
				if err == nil {
					s.relay.Notify()
					break
				}
				s.log.Error("access log: outbox write failed; retrying", "err", err, "records", len(batch))
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Second):
				}
			}
		}
	}
}
