// Package boltdb opens a service's bbolt file with the project's safe options and dumps it canonically.
//
// Every service owns exactly one bbolt file. Opening goes through Open so that no production path can
// set NoSync (docs/design.md §2.4) and so that a second process on the same file fails fast instead of
// hanging on the file lock.
package boltdb

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// LockTimeout is how long Open waits for another process to release the file lock.
const LockTimeout = 2 * time.Second

// Options returns the production bbolt options: fsync on every commit (NoSync, NoGrowSync and
// NoFreelistSync all false) and a lock timeout.
func Options() *bolt.Options {
	return &bolt.Options{Timeout: LockTimeout, NoGrowSync: false, NoFreelistSync: false, FreelistType: bolt.FreelistMapType}
}

// ErrLocked is returned when another process holds the file.
var ErrLocked = errors.New("database is in use by another process")

// Open opens (creating if needed) the bbolt file at path with Options and creates the given buckets.
func Open(path string, buckets ...string) (*bolt.DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	db, err := bolt.Open(path, 0o600, Options())
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open %s: %w (is another scimflow running on this data dir?)", path, ErrLocked)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if db.NoSync {
		db.Close()
		return nil, fmt.Errorf("open %s: NoSync is set; refusing to run without fsync", path)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}

// Dump writes a canonical text form of every bucket (nested buckets included) except those named in
// skip: one line per key, sorted, values hex-encoded. Two files with the same logical content give
// byte-identical dumps, which is the oracle of the replay and crash tests.
func Dump(tx *bolt.Tx, w io.Writer, skip ...string) error {
	var names [][]byte
	tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		if !slices.Contains(skip, string(name)) {
			names = append(names, slices.Clone(name))
		}
		return nil
	})
	// bbolt iterates in byte order already; sorting keeps the contract explicit.
	slices.SortFunc(names, func(a, b []byte) int { return compareBytes(a, b) })
	for _, n := range names {
		if err := dumpBucket(tx.Bucket(n), hex.EncodeToString(n), w); err != nil {
			return err
		}
	}
	return nil
}

func dumpBucket(b *bolt.Bucket, path string, w io.Writer) error {
	return b.ForEach(func(k, v []byte) error {
		p := path + "/" + hex.EncodeToString(k)
		if v == nil {
			if nb := b.Bucket(k); nb != nil {
				fmt.Fprintf(w, "%s/\n", p)
				return dumpBucket(nb, p, w)
			}
		}
		_, err := fmt.Fprintf(w, "%s=%s\n", p, hex.EncodeToString(v))
		return err
	})
}

// Hash returns the SHA-256 of Dump, hex-encoded.
func Hash(db *bolt.DB, skip ...string) (string, error) {
	h := sha256.New()
	err := db.View(func(tx *bolt.Tx) error { return Dump(tx, h, skip...) })
	return hex.EncodeToString(h.Sum(nil)), err
}

func compareBytes(a, b []byte) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return len(a) - len(b)
}
