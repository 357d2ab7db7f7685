// Package consumer runs a JetStream pull consumer whose cursor lives in the service's bbolt file.
//
// The handler gets the bbolt transaction, so the state it writes and the stream sequence of the last
// applied event commit together (docs/design.md §2.3); messages are acked after that commit. A redelivered
// message at or below the cursor is acked without applying, so nothing is applied twice. Consumers
// read their stream unfiltered, so sequences are contiguous: a message beyond cursor+1 is either a
// redelivery out of order (nak and wait) or a loss — a truncated stream or a gap — which halts the
// consumer with an error log and a metric instead of skipping.
package consumer

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
)

// CursorBucket holds one key per consumer: its last applied stream sequence (8 bytes, big endian).
const CursorBucket = "consumer_cursors"

// PoisonBucket records events that were termed, keyed by consumer and sequence, for audit.
const PoisonBucket = "consumer_poison"

// SeenBucket holds, per consumer, the ids of the events applied within the last DedupWindow of event
// time. JetStream deduplicates a re-publish only within its window and, in a cluster, may store a
// retried publish twice across a leader change; an event id seen again is then skipped (acked,
// counted) instead of applied twice. Event ids are ULIDs, so keys sort by event time and pruning
// reads only the oldest keys. The bucket is transport state: canonical dumps leave it out.
const SeenBucket = "consumer_seen"

// DedupWindow is how far back in event time applied event ids are remembered.
const DedupWindow = 10 * time.Minute

// Msg is one event handed to a Handler.
type Msg struct {
	Seq       uint64 // stream sequence of the message that carried the event
	Index     int    // the event's position in that message (a batch holds several)
	Subject   string // the message's subject
	Event     events.Event
	Delivered uint64 // delivery count
}

// Handler applies one event inside tx. It must be deterministic (event data only; no clock, no
// randomness). Returning nil commits it with the cursor; an error wrapped by Permanent terms the
// message (counted, recorded, the consumer goes on); any other error naks it with backoff.
type Handler func(ctx context.Context, tx *bolt.Tx, m Msg) error

type permanentError struct{ err error }

