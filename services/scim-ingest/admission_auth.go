package scimingest

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
)

// The auth replicas' hop of admission control (docs/architecture.md, "Admission control"). Every
// auth replica applies IDENTITY through a durable consumer of its own, "auth-<replica_id>", and
// holds a lease on its replica id in the auth_replicas bucket, renewed every 5 s and dropped by the
// bucket's 15 s TTL when the replica dies (services/auth/replica.go). Services never import each
// other, so the names and the TTL are repeated here.
const (
	authReplicasBucket   = "auth_replicas"
	authIdentityDurable  = "auth-" // + replica id
	authReplicaLeaseTTL  = 15 * time.Second
	authLeaseRewatchWait = time.Second
)

// Hops of the pipeline, as the hop label of scimflow_scim_ingest_admission_hop_lag_seconds and the
// published state name them.
const (
	hopOutbox        = "scim_outbox"
	hopIdentityStore = "identity_store"
	hopAuthReplica   = "auth_replica"
)

// Rule: only a replica with a live lease counts. A lease is live while its latest entry is a put
// (not the delete a clean stop writes) written less than the lease TTL ago; the bucket's TTL
// removes such an entry without telling a watcher, hence the age. So a replica that stopped or died
// stops holding admission control on at once (clean stop) or within 15 s (crash, or cut off from
// NATS — it then refuses every session anyway, failing closed), while its durable, which still
// exists on the server, is ignored. A live replica that does not apply IDENTITY keeps admission on:
// that is a pipeline lagging.

// leases follows the auth_replicas bucket: when each replica id's lease was last written.
type leases struct {
	mu      sync.Mutex           // guards written
	written map[string]time.Time // replica id → time of its latest put (server time); deleted ones absent
}

// live returns the replica ids whose lease is live at now, sorted.
func (l *leases) live(now time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for id, at := range l.written {
		if now.Sub(at) < authReplicaLeaseTTL {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

func (l *leases) reset() {
	l.mu.Lock()
	l.written = map[string]time.Time{}
	l.mu.Unlock()
}

func (l *leases) note(e jetstream.KeyValueEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.written == nil {
		l.written = map[string]time.Time{}
	}
	if e.Operation() == jetstream.KeyValuePut {
		l.written[e.Key()] = e.Created()
	} else {
		delete(l.written, e.Key())
	}
}

// watchLeases keeps a.leases up to date until ctx ends. The bucket is auth's: until an auth replica
// created it there is no replica to wait for, and the watch is retried.
//
// A failure other than a missing bucket (a NATS configuration without scim-ingest's read row for
// the bucket, NATS unreachable) is logged once: admission control then does not see the auth
// replicas' lag until the watch works again.
func (a *admission) watchLeases(ctx context.Context) {
	logged := false
	for ctx.Err() == nil {
		kv, err := a.js.KeyValue(ctx, authReplicasBucket)
		var w jetstream.KeyWatcher
		if err == nil {
			w, err = kv.WatchAll(ctx)
		}
		switch {
		case err == nil:
			logged = false
			a.leases.reset()
			for e := range w.Updates() {
				if e != nil { // nil marks the end of the initial values
					a.leases.note(e)
				}
			}
			_ = w.Stop()
		case !errors.Is(err, jetstream.ErrBucketNotFound) && ctx.Err() == nil && !logged:
			logged = true
			a.log.Warn("auth replicas' leases not readable: admission control does not count the auth replicas' IDENTITY lag; retrying",
				"bucket", authReplicasBucket, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(authLeaseRewatchWait):
		}
	}
}

// measureReplica returns the age of the oldest IDENTITY message auth replica id has not
// acknowledged (0 when none is pending). A replica whose durable does not exist (it is being
// recreated at start) reports found false.
func (a *admission) measureReplica(ctx context.Context, st jetstream.Stream, id string) (d time.Duration, found bool, err error) {
	cons, err := st.Consumer(ctx, authIdentityDurable+id)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	info := cons.CachedInfo() // fetched by Consumer just now
	if info.NumPending == 0 && info.NumAckPending == 0 {
		return 0, true, nil
	}
	m, err := st.GetMsg(ctx, info.AckFloor.Stream+1)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, true, nil
	}
	if err != nil {
		return 0, false, err
	}
	// The age counts from the earlier of the message's storage and its first event's time: an
	// IDENTITY event derived from a SCIM write carries the write's time (events.Derived), so a wait
	// in identity-store's outbox before publication counts too — end to end since the 2xx.
	oldest := m.Time
	if evs, err := events.DecodeMessage(m.Subject, m.Data); err == nil && len(evs) > 0 && evs[0].OccurredAt.Before(oldest) {
		oldest = evs[0].OccurredAt
	}
	return max(a.now().Sub(oldest), 0), true, nil
}

// measureReplicas measures every live replica. A replica whose measurement failed keeps its last
// figure (prev), as the other hops do.
func (a *admission) measureReplicas(ctx context.Context, prev map[string]time.Duration) map[string]time.Duration {
	ids := a.leases.live(a.now())
	if len(ids) == 0 {
		return nil
	}
	out := make(map[string]time.Duration, len(ids))
	st, err := a.identityStream(ctx)
	for _, id := range ids {
		if err != nil {
			if d, ok := prev[id]; ok {
				out[id] = d
			}
			continue
		}
		d, found, merr := a.measureReplica(ctx, st, id)
		switch {
		case merr != nil:
			if p, ok := prev[id]; ok {
				out[id] = p
			}
		case found:
			out[id] = d
		}
	}
	return out
}

// identityStream returns the IDENTITY stream's handle, looked up once (run's goroutine only).
func (a *admission) identityStream(ctx context.Context) (jetstream.Stream, error) {
	if a.identity != nil {
		return a.identity, nil
	}
	st, err := a.js.Stream(ctx, events.StreamIdentity)
	if err == nil {
		a.identity = st
	}
	return st, err
}
