// Package outbox is the transactional outbox of docs/design.md §2.2: a service appends events inside the
// bbolt transaction that changes its state, and a Relay publishes them to JetStream with
// Nats-Msg-Id = event id, deleting each record only after JetStream acknowledged it.
//
// The stream holds a lane's records in the order they were committed: every projection applies its
// streams in stream order, and a rebuild must reproduce what live apply did. Publishing is
// asynchronous, so a burst can reach the server out of order (a message dropped or retried while
// the new stream leader stores the ones after it); each message therefore carries the stream
// sequence it must follow (Nats-Expected-Last-Sequence) and the server refuses it anywhere else.
// See Relay.
//
// NATS down means records accumulate (the depth is a metric and a back-pressure signal), never that
// they are lost; a restart resumes from the records still in the file.
package outbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
)

// Bucket is the bbolt bucket holding unpublished records of the ordered lane. It and PriorityBucket
// are excluded from canonical dumps: they are transport state, not projection state.
const Bucket = "outbox"

// PriorityBucket holds unpublished records of the priority lane.
const PriorityBucket = "outbox_priority"

// DeadBucket keeps records JetStream refused for good (too large for the stream), so one such record
// cannot block every later one. Each is logged and counted; an operator inspects them.
const DeadBucket = "outbox_dead"

// Batch limits. They are part of the dedupe rule (a republished message must be split exactly as
// before), so they are constants, not configuration.
const (
	maxBatchEvents = 256
	// maxBatchBytes keeps a large change (a 1,000-member chunk of a group change is about 40 KB) in
	// messages of its own, so a consumer can spread it over transactions (consumer.Config.MaxTxBytes).
	maxBatchBytes = 64 << 10
)

type record struct {
	ID         string          `json:"id"`
	Subject    string          `json:"subject"`
	AppendedAt time.Time       `json:"appended_at"`
	Tx         int             `json:"tx,omitempty"` // bbolt transaction id: records of one transaction share a message
	Data       json.RawMessage `json:"data"`
}

// Append encodes evs and adds them to the ordered lane inside tx, in order. The caller commits tx;
// until then nothing is visible to the relay, so nothing is published that did not commit.
func Append(tx *bolt.Tx, now time.Time, evs ...events.Event) error {
	return appendTo(tx, Bucket, "", now, evs)
}

// AppendPriority adds evs to the priority lane inside tx: they are published on
// events.PriorityPrefix + their subject, independently of the ordered lane's backlog.
func AppendPriority(tx *bolt.Tx, now time.Time, evs ...events.Event) error {
	return appendTo(tx, PriorityBucket, events.PriorityPrefix, now, evs)
}

func appendTo(tx *bolt.Tx, bucket, prefix string, now time.Time, evs []events.Event) error {
	b, err := tx.CreateBucketIfNotExists([]byte(bucket))
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
		v, err := json.Marshal(record{ID: e.ID, Subject: prefix + e.Subject, AppendedAt: now.UTC(), Tx: tx.ID(), Data: data})
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
	BatchSize     int           // records read per round (a transaction's records are never split across rounds); default 1024
	InFlight      int           // rounds published before the oldest is acknowledged; default 3
	PublishWait   time.Duration // how long to wait for JetStream acks of one round; default 10s
	MaxBackoff    time.Duration // longest pause after a failed round; default 5s
	// SharedStreams says other publishers write the same streams (the auth replicas share AUTH).
	// Messages then carry no expected sequence: every message of another writer would make the
	// relay's next one refused and republished. Without it, a message the server dropped or
	// delayed can be stored after later ones of this relay (see Relay).
	SharedStreams bool
}

// lane is one bucket and its relay loop.
type lane struct {
	bucket string
	wake   chan struct{}
	depth  atomic.Int64
	oldest atomic.Int64 // unix nanos of the oldest record's append time; 0 when empty

	mu      sync.Mutex // guards drained
	drained []chan struct{}
}