func (p permanentError) Error() string { return "permanent: " + p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent marks err as not worth retrying: the message is termed and skipped.
func Permanent(err error) error { return permanentError{err} }

// IsPermanent reports whether err was marked Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// ErrHalted is returned by Halted when the consumer stopped on a gap or truncation.
var ErrHalted = errors.New("consumer halted")

// Config configures a Runner.
type Config struct {
	Stream        string // stream to read, whole
	Durable       string // durable consumer name; API: renaming it reprocesses the stream
	MetricsPrefix string // e.g. "scimflow_identity_store"
	BatchSize     int    // messages applied per bbolt transaction at most; default 256
	// MaxTxBytes bounds the message bytes applied in one transaction (the last message may cross it);
	// default 32 KiB (about one 1,000-member chunk: with 128 KiB, a revocation under 10,000-member
	// group churn waited p99 1.6 s instead of 0.6 s, docs/benchmarks.md). The service's other
	// consumers (a priority lane) wait for the bbolt writer
	// while a transaction runs, so a bulk backlog must not make transactions arbitrarily long; a large
	// group change arrives as one message per 1,000-member chunk and so spreads over transactions.
	MaxTxBytes int
	AckWait    time.Duration // default 30s
	IdleCheck  time.Duration // how often an idle consumer confirms it is caught up; default 1s
	MaxBackoff time.Duration // longest nak delay; default 10s
	// StateKey names the consumer's cursor and remembered event ids in the bbolt file; default
	// Durable. A service whose durable names differ per process (auth's carry the replica id) sets a
	// stable key, so the file's state does not depend on which replica wrote it and a snapshot of
	// one replica's file restores into another (services/auth/snapshot.go). A file written before
	// the key was set is migrated once, at New.
	StateKey string
}

// Runner is one running consumer.
type Runner struct {
	db   *bolt.DB
	js   jetstream.JetStream
	cfg  Config
	h    Handler
	log  *slog.Logger
	now  func() time.Time
	cons jetstream.Consumer

	failures   map[uint64]int // consecutive transient failures per stream sequence; loop goroutine only
	idleStalls int            // consecutive idle checks that found messages pending; loop goroutine only

	mu         sync.Mutex // guards the following
	cursor     uint64
	caughtUpAt time.Time
	halted     error
	ready      bool
	lastSeq    uint64 // the stream's last sequence as last seen

	applied  *prometheus.CounterVec
	dups     prometheus.Counter
	poison   prometheus.Counter
	naks     prometheus.Counter
	delay    prometheus.Histogram
	haltedG  prometheus.Gauge
	lagG     prometheus.Gauge
	cursorG  prometheus.Gauge
	pendingG prometheus.Gauge
}

// New builds a runner; Run starts it. Metrics carry the label consumer=<Durable>.
func New(db *bolt.DB, js jetstream.JetStream, cfg Config, h Handler, reg prometheus.Registerer, log *slog.Logger, now func() time.Time) (*Runner, error) {
	if cfg.Stream == "" || cfg.Durable == "" {
		return nil, errors.New("consumer: stream and durable are required")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 256
	}
	if cfg.MaxTxBytes <= 0 {
		cfg.MaxTxBytes = 32 << 10
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.IdleCheck <= 0 {
		cfg.IdleCheck = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.StateKey == "" {
		cfg.StateKey = cfg.Durable
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	p := cfg.MetricsPrefix + "_consumer_"
	l := prometheus.Labels{"consumer": cfg.Durable}
	r := &Runner{db: db, js: js, cfg: cfg, h: h, log: log.With("consumer", cfg.Durable, "stream", cfg.Stream), now: now,
		applied:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: p + "events_applied_total", Help: "Events applied and committed, by type.", ConstLabels: l}, []string{"type"}),
		poison:   prometheus.NewCounter(prometheus.CounterOpts{Name: p + "poison_total", Help: "Events termed as permanently failing (skipped after recording).", ConstLabels: l}),
		dups:     prometheus.NewCounter(prometheus.CounterOpts{Name: p + "duplicates_total", Help: "Events stored twice in the stream (same event id) and skipped the second time.", ConstLabels: l}),
		naks:     prometheus.NewCounter(prometheus.CounterOpts{Name: p + "naks_total", Help: "Messages negatively acknowledged for redelivery.", ConstLabels: l}),
		delay:    prometheus.NewHistogram(prometheus.HistogramOpts{Name: p + "apply_delay_seconds", Help: "Time from an event's occurrence to its commit here.", ConstLabels: l, Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18)}),
		haltedG:  prometheus.NewGauge(prometheus.GaugeOpts{Name: p + "halted", Help: "1 when the consumer stopped on a sequence gap or a truncated stream.", ConstLabels: l}),
		lagG:     prometheus.NewGauge(prometheus.GaugeOpts{Name: p + "lag_messages", Help: "Stream messages after the cursor (not yet applied).", ConstLabels: l}),
		cursorG:  prometheus.NewGauge(prometheus.GaugeOpts{Name: p + "cursor_sequence", Help: "Stream sequence of the last applied event.", ConstLabels: l}),
		pendingG: prometheus.NewGauge(prometheus.GaugeOpts{Name: p + "pending_messages", Help: "Messages the server reports pending for this consumer.", ConstLabels: l}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{r.applied, r.dups, r.poison, r.naks, r.delay, r.haltedG, r.lagG, r.cursorG, r.pendingG} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register consumer metrics: %w", err)
			}
		}
	}
	err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{CursorBucket, PoisonBucket, SeenBucket} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		if cfg.StateKey != cfg.Durable {
			if err := migrateStateKey(tx, cfg.Durable, cfg.StateKey); err != nil {
				return err
			}
		}
		r.cursor = ReadCursor(tx, cfg.StateKey)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", cfg.Durable, err)
	}
	r.cursorG.Set(float64(r.cursor))
	return r, nil
}

