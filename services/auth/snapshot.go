package auth

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/consumer"
)

// Snapshots of the projection (docs/operations.md, "Snapshots"). A replica that starts on an empty
// data directory would otherwise replay the IDENTITY, IDENTITY_PRIORITY and AUTH streams from their
// first event: slow with a million people, and impossible once the streams keep a max_age (the
// consumer halts: the stream was truncated under its cursor). So replicas periodically publish their
// projection — one consistent bbolt read transaction, consumer cursors included — to the
// auth_snapshots object store, and a fresh replica restores the newest snapshot that verifies, then
// consumes the streams from the snapshot's cursors.
//
// What a snapshot holds is an allowlist (snapshotBuckets): the projection and the consumers' cursors
// and remembered event ids, which are kept under stable state keys (consumerStateKeys), not under the
// per-replica durable names, so they mean the same in the restoring replica. The replica's identity
// and lease token (bucketReplica), its outbox and its poison records are local and never leave it.

// BucketSnapshots is the JetStream object store that holds auth's projection snapshots.
const BucketSnapshots = "auth_snapshots"

// snapshotFormat is the version of a snapshot's content: a gzip-compressed bbolt file holding
// snapshotBuckets with the cursors under consumerStateKeys. A replica refuses any other version, so a
// change to the projection's layout that an older snapshot would not satisfy bumps it.
const snapshotFormat = 1

// snapshotBuckets are the buckets a snapshot carries: the projection and the consumers' state.
var snapshotBuckets = []string{bucketUsers, bucketEmails, bucketLoggedOut, bucketLoggedOutExp, bucketIdPs, bucketCommitMarks,
	consumer.CursorBucket, consumer.SeenBucket}

// State keys of auth's consumers in the bbolt file (consumer.Config.StateKey), by stream.
var consumerStateKeys = map[string]string{
	events.StreamIdentity:         "auth-identity",
	events.StreamAuth:             "auth-logout",
	events.StreamIdentityPriority: "auth-priority",
}

// Snapshot modes (Config.Snapshots).
const (
	SnapshotsOn          = "on"           // publish and restore
	SnapshotsRestoreOnly = "restore_only" // restore at a fresh start, never publish
	SnapshotsPublishOnly = "publish_only" // publish, but a fresh replica replays the streams
	SnapshotsOff         = "off"
)

func (c Config) snapshotPublish() bool {
	return c.Snapshots == SnapshotsOn || c.Snapshots == SnapshotsPublishOnly
}

func (c Config) snapshotRestore() bool {
	return c.Snapshots == SnapshotsOn || c.Snapshots == SnapshotsRestoreOnly
}

// Metadata keys of a snapshot object.
const (
	metaFormat  = "format"
	metaSHA256  = "sha256" // hex SHA-256 of the object's bytes (the compressed file)
	metaCreated = "created_at"
	metaReplica = "replica_id"
	metaSeq     = "seq." // + stream name: the last sequence of that stream the snapshot covers
)

// snapshotInfo is a snapshot object as read from the bucket's metadata.
type snapshotInfo struct {
	name    string
	format  int
	sha256  string
	created time.Time
	replica string
	seqs    map[string]uint64
	size    uint64
}

func parseSnapshotInfo(o *jetstream.ObjectInfo) snapshotInfo {
	si := snapshotInfo{name: o.Name, size: o.Size, seqs: map[string]uint64{}}
	md := o.Metadata
	si.format, _ = strconv.Atoi(md[metaFormat])
	si.sha256 = md[metaSHA256]
	si.created, _ = time.Parse(time.RFC3339Nano, md[metaCreated])
	si.replica = md[metaReplica]
	for stream := range consumerStateKeys {
		if v, err := strconv.ParseUint(md[metaSeq+stream], 10, 64); err == nil {
			si.seqs[stream] = v
		}
	}
	return si
}

