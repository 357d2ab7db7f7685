package events

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

type typeKey struct {
	typ     string
	version int
}

// registry maps every known (type, version) to a decoder. It is explicit so an event the code does not
// know is rejected, never half-decoded.
var registry = map[typeKey]func([]byte) (Payload, error){
	{TypeSCIMUserUpserted, 1}:    decodeAs[SCIMUserUpserted],
	{TypeSCIMUserDeleted, 1}:     decodeAs[SCIMUserDeleted],
	{TypeSCIMGroupUpserted, 1}:   decodeAs[SCIMGroupUpserted],
	{TypeSCIMGroupMembers, 1}:    decodeAs[SCIMGroupMembers],
	{TypeSCIMGroupDeleted, 1}:    decodeAs[SCIMGroupDeleted],
	{TypeSCIMLog, 1}:             decodeAs[SCIMLog],
	{TypeIdentityChanged, 1}:     decodeAs[IdentityChanged],
	{TypeSessionsRevoked, 1}:     decodeAs[SessionsRevoked],
	{TypeSeatRemoved, 1}:         decodeAs[SeatRemoved],
	{TypeUserLocked, 1}:          decodeAs[UserLocked],
	{TypeUserUnlocked, 1}:        decodeAs[UserUnlocked],
	{TypeSubBound, 1}:            decodeAs[SubBound],
	{TypeSubReset, 1}:            decodeAs[SubReset],
	{TypeSessionRevoked, 1}:      decodeAs[SessionRevoked],
	{TypeIdPSessionsRevoked, 1}:  decodeAs[IdPSessionsRevoked],
	{TypeIdPSubBindingsReset, 1}: decodeAs[IdPSubBindingsReset],
	{TypeLoggedIn, 1}:            decodeAs[LoggedIn],
	{TypeLoggedOut, 1}:           decodeAs[LoggedOut],
	{TypeLoginDenied, 1}:         decodeAs[LoginDenied],
	{TypeAccessAppChanged, 1}:    decodeAs[AccessAppChanged],
	{TypeAccessDecided, 1}:       decodeAs[AccessDecided],
}

