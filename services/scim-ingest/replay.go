package scimingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/boltdb"
	"github.com/scimflow/scimflow/internal/outbox"
)

// scim-ingest's bbolt file is a projection of the SCIM stream: every resource change publishes what
// the store wrote (a user's full attributes, a group's displayName and externalId, membership deltas,
// deletions, each with the resource version and the commit time as the event time), so Replay can
// rebuild the file from the stream alone, byte for byte (DumpFile), and a standby scim-ingest can be
// built on another host. The stream must be complete from its first event (nats.max_age: 0).

// DumpSkip lists the buckets left out of the canonical dump: the outbox lanes are transport state
// (events not yet published), not resources.
var DumpSkip = []string{outbox.Bucket, outbox.PriorityBucket, outbox.DeadBucket}

// DumpFile writes the canonical dump of a scim-ingest bbolt file (boltdb.Dump without DumpSkip).
func DumpFile(path string, w io.Writer) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("dump %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: boltdb.LockTimeout, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("dump %s: %w", path, err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error { return boltdb.Dump(tx, w, DumpSkip...) })
}

// IsDataFile reports whether the bbolt file at path is scim-ingest's (it has the users bucket and the
// userName index), so `scimflow replay dump` can tell the services' files apart.
func IsDataFile(path string) bool {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: boltdb.LockTimeout, ReadOnly: true})
	if err != nil {
		return false
	}
	defer db.Close()
	ok := false
	db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket([]byte(bucketUsers)) != nil && tx.Bucket([]byte(bucketUserName)) != nil
		return nil
	})
	return ok
}

// Replay rebuilds scim-ingest's resources from the SCIM stream into a fresh bbolt file at path (which
// must not exist), without publishing anything. The stream is read from its first sequence to its last
// at start; a stream whose first events are gone (max_age or a purge) is refused, since the rebuilt
// file would silently miss resources.
func Replay(ctx context.Context, js jetstream.JetStream, path string) (err error) {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("replay: %s already exists; replay builds a fresh file", path)
	}
	st, err := js.Stream(ctx, events.StreamSCIM)
	if err != nil {
		return fmt.Errorf("replay: stream %s: %w", events.StreamSCIM, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("replay: stream %s: %w", events.StreamSCIM, err)
	}
	if info.State.FirstSeq > 1 && info.State.LastSeq > 0 {
		return fmt.Errorf("replay: stream %s starts at sequence %d: events 1..%d are gone (rebuilds need nats.max_age: 0)",
			events.StreamSCIM, info.State.FirstSeq, info.State.FirstSeq-1)
	}
	db, err := boltdb.Open(path, append([]string{outbox.Bucket}, allBuckets...)...)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := migrate(db); err != nil { // an empty file: records the layout version
		return err
	}
	last := info.State.LastSeq
	if last == 0 {
		return nil
	}
	// The rebuilt file's commit counter (scimlog.go) continues after the highest commit number in the
	// stream, so a standby started on it keeps commit numbers strictly increasing. Log-only writes
	// carry commit numbers too, and are not read below: the last scimlog message gives theirs.
	var maxCommit uint64
	if m, err := st.GetLastMsgForSubject(ctx, "scimlog.>"); err == nil && m.Sequence <= last {
		if evs, err := events.DecodeMessage(m.Subject, m.Data); err == nil {
			for _, e := range evs {
				maxCommit = max(maxCommit, e.Commit)
			}
		}
	} else if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("replay: last scimlog message: %w", err)
	}
	defer func() {
		if err == nil {
			err = db.Update(func(tx *bolt.Tx) error {
				b, err := tx.CreateBucketIfNotExists([]byte(commitBucket))
				if err != nil {
					return err
				}
				return b.SetSequence(max(b.Sequence(), maxCommit))
			})
		}
	}()
	// Only resource events rebuild the file; log-only messages (scimlog.>) are not read at all, and a
	// batch message's log record is skipped by type.
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverAllPolicy, FilterSubjects: []string{"scim.>"}})
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1000))
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer it.Stop()
	const batch = 5000
	var pending []events.Event
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		err := db.Update(func(tx *bolt.Tx) error {
			for _, e := range pending {
				maxCommit = max(maxCommit, e.Commit)
				if err := applyEvent(tx, e); err != nil {
					return fmt.Errorf("replay event %s (%s): %w", e.ID, e.Type, err)
				}
			}
			return nil
		})
		pending = pending[:0]
		return err
	}
	lastMsg, err := filteredLast(ctx, st, last)
	if err != nil || lastMsg == 0 {
		return err
	}
	for ctx.Err() == nil {
		m, err := it.Next(jetstream.NextMaxWait(5 * time.Second))
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		evs, err := events.DecodeMessage(m.Subject(), m.Data())
		if err != nil {
			return fmt.Errorf("replay: message %d: %w", meta.Sequence.Stream, err)
		}
		pending = append(pending, evs...)
		if len(pending) >= batch {
			if err := flush(); err != nil {
				return err
			}
		}
		if meta.Sequence.Stream >= lastMsg {
			return flush()
		}
	}
	return ctx.Err()
}