// newestFirst orders snapshots by the IDENTITY sequence they cover, then by creation time.
func newestFirst(a, b snapshotInfo) int {
	if c := cmp.Compare(b.seqs[events.StreamIdentity], a.seqs[events.StreamIdentity]); c != 0 {
		return c
	}
	return b.created.Compare(a.created)
}

// snapshotMetrics count snapshot work; they are registered before the restore, which runs before the
// server exists.
type snapshotMetrics struct {
	published *prometheus.CounterVec // result: ok, error
	restores  *prometheus.CounterVec // result: restored, replay, refused_checksum, refused_version, refused_sequence, refused_content, error
	lastSeq   prometheus.Gauge
}

func newSnapshotMetrics(reg prometheus.Registerer) (*snapshotMetrics, error) {
	m := &snapshotMetrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scimflow_auth_snapshots_published_total",
			Help: "Projection snapshots this replica published to the auth_snapshots bucket, by result (ok, error)."}, []string{"result"}),
		restores: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scimflow_auth_snapshot_restores_total",
			Help: "Snapshots considered by a fresh replica at start, by result: restored, replay (no usable snapshot: replayed the streams), refused_checksum, refused_version, refused_sequence, refused_content, error."},
			[]string{"result"}),
		lastSeq: prometheus.NewGauge(prometheus.GaugeOpts{Name: "scimflow_auth_snapshot_last_published_identity_sequence",
			Help: "IDENTITY sequence covered by the last snapshot this replica published (0: none yet)."}),
	}
	for _, r := range []string{"ok", "error"} {
		m.published.WithLabelValues(r)
	}
	for _, r := range []string{"restored", "replay", "refused_checksum", "refused_version", "refused_sequence", "refused_content", "error"} {
		m.restores.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.published, m.restores, m.lastSeq} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register snapshot metrics: %w", err)
		}
	}
	return m, nil
}

// snapshotStore opens (creating it if need be) the object store.
func snapshotStore(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.ObjectStore, error) {
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: BucketSnapshots,
		Description: "scimflow auth: projection snapshots for fresh replicas", Storage: jetstream.FileStorage, Replicas: max(replicas, 1)})
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", BucketSnapshots, err)
	}
	return obs, nil
}

// listSnapshots returns the bucket's snapshots, newest first.
func listSnapshots(ctx context.Context, obs jetstream.ObjectStore) ([]snapshotInfo, error) {
	objs, err := obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]snapshotInfo, 0, len(objs))
	for _, o := range objs {
		if !o.Deleted {
			out = append(out, parseSnapshotInfo(o))
		}
	}
	slices.SortFunc(out, newestFirst)
	return out, nil
}

// copyChunk bounds a write transaction of copyProjection, so copying a large projection does not hold
// the whole file's dirty pages in memory.
const copyChunk = 32 << 20

// copyProjection writes snapshotBuckets as seen by tx into a new bbolt file at path, keys in order
// and pages packed full (the file is written once and only read afterwards). The freelist is synced:
// a file without one makes bbolt read every page when it opens it, which at a million people costs
// the restoring replica seconds and its whole file in memory.
func copyProjection(tx *bolt.Tx, path string) error {
	dst, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		return err
	}
	w := &bucketWriter{db: dst}
	err = func() error {
		for _, name := range snapshotBuckets {
			b := tx.Bucket([]byte(name))
			if b == nil {
				continue
			}
			if err := w.copy(b, [][]byte{[]byte(name)}); err != nil {
				return fmt.Errorf("bucket %s: %w", name, err)
			}
		}
		return w.commit()
	}()
	if err != nil {
		if w.tx != nil {
			_ = w.tx.Rollback()
		}
		dst.Close()
		return err
	}
	if err := dst.Sync(); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

// bucketWriter copies buckets into db in transactions of about copyChunk bytes.
type bucketWriter struct {
	db   *bolt.DB
	tx   *bolt.Tx
	n    int
	path [][]byte
	cur  *bolt.Bucket
}