func decodeAs[T Payload](b []byte) (Payload, error) {
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// Known reports whether (typ, version) is registered.
func Known(typ string, version int) bool {
	_, ok := registry[typeKey{typ, version}]
	return ok
}

type envelope struct {
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	Version       int             `json:"version"`
	OccurredAt    time.Time       `json:"occurred_at"`
	IdPID         string          `json:"idp_id"`
	Subject       string          `json:"subject"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	CausationID   string          `json:"causation_id,omitempty"`
	Commit        uint64          `json:"commit,omitempty"`
	Actor         string          `json:"actor,omitempty"`
	Data          json.RawMessage `json:"data"`
}

// Marshal encodes e as JSON after checking it is well formed.
func Marshal(e Event) ([]byte, error) {
	if err := e.validate(); err != nil {
		return nil, err
	}
	data, err := json.Marshal(e.Data)
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", e.Type, err)
	}
	return json.Marshal(envelope{
		ID: e.ID, Type: e.Type, Version: e.Version, OccurredAt: e.OccurredAt.UTC(), IdPID: e.IdPID,
		Subject: e.Subject, CorrelationID: e.CorrelationID, CausationID: e.CausationID, Commit: e.Commit, Actor: e.Actor, Data: data,
	})
}

// MarshalJSON makes Event encode as its wire envelope.
func (e Event) MarshalJSON() ([]byte, error) { return Marshal(e) }

// UnmarshalJSON decodes a wire envelope, with the checks of Decode except the transport subject.
func (e *Event) UnmarshalJSON(b []byte) error {
	ev, err := Decode("", b)
	if err != nil {
		return err
	}
	*e = ev
	return nil
}

// Decode decodes a message received on subject. It rejects an unknown type or version, a missing or
// malformed id, and a subject (transport or envelope) that does not match the payload. An empty
// subject skips the transport check (for JSONL files).
func Decode(subject string, b []byte) (Event, error) {
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return Event{}, fmt.Errorf("decode envelope: %w", err)
	}
	dec, ok := registry[typeKey{env.Type, env.Version}]
	if !ok {
		return Event{}, fmt.Errorf("%w: %q v%d", ErrUnknownType, env.Type, env.Version)
	}
	if env.ID == "" {
		return Event{}, errors.New("decode event: missing id")
	}
	if _, err := ulid.ParseStrict(env.ID); err != nil {
		return Event{}, fmt.Errorf("decode event: id %q is not a ULID", env.ID)
	}
	if len(env.Data) == 0 || bytes.Equal(env.Data, []byte("null")) {
		return Event{}, fmt.Errorf("decode event %s: missing data", env.ID)
	}
	p, err := dec(env.Data)
	if err != nil {
		return Event{}, fmt.Errorf("decode event %s data: %w", env.ID, err)
	}
	e := Event{
		ID: env.ID, Type: env.Type, Version: env.Version, OccurredAt: env.OccurredAt, IdPID: env.IdPID,
		Subject: env.Subject, CorrelationID: env.CorrelationID, CausationID: env.CausationID, Commit: env.Commit, Actor: env.Actor, Data: p,
	}
	if err := e.validate(); err != nil {
		return Event{}, err
	}
	if subject != "" && subject != e.Subject && subject != PriorityPrefix+e.Subject {
		return Event{}, fmt.Errorf("event %s: received on %q but its subject is %q", e.ID, subject, e.Subject)
	}
	return e, nil
}

func (e Event) validate() error {
	if e.Data == nil {
		return errors.New("event: no payload")
	}
	if e.ID == "" {
		return errors.New("event: missing id")
	}
	if e.Type != e.Data.EventType() || e.Version != e.Data.EventVersion() {
		return fmt.Errorf("event %s: type %s v%d does not match payload %s v%d", e.ID, e.Type, e.Version, e.Data.EventType(), e.Data.EventVersion())
	}
	if !ValidToken(e.IdPID) {
		return fmt.Errorf("event %s: invalid idp_id %q", e.ID, e.IdPID)
	}
	want := e.Data.Subject(e.IdPID)
	if e.Subject != want {
		return fmt.Errorf("event %s: subject %q does not match payload (want %q)", e.ID, e.Subject, want)
	}
	if _, err := ParseSubject(want); err != nil {
		return fmt.Errorf("event %s: %w", e.ID, err)
	}
	if e.OccurredAt.IsZero() {
		return fmt.Errorf("event %s: missing occurred_at", e.ID)
	}
	return nil
}

// Record is one line of a JSONL export: the stream sequence (0 when unknown) and the event.
type Record struct {
	Seq   uint64 `json:"seq,omitempty"`
	Event Event  `json:"event"`
}

// WriteJSONL writes records, one JSON object per line.
func WriteJSONL(w io.Writer, recs []Record) error {
	bw := bufio.NewWriter(w)
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		bw.Write(b)
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// ReadJSONL reads every record of a JSONL export.
func ReadJSONL(r io.Reader) ([]Record, error) {
	var recs []Record
	err := Replay(r, func(rec Record) error {
		recs = append(recs, rec)
		return nil
	})
	return recs, err
}

// Replay decodes r line by line and calls h for each record in order, stopping at the first error.
// Blank lines are skipped; errors name the line.
func Replay(r io.Reader, h func(Record) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 8<<20)
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var rec Record
		if err := json.Unmarshal(b, &rec); err != nil {
			return fmt.Errorf("jsonl line %d: %w", line, err)
		}
		if err := h(rec); err != nil {
			return fmt.Errorf("jsonl line %d: %w", line, err)
		}
	}
	return sc.Err()
}

// Chunk splits a membership change into events of at most MaxMembersPerEvent ids. The first chunk
// carries Replace. A change with no ids yields one event (needed for a replace that empties a group).
func Chunk(groupID, displayName string, replace bool, added, removed []string, version int64) []SCIMGroupMembers {
	type op struct {
		id  string
		add bool
	}
	ops := make([]op, 0, len(added)+len(removed))
	for _, id := range removed {
		ops = append(ops, op{id, false})
	}
	for _, id := range added {
		ops = append(ops, op{id, true})
	}
	var out []SCIMGroupMembers
	for i := 0; i == 0 || i < len(ops); i += MaxMembersPerEvent {
		end := min(i+MaxMembersPerEvent, len(ops))
		m := SCIMGroupMembers{GroupID: groupID, DisplayName: displayName, Replace: replace && i == 0, Added: []string{}, Removed: []string{}, ResourceVersion: version}
		for _, o := range ops[i:end] {
			if o.add {
				m.Added = append(m.Added, o.id)
			} else {
				m.Removed = append(m.Removed, o.id)
			}
		}
		out = append(out, m)
	}
	for i := range out {
		out[i].Chunk, out[i].Chunks = i, len(out)
	}
	return out
}

// Batch messages. A JetStream message carries one event (its envelope, a JSON object) or several
// events that committed in one transaction of the publishing service (a JSON array of envelopes, in
// commit order). The server fsyncs about once per stored message, so messages per write, not bytes,
// bound the pipeline; grouping the events of one transaction keeps their order and makes the
// message's content, and so its Nats-Msg-Id, a deterministic function of the outbox (see
// internal/outbox). The message's subject is its first event's subject (with PriorityPrefix on a
// priority lane); every other event must belong to the same stream, so a publisher allowed on one
// stream's subjects cannot slip an event into another stream's consumers.

// MarshalBatch encodes evs as one message body: the single envelope for one event, a JSON array
// otherwise.
func MarshalBatch(evs []Event) ([]byte, error) {
	if len(evs) == 0 {
		return nil, errors.New("empty batch")
	}
	parts := make([][]byte, len(evs))
	for i, e := range evs {
		b, err := Marshal(e)
		if err != nil {
			return nil, err
		}
		parts[i] = b
	}
	if len(parts) == 1 {
		return parts[0], nil
	}
	return JoinBatch(parts), nil
}

// JoinBatch joins already encoded envelopes into a batch body.
func JoinBatch(parts [][]byte) []byte {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, p := range parts {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(p)
	}
	buf.WriteByte(']')
	return buf.Bytes()
}

// DecodeMessage decodes a message received on subject: one event or a batch. Every event passes
// Decode's checks; in a batch the first event's subject must be the message's, and every event must
// belong to the same stream as the message's subject. An empty subject skips the transport checks.
func DecodeMessage(subject string, b []byte) ([]Event, error) {
	trimmed := bytes.TrimLeft(b, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '[' {
		e, err := Decode(subject, b)
		if err != nil {
			return nil, err
		}
		return []Event{e}, nil
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(trimmed, &raws); err != nil {
		return nil, fmt.Errorf("decode batch: %w", err)
	}
	if len(raws) == 0 {
		return nil, errors.New("decode batch: no events")
	}
	lane := ""
	if strings.HasPrefix(subject, PriorityPrefix) {
		lane = PriorityPrefix
	}
	stream := StreamOf(subject)
	out := make([]Event, 0, len(raws))
	for i, raw := range raws {
		want := ""
		if i == 0 {
			want = subject
		}
		e, err := Decode(want, raw)
		if err != nil {
			return nil, fmt.Errorf("batch event %d: %w", i, err)
		}
		if subject != "" && StreamOf(lane+e.Subject) != stream {
			return nil, fmt.Errorf("batch event %s: subject %q is not in stream %s of the message subject %q", e.ID, e.Subject, stream, subject)
		}
		out = append(out, e)
	}
	return out, nil
}
