package identitystore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/consumer"
)

// ReplayOptions tune Replay.
type ReplayOptions struct {
	// SCIMLogRetention must equal the live service's identity_store.scim_log_retention for the dumps to
	// match; zero means the default (30 days).
	SCIMLogRetention time.Duration
	// BatchSize is the number of events applied per bbolt transaction; default 10000.
	BatchSize int
}

// Replay rebuilds the registry from the SCIM, AUTH and IDENTITY streams into a fresh bbolt file at path
// (which must not exist), without publishing anything. Events are applied in each stream's order, the
// streams merged by event time, with the default SCIM log retention. The consumer cursors are written
// too, so the rebuilt file can replace the live one.
func Replay(ctx context.Context, js jetstream.JetStream, path string) error {
	return ReplayWith(ctx, js, path, ReplayOptions{})
}

// ReplayWith is Replay with options.
func ReplayWith(ctx context.Context, js jetstream.JetStream, path string, o ReplayOptions) error {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("replay: %s already exists; replay builds a fresh file", path)
	}
	db, err := openStore(path)
	if err != nil {
		return err
	}
	defer db.Close()
	src := &replaySource{}
	for _, s := range []struct{ stream, durable string }{{events.StreamSCIM, DurableSCIM}, {events.StreamAuth, DurableAuth}, {events.StreamIdentity, DurableIdentity}} {
		r, err := newStreamReader(ctx, js, s.stream, s.durable)
		if err != nil {
			return err
		}
		if r != nil {
			defer r.stop()
			src.readers = append(src.readers, r)
		}
	}
	return replayInto(ctx, db, src, o)
}

// replayMsg is one message to replay.
type replayMsg struct {
	durable string
	seq     uint64
	ev      events.Event
	err     error // decode error: poison
}

// replaySource merges stream readers by event time (ties: reader order), keeping each stream's order.
type replaySource struct {
	readers []*streamReader
}

func (s *replaySource) next(ctx context.Context) (*replayMsg, error) {
	var best *streamReader
	for _, r := range s.readers {
		m, err := r.peek(ctx)
		if err != nil {
			return nil, err
		}
		if m == nil {
			continue
		}
		if best == nil || m.ev.OccurredAt.Before(best.head.ev.OccurredAt) {
			best = r
		}
	}
	if best == nil {
		return nil, nil
	}
	m := best.head
	best.head = nil
	return m, nil
}

// streamReader reads a stream from sequence 1 up to its last sequence at start, with an ordered
// consumer (no server-side durable state).
type streamReader struct {
	durable string
	last    uint64
	it      jetstream.MessagesContext
	ch      chan *replayMsg // filled by a goroutine that fetches and decodes ahead of the applier
	cancel  context.CancelFunc
	errc    chan error
	head    *replayMsg
	done    bool
}

func newStreamReader(ctx context.Context, js jetstream.JetStream, stream, durable string) (*streamReader, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("replay: stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("replay: stream %s: %w", stream, err)
	}
	if info.State.FirstSeq > 1 && info.State.LastSeq > 0 {
		return nil, fmt.Errorf("replay: stream %s starts at sequence %d: events 1..%d are gone", stream, info.State.FirstSeq, info.State.FirstSeq-1)
	}
	r := &streamReader{durable: durable, last: info.State.LastSeq}
	if r.last == 0 {
		r.done = true
		return r, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, fmt.Errorf("replay: stream %s: %w", stream, err)
	}
	if r.it, err = cons.Messages(jetstream.PullMaxMessages(2000)); err != nil {
		return nil, fmt.Errorf("replay: stream %s: %w", stream, err)
	}
	rctx, cancel := context.WithCancel(ctx)
	r.cancel, r.ch, r.errc = cancel, make(chan *replayMsg, 4096), make(chan error, 1)
	go r.fetch(rctx)
	return r, nil
}

// replayStall is how long a replay waits for the next message before giving up.
const replayStall = time.Minute

