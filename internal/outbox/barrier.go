package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"time"

	bolt "go.etcd.io/bbolt"
)

// LastKey returns the key of the newest unpublished record in bucket (Bucket or PriorityBucket)
// whose subject match accepts, nil if none. It scans back from the newest record, so it costs the
// records appended after that one (the backlog, normally a handful).
func LastKey(tx *bolt.Tx, bucket string, match func(subject string) bool) ([]byte, error) {
	b := tx.Bucket([]byte(bucket))
	if b == nil {
		return nil, nil
	}
	c := b.Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		var r struct {
			Subject string `json:"subject"`
		}
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, err
		}
		if match(r.Subject) {
			return bytes.Clone(k), nil
		}
	}
	return nil, nil
}

// WaitPublished blocks until the relay has published every record of bucket up to key (records are
// deleted only after JetStream acknowledged them, in order), polling every poll, or ctx ends. A nil
// key returns at once. It is the outbox side of the login's read-your-writes barrier (events.BarrierSCIMSubject).
func WaitPublished(ctx context.Context, db *bolt.DB, bucket string, key []byte, poll time.Duration) error {
	if key == nil {
		return nil
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		done := false
		if err := db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte(bucket))
			if b == nil {
				done = true
				return nil
			}
			first, _ := b.Cursor().First()
			done = first == nil || bytes.Compare(first, key) > 0
			return nil
		}); err != nil {
			return err
		}
		if done {
			return nil
		}
		t.Reset(poll)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// WaitMatchingPublished blocks until every record of bucket whose subject match accepts, committed
// before the call, has been published (LastKey, then WaitPublished).
func WaitMatchingPublished(ctx context.Context, db *bolt.DB, bucket string, match func(subject string) bool, poll time.Duration) error {
	var key []byte
	if err := db.View(func(tx *bolt.Tx) error {
		var err error
		key, err = LastKey(tx, bucket, match)
		return err
	}); err != nil {
		return err
	}
	return WaitPublished(ctx, db, bucket, key, poll)
}