// Relay publishes outbox records in order, per lane. Exactly one Relay runs per bbolt file.
//
// Order. Messages are published asynchronously, several rounds ahead of their acks. While a
// stream has no leader (its leader SIGKILLed or partitioned away) every publish gets "no response
// from stream", and nats.go retries each one on its own 250 ms timer; a new leader that takes over
// between two retry waves stores the later wave first, with no error at all, and a message that
// fails for good can be followed by later ones that land. Retrying from the first unacknowledged
// record then stores it after its successors, and a projection applies them out of commit order —
// identity-store applied a user's deletion before the user's creation, recorded the SCIM user as
// deleted and skipped the creation as stale, so the registry never held the user
// (docs/reliability.md). So, unless SharedStreams, every message carries
// Nats-Expected-Last-Sequence: at the start of each attempt (after a start, a failure or a refusal)
// the relay reads the stream's last sequence L, and the attempt's n-th message must follow L+n-1.
// The server stores a message only at its place, so nothing overtakes a message that is missing; a
// refused message restarts the lane from the first unacknowledged record at once
// (…_outbox_order_refusals_total), once every message still in flight has been answered (or
// PublishWait passed): a message of the abandoned attempt landing after the next attempt read the
// last sequence could otherwise take a place that attempt expects for another message, which a
// cluster run showed (a 75-commits-old message stored last). A message already stored (acknowledged but not yet deleted when
// the relay stopped) is acknowledged as a duplicate without taking a place, so the next one is
// refused once and the next attempt starts after it.
//
// Not Nats-Expected-Last-Msg-Id: in a cluster (nats-server 2.15) every replica checks it when it
// applies the message, against its own last message id, which a replica that caught up after a
// restart does not update; such a replica refuses what the leader stored and never becomes current
// again. The expected sequence is checked once, by the stream leader, before it proposes the
// message.
type Relay struct {
	db      *bolt.DB
	js      jetstream.JetStream
	cfg     RelayConfig
	log     *slog.Logger
	now     func() time.Time
	ordered *lane
	prio    *lane

	published prometheus.Counter
	messages  prometheus.Counter
	failures  prometheus.Counter
	dead      prometheus.Counter
	reorders  prometheus.Counter
	latency   prometheus.Histogram
}

// NewRelay builds a relay over db and registers its metrics on reg.
func NewRelay(db *bolt.DB, js jetstream.JetStream, cfg RelayConfig, reg prometheus.Registerer, log *slog.Logger, now func() time.Time) (*Relay, error) {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1024
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = 3
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
	if log == nil {
		log = slog.Default()
	}
	p := cfg.MetricsPrefix + "_outbox_"
	r := &Relay{
		db: db, js: js, cfg: cfg, log: log, now: now,
		ordered:   &lane{bucket: Bucket, wake: make(chan struct{}, 1)},
		prio:      &lane{bucket: PriorityBucket, wake: make(chan struct{}, 1)},
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: p + "published_total", Help: "Outbox records (events) published and acknowledged by JetStream, both lanes."}),
		messages:  prometheus.NewCounter(prometheus.CounterOpts{Name: p + "messages_total", Help: "JetStream messages acknowledged (one per event or per batch of events), both lanes."}),
		failures:  prometheus.NewCounter(prometheus.CounterOpts{Name: p + "publish_failures_total", Help: "Outbox publish rounds that failed and will be retried."}),
		dead:      prometheus.NewCounter(prometheus.CounterOpts{Name: p + "dead_letters_total", Help: "Records JetStream refused for good, moved to the outbox_dead bucket."}),
		reorders: prometheus.NewCounter(prometheus.CounterOpts{Name: p + "order_refusals_total",
			Help: "Messages JetStream refused because the message before them was not the stream's last (it was dropped, or another writer published in between); they are republished in order."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: p + "publish_latency_seconds", Help: "Time from appending a record to its JetStream ack.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
	}
	if err := r.refresh(r.ordered); err != nil {
		return nil, err
	}
	if err := r.refresh(r.prio); err != nil {
		return nil, err
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{r.published, r.messages, r.failures, r.dead, r.reorders, r.latency,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: p + "depth", Help: "Records of the ordered lane committed but not yet acknowledged by JetStream."}, func() float64 { return float64(r.Depth()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: p + "oldest_age_seconds", Help: "Age of the oldest unpublished record of the ordered lane; 0 when it is empty."}, func() float64 { return r.OldestAge().Seconds() }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: p + "priority_depth", Help: "Records of the priority lane committed but not yet acknowledged by JetStream."}, func() float64 { return float64(r.prio.depth.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: p + "priority_oldest_age_seconds", Help: "Age of the oldest unpublished record of the priority lane; 0 when it is empty."}, func() float64 { return r.age(r.prio).Seconds() }),
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
	for _, l := range []*lane{r.ordered, r.prio} {
		_ = r.refresh(l)
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// Depth is the number of ordered-lane records not yet acknowledged by JetStream, as of the last
// refresh or Notify.
func (r *Relay) Depth() int64 { return r.ordered.depth.Load() }

// PriorityDepth is Depth for the priority lane.
func (r *Relay) PriorityDepth() int64 { return r.prio.depth.Load() }

// OldestAge is how long the oldest unpublished record of the ordered lane has waited.
func (r *Relay) OldestAge() time.Duration { return r.age(r.ordered) }

func (r *Relay) age(l *lane) time.Duration {
	o := l.oldest.Load()
	if o == 0 {
		return 0
	}
	return max(r.now().Sub(time.Unix(0, o)), 0)
}

// refresh recomputes a lane's depth and oldest age. Keys are a bbolt sequence and only a prefix is
// ever deleted, so depth is last-first+1.
func (r *Relay) refresh(l *lane) error {
	return r.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(l.bucket))
		if b == nil {
			l.depth.Store(0)
			l.oldest.Store(0)
			return nil
		}
		c := b.Cursor()
		fk, fv := c.First()
		if fk == nil {
			l.depth.Store(0)
			l.oldest.Store(0)
			return nil
		}
		lk, _ := c.Last()
		l.depth.Store(int64(binary.BigEndian.Uint64(lk) - binary.BigEndian.Uint64(fk) + 1))
		var rec record
		if json.Unmarshal(fv, &rec) == nil {
			l.oldest.Store(rec.AppendedAt.UnixNano())
		}
		return nil
	})
}

