package boltdb

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestOptionsNeverSkipFsync is the guard of docs/design.md §2.4 (docs/design.md §9.1, P22).
func TestOptionsNeverSkipFsync(t *testing.T) {
	t.Parallel()
	o := Options()
	if o.NoSync || o.NoGrowSync || o.NoFreelistSync || o.Timeout == 0 {
		t.Errorf("Options() = NoSync %v NoGrowSync %v NoFreelistSync %v Timeout %v; want fsync on and a lock timeout", o.NoSync, o.NoGrowSync, o.NoFreelistSync, o.Timeout)
	}
	db, err := Open(filepath.Join(t.TempDir(), "x.db"), "a")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.NoSync {
		t.Error("Open returned a DB with NoSync")
	}
}

// TestOpenLockedFailsFast: a second opener of the same file gets ErrLocked after the timeout instead
// of hanging (docs/design.md §9.1, P19).
func TestOpenLockedFailsFast(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "x.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = Open(path)
	if !errors.Is(err, ErrLocked) {
		t.Errorf("second Open = %v, want ErrLocked", err)
	}
}

// TestDumpIsCanonical: the same logical content written in different orders and transactions dumps
// identically; skipped buckets are left out; a different value changes the dump.
func TestDumpIsCanonical(t *testing.T) {
	t.Parallel()
	write := func(order []string, val string) *bolt.DB {
		db, err := Open(filepath.Join(t.TempDir(), "x.db"), "outbox")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		for _, k := range order {
			db.Update(func(tx *bolt.Tx) error {
				b, _ := tx.CreateBucketIfNotExists([]byte("users"))
				nb, _ := b.CreateBucketIfNotExists([]byte("nested"))
				nb.Put([]byte(k), []byte(val))
				tx.Bucket([]byte("outbox")).Put([]byte(k), []byte(order[0]))
				return b.Put([]byte(k), []byte(val))
			})
		}
		return db
	}
	dump := func(db *bolt.DB) string {
		var buf bytes.Buffer
		db.View(func(tx *bolt.Tx) error { return Dump(tx, &buf, "outbox") })
		return buf.String()
	}
	a, b := write([]string{"a", "b", "c"}, "1"), write([]string{"c", "a", "b"}, "1")
	if dump(a) != dump(b) || dump(a) == "" {
		t.Errorf("dumps differ for the same content:\n%s\n---\n%s", dump(a), dump(b))
	}
	if c := write([]string{"a", "b", "c"}, "2"); dump(c) == dump(a) {
		t.Error("dump did not change with a different value")
	}
	ha, _ := Hash(a, "outbox")
	hb, _ := Hash(b, "outbox")
	if ha != hb {
		t.Errorf("Hash differs: %s vs %s", ha, hb)
	}
}