// ReadCursor returns the last applied sequence of consumer durable in tx (0 if none).
func ReadCursor(tx *bolt.Tx, durable string) uint64 {
	b := tx.Bucket([]byte(CursorBucket))
	if b == nil {
		return 0
	}
	v := b.Get([]byte(durable))
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// migrateStateKey moves the cursor and remembered event ids kept under the durable name to key, once:
// only when key holds no cursor yet.
func migrateStateKey(tx *bolt.Tx, durable, key string) error {
	old := ReadCursor(tx, durable)
	if old == 0 || ReadCursor(tx, key) != 0 {
		return nil
	}
	if err := writeCursor(tx, key, old); err != nil {
		return err
	}
	if err := tx.Bucket([]byte(CursorBucket)).Delete([]byte(durable)); err != nil {
		return err
	}
	b := tx.Bucket([]byte(SeenBucket))
	from, to := append([]byte(durable), 0), append([]byte(key), 0)
	var ks [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(from); k != nil && bytes.HasPrefix(k, from); k, _ = c.Next() {
		ks = append(ks, bytes.Clone(k))
	}
	for _, k := range ks {
		if err := b.Put(append(bytes.Clone(to), k[len(from):]...), []byte{1}); err != nil {
			return err
		}
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func writeCursor(tx *bolt.Tx, durable string, seq uint64) error {
	b, err := tx.CreateBucketIfNotExists([]byte(CursorBucket))
	if err != nil {
		return err
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], seq)
	return b.Put([]byte(durable), v[:])
}

// Cursor is the last applied (committed) stream sequence.
func (r *Runner) Cursor() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cursor
}

// Ready reports whether the consumer has been set up on the server.
func (r *Runner) Ready() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready && r.halted == nil
}

// Halted returns the reason the consumer halted, or nil.
func (r *Runner) Halted() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.halted
}

// CaughtUpAt is the last time the consumer knew it had applied everything in the stream. auth fails
// closed when this is older than its revocation staleness bound.
func (r *Runner) CaughtUpAt() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.caughtUpAt
}

// Run sets up the durable consumer at cursor+1 and applies events until ctx ends. A halt (gap or
// truncation) keeps Run blocked, not returning, so the service stays up and observable; Halted tells.
func (r *Runner) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := r.setupRetry(ctx); err != nil {
			if errors.Is(err, ErrHalted) {
				<-ctx.Done()
			}
			return nil
		}
		// A short pull expiry renews pull requests often, so one lost with a consumer leader change or
		// a reconnect is replaced within seconds instead of nats.go's default 30 s.
		it, err := r.cons.Messages(jetstream.PullMaxMessages(r.cfg.BatchSize*2), jetstream.PullExpiry(5*time.Second))
		if err != nil {
			r.log.Warn("consumer subscribe failed; retrying", "err", err)
			if !sleep(ctx, time.Second) {
				return nil
			}
			continue
		}
		err = r.loop(ctx, it)
		it.Stop()
		if errors.Is(err, ErrHalted) {
			<-ctx.Done()
			return nil
		}
		if err != nil && ctx.Err() == nil {
			// Recreating the consumer at the cursor restarts delivery at cursor+1 at once, whatever
			// the server thought was in flight.
			r.log.Warn("consumer interrupted; recreating it at the cursor", "err", err, "cursor", r.Cursor())
			if !sleep(ctx, 100*time.Millisecond) {
				return nil
			}
		}
	}
	return nil
}

// setupRetry calls setup until it succeeds, halts, or ctx ends.
func (r *Runner) setupRetry(ctx context.Context) error {
	for {
		err := r.setup(ctx)
		if err == nil || errors.Is(err, ErrHalted) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.log.Warn("consumer set-up failed; retrying", "err", err)
		if !sleep(ctx, time.Second) {
			return ctx.Err()
		}
	}
}

