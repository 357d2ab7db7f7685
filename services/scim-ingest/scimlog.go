package scimingest

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/fault"
	"github.com/scimflow/scimflow/internal/outbox"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// maxEventBytes bounds one encoded event. JetStream refuses messages over 1 MB (max_payload), and a
// refused outbox record would block the relay for good, so an event that could not be published is
// refused before it commits (413) instead.
const maxEventBytes = 900 << 10

// maxLoggedBody bounds the request body copied into a provisioning-log record; a longer body is
// replaced by a note of its size.
const maxLoggedBody = 64 << 10

// commitBucket holds the commit counter (its bbolt bucket sequence).
const commitBucket = "commits"

// appendEvents adds the events of one write to the outbox inside tx, refusing any event too large to
// publish. It is the only place scim-ingest appends to the outbox: store.write (changes with their
// log records) and store.submitLogs (log records of requests that changed nothing) both end here. It
// stamps the events with the write's commit number (one per call, strictly increasing in this file)
// and puts a copy of each security fact on the priority lane (docs/architecture.md, "Lanes").
func (st *store) appendEvents(tx *bolt.Tx, now time.Time, evs []events.Event) error {
	for _, e := range evs {
		b, err := events.Marshal(e)
		if err != nil {
			return err
		}
		if len(b) > maxEventBytes {
			return fault.E(fault.TooLarge, "the resource is too large to publish (%d bytes encoded)", len(b))
		}
	}
	cb, err := tx.CreateBucketIfNotExists([]byte(commitBucket))
	if err != nil {
		return err
	}
	commit, err := cb.NextSequence()
	if err != nil {
		return err
	}
	var prio []events.Event
	for i := range evs {
		evs[i].Commit = commit
		if securityFact(evs[i]) {
			prio = append(prio, evs[i])
		}
	}
	if err := outbox.Append(tx, now, evs...); err != nil {
		return err
	}
	if len(prio) > 0 {
		return outbox.AppendPriority(tx, now, prio...)
	}
	return nil
}

// securityFact reports whether ev takes access away, and so must not wait behind bulk work: a user
// set inactive (not created inactive: nothing to take away), a user deleted, or members removed from
// a group under the reauth policy (their sessions are revoked).
func securityFact(ev events.Event) bool {
	switch d := ev.Data.(type) {
	case events.SCIMUserUpserted:
		return !d.Active && !d.Created
	case events.SCIMUserDeleted:
		return true
	case events.SCIMGroupMembers:
		return len(d.Removed) > 0 && d.Policy.IdentityUpdateBehavior == events.UpdateReauth
	}
	return false
}

const (
	redacted = "[REDACTED]"
	dropped  = "[NOT LOGGED: unknown extension]"
)

// secretWords are the parts of an attribute name that mark a secret; any key holding one, in any
// letter case, is redacted wherever it appears (the schema's password attribute included).
var secretWords = []string{"password", "passwd", "pwd", "secret", "credential", "token"}

// sensitiveKey reports whether an attribute name or path holds a secret.
func sensitiveKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// unknownExtension reports whether a key or path names an attribute of a schema extension scimflow
// does not know. scimflow cannot tell what such values hold (a badge number, a credential under
// any name), so the log keeps the key and drops the value.
func unknownExtension(k string) bool {
	lk := strings.ToLower(k)
	if !strings.HasPrefix(lk, "urn:") {
		return false
	}
	for _, urn := range []string{scimschema.User, scimschema.Group, scimschema.Enterprise} {
		if strings.HasPrefix(lk, strings.ToLower(urn)) {
			return false
		}
	}
	if _, ok := legacyURN(k); ok {
		return false
	}
	return true
}