// Refresh updates Depth after the caller appended records; cheap (two cursor seeks per lane).
func (r *Relay) Refresh() {
	_ = r.refresh(r.ordered)
	_ = r.refresh(r.prio)
}

// WaitDrained blocks until both lanes are empty or ctx ends. Tests and graceful shutdown use it.
func (r *Relay) WaitDrained(ctx context.Context) error {
	for _, l := range []*lane{r.prio, r.ordered} {
		if err := r.waitDrained(ctx, l); err != nil {
			return err
		}
	}
	return nil
}

func (r *Relay) waitDrained(ctx context.Context, l *lane) error {
	for {
		_ = r.refresh(l)
		if l.depth.Load() == 0 {
			return nil
		}
		ch := make(chan struct{})
		l.mu.Lock()
		l.drained = append(l.drained, ch)
		l.mu.Unlock()
		r.Notify()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Run publishes both lanes until ctx ends. Failures are retried with exponential backoff; records
// are deleted only after their ack.
func (r *Relay) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, l := range []*lane{r.prio, r.ordered} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.runLane(ctx, l)
		}()
	}
	wg.Wait()
	return nil
}

// pending is one record read from a lane.
type pending struct {
	key []byte
	rec record
}

// message is one JetStream message: the records it carries, in order.
type message struct {
	recs    []pending
	subject string
	id      string
	data    []byte
}

// round is a set of messages published together, acknowledged in order.
type round struct {
	msgs   []message
	futs   []jetstream.PubAckFuture // futs[i] belongs to msgs[i]; shorter when a publish call failed
	pubErr error                    // why publishing stopped early
	last   []byte                   // key of the last record read
	waited int                      // futures settle looked at; the rest are abandoned on failure
}

// errRestart makes a lane republish from its first record at once (after a dead letter).
var errRestart = errors.New("restart from the first record")