// setup (re)creates the durable consumer so that delivery starts right after the committed cursor,
// whatever the server's consumer state was (it may be ahead of a restored file, or gone).
func (r *Runner) setup(ctx context.Context) error {
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := r.js.Stream(tctx, r.cfg.Stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", r.cfg.Stream, err)
	}
	info, err := st.Info(tctx)
	if err != nil {
		return fmt.Errorf("stream %s info: %w", r.cfg.Stream, err)
	}
	cursor := r.Cursor()
	if err := r.checkTruncated(info.State, cursor); err != nil {
		return err
	}
	if err := st.DeleteConsumer(tctx, r.cfg.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("reset consumer %s: %w", r.cfg.Durable, err)
	}
	cc := jetstream.ConsumerConfig{
		Durable:       r.cfg.Durable,
		Description:   "scimflow projection; cursor kept in the service's bbolt file",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       r.cfg.AckWait,
		MaxAckPending: r.cfg.BatchSize * 4,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if cursor > 0 {
		cc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cc.OptStartSeq = cursor + 1
	}
	cons, err := st.CreateOrUpdateConsumer(tctx, cc)
	if err != nil {
		return fmt.Errorf("create consumer %s: %w", r.cfg.Durable, err)
	}
	r.mu.Lock()
	r.cons = cons
	r.ready = true
	r.lastSeq = info.State.LastSeq
	if info.State.LastSeq <= cursor {
		r.caughtUpAt = r.now()
	}
	r.mu.Unlock()
	r.lagG.Set(float64(info.State.LastSeq - min(cursor, info.State.LastSeq)))
	r.log.Info("consumer ready", "cursor", cursor, "stream_last_seq", info.State.LastSeq)
	return nil
}

// checkTruncated halts when the stream no longer holds cursor+1 (MaxAge/MaxMsgs dropped events the
// consumer never applied, or the bbolt file is older than the stream's first message).
func (r *Runner) checkTruncated(st jetstream.StreamState, cursor uint64) error {
	if st.Msgs > 0 && st.FirstSeq > cursor+1 || st.Msgs == 0 && st.LastSeq > cursor && st.FirstSeq > cursor+1 {
		return r.halt(fmt.Errorf("stream %s truncated under the cursor: first sequence %d, cursor %d (events %d..%d are gone)",
			r.cfg.Stream, st.FirstSeq, cursor, cursor+1, st.FirstSeq-1))
	}
	return nil
}

func (r *Runner) halt(err error) error {
	r.mu.Lock()
	r.halted = err
	r.mu.Unlock()
	r.haltedG.Set(1)
	r.log.Error("consumer halted; not skipping — rebuild or restore the projection (scimflow replay)", "err", err)
	return fmt.Errorf("%w: %w", ErrHalted, err)
}

func (r *Runner) loop(ctx context.Context, it jetstream.MessagesContext) error {
	for ctx.Err() == nil {
		// NextContext (not NextMaxWait) so a shutdown interrupts the wait at once.
		wctx, cancel := context.WithTimeout(ctx, r.cfg.IdleCheck)
		first, err := it.Next(jetstream.NextContext(wctx))
		cancel()
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
			if err := r.idle(ctx); err != nil {
				return err
			}
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		batch := []jetstream.Msg{first}
		size := len(first.Data())
		for len(batch) < r.cfg.BatchSize && size < r.cfg.MaxTxBytes {
			m, err := it.Next(jetstream.NextMaxWait(time.Millisecond))
			if err != nil {
				break
			}
			batch = append(batch, m)
			size += len(m.Data())
		}
		if err := r.process(ctx, batch); err != nil {
			return err
		}
	}
	return nil
}

// errStalled says the server holds messages for this consumer that it is not delivering (seen after
// a consumer leader change: the pull request died with the old leader). Run recreates the consumer
// at the cursor.
var errStalled = errors.New("consumer stalled: messages pending on the server, none delivered")

// idle asks the server whether anything is pending. Nothing pending proves the consumer is caught up;
// messages pending through two idle checks in a row, or a consumer the server no longer knows, mean
// delivery has stalled.
func (r *Runner) idle(ctx context.Context) error {
	start := r.now()
	tctx, cancel := context.WithTimeout(ctx, r.cfg.IdleCheck)
	defer cancel()
	info, err := r.cons.Info(tctx)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("%w: %w", errStalled, err)
	}
	if err != nil {
		return nil
	}
	r.pendingG.Set(float64(info.NumPending))
	if info.NumPending == 0 {
		r.idleStalls = 0
		if info.Delivered.Stream <= r.Cursor() {
			r.mu.Lock()
			r.caughtUpAt = start
			r.mu.Unlock()
			r.lagG.Set(0)
		}
		return nil
	}
	r.lagG.Set(float64(info.NumPending))
	r.idleStalls++
	if r.idleStalls >= 2 {
		r.idleStalls = 0
		return errStalled
	}
	return nil
}

