package scimingest

import (
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/internal/boltdb"
)

// TestCommitterFailureIsolation: a failing write in a shared commit rolls back nothing of the
// others; it runs again alone afterwards, on the state they left, and reports its own outcome.
func TestCommitterFailureIsolation(t *testing.T) {
	t.Parallel()
	db, err := boltdb.Open(filepath.Join(t.TempDir(), "c.db"), "b")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	commits := 0
	c := newCommitter(db, 8, func(int) { commits++ })
	put := func(k string) func(*bolt.Tx) error {
		return func(tx *bolt.Tx) error { return tx.Bucket([]byte("b")).Put([]byte(k), []byte("v")) }
	}
	runs := 0
	errBoom := errors.New("boom")
	flaky := func(tx *bolt.Tx) error {
		runs++
		if err := tx.Bucket([]byte("b")).Put([]byte("flaky"), []byte("v")); err != nil {
			return err
		}
		if tx.Bucket([]byte("b")).Get([]byte("third")) == nil {
			return errBoom // fails inside the batch (third not yet written), succeeds alone afterwards
		}
		return nil
	}
	reqs := []*commitReq{
		{fn: put("first"), done: make(chan error, 1)},
		{fn: flaky, done: make(chan error, 1)},
		{fn: put("third"), done: make(chan error, 1)},
	}
	c.commit(reqs)
	for i, r := range reqs {
		if err := <-r.done; err != nil {
			t.Errorf("request %d = %v, want nil", i, err)
		}
	}
	if runs != 2 || commits != 2 {
		t.Errorf("flaky ran %d times over %d commits, want 2 and 2", runs, commits)
	}
	db.View(func(tx *bolt.Tx) error {
		for _, k := range []string{"first", "flaky", "third"} {
			if tx.Bucket([]byte("b")).Get([]byte(k)) == nil {
				t.Errorf("key %s not committed", k)
			}
		}
		return nil
	})
	// A write that fails alone reports its error and commits nothing.
	r := &commitReq{fn: func(tx *bolt.Tx) error { tx.Bucket([]byte("b")).Put([]byte("x"), nil); return errBoom }, done: make(chan error, 1)}
	c.commit([]*commitReq{r})
	if err := <-r.done; !errors.Is(err, errBoom) {
		t.Errorf("failing write = %v, want %v", err, errBoom)
	}
	db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("b")).Get([]byte("x")) != nil {
			t.Error("failed write committed")
		}
		return nil
	})
}