func (w *bucketWriter) commit() error {
	if w.tx == nil {
		return nil
	}
	err := w.tx.Commit()
	w.tx, w.cur, w.path, w.n = nil, nil, nil, 0
	return err
}

// bucket returns the destination bucket at path in the current transaction, creating it.
func (w *bucketWriter) bucket(path [][]byte) (*bolt.Bucket, error) {
	if w.tx == nil {
		tx, err := w.db.Begin(true)
		if err != nil {
			return nil, err
		}
		w.tx = tx
	}
	if w.cur != nil && slices.EqualFunc(w.path, path, bytes.Equal) {
		return w.cur, nil
	}
	b, err := w.tx.CreateBucketIfNotExists(path[0])
	if err != nil {
		return nil, err
	}
	b.FillPercent = 1
	for _, p := range path[1:] {
		if b, err = b.CreateBucketIfNotExists(p); err != nil {
			return nil, err
		}
		b.FillPercent = 1
	}
	w.cur, w.path = b, slices.Clone(path)
	return b, nil
}

func (w *bucketWriter) copy(src *bolt.Bucket, path [][]byte) error {
	if _, err := w.bucket(path); err != nil { // an empty bucket is copied too
		return err
	}
	c := src.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil { // a nested bucket
			if err := w.copy(src.Bucket(k), append(slices.Clone(path), bytes.Clone(k))); err != nil {
				return err
			}
			continue
		}
		if w.n >= copyChunk {
			if err := w.commit(); err != nil {
				return err
			}
		}
		b, err := w.bucket(path)
		if err != nil {
			return err
		}
		if err := b.Put(k, v); err != nil { // bbolt copies k and v into its pages
			return err
		}
		w.n += len(k) + len(v)
	}
	return nil
}

// publishSnapshot writes the projection as one snapshot object and prunes the bucket to the newest
// keep snapshots. It returns the snapshot's metadata.
func (s *server) publishSnapshot(ctx context.Context) (snapshotInfo, error) {
	if s.snapObs == nil {
		obs, err := snapshotStore(ctx, s.d.JS, s.d.Streams.Replicas)
		if err != nil {
			return snapshotInfo{}, err
		}
		s.snapObs = obs
	}
	si, err := s.writeSnapshot(ctx)
	if err != nil {
		s.snapMetrics.published.WithLabelValues("error").Inc()
		return si, err
	}
	s.snapMetrics.published.WithLabelValues("ok").Inc()
	s.snapMetrics.lastSeq.Set(float64(si.seqs[events.StreamIdentity]))
	s.log.Info("projection snapshot published", "snapshot", si.name, "bytes", si.size, "identity_seq", si.seqs[events.StreamIdentity],
		"auth_seq", si.seqs[events.StreamAuth], "priority_seq", si.seqs[events.StreamIdentityPriority])
	if err := s.pruneSnapshots(ctx, si); err != nil {
		s.log.Warn("prune snapshots", "err", err)
	}
	return si, nil
}

