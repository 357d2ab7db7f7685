// Package idpwatch keeps a service's view of the idp_config KV bucket current. Every service that
// reads IdP definitions uses it, so they all treat the bucket the same way: the KV key is the IdP id
// (it is the SCIM path segment and the subjects' IdP token, whatever the value says), a deleted key
// removes the IdP, and an entry that does not decode disables that IdP — failing closed beats serving
// with a configuration nobody can read, and a previous, readable version may be exactly what an admin
// meant to replace.
package idpwatch

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
)

// Func receives every change: the IdP as it is now, or nil when it was deleted or its entry does not
// decode. It is called from one goroutine, in bucket order.
type Func func(id string, idp *events.IdP)

// RevFunc is Func with the entry's revision (the KV stream sequence), for a watcher that also writes
// the bucket and must not let a late watch update undo its own newer write (identity-store's cache).
type RevFunc func(id string, idp *events.IdP, rev uint64)

// Watcher follows the bucket until its context ends, re-establishing the watch when it breaks.
type Watcher struct {
	kv    jetstream.KeyValue
	apply RevFunc
	log   *slog.Logger

	mu     sync.Mutex // guards the following
	synced bool
	wait   chan struct{} // closed once the initial values were applied
}

// New returns a watcher of kv that calls apply for each change.
func New(kv jetstream.KeyValue, apply Func, log *slog.Logger) *Watcher {
	return NewRev(kv, func(id string, idp *events.IdP, _ uint64) { apply(id, idp) }, log)
}

// NewRev returns a watcher of kv that calls apply for each change, with the entry's revision.
func NewRev(kv jetstream.KeyValue, apply RevFunc, log *slog.Logger) *Watcher {
	if log == nil {
		log = slog.Default()
	}
	return &Watcher{kv: kv, apply: apply, log: log, wait: make(chan struct{})}
}

// Synced reports whether the bucket's values at start have all been applied.
func (w *Watcher) Synced() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.synced
}

// WaitSynced blocks until Synced or ctx ends.
func (w *Watcher) WaitSynced(ctx context.Context) error {
	select {
	case <-w.wait:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run watches until ctx ends. A watch that fails or closes is re-established after a second; the
// re-established watch replays the current values, so nothing changed meanwhile is missed.
func (w *Watcher) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		kw, err := w.kv.WatchAll(ctx)
		if err != nil {
			w.log.Warn("watch idp_config failed; retrying", "err", err)
		} else {
			w.follow(ctx, kw)
			kw.Stop()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

func (w *Watcher) follow(ctx context.Context, kw jetstream.KeyWatcher) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-kw.Updates():
			if !ok {
				if ctx.Err() == nil {
					w.log.Warn("idp_config watch closed; re-establishing")
				}
				return
			}
			if e == nil {
				w.mu.Lock()
				if !w.synced {
					w.synced = true
					close(w.wait)
				}
				w.mu.Unlock()
				continue
			}
			w.apply(e.Key(), Decode(e, w.log), e.Revision())
		}
	}
}

// Decode returns the IdP an entry holds, or nil when the entry is a deletion or does not decode (logged
// as an error: the IdP is disabled until an admin saves it again).
func Decode(e jetstream.KeyValueEntry, log *slog.Logger) *events.IdP {
	if e.Operation() != jetstream.KeyValuePut {
		return nil
	}
	var idp events.IdP
	if err := json.Unmarshal(e.Value(), &idp); err != nil {
		if log != nil {
			log.Error("idp_config entry does not decode; IdP disabled until it is saved again", "idp_id", e.Key(), "err", err)
		}
		return nil
	}
	idp.ID = e.Key()
	return &idp
}
