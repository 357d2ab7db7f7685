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

// Msg is one stream message handed to a Handler.
type Msg struct {
	Seq       uint64 // stream sequence
	Subject   string
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
	Stream        string        // stream to read, whole
	Durable       string        // durable consumer name; API: renaming it reprocesses the stream
	MetricsPrefix string        // e.g. "scimflow_identity_store"
	BatchSize     int           // events applied per bbolt transaction at most; default 256
	AckWait       time.Duration // default 30s
	IdleCheck     time.Duration // how often an idle consumer confirms it is caught up; default 1s
	MaxBackoff    time.Duration // longest nak delay; default 10s
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
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.IdleCheck <= 0 {
		cfg.IdleCheck = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
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
		r.cursor = ReadCursor(tx, cfg.Durable)
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
		for len(batch) < r.cfg.BatchSize {
			m, err := it.Next(jetstream.NextMaxWait(time.Millisecond))
			if err != nil {
				break
			}
			batch = append(batch, m)
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

type entry struct {
	raw   jetstream.Msg
	meta  *jetstream.MsgMetadata
	ev    events.Event
	err   error // decode error: permanent
	state int
}

const (
	stNew = iota
	stDup
	stApplied
	stPoison
	stRetry
	stLater // out of order: nak and wait for the earlier one
	stSeen  // same event id already applied (stored twice in the stream)
)

// process applies a batch in sequence order in as few transactions as possible.
func (r *Runner) process(ctx context.Context, msgs []jetstream.Msg) error {
	entries := make([]*entry, 0, len(msgs))
	for _, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			m.Term()
			continue
		}
		e := &entry{raw: m, meta: meta}
		e.ev, e.err = events.Decode(m.Subject(), m.Data())
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b *entry) int { return cmp.Compare(a.meta.Sequence.Stream, b.meta.Sequence.Stream) })
	poison := map[uint64]error{}
	var retryErr error
	for {
		var failed *entry
		var failErr error
		var committed uint64
		err := r.db.Update(func(tx *bolt.Tx) error {
			c := ReadCursor(tx, r.cfg.Durable)
			for _, e := range entries {
				e.state = stNew
			}
			for _, e := range entries {
				seq := e.meta.Sequence.Stream
				switch {
				case seq <= c:
					e.state = stDup
					continue
				case seq > c+1:
					e.state = stLater
					continue
				}
				if perr, ok := poison[seq]; ok {
					if err := recordPoison(tx, r.cfg.Durable, seq, e, perr); err != nil {
						return err
					}
					e.state = stPoison
					c = seq
					continue
				}
				if e.err != nil {
					failed, failErr = e, Permanent(e.err)
					return failErr
				}
				seen, err := r.seen(tx, e.ev)
				if err != nil {
					return err
				}
				if seen {
					e.state = stSeen
					c = seq
					continue
				}
				if err := r.h(ctx, tx, Msg{Seq: seq, Subject: e.raw.Subject(), Event: e.ev, Delivered: e.meta.NumDelivered}); err != nil {
					failed, failErr = e, err
					return err
				}
				e.state = stApplied
				c = seq
			}
			committed = c
			if err := r.pruneSeen(tx, entries); err != nil {
				return err
			}
			return writeCursor(tx, r.cfg.Durable, c)
		})
		if err != nil && failed == nil {
			return fmt.Errorf("consumer %s commit: %w", r.cfg.Durable, err)
		}
		if failed != nil {
			seq := failed.meta.Sequence.Stream
			if IsPermanent(failErr) {
				poison[seq] = failErr
				continue // redo the batch without it
			}
			// Transient: apply what precedes it, then nak it and everything after.
			retryErr = failErr
			var keep []*entry
			for _, e := range entries {
				if e.meta.Sequence.Stream < seq {
					keep = append(keep, e)
				} else {
					e.state = stRetry
				}
			}
			rest := entries[len(keep):]
			entries = keep
			if len(keep) > 0 {
				if err := r.process(ctx, rawOf(keep)); err != nil {
					return err
				}
			}
			// Backoff grows with this event's own failures, not its delivery count: naks of the events
			// queued behind a failing one must not make their first failure wait longer.
			if r.failures == nil {
				r.failures = map[uint64]int{}
			}
			r.failures[seq]++
			d := r.backoff(uint64(r.failures[seq]))
			r.log.Warn("event apply failed; will retry", "event_id", failed.ev.ID, "seq", seq, "err", retryErr, "retry_in", d.String())
			for _, e := range rest {
				e.raw.NakWithDelay(d)
				r.naks.Inc()
			}
			sleep(ctx, d)
			return nil
		}
		// Committed.
		now := r.now()
		var later []*entry
		for _, e := range entries {
			switch e.state {
			case stDup:
				e.raw.Ack()
			case stSeen:
				e.raw.Ack()
				r.dups.Inc()
				r.log.Warn("event stored twice in the stream; second copy skipped", "seq", e.meta.Sequence.Stream, "event_id", e.ev.ID)
			case stApplied:
				e.raw.Ack()
				r.applied.WithLabelValues(e.ev.Type).Inc()
				r.delay.Observe(now.Sub(e.ev.OccurredAt).Seconds())
			case stPoison:
				e.raw.TermWithReason("scimflow: permanent apply error")
				r.poison.Inc()
				r.log.Error("event termed as poison; skipped", "seq", e.meta.Sequence.Stream, "event_id", e.ev.ID, "err", poison[e.meta.Sequence.Stream])
			case stLater:
				later = append(later, e)
			}
		}
		for seq := range r.failures {
			if seq <= committed {
				delete(r.failures, seq)
			}
		}
		r.advance(committed, entries)
		if len(later) > 0 {
			return r.outOfOrder(ctx, committed, later)
		}
		return nil
	}
}

// seenKey is the SeenBucket key of an event id for this consumer.
func (r *Runner) seenKey(id string) []byte {
	return append(append([]byte(r.cfg.Durable), 0), id...)
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
		if e.state == stApplied && e.ev.OccurredAt.After(newest) {
			newest = e.ev.OccurredAt
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

func rawOf(es []*entry) []jetstream.Msg {
	out := make([]jetstream.Msg, len(es))
	for i, e := range es {
		out[i] = e.raw
	}
	return out
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
				return r.halt(fmt.Errorf("stream %s: sequence %d missing (gap) while %d was delivered", r.cfg.Stream, cursor+1, later[0].meta.Sequence.Stream))
			}
		}
	}
	for _, e := range later {
		e.raw.Nak()
		r.naks.Inc()
	}
	return fmt.Errorf("%w (cursor %d, got %d)", errReorder, cursor, later[0].meta.Sequence.Stream)
}

func (r *Runner) backoff(delivered uint64) time.Duration {
	d := 100 * time.Millisecond
	for i := uint64(1); i < delivered && d < r.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, r.cfg.MaxBackoff)
}

func recordPoison(tx *bolt.Tx, durable string, seq uint64, e *entry, err error) error {
	b, berr := tx.CreateBucketIfNotExists([]byte(PoisonBucket))
	if berr != nil {
		return berr
	}
	k := make([]byte, 0, len(durable)+9)
	k = append(k, durable...)
	k = append(k, 0)
	k = binary.BigEndian.AppendUint64(k, seq)
	v, _ := json.Marshal(map[string]any{"subject": e.raw.Subject(), "event_id": e.ev.ID, "error": err.Error()})
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