// wrongPredecessor reports whether err is JetStream refusing a message whose expected last
// sequence is not the stream's (a replicated stream may answer with the "constant" variant).
func wrongPredecessor(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// chain maps a stream to the sequence the next message this lane publishes to it must follow, in
// the current attempt; a stream not in it is asked for its last sequence first. nil when the relay
// does not chain (SharedStreams).
type chain map[string]uint64

// runLane is a lane's loop. Up to InFlight rounds are published before the oldest one's acks are
// awaited, so the round trip to JetStream and the delete transaction overlap with the next rounds'
// publishing. After a failure every round still in flight is forgotten (its records stay in the
// bucket) and publishing restarts from the first record: messages that did land are dropped by
// JetStream's duplicate window (same content, same Msg-Id).
func (r *Relay) runLane(ctx context.Context, l *lane) {
	backoff := 50 * time.Millisecond
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var inflight []*round
	var next []byte // first key not yet published; nil: the bucket's first
	var last chain  // places of the next messages; reset whenever next is
	restart := func() {
		var abandoned []jetstream.PubAckFuture
		for _, rd := range inflight {
			abandoned = append(abandoned, rd.futs[rd.waited:]...)
		}
		if len(abandoned) > 0 {
			// Wait until the server has answered what is still in flight: a message of the
			// abandoned attempt that landed after the next attempt read the stream's last
			// sequence could take the place that attempt expects for another message (nats.go
			// keeps retrying a no-responders publish for up to 500 ms after the relay gave up).
			r.awaitAbandoned(ctx, l, abandoned)
		}
		inflight, next = nil, nil
		if !r.cfg.SharedStreams {
			last = chain{}
		}
	}
	restart()
	for {
		if ctx.Err() != nil {
			return
		}
		var err error
		// A round whose publishing stopped early is the last one published until it is settled, so
		// records are never published past a gap.
		for len(inflight) < r.cfg.InFlight && (len(inflight) == 0 || inflight[len(inflight)-1].pubErr == nil) {
			var rd *round
			rd, err = r.publishRound(l, next, last)
			if err != nil || rd == nil {
				break
			}
			inflight = append(inflight, rd)
			next = successor(rd.last)
			if rd.pubErr != nil {
				break // settle what was published, then fail
			}
		}
		if err == nil && len(inflight) == 0 {
			_ = r.refresh(l)
			l.mu.Lock()
			for _, ch := range l.drained {
				close(ch)
			}
			l.drained = nil
			l.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-l.wake:
			case <-tick.C:
			}
			continue
		}
		if err == nil {
			rd := inflight[0]
			err = r.settle(ctx, l, rd)
			if err == nil {
				inflight = inflight[1:]
			}
		}
		_ = r.refresh(l)
		if err == nil {
			backoff = 50 * time.Millisecond
			continue
		}
		restart()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRestart) {
			continue
		}
		if wrongPredecessor(err) {
			// A message before it is missing, was a duplicate that took no place, or another writer
			// published in between: publish again from the first unacknowledged record, at the
			// stream's last sequence as it is now.
			r.reorders.Inc()
			r.log.Info("outbox message refused for its place in the stream; republishing in order", "lane", l.bucket, "err", err)
			continue
		}
		r.failures.Inc()
		r.log.Warn("outbox publish failed; will retry", "lane", l.bucket, "err", err, "retry_in", backoff.String(), "depth", l.depth.Load())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, r.cfg.MaxBackoff)
	}
}

// successor is the smallest key after k.
func successor(k []byte) []byte {
	return key(binary.BigEndian.Uint64(k) + 1)
}

// publishRound reads up to BatchSize records from 'from' on (finishing the last transaction's
// records), groups them into messages and publishes them asynchronously, each expected at the
// place last gives (which it updates) unless last is nil. It returns nil when there is nothing to
// publish.
func (r *Relay) publishRound(l *lane, from []byte, last chain) (*round, error) {
	var recs []pending
	err := r.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(l.bucket))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		k, v := c.First()
		if from != nil {
			k, v = c.Seek(from)
		}
		for ; k != nil; k, v = c.Next() {
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("outbox record %x: %w", k, err)
			}
			if len(recs) >= r.cfg.BatchSize {
				last := recs[len(recs)-1].rec.Tx
				if last == 0 || rec.Tx != last {
					break
				}
			}
			recs = append(recs, pending{key: bytes.Clone(k), rec: rec})
		}
		return nil
	})
	if err != nil || len(recs) == 0 {
		return nil, err
	}
	rd := &round{msgs: group(recs), last: recs[len(recs)-1].key}
	for _, m := range rd.msgs {
		msg := &nats.Msg{Subject: m.subject, Data: m.data, Header: nats.Header{}}
		opts := []jetstream.PublishOpt{jetstream.WithMsgID(m.id)}
		stream := events.StreamOf(m.subject)
		if last != nil {
			prev, ok := last[stream]
			if !ok {
				var err error
				if prev, err = r.lastSeq(stream); err != nil {
					rd.pubErr = fmt.Errorf("publish %s: %w", m.id, err)
					break
				}
			}
			opts = append(opts, jetstream.WithExpectLastSequence(prev))
			last[stream] = prev + 1
		}
		f, err := r.js.PublishMsgAsync(msg, opts...)
		if err != nil {
			rd.pubErr = fmt.Errorf("publish %s: %w", m.id, err)
			break
		}
		rd.futs = append(rd.futs, f)
	}
	return rd, nil
}

// lastSeq reads a stream's last sequence, where the first message of an attempt must go.
func (r *Relay) lastSeq(stream string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.PublishWait)
	defer cancel()
	st, err := r.js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %q: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s info: %w", stream, err)
	}
	return info.State.LastSeq, nil
}