func (s *server) writeSnapshot(ctx context.Context) (snapshotInfo, error) {
	si := snapshotInfo{format: snapshotFormat, created: time.Now().UTC(), replica: s.cfg.ReplicaID, seqs: map[string]uint64{}}
	dir := s.cfg.DataDir
	if dir == "" {
		dir = os.TempDir()
	}
	raw, err := os.CreateTemp(dir, "snapshot-*.db")
	if err != nil {
		return si, err
	}
	raw.Close()
	defer os.Remove(raw.Name())
	// One read transaction: the cursors and the state they cover are the same instant.
	if err := s.db.View(func(tx *bolt.Tx) error {
		for stream, key := range consumerStateKeys {
			si.seqs[stream] = consumer.ReadCursor(tx, key)
		}
		return copyProjection(tx, raw.Name())
	}); err != nil {
		return si, fmt.Errorf("copy projection: %w", err)
	}
	gz, err := os.CreateTemp(dir, "snapshot-*.db.gz")
	if err != nil {
		return si, err
	}
	defer os.Remove(gz.Name())
	defer gz.Close()
	in, err := os.Open(raw.Name())
	if err != nil {
		return si, err
	}
	h := sha256.New()
	zw, _ := gzip.NewWriterLevel(io.MultiWriter(gz, h), gzip.BestSpeed)
	_, err = io.Copy(zw, in)
	in.Close()
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		return si, fmt.Errorf("compress snapshot: %w", err)
	}
	si.sha256 = hex.EncodeToString(h.Sum(nil))
	if _, err := gz.Seek(0, io.SeekStart); err != nil {
		return si, err
	}
	si.name = fmt.Sprintf("auth-%020d-%s-%s", si.seqs[events.StreamIdentity], si.created.Format("20060102T150405.000000000Z"), si.replica)
	md := map[string]string{metaFormat: strconv.Itoa(si.format), metaSHA256: si.sha256,
		metaCreated: si.created.Format(time.RFC3339Nano), metaReplica: si.replica}
	for stream, seq := range si.seqs {
		md[metaSeq+stream] = strconv.FormatUint(seq, 10)
	}
	info, err := s.snapObs.Put(ctx, jetstream.ObjectMeta{Name: si.name, Description: "scimflow auth projection snapshot", Metadata: md}, gz)
	if err != nil {
		return si, fmt.Errorf("put snapshot: %w", err)
	}
	si.size = info.Size
	return si, nil
}

// pruneSnapshots deletes all but the newest SnapshotKeep snapshots.
func (s *server) pruneSnapshots(ctx context.Context, published snapshotInfo) error {
	list, err := listSnapshots(ctx, s.snapObs)
	if err != nil {
		return err
	}
	// The listing reads the bucket's metadata stream through a consumer and may not show the
	// snapshot just put yet; counted or not, it is one of the newest to keep.
	if !slices.ContainsFunc(list, func(o snapshotInfo) bool { return o.name == published.name }) {
		list = append(list, published)
		slices.SortFunc(list, newestFirst)
	}
	var errs []error
	for _, old := range list[min(len(list), s.cfg.SnapshotKeep):] {
		if err := s.snapObs.Delete(ctx, old.name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			errs = append(errs, fmt.Errorf("delete %s: %w", old.name, err))
		}
	}
	return errors.Join(errs...)
}

