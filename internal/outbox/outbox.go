// Package outbox is the transactional outbox of docs/design.md §2.2: a service appends events inside the
// bbolt transaction that changes its state, and a Relay publishes them to JetStream with
// Nats-Msg-Id = event id, deleting each record only after JetStream acknowledged it.
//
// NATS down means records accumulate (the depth is a metric and a back-pressure signal), never that
// they are lost; a restart resumes from the records still in the file.
package outbox

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
)

// Bucket is the bbolt bucket holding unpublished records. It is excluded from canonical dumps: it is
// transport state, not projection state.
const Bucket = "outbox"

// DeadBucket keeps records JetStream refused for good (too large for the stream), so one such record
// cannot block every later one. Each is logged and counted; an operator inspects them.
const DeadBucket = "outbox_dead"

type record struct {
	ID         string          `json:"id"`
	Subject    string          `json:"subject"`
	AppendedAt time.Time       `json:"appended_at"`
	Data       json.RawMessage `json:"data"`
}

// Append encodes evs and adds them to the outbox inside tx, in order. The caller commits tx; until then
// nothing is visible to the relay, so nothing is published that did not commit.
func Append(tx *bolt.Tx, now time.Time, evs ...events.Event) error {
	b, err := tx.CreateBucketIfNotExists([]byte(Bucket))
	if err != nil {
		return fmt.Errorf("outbox bucket: %w", err)
	}
	for _, e := range evs {
		data, err := events.Marshal(e)
		if err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
		seq, err := b.NextSequence()
		if err != nil {
			return fmt.Errorf("outbox sequence: %w", err)
		}
		v, err := json.Marshal(record{ID: e.ID, Subject: e.Subject, AppendedAt: now.UTC(), Data: data})
		if err != nil {
			return err
		}
		if err := b.Put(key(seq), v); err != nil {
			return fmt.Errorf("outbox put: %w", err)
		}
	}
	return nil
}

func key(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// RelayConfig configures a Relay.
type RelayConfig struct {
	MetricsPrefix string        // e.g. "scimflow_scim_ingest"; metrics are <prefix>_outbox_*
	BatchSize     int           // records published per round; default 256
	PublishWait   time.Duration // how long to wait for JetStream acks of one round; default 10s
	MaxBackoff    time.Duration // longest pause after a failed round; default 5s
}

// Relay publishes outbox records in order. Exactly one Relay runs per bbolt file.
type Relay struct {
	db     *bolt.DB
	js     jetstream.JetStream
	cfg    RelayConfig
	log    *slog.Logger
	now    func() time.Time
	wake   chan struct{}
	depth  atomic.Int64
	oldest atomic.Int64 // unix nanos of the oldest record's append time; 0 when empty

	published prometheus.Counter
	failures  prometheus.Counter
	dead      prometheus.Counter
	latency   prometheus.Histogram

	mu      sync.Mutex // guards drained
	drained []chan struct{}
}

// NewRelay builds a relay over db and registers its metrics on reg.
func NewRelay(db *bolt.DB, js jetstream.JetStream, cfg RelayConfig, reg prometheus.Registerer, log *slog.Logger, now func() time.Time) (*Relay, error) {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 256
	}
	if cfg.PublishWait <= 0 {
		cfg.PublishWait = 10 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if now == nil {
		now = time.Now
	}
	p := cfg.MetricsPrefix + "_outbox_"
	r := &Relay{
		db: db, js: js, cfg: cfg, log: log, now: now, wake: make(chan struct{}, 1),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: p + "published_total", Help: "Outbox records published and acknowledged by JetStream."}),
		failures:  prometheus.NewCounter(prometheus.CounterOpts{Name: p + "publish_failures_total", Help: "Outbox publish rounds that failed and will be retried."}),
		dead:      prometheus.NewCounter(prometheus.CounterOpts{Name: p + "dead_letters_total", Help: "Records JetStream refused for good, moved to the outbox_dead bucket."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: p + "publish_latency_seconds", Help: "Time from appending a record to its JetStream ack.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
	}
	if err := r.refresh(); err != nil {
		return nil, err
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{r.published, r.failures, r.dead, r.latency,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: p + "depth", Help: "Records committed but not yet acknowledged by JetStream."}, func() float64 { return float64(r.Depth()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: p + "oldest_age_seconds", Help: "Age of the oldest unpublished record; 0 when the outbox is empty."}, func() float64 { return r.OldestAge().Seconds() }),
		} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register outbox metrics: %w", err)
			}
		}
	}
	return r, nil
}

// Notify refreshes Depth and wakes the relay; call it after committing a transaction that appended
// records.
func (r *Relay) Notify() {
	r.Refresh()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Depth is the number of records not yet acknowledged by JetStream, as of the last refresh or Notify.
func (r *Relay) Depth() int64 { return r.depth.Load() }

// OldestAge is how long the oldest unpublished record has waited.
func (r *Relay) OldestAge() time.Duration {
	o := r.oldest.Load()
	if o == 0 {
		return 0
	}
	return r.now().Sub(time.Unix(0, o))
}

// refresh recomputes depth and oldest age. Keys are a bbolt sequence and only a prefix is ever deleted,
// so depth is last-first+1.
func (r *Relay) refresh() error {
	return r.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(Bucket))
		if b == nil {
			r.depth.Store(0)
			r.oldest.Store(0)
			return nil
		}
		c := b.Cursor()
		fk, fv := c.First()
		if fk == nil {
			r.depth.Store(0)
			r.oldest.Store(0)
			return nil
		}
		lk, _ := c.Last()
		r.depth.Store(int64(binary.BigEndian.Uint64(lk) - binary.BigEndian.Uint64(fk) + 1))
		var rec record
		if json.Unmarshal(fv, &rec) == nil {
			r.oldest.Store(rec.AppendedAt.UnixNano())
		}
		return nil
	})
}