// redactBody returns the request body for the provisioning log with secrets replaced: every
// sensitive key at any depth, the value of a PATCH operation whose path names one, and every value
// under an unknown extension (a resource's extension container, an operation's path or a path-less
// operation's key). A body that is not JSON is not logged (it might be anything).
func redactBody(body []byte) json.RawMessage {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return json.RawMessage(`{"unparsable_body_bytes":` + itoa(len(body)) + `}`)
	}
	if m, ok := v.(map[string]any); ok {
		dropExtensions(m)
		for k, ops := range m {
			if !strings.EqualFold(k, "Operations") {
				continue
			}
			list, _ := ops.([]any)
			for _, op := range list {
				om, ok := op.(map[string]any)
				if !ok {
					continue
				}
				unknownPath := false
				for opKey, ov := range om {
					if strings.EqualFold(opKey, "path") {
						p, _ := ov.(string)
						unknownPath = unknownExtension(strings.TrimSpace(p))
					}
				}
				for opKey, ov := range om {
					if !strings.EqualFold(opKey, "value") {
						continue
					}
					if unknownPath {
						om[opKey] = dropped
					} else if vm, isMap := ov.(map[string]any); isMap {
						dropExtensions(vm)
					}
				}
			}
		}
	}
	out, err := json.Marshal(redact(v))
	if err != nil {
		return nil
	}
	if len(out) > maxLoggedBody {
		return json.RawMessage(`{"truncated_body_bytes":` + itoa(len(body)) + `}`)
	}
	return out
}

// dropExtensions replaces the values of m's unknown-extension keys.
func dropExtensions(m map[string]any) {
	for k := range m {
		if unknownExtension(k) {
			m[k] = dropped
		}
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func redact(v any) any {
	switch x := v.(type) {
	case map[string]any:
		pathSensitive := false
		for k, e := range x {
			if strings.EqualFold(k, "path") {
				if p, ok := e.(string); ok && sensitiveKey(p) {
					pathSensitive = true
				}
			}
		}
		for k, e := range x {
			switch {
			case sensitiveKey(k):
				x[k] = redacted
			case pathSensitive && strings.EqualFold(k, "value"):
				x[k] = redacted
			default:
				x[k] = redact(e)
			}
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = redact(e)
		}
		return x
	}
	return v
}

// idGen mints resource ids: UUID version 7 (RFC 9562) with a 12-bit counter in rand_a (§6.2, method
// 1), so ids increase in the order they are minted even within one millisecond, resources list in
// creation order, and every id is a valid subject token. Client-supplied ids are never used in
// subjects.
type idGen struct {
	mu     sync.Mutex // guards the following
	lastMs int64
	seq    uint16
}

func (g *idGen) next(now time.Time) string {
	g.mu.Lock()
	ms := now.UnixMilli()
	if ms <= g.lastMs {
		ms = g.lastMs
		g.seq++
		if g.seq > 0x0fff {
			ms, g.seq = ms+1, 0
		}
	} else {
		g.seq = 0
	}
	g.lastMs = ms
	seq := g.seq
	g.mu.Unlock()
	var u [16]byte
	binary.BigEndian.PutUint64(u[:8], uint64(ms)<<16|uint64(0x7000|seq))
	rand.Read(u[8:])
	u[8] = (u[8] & 0x3f) | 0x80
	s := hex.EncodeToString(u[:])
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32]
}

// logFlushDelay is how long the provisioning-log record of a request that changed nothing (a read or
// a rejected write) may wait to be committed together with others; logFlushMax flushes earlier.
const (
	logFlushDelay = 10 * time.Millisecond
	logFlushMax   = 256
)

// logBuffer batches the log records of requests that changed nothing. Each such record would
// otherwise cost a commit (and an fsync) of its own on the committer, which slowed reads down under
// load; a crash may lose the last logFlushDelay of them, never a change or a change's record (those
// commit in the change's own transaction).
type logBuffer struct {
	flush func([]events.Event)

	mu      sync.Mutex // guards the following
	pending []events.Event
	timer   *time.Timer
}

func (b *logBuffer) add(e events.Event) {
	b.mu.Lock()
	b.pending = append(b.pending, e)
	if len(b.pending) >= logFlushMax {
		evs := b.takeLocked()
		b.mu.Unlock()
		b.flush(evs)
		return
	}
	if b.timer == nil {
		b.timer = time.AfterFunc(logFlushDelay, b.flushNow)
	}
	b.mu.Unlock()
}

// flushNow hands the pending records to flush; Run calls it once the HTTP server has stopped.
func (b *logBuffer) flushNow() {
	b.mu.Lock()
	evs := b.takeLocked()
	b.mu.Unlock()
	if len(evs) > 0 {
		b.flush(evs)
	}
}

func (b *logBuffer) takeLocked() []events.Event {
	evs := b.pending
	b.pending = nil
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	return evs
}