// entry is one delivered message: one event, or a batch of events committed together upstream.
type entry struct {
	raw   jetstream.Msg
	seq   uint64
	meta  *jetstream.MsgMetadata
	evs   []events.Event
	err   error // the message does not decode: permanent
	state entryState

	// Set by the transaction that applied the message.
	applied  []events.Event // events the handler applied
	seenN    int            // events skipped as applied before (stored twice)
	poisoned []int          // indexes of events recorded as poison
}

type entryState int

const (
	stNew     entryState = iota
	stDup                // at or below the cursor: a redelivery, acked without applying
	stApplied            // applied (some events may have been skipped or poisoned) and committed
	stPoison             // the whole message does not decode: recorded and termed
	stRetry              // at or after a transient failure: naked with backoff
	stLater              // beyond cursor+1: delivered out of order
)

// phase is a step of applying one delivery of messages. process runs them as a loop, not by
// recursion: every phase either commits, or narrows what the next apply covers (an event marked
// poison, a retry limit), so the loop ends.
type phase int

const (
	phaseApply     phase = iota // one transaction applies the entries in scope from cursor+1 on
	phasePoisoned               // an event failed for good: remember it, apply again without it
	phaseTransient              // an event failed for now: apply only what precedes it
	phaseSettle                 // committed: ack, term, nak; detect deliveries out of order
	phaseDone
)

// poisonKey names one event (index) of one message (seq); index -1 is the whole message.
type poisonKey struct {
	seq   uint64
	index int
}

// delivery is one batch of messages being applied.
type delivery struct {
	entries   []*entry
	poison    map[poisonKey]error
	limit     uint64 // when non-zero, entries at or after this sequence are retried later, not applied
	failed    *entry // set by a failed apply
	failIndex int
	failErr   error
	committed uint64 // cursor after the last commit
}