// fetch reads and decodes messages up to the last sequence, in order, into r.ch.
func (r *streamReader) fetch(ctx context.Context) {
	defer close(r.ch)
	progress := time.Now()
	for ctx.Err() == nil {
		m, err := r.it.Next(jetstream.NextMaxWait(5 * time.Second))
		if err != nil {
			// A pull that times out is retried while the stream may still be electing a leader
			// (a cluster just after a node loss or a partition heals): the ordered consumer
			// recreates itself, and nothing is skipped. Only a minute without any message fails.
			if errors.Is(err, nats.ErrTimeout) && time.Since(progress) < replayStall && ctx.Err() == nil {
				continue
			}
			r.errc <- fmt.Errorf("replay %s: %w", r.durable, err)
			return
		}
		progress = time.Now()
		meta, err := m.Metadata()
		if err != nil {
			r.errc <- fmt.Errorf("replay %s: %w", r.durable, err)
			return
		}
		seq := meta.Sequence.Stream
		if seq > r.last {
			return
		}
		// A batch message yields one replayMsg per event, all with the message's sequence; the live
		// runner applies them in the same order in one transaction.
		evs, derr := events.DecodeMessage(m.Subject(), m.Data())
		if derr != nil {
			evs = []events.Event{{}}
		}
		for _, ev := range evs {
			select {
			case r.ch <- &replayMsg{durable: r.durable, seq: seq, ev: ev, err: derr}:
			case <-ctx.Done():
				return
			}
		}
		if seq == r.last {
			return
		}
	}
}

func (r *streamReader) stop() {
	if r.cancel != nil {
		r.cancel()
		for range r.ch { // let fetch finish before stopping the iterator it uses
		}
	}
	if r.it != nil {
		r.it.Stop()
	}
}

func (r *streamReader) peek(ctx context.Context) (*replayMsg, error) {
	if r.head != nil {
		return r.head, nil
	}
	if r.done {
		return nil, nil
	}
	select {
	case m, ok := <-r.ch:
		if !ok {
			r.done = true
			select {
			case err := <-r.errc:
				return nil, err
			default:
				return nil, nil
			}
		}
		r.head = m
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// msgSource yields messages in apply order; nil at the end.
type msgSource interface {
	next(ctx context.Context) (*replayMsg, error)
}

// replayInto applies every message of src to db in groups, skipping poison (a permanent error rolls
// the group back and it is redone without that message, as the live runner does).
func replayInto(ctx context.Context, db *bolt.DB, src msgSource, o ReplayOptions) error {
	ret := o.SCIMLogRetention
	if ret == 0 {
		ret = DefaultSCIMLogRetention
	}
	batch := o.BatchSize
	if batch <= 0 {
		batch = 10000
	}
	p := &projector{logRetention: ret}
	for {
		var group []*replayMsg
		for len(group) < batch {
			m, err := src.next(ctx)
			if err != nil {
				return err
			}
			if m == nil {
				break
			}
			group = append(group, m)
		}
		if len(group) == 0 {
			return nil
		}
		skip := map[*replayMsg]bool{}
		for {
			var bad *replayMsg
			err := db.Update(func(tx *bolt.Tx) error {
				cache := newUserCache()
				cursors := map[string]uint64{}
				for _, m := range group {
					cursors[m.durable] = m.seq
					if skip[m] {
						continue
					}
					err := m.err
					if err == nil {
						err = p.applyDiscard(tx, m.ev, cache)
					} else {
						err = consumer.Permanent(err)
					}
					if err != nil {
						bad = m
						return err
					}
				}
				if err := cache.flush(tx); err != nil {
					return err
				}
				b, err := tx.CreateBucketIfNotExists([]byte(consumer.CursorBucket))
				if err != nil {
					return err
				}
				for d, seq := range cursors {
					var v [8]byte
					binary.BigEndian.PutUint64(v[:], seq)
					if err := b.Put([]byte(d), v[:]); err != nil {
						return err
					}
				}
				return nil
			})
			if err == nil {
				break
			}
			if bad != nil && consumer.IsPermanent(err) {
				skip[bad] = true
				continue
			}
			return fmt.Errorf("replay: %w", err)
		}
	}
}