// runSnapshots publishes a snapshot whenever the newest one in the bucket (whichever replica wrote
// it) is older than snapshot_interval, or snapshot_every_events IDENTITY events behind this replica,
// and this replica has applied something the newest does not cover. Several replicas may publish at
// about the same time; that costs a duplicate, never correctness, and retention prunes it.
func (s *server) runSnapshots(ctx context.Context) error {
	interval := s.cfg.SnapshotInterval.D()
	t := time.NewTicker(min(max(interval/2, 10*time.Millisecond), 30*time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if s.staleness() != nil {
			continue // not caught up (starting, or NATS unreachable): a snapshot now would be behind
		}
		due, err := s.snapshotDue(ctx, time.Now())
		if err != nil {
			s.log.Warn("snapshot check", "err", err)
			continue
		}
		if !due {
			continue
		}
		if _, err := s.publishSnapshot(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("snapshot publish failed; retrying at the next check", "err", err)
		}
	}
}

// snapshotDue reports whether this replica should publish a snapshot now.
func (s *server) snapshotDue(ctx context.Context, now time.Time) (bool, error) {
	cur := map[string]uint64{
		events.StreamIdentity:         s.identityRn.Cursor(),
		events.StreamAuth:             s.authRn.Cursor(),
		events.StreamIdentityPriority: s.prioRn.Cursor(),
	}
	list, err := listSnapshots(ctx, s.snapObs)
	if err != nil {
		return false, err
	}
	var newest *snapshotInfo
	for i := range list {
		if list[i].format == snapshotFormat {
			newest = &list[i]
			break
		}
	}
	if newest == nil {
		return cur[events.StreamIdentity]+cur[events.StreamAuth]+cur[events.StreamIdentityPriority] > 0, nil
	}
	ahead := false
	for stream, c := range cur {
		if c > newest.seqs[stream] {
			ahead = true
		}
	}
	if !ahead {
		return false, nil
	}
	if n := s.cfg.SnapshotEveryEvents; n > 0 && cur[events.StreamIdentity] >= newest.seqs[events.StreamIdentity]+uint64(n) {
		return true, nil
	}
	return now.Sub(newest.created) >= s.cfg.SnapshotInterval.D(), nil
}

// errRefused marks a snapshot that failed verification; its reason is the metric's result label.
type errRefused struct {
	reason string
	err    error
}

func (e errRefused) Error() string { return e.reason + ": " + e.err.Error() }

// restoreSnapshot gives a fresh replica (no file at dbPath yet) the newest snapshot that verifies:
// the format is this version's, every covered sequence is still followed by its tail in the stream
// (at least the stream's first sequence − 1) and no later than the stream's last, the object's
// SHA-256 is the recorded one, and the restored file's cursors are the recorded sequences. A refused
// snapshot is logged and counted, and the next older one is tried; with none left the replica
// replays the streams from their start. It returns the name of the restored snapshot, or "".
func restoreSnapshot(ctx context.Context, js jetstream.JetStream, dbPath string, m *snapshotMetrics, log *slog.Logger) (string, error) {
	obs, err := js.ObjectStore(ctx, BucketSnapshots)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		log.Info("no snapshot bucket; replaying the streams from their start", "bucket", BucketSnapshots)
		m.restores.WithLabelValues("replay").Inc()
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("object store %s: %w", BucketSnapshots, err)
	}
	list, err := listSnapshots(ctx, obs)
	if err != nil {
		return "", fmt.Errorf("list snapshots: %w", err)
	}
	states := map[string]jetstream.StreamState{}
	for stream := range consumerStateKeys {
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return "", fmt.Errorf("stream %s: %w", stream, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			return "", fmt.Errorf("stream %s info: %w", stream, err)
		}
		states[stream] = info.State
	}
	for _, si := range list {
		start := time.Now()
		err := restoreOne(ctx, obs, si, states, dbPath)
		var ref errRefused
		switch {
		case err == nil:
			m.restores.WithLabelValues("restored").Inc()
			log.Info("projection restored from snapshot", "snapshot", si.name, "bytes", si.size, "created_at", si.created,
				"from_replica", si.replica, "identity_seq", si.seqs[events.StreamIdentity], "auth_seq", si.seqs[events.StreamAuth],
				"priority_seq", si.seqs[events.StreamIdentityPriority], "took", time.Since(start).Round(time.Millisecond).String())
			return si.name, nil
		case errors.As(err, &ref):
			m.restores.WithLabelValues("refused_" + ref.reason).Inc()
			log.Error("snapshot refused; trying an older one", "snapshot", si.name, "reason", ref.reason, "err", ref.err)
		case ctx.Err() != nil:
			return "", ctx.Err()
		default:
			m.restores.WithLabelValues("error").Inc()
			log.Error("snapshot could not be restored; trying an older one", "snapshot", si.name, "err", err)
		}
	}
	m.restores.WithLabelValues("replay").Inc()
	log.Info("no usable snapshot; replaying the streams from their start", "snapshots", len(list))
	return "", nil
}