// process applies a batch of messages in sequence order, in as few transactions as possible.
func (r *Runner) process(ctx context.Context, msgs []jetstream.Msg) error {
	d := &delivery{poison: map[poisonKey]error{}}
	for _, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			m.Term()
			continue
		}
		e := &entry{raw: m, meta: meta, seq: meta.Sequence.Stream}
		e.evs, e.err = events.DecodeMessage(m.Subject(), m.Data())
		d.entries = append(d.entries, e)
	}
	slices.SortFunc(d.entries, func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
	for ph := phaseApply; ph != phaseDone; {
		var err error
		switch ph {
		case phaseApply:
			ph, err = r.apply(ctx, d)
		case phasePoisoned:
			d.poison[poisonKey{d.failed.seq, d.failIndex}] = d.failErr
			ph = phaseApply
		case phaseTransient:
			// Backoff grows with this message's own failures, not its delivery count: naks of the
			// messages queued behind a failing one must not make their first failure wait longer.
			if r.failures == nil {
				r.failures = map[uint64]int{}
			}
			r.failures[d.failed.seq]++
			d.limit = d.failed.seq
			id := ""
			if d.failIndex >= 0 {
				id = d.failed.evs[d.failIndex].ID
			}
			r.log.Warn("event apply failed; will retry", "event_id", id, "seq", d.failed.seq, "err", d.failErr,
				"retry_in", r.backoff(uint64(r.failures[d.failed.seq])).String())
			ph = phaseApply
		case phaseSettle:
			err = r.settle(ctx, d)
			ph = phaseDone
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// apply runs one transaction over the entries in scope and says which phase follows.
func (r *Runner) apply(ctx context.Context, d *delivery) (phase, error) {
	d.failed, d.failIndex, d.failErr = nil, 0, nil
	err := r.db.Update(func(tx *bolt.Tx) error {
		c := ReadCursor(tx, r.cfg.StateKey)
		for _, e := range d.entries {
			e.state, e.applied, e.seenN, e.poisoned = stNew, nil, 0, nil
		}
		for _, e := range d.entries {
			switch {
			case d.limit != 0 && e.seq >= d.limit:
				e.state = stRetry
				continue
			case e.seq <= c:
				e.state = stDup
				continue
			case e.seq > c+1:
				e.state = stLater
				continue
			}
			if e.err != nil {
				perr, ok := d.poison[poisonKey{e.seq, -1}]
				if !ok {
					d.failed, d.failIndex, d.failErr = e, -1, Permanent(e.err)
					return d.failErr
				}
				if err := recordPoison(tx, r.cfg.Durable, e.seq, -1, e.raw.Subject(), "", perr); err != nil {
					return err
				}
				e.state, c = stPoison, e.seq
				continue
			}
			for i, ev := range e.evs {
				if perr, ok := d.poison[poisonKey{e.seq, i}]; ok {
					if err := recordPoison(tx, r.cfg.Durable, e.seq, i, e.raw.Subject(), ev.ID, perr); err != nil {
						return err
					}
					e.poisoned = append(e.poisoned, i)
					continue
				}
				seen, err := r.seen(tx, ev)
				if err != nil {
					return err
				}
				if seen {
					e.seenN++
					continue
				}
				if err := r.h(ctx, tx, Msg{Seq: e.seq, Index: i, Subject: e.raw.Subject(), Event: ev, Delivered: e.meta.NumDelivered}); err != nil {
					d.failed, d.failIndex, d.failErr = e, i, err
					return err
				}
				e.applied = append(e.applied, ev)
			}
			e.state, c = stApplied, e.seq
		}
		d.committed = c
		if err := r.pruneSeen(tx, d.entries); err != nil {
			return err
		}
		return writeCursor(tx, r.cfg.StateKey, c)
	})
	switch {
	case err == nil:
		return phaseSettle, nil
	case d.failed == nil:
		return phaseDone, fmt.Errorf("consumer %s commit: %w", r.cfg.Durable, err)
	case IsPermanent(d.failErr):
		return phasePoisoned, nil
	default:
		return phaseTransient, nil
	}
}

// settle acts on a committed delivery: acks what is applied or below the cursor, terms what does not
// decode, naks what follows a transient failure (then waits its backoff), and hands messages beyond
// cursor+1 to outOfOrder.
func (r *Runner) settle(ctx context.Context, d *delivery) error {
	now := r.now()
	var later, retry []*entry
	for _, e := range d.entries {
		switch e.state {
		case stDup:
			e.raw.Ack()
		case stApplied:
			e.raw.Ack()
			for _, ev := range e.applied {
				r.applied.WithLabelValues(ev.Type).Inc()
				r.delay.Observe(now.Sub(ev.OccurredAt).Seconds())
			}
			if e.seenN > 0 {
				r.dups.Add(float64(e.seenN))
				r.log.Warn("event stored twice in the stream; second copy skipped", "seq", e.seq, "events", e.seenN)
			}
			for _, i := range e.poisoned {
				r.poison.Inc()
				r.log.Error("event termed as poison; skipped", "seq", e.seq, "index", i, "event_id", e.evs[i].ID, "err", d.poison[poisonKey{e.seq, i}])
			}
		case stPoison:
			e.raw.TermWithReason("scimflow: permanent apply error")
			r.poison.Inc()
			r.log.Error("message termed as poison; skipped", "seq", e.seq, "err", d.poison[poisonKey{e.seq, -1}])
		case stLater:
			later = append(later, e)
		case stRetry:
			retry = append(retry, e)
		}
	}
	for seq := range r.failures {
		if seq <= d.committed {
			delete(r.failures, seq)
		}
	}
	r.advance(d.committed, d.entries)
	if len(retry) > 0 {
		wait := r.backoff(uint64(r.failures[d.limit]))
		for _, e := range retry {
			e.raw.NakWithDelay(wait)
			r.naks.Inc()
		}
		sleep(ctx, wait)
		return nil
	}
	if len(later) > 0 {
		return r.outOfOrder(ctx, d.committed, later)
	}
	return nil
}

// seenKey is the SeenBucket key of an event id for this consumer.
func (r *Runner) seenKey(id string) []byte {
	return append(append([]byte(r.cfg.StateKey), 0), id...)
}

// seen reports whether ev's id was applied before, and remembers it otherwise.
func (r *Runner) seen(tx *bolt.Tx, ev events.Event) (bool, error) {
	b := tx.Bucket([]byte(SeenBucket))
	k := r.seenKey(ev.ID)
	if b.Get(k) != nil {
		return true, nil
	}
	return false, b.Put(k, []byte{1})
}

// pruneSeen forgets ids older than DedupWindow before the newest event of the batch (event time, so
// the pruning is deterministic).
func (r *Runner) pruneSeen(tx *bolt.Tx, entries []*entry) error {
	var newest time.Time
	for _, e := range entries {
		for _, ev := range e.applied {
			if ev.OccurredAt.After(newest) {
				newest = ev.OccurredAt
			}
		}
	}
	if newest.IsZero() {
		return nil
	}
	limit := r.seenKey(ulidPrefix(newest.Add(-DedupWindow)))
	prefix := r.seenKey("")
	b := tx.Bucket([]byte(SeenBucket))
	c := b.Cursor()
	var old [][]byte
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && bytes.Compare(k, limit) < 0; k, _ = c.Next() {
		old = append(old, bytes.Clone(k))
	}
	for _, k := range old {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// ulidPrefix is the 10-character time prefix of a ULID for t: ids that sort before it are older.
func ulidPrefix(t time.Time) string {
	var id ulid.ULID
	if err := id.SetTime(ulid.Timestamp(t)); err != nil {
		return ""
	}
	return id.String()[:10]
}

func (r *Runner) advance(cursor uint64, entries []*entry) {
	var pending uint64
	if n := len(entries); n > 0 {
		pending = entries[n-1].meta.NumPending
	}
	r.mu.Lock()
	r.cursor = cursor
	if pending == 0 {
		r.caughtUpAt = r.now()
	}
	r.mu.Unlock()
	r.cursorG.Set(float64(cursor))
	r.lagG.Set(float64(pending))
	r.pendingG.Set(float64(pending))
}

// errReorder says a message beyond cursor+1 arrived while the stream still holds cursor+1: the
// earlier one is in flight somewhere (delivered to a pull request lost in a reconnect, or naked with a
// delay) and would only come back after AckWait. Run recreates the consumer at cursor+1 instead.
var errReorder = errors.New("message beyond the cursor while the next one is still in the stream")

// outOfOrder handles messages beyond cursor+1: when the stream no longer holds cursor+1 events were
// lost and the consumer halts; otherwise delivery is restarted at cursor+1.
func (r *Runner) outOfOrder(ctx context.Context, cursor uint64, later []*entry) error {
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := r.js.Stream(tctx, r.cfg.Stream)
	if err == nil {
		var info *jetstream.StreamInfo
		info, err = st.Info(tctx)
		if err == nil {
			if terr := r.checkTruncated(info.State, cursor); terr != nil {
				return terr
			}
			if _, gerr := st.GetMsg(tctx, cursor+1); errors.Is(gerr, jetstream.ErrMsgNotFound) {
				return r.halt(fmt.Errorf("stream %s: sequence %d missing (gap) while %d was delivered", r.cfg.Stream, cursor+1, later[0].seq))
			}
		}
	}
	for _, e := range later {
		e.raw.Nak()
		r.naks.Inc()
	}
	return fmt.Errorf("%w (cursor %d, got %d)", errReorder, cursor, later[0].seq)
}

func (r *Runner) backoff(delivered uint64) time.Duration {
	d := 100 * time.Millisecond
	for i := uint64(1); i < delivered && d < r.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, r.cfg.MaxBackoff)
}

// recordPoison records a termed event (index -1: the whole message) under durable ‖ 0 ‖ seq, with
// ‖ index appended for an event inside a batch.
func recordPoison(tx *bolt.Tx, durable string, seq uint64, index int, subject, eventID string, err error) error {
	b, berr := tx.CreateBucketIfNotExists([]byte(PoisonBucket))
	if berr != nil {
		return berr
	}
	k := make([]byte, 0, len(durable)+13)
	k = append(k, durable...)
	k = append(k, 0)
	k = binary.BigEndian.AppendUint64(k, seq)
	if index > 0 {
		k = binary.BigEndian.AppendUint32(k, uint32(index))
	}
	v, _ := json.Marshal(map[string]any{"subject": subject, "event_id": eventID, "index": index, "error": err.Error()})
	return b.Put(k, v)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
