package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
)

// KVReplicas is the bucket in which every running auth replica holds a lease on its replica id. The
// id names the replica's durable consumers; two processes with one id would delete and recreate each
// other's consumers, so the second is refused.
const KVReplicas = "auth_replicas"

// bucketReplica holds this data directory's replica identity: the generated default id and the token
// that tells this data directory's lease apart from another's. It is local state, not projection
// state (left out of canonical dumps).
const bucketReplica = "replica"

const (
	leaseTTL       = 15 * time.Second
	leaseHeartbeat = 5 * time.Second
)

// replicaIdentity returns the replica id to use and this data directory's lease token. A configured
// id wins; otherwise the id generated the first time this data directory was used (unique per data
// directory, stable across restarts). The bbolt file lock guarantees no other process uses this data
// directory at the same time, which is what lets a restarted replica take over its own lease at once.
func replicaIdentity(db *bolt.DB, configured string) (id, token string, err error) {
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(bucketReplica))
		if err != nil {
			return err
		}
		gen := string(b.Get([]byte("generated_id")))
		if gen == "" {
			gen = "r" + randomHex(5)
			if err := b.Put([]byte("generated_id"), []byte(gen)); err != nil {
				return err
			}
		}
		token = string(b.Get([]byte("token")))
		if token == "" {
			token = randomHex(16)
			if err := b.Put([]byte("token"), []byte(token)); err != nil {
				return err
			}
		}
		id = gen
		if configured != "" {
			id = sanitizeName(configured)
		}
		return nil
	})
	return id, token, err
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// lease is this process's claim on its replica id in KVReplicas.
type lease struct {
	kv    jetstream.KeyValue
	id    string
	value []byte
	token string
	rev   uint64
}

type leaseValue struct {
	Token   string `json:"token"`
	Host    string `json:"host"`
	PID     int    `json:"pid"`
	DataDir string `json:"data_dir"`
}

// ErrReplicaIDInUse is returned when another running process holds the replica id.
var ErrReplicaIDInUse = errors.New("replica id in use")

// claimLease takes the lease on id, or takes it over from an earlier life of this data directory.
// Another data directory's live lease is refused with ErrReplicaIDInUse; a lease whose holder died
// expires after leaseTTL.
func claimLease(ctx context.Context, js jetstream.JetStream, replicas int, id, token, dataDir string) (*lease, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: KVReplicas, Description: "scimflow auth: leases on replica ids", History: 1,
		TTL: leaseTTL, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("kv %s: %w", KVReplicas, err)
	}
	host, _ := os.Hostname()
	val, _ := json.Marshal(leaseValue{Token: token, Host: host, PID: os.Getpid(), DataDir: dataDir})
	l := &lease{kv: kv, id: id, value: val, token: token}
	rev, err := kv.Create(ctx, id, val)
	if err == nil {
		l.rev = rev
		return l, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("claim replica id %q: %w", id, err)
	}
	cur, err := kv.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("claim replica id %q: %w", id, err)
	}
	var held leaseValue
	_ = json.Unmarshal(cur.Value(), &held)
	if held.Token != token {
		return nil, fmt.Errorf("%w: auth replica id %q is held by another running process (host %q, pid %d, data dir %q); "+
			"give each replica its own auth.replica_id, or leave it empty to use the id generated for the data directory",
			ErrReplicaIDInUse, id, held.Host, held.PID, held.DataDir)
	}
	if l.rev, err = kv.Update(ctx, id, val, cur.Revision()); err != nil {
		return nil, fmt.Errorf("take over replica id %q: %w", id, err)
	}
	return l, nil
}

// run renews the lease until ctx ends, then releases it. Losing the lease to another process (it
// expired while this one was cut off from NATS and someone else claimed the id) stops the replica:
// two processes must never share the durable consumers. A failed renewal for any other reason (NATS
// unreachable) is retried; the revocation-staleness check fails closed meanwhile.
func (l *lease) run(ctx context.Context) error {
	t := time.NewTicker(leaseHeartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = l.kv.Delete(dctx, l.id, jetstream.LastRevision(l.rev))
			cancel()
			return nil
		case <-t.C:
		}
		uctx, cancel := context.WithTimeout(ctx, leaseHeartbeat)
		rev, err := l.kv.Update(uctx, l.id, l.value, l.rev)
		cancel()
		if err == nil {
			l.rev = rev
			continue
		}
		if ctx.Err() != nil {
			continue
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			cur, gerr := l.kv.Get(ctx, l.id)
			if gerr == nil {
				var held leaseValue
				_ = json.Unmarshal(cur.Value(), &held)
				if held.Token == l.token {
					l.rev = cur.Revision()
					continue
				}
			}
			if errors.Is(gerr, jetstream.ErrKeyNotFound) {
				if rev, cerr := l.kv.Create(ctx, l.id, l.value); cerr == nil {
					l.rev = rev
					continue
				}
			}
			return fmt.Errorf("%w: the lease on auth replica id %q was taken by another process", ErrReplicaIDInUse, l.id)
		}
	}
}