// filteredLast returns the sequence of the last scim.> message at or before last (0 if none), so the
// reader knows where to stop without waiting for messages that will not come.
func filteredLast(ctx context.Context, st jetstream.Stream, last uint64) (uint64, error) {
	m, err := st.GetLastMsgForSubject(ctx, "scim.>")
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, nil
		}
		return 0, fmt.Errorf("replay: last scim message: %w", err)
	}
	if m.Sequence > last {
		// Written after the replay started: read up to the last message at start, whatever it is.
		return last, nil
	}
	return m.Sequence, nil
}

// applyEvent applies one event of the SCIM stream as the store wrote it. Versions make it idempotent:
// an upsert older than the stored resource is skipped.
func applyEvent(tx *bolt.Tx, e events.Event) error {
	at := e.OccurredAt
	switch p := e.Data.(type) {
	case events.SCIMUserUpserted:
		old, err := getRec(tx, bucketUsers, e.IdPID, p.UserID)
		if err != nil || (old != nil && old.Version >= p.ResourceVersion) {
			return err
		}
		rec := &resourceRec{Attrs: canonical(p.Attributes), Version: p.ResourceVersion, Created: at, Modified: at}
		var oldKeys map[string][][]byte
		if old != nil {
			rec.Created = old.Created
			oldKeys = userIndexKeys(e.IdPID, p.UserID, old.Attrs)
		}
		if err := putRec(tx, bucketUsers, e.IdPID, p.UserID, rec); err != nil {
			return err
		}
		return reindex(tx, p.UserID, oldKeys, userIndexKeys(e.IdPID, p.UserID, rec.Attrs))
	case events.SCIMUserDeleted:
		old, err := getRec(tx, bucketUsers, e.IdPID, p.UserID)
		if err != nil || old == nil {
			return err
		}
		if _, err := leaveGroups(tx, e.IdPID, p.UserID, at); err != nil {
			return err
		}
		if err := tx.Bucket([]byte(bucketUsers)).Delete(key(e.IdPID, p.UserID)); err != nil {
			return err
		}
		return reindex(tx, p.UserID, userIndexKeys(e.IdPID, p.UserID, old.Attrs), nil)
	case events.SCIMGroupUpserted:
		old, err := getRec(tx, bucketGroups, e.IdPID, p.GroupID)
		if err != nil || (old != nil && old.Version >= p.ResourceVersion) {
			return err
		}
		attrs := map[string]any{"displayName": p.DisplayName}
		if p.ExternalID != "" {
			attrs["externalId"] = p.ExternalID
		}
		rec := &resourceRec{Attrs: attrs, Version: p.ResourceVersion, Created: at, Modified: at}
		var oldKeys map[string][][]byte
		if old != nil {
			rec.Created = old.Created
			oldKeys = groupIndexKeys(e.IdPID, p.GroupID, old.Attrs)
		}
		if err := putRec(tx, bucketGroups, e.IdPID, p.GroupID, rec); err != nil {
			return err
		}
		return reindex(tx, p.GroupID, oldKeys, groupIndexKeys(e.IdPID, p.GroupID, attrs))
	case events.SCIMGroupMembers:
		g, err := getRec(tx, bucketGroups, e.IdPID, p.GroupID)
		if err != nil {
			return err
		}
		if g == nil {
			return fmt.Errorf("members of unknown group %s", p.GroupID)
		}
		if p.Replace && p.Chunk == 0 {
			for _, uid := range children(tx, bucketMembers, e.IdPID, p.GroupID) {
				if err := removeMember(tx, e.IdPID, p.GroupID, uid); err != nil {
					return err
				}
			}
		}
		for _, uid := range p.Removed {
			if err := removeMember(tx, e.IdPID, p.GroupID, uid); err != nil {
				return err
			}
		}
		for _, uid := range p.Added {
			if err := addMember(tx, e.IdPID, p.GroupID, uid); err != nil {
				return err
			}
		}
		if p.ResourceVersion > g.Version {
			g.Version, g.Modified = p.ResourceVersion, at
			return putRec(tx, bucketGroups, e.IdPID, p.GroupID, g)
		}
		return nil
	case events.SCIMGroupDeleted:
		old, err := getRec(tx, bucketGroups, e.IdPID, p.GroupID)
		if err != nil || old == nil {
			return err
		}
		for _, uid := range children(tx, bucketMembers, e.IdPID, p.GroupID) {
			if err := removeMember(tx, e.IdPID, p.GroupID, uid); err != nil {
				return err
			}
		}
		if err := tx.Bucket([]byte(bucketGroups)).Delete(key(e.IdPID, p.GroupID)); err != nil {
			return err
		}
		return reindex(tx, p.GroupID, groupIndexKeys(e.IdPID, p.GroupID, old.Attrs), nil)
	}
	return nil // scimlog records and other types change no resource
}