// Refresh updates Depth after the caller appended records; cheap (two cursor seeks).
func (r *Relay) Refresh() { _ = r.refresh() }

// WaitDrained blocks until the outbox is empty or ctx ends. Tests and graceful shutdown use it.
func (r *Relay) WaitDrained(ctx context.Context) error {
	for {
		r.Refresh()
		if r.Depth() == 0 {
			return nil
		}
		ch := make(chan struct{})
		r.mu.Lock()
		r.drained = append(r.drained, ch)
		r.mu.Unlock()
		r.Notify()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Run publishes until ctx ends. Failures are retried with exponential backoff; records are deleted
// only after their ack.
func (r *Relay) Run(ctx context.Context) error {
	backoff := 50 * time.Millisecond
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		n, err := r.round(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			r.failures.Inc()
			r.log.Warn("outbox publish failed; will retry", "err", err, "retry_in", backoff.String(), "depth", r.Depth())
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, r.cfg.MaxBackoff)
			continue
		}
		backoff = 50 * time.Millisecond
		if n > 0 {
			continue // more may be waiting
		}
		r.mu.Lock()
		for _, ch := range r.drained {
			close(ch)
		}
		r.drained = nil
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-tick.C:
		}
	}
}

type pending struct {
	key []byte
	rec record
}

// round publishes up to BatchSize records and deletes the acknowledged prefix. It returns how many
// were published.
func (r *Relay) round(ctx context.Context) (int, error) {
	var batch []pending
	err := r.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(Bucket))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.First(); k != nil && len(batch) < r.cfg.BatchSize; k, v = c.Next() {
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("outbox record %x: %w", k, err)
			}
			batch = append(batch, pending{key: append([]byte(nil), k...), rec: rec})
		}
		return nil
	})
	if err != nil || len(batch) == 0 {
		r.Refresh()
		return 0, err
	}
	futures := make([]jetstream.PubAckFuture, 0, len(batch))
	var pubErr error
	for i, p := range batch {
		msg := &nats.Msg{Subject: p.rec.Subject, Data: p.rec.Data, Header: nats.Header{}}
		f, err := r.js.PublishMsgAsync(msg, jetstream.WithMsgID(p.rec.ID))
		if err != nil {
			if i == 0 && permanent(err) {
				return 1, r.deadLetter(p, err)
			}
			pubErr = fmt.Errorf("publish %s: %w", p.rec.ID, err)
			break
		}
		futures = append(futures, f)
	}
	// The acknowledged prefix: stop at the first failure so records are deleted in order and the next
	// round republishes from there (later ones that did land are deduplicated by their Msg-Id).
	acked := 0
	timeout := time.NewTimer(r.cfg.PublishWait)
	defer timeout.Stop()
wait:
	for i, f := range futures {
		select {
		case <-f.Ok():
			if acked == i {
				acked++
			}
		case err := <-f.Err():
			if acked == i && permanent(err) {
				if derr := r.deadLetter(batch[i], err); derr != nil {
					pubErr = derr
				}
				// Records before it are deleted below; the next round goes on after it.
				break wait
			}
			if pubErr == nil {
				pubErr = fmt.Errorf("publish %s: %w", batch[i].rec.ID, err)
			}
			break wait
		case <-timeout.C:
			if pubErr == nil {
				pubErr = fmt.Errorf("publish: no ack within %s", r.cfg.PublishWait)
			}
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	if acked > 0 {
		now := r.now()
		err := r.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte(Bucket))
			for _, p := range batch[:acked] {
				if err := b.Delete(p.key); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, errors.Join(pubErr, fmt.Errorf("outbox delete: %w", err))
		}
		r.published.Add(float64(acked))
		for _, p := range batch[:acked] {
			r.latency.Observe(now.Sub(p.rec.AppendedAt).Seconds())
		}
	}
	r.Refresh()
	return acked, pubErr
}

// permanent reports whether JetStream will refuse the record whatever the retry: it is larger than
// the server or the stream accepts.
func permanent(err error) bool {
	if errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
		return true
	}
	return false
}

// deadLetter moves one record from the outbox to DeadBucket.
func (r *Relay) deadLetter(p pending, cause error) error {
	err := r.db.Update(func(tx *bolt.Tx) error {
		d, err := tx.CreateBucketIfNotExists([]byte(DeadBucket))
		if err != nil {
			return err
		}
		b := tx.Bucket([]byte(Bucket))
		if err := d.Put(p.key, b.Get(p.key)); err != nil {
			return err
		}
		return b.Delete(p.key)
	})
	if err != nil {
		return fmt.Errorf("outbox dead letter %s: %w", p.rec.ID, err)
	}
	r.dead.Inc()
	r.log.Error("outbox record refused by JetStream for good; moved to outbox_dead", "event_id", p.rec.ID, "subject", p.rec.Subject, "err", cause)
	return nil
}