// group splits records into messages: consecutive records of one transaction share a message, up to
// maxBatchEvents events and maxBatchBytes bytes (a larger single event travels alone). The split is
// greedy from the first record, so it is the same whenever a message boundary is the starting point,
// which every republish is.
func group(recs []pending) []message {
	var out []message
	var cur []pending
	size := 0
	flush := func() {
		if len(cur) == 0 {
			return
		}
		m := message{recs: cur, subject: cur[0].rec.Subject, id: cur[0].rec.ID}
		if len(cur) == 1 {
			m.data = cur[0].rec.Data
		} else {
			m.id += "+" + strconv.Itoa(len(cur))
			parts := make([][]byte, len(cur))
			for i, p := range cur {
				parts[i] = p.rec.Data
			}
			m.data = events.JoinBatch(parts)
		}
		out = append(out, m)
		cur, size = nil, 0
	}
	for _, p := range recs {
		if len(cur) > 0 {
			t := cur[0].rec.Tx
			if t == 0 || p.rec.Tx != t || len(cur) >= maxBatchEvents || size+len(p.rec.Data)+1 > maxBatchBytes {
				flush()
			}
		}
		cur = append(cur, p)
		size += len(p.rec.Data) + 1
	}
	flush()
	return out
}

// settle waits for a round's acks in order and deletes the records of the acknowledged prefix in one
// transaction. A message JetStream refuses for good while it is the first unacknowledged one goes to
// the dead-letter bucket.
func (r *Relay) settle(ctx context.Context, l *lane, rd *round) error {
	acked := 0
	var err error
	timeout := time.NewTimer(r.cfg.PublishWait)
	defer timeout.Stop()
wait:
	for i, f := range rd.futs {
		rd.waited = i + 1
		select {
		case <-f.Ok():
			acked++
		case ferr := <-f.Err():
			if permanent(ferr) {
				// Records before it are deleted below; the lane restarts after it.
				err = errRestart
				if derr := r.deadLetter(l, rd.msgs[i], ferr); derr != nil {
					err = derr
				}
			} else {
				err = fmt.Errorf("publish %s: %w", rd.msgs[i].id, ferr)
			}
			break wait
		case <-timeout.C:
			err = fmt.Errorf("publish: no ack within %s", r.cfg.PublishWait)
			break wait
		case <-ctx.Done():
			err = ctx.Err()
			break wait
		}
	}
	if err == nil && rd.pubErr != nil {
		if len(rd.futs) == 0 && permanent(rd.pubErr) {
			err = errRestart
			if derr := r.deadLetter(l, rd.msgs[0], rd.pubErr); derr != nil {
				err = derr
			}
		} else {
			err = rd.pubErr
		}
	}
	if acked == 0 {
		return err
	}
	now := r.now()
	derr := r.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(l.bucket))
		for _, m := range rd.msgs[:acked] {
			for _, p := range m.recs {
				if err := b.Delete(p.key); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if derr != nil {
		return errors.Join(err, fmt.Errorf("outbox delete: %w", derr))
	}
	r.messages.Add(float64(acked))
	for _, m := range rd.msgs[:acked] {
		r.published.Add(float64(len(m.recs)))
		for _, p := range m.recs {
			r.latency.Observe(now.Sub(p.rec.AppendedAt).Seconds())
		}
	}
	return err
}

// awaitAbandoned waits (up to PublishWait) for the outcome of the messages a failed attempt left in
// flight and counts those JetStream refused for their place: each is a message that, without its
// expected sequence, could have been stored out of order.
func (r *Relay) awaitAbandoned(ctx context.Context, l *lane, futs []jetstream.PubAckFuture) {
	timeout := time.NewTimer(r.cfg.PublishWait)
	defer timeout.Stop()
	n := 0
wait:
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if wrongPredecessor(err) {
				n++
			}
		case <-timeout.C:
			break wait
		case <-ctx.Done():
			return
		}
	}
	if n > 0 {
		r.reorders.Add(float64(n))
		r.log.Info("outbox messages sent after a failed one were refused for their place in the stream (kept in order)", "lane", l.bucket, "messages", n)
	}
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

// deadLetter moves a message's records from the lane to DeadBucket.
func (r *Relay) deadLetter(l *lane, m message, cause error) error {
	err := r.db.Update(func(tx *bolt.Tx) error {
		d, err := tx.CreateBucketIfNotExists([]byte(DeadBucket))
		if err != nil {
			return err
		}
		b := tx.Bucket([]byte(l.bucket))
		for _, p := range m.recs {
			dk := p.key
			if l.bucket != Bucket {
				dk = append([]byte(l.bucket+"\x00"), p.key...)
			}
			if v := b.Get(p.key); v != nil {
				if err := d.Put(dk, v); err != nil {
					return err
				}
			}
			if err := b.Delete(p.key); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("outbox dead letter %s: %w", m.id, err)
	}
	r.dead.Add(float64(len(m.recs)))
	r.log.Error("outbox message refused by JetStream for good; its records moved to outbox_dead", "event_id", m.id, "subject", m.subject, "events", len(m.recs), "err", cause)
	return nil
}
