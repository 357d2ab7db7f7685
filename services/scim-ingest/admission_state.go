package scimingest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
)

// publication is this instance's entry in the admission bucket (broker.KVAdmission): identity-store
// cannot see scim-ingest's outbox or measurements, so each instance publishes its admission-control
// state there for the console's overview. The entry is rewritten when the state changes and at least
// every events.AdmissionHeartbeat; the bucket's TTL drops the entry of an instance that died, and a
// clean stop deletes it. The state is sampled once per measurement interval, so a flip that lasts
// less than one interval may not be published; the scimflow_scim_ingest_admission_active gauge is the
// exact figure.
//
// Its fields are used by runPublish's goroutine only.
type publication struct {
	instance string
	host     string
	kv       jetstream.KeyValue // nil until the bucket was opened
	rev      uint64             // revision of the last successful write (0: none)
	active   bool               // the state last sampled
	since    time.Time          // when that state began (as sampled)
	written  bool               // the state last sampled was written
	lastPut  time.Time          // when the entry was last written
	retryAt  time.Time          // after a failed write, no new attempt before this
	failing  bool               // the last attempt failed (logged once, not at every interval)
}

// instanceName is a KV key naming this process: the host name (reduced to key-safe characters) and
// a random suffix, so two instances on one host, or a restart, never share an entry.
func instanceName() (name, host string) {
	host, _ = os.Hostname()
	var b strings.Builder
	for _, r := range host {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		b.WriteString("scim-ingest")
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	return b.String() + "-" + hex.EncodeToString(rnd[:]), host
}

// state returns what the instance publishes now.
func (a *admission) state(now time.Time) events.AdmissionState {
	m := a.measured()
	lag, hop := a.lagHop()
	authLag, authReplica := m.authLag()
	return events.AdmissionState{
		Instance: a.pub.instance, Host: a.pub.host, PID: os.Getpid(),
		Active: a.pub.active, Since: a.pub.since.UTC(), UpdatedAt: now.UTC(),
		LagMS: lag.Milliseconds(), Hop: hop, OutboxAgeMS: a.relay.OldestAge().Milliseconds(), DownstreamLagMS: m.identityStore.Milliseconds(),
		AuthLagMS: authLag.Milliseconds(), AuthReplica: authReplica,
		MaxLagMS: a.maxLag.Milliseconds(), OutboxDepth: a.relay.Depth(), MaxDepth: a.maxDepth,
		Rejected: a.nRejected.Load(), SecurityAdmitted: a.nAdmitted.Load(),
	}
}

// runPublish samples the state every interval and publishes it until ctx ends, then removes this
// instance's entry. Publication is best effort: it returns no error and never stops the service.
func (a *admission) runPublish(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	defer a.unpublish()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			a.publish(pctx)
			cancel()
		}
	}
}

// publish samples the state and writes the entry when it changed or the heartbeat is due. A failed
// write (NATS unreachable, or a NATS configuration without the bucket's permission rows) is logged
// once and retried after a heartbeat; it never affects admission itself.
func (a *admission) publish(ctx context.Context) {
	now := a.now()
	p := &a.pub
	if active := a.lagging(); p.since.IsZero() || active != p.active {
		p.active, p.since, p.written = active, now, false
	}
	if p.written && now.Sub(p.lastPut) < events.AdmissionHeartbeat || now.Before(p.retryAt) {
		return
	}
	fail := func(what string, err error) {
		p.retryAt = now.Add(events.AdmissionHeartbeat)
		if !p.failing {
			a.log.Warn("admission state not published (the console shows it as not reported); retrying", "step", what,
				"bucket", broker.KVAdmission, "err", err)
		}
		p.failing = true
	}
	if p.kv == nil {
		kv, err := a.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: broker.KVAdmission, Description: "scimflow scim-ingest: admission-control state per instance", History: 1,
			TTL: events.AdmissionTTL, Storage: jetstream.MemoryStorage, Replicas: max(a.replicas, 1),
		})
		if err != nil {
			fail("open bucket", err)
			return
		}
		p.kv = kv
	}
	raw, _ := json.Marshal(a.state(now))
	rev, err := p.kv.Put(ctx, p.instance, raw)
	if err != nil {
		fail("put", err)
		return
	}
	if p.failing {
		a.log.Info("admission state published again", "bucket", broker.KVAdmission)
	}
	p.rev, p.written, p.lastPut, p.failing = rev, true, now, false
}

// unpublish deletes this instance's entry at a clean stop (only if it is still the one written last).
func (a *admission) unpublish() {
	if a.pub.kv == nil || a.pub.rev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = a.pub.kv.Delete(ctx, a.pub.instance, jetstream.LastRevision(a.pub.rev))
}