// restoreOne verifies si and, if it holds, writes the restored file at dbPath.
func restoreOne(ctx context.Context, obs jetstream.ObjectStore, si snapshotInfo, states map[string]jetstream.StreamState, dbPath string) error {
	if si.format != snapshotFormat {
		return errRefused{"version", fmt.Errorf("format %d, this replica reads %d", si.format, snapshotFormat)}
	}
	for stream := range consumerStateKeys {
		seq, ok := si.seqs[stream]
		st := states[stream]
		switch {
		case !ok:
			return errRefused{"sequence", fmt.Errorf("no sequence recorded for stream %s", stream)}
		case seq > st.LastSeq:
			return errRefused{"sequence", fmt.Errorf("stream %s: snapshot covers sequence %d, the stream ends at %d (recreated or purged?)", stream, seq, st.LastSeq)}
		case st.Msgs > 0 && seq+1 < st.FirstSeq, st.Msgs == 0 && seq < st.LastSeq:
			return errRefused{"sequence", fmt.Errorf("stream %s: snapshot covers up to %d but the stream starts at %d (the tail after it is gone)", stream, seq, st.FirstSeq)}
		}
	}
	dir := filepath.Dir(dbPath)
	gz, err := os.CreateTemp(dir, "restore-*.db.gz")
	if err != nil {
		return err
	}
	defer os.Remove(gz.Name())
	defer gz.Close()
	res, err := obs.Get(ctx, si.name)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(gz, h), res)
	res.Close()
	if err != nil {
		// nats.go checks the object store's own digest at the end of the object.
		if errors.Is(err, jetstream.ErrDigestMismatch) {
			return errRefused{"checksum", err}
		}
		return fmt.Errorf("download: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); si.sha256 == "" || got != si.sha256 {
		return errRefused{"checksum", fmt.Errorf("sha256 %s, recorded %q", got, si.sha256)}
	}
	if _, err := gz.Seek(0, io.SeekStart); err != nil {
		return err
	}
	tmp := dbPath + ".restore"
	defer os.Remove(tmp)
	if err := gunzipTo(gz, tmp); err != nil {
		return errRefused{"content", err}
	}
	if err := checkRestored(tmp, si); err != nil {
		return errRefused{"content", err}
	}
	return os.Rename(tmp, dbPath)
}

func gunzipTo(r io.Reader, path string) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, zr); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// checkRestored opens the restored file and compares its cursors with the recorded sequences.
func checkRestored(path string, si snapshotInfo) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("open restored file: %w", err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		for stream, key := range consumerStateKeys {
			if got := consumer.ReadCursor(tx, key); got != si.seqs[stream] {
				return fmt.Errorf("stream %s: the file's cursor is %d, the metadata says %d", stream, got, si.seqs[stream])
			}
		}
		for _, b := range []string{bucketUsers, bucketEmails, bucketIdPs} {
			if tx.Bucket([]byte(b)) == nil {
				return fmt.Errorf("bucket %s missing", b)
			}
		}
		return nil
	})
}

// restoreWithRetry runs restoreSnapshot, retrying while NATS cannot answer: a replica that cannot
// reach NATS could not become ready anyway, and giving up would mean a full replay (or, with
// max_age, a halted consumer). Streams that do not exist yet mean a new deployment: nothing to
// restore.
func restoreWithRetry(ctx context.Context, d Deps, dbPath string, m *snapshotMetrics) (string, error) {
	if d.JS == nil {
		return "", nil
	}
	log := d.Log()
	for {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		name, err := restoreSnapshot(tctx, d.JS, dbPath, m, log)
		cancel()
		switch {
		case err == nil:
			return name, nil
		case errors.Is(err, jetstream.ErrStreamNotFound):
			log.Info("streams not set up yet; nothing to restore", "err", err)
			m.restores.WithLabelValues("replay").Inc()
			return "", nil
		case ctx.Err() != nil:
			return "", ctx.Err()
		}
		m.restores.WithLabelValues("error").Inc()
		log.Warn("snapshot restore failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// removeSnapshotLeftovers deletes the temporary files of a snapshot or restore that a crash
// interrupted (each can be as large as the projection).
func removeSnapshotLeftovers(dataDir string, log *slog.Logger) {
	for _, pattern := range []string{"snapshot-*.db", "snapshot-*.db.gz", "restore-*.db.gz", Name + ".db.restore"} {
		files, _ := filepath.Glob(filepath.Join(dataDir, pattern))
		for _, f := range files {
			if err := os.Remove(f); err == nil {
				log.Info("removed an interrupted snapshot's temporary file", "file", f)
			}
		}
	}
}
