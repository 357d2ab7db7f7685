// Package events is scimflow's wire contract: the envelope every service publishes, a Go type for every
// fact of docs/design.md §3, subject builders and parsers, and a JSON codec with an explicit type registry.
//
// Services share nothing but this package and platform code, so every change here is an API change:
// payload changes inside a version are additive only, and the golden files under testdata fail on any
// wire change.
package events

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/scimflow/scimflow/person"
)

// Streams and the subjects they hold. Consumers read whole streams (unfiltered) so that the stream
// sequence is contiguous and a gap means loss.
//
// SCIM_PRIORITY and IDENTITY_PRIORITY are the priority lanes: security facts (a deactivation, a
// deletion, a membership removal in reauth mode, and the revocations and locks they cause) are
// published there too, so they never queue behind bulk work in the SCIM and IDENTITY streams. A lane
// is a stream of its own, not extra subjects in the same stream, so each lane is read whole with its
// own durable and cursor and a sequence gap still means loss. See docs/architecture.md, "Lanes".
const (
	StreamSCIM             = "SCIM"
	StreamIdentity         = "IDENTITY"
	StreamAuth             = "AUTH"
	StreamSCIMPriority     = "SCIM_PRIORITY"
	StreamIdentityPriority = "IDENTITY_PRIORITY"
)

// PriorityPrefix is put before an event's own subject when it travels on a priority lane
// ("prio.scim.{idp}.user.{id}.upserted"); the envelope keeps the event's own subject.
const PriorityPrefix = "prio."

// StreamSubjects lists the subjects each stream captures.
var StreamSubjects = map[string][]string{
	StreamSCIM:             {"scim.>", "scimlog.>"},
	StreamIdentity:         {"identity.>"},
	StreamAuth:             {"auth.>"},
	StreamSCIMPriority:     {PriorityPrefix + "scim.>"},
	StreamIdentityPriority: {PriorityPrefix + "identity.>"},
}

// StreamOf returns the stream that captures subject, or "" when none does.
func StreamOf(subject string) string {
	for name, subs := range StreamSubjects {
		for _, s := range subs {
			if strings.HasPrefix(subject, strings.TrimSuffix(s, ">")) {
				return name
			}
		}
	}
	return ""
}

// Payload is implemented by every fact. Type and Version select the decoder; Subject builds the NATS
// subject from the IdP id and the ids inside the payload, so the codec can check that a message's
// subject matches its content.
type Payload interface {
	EventType() string
	EventVersion() int
	Subject(idpID string) string
}

// Event is the envelope of docs/design.md §3 with its decoded payload.
type Event struct {
	ID            string    // ULID; also the Nats-Msg-Id, so a relay retry is deduplicated
	Type          string    // e.g. "scim.user.upserted"
	Version       int       // payload version; a breaking change is a new version
	OccurredAt    time.Time // when the change committed (event time; projections never read the clock)
	IdPID         string    // the identity provider the fact belongs to
	Subject       string    // NATS subject, derived from IdPID and the payload
	CorrelationID string    // the SCIM request or login that caused it
	CausationID   string    // the event that directly caused it, if any
	// Commit is the commit number scim-ingest stamped on the SCIM write that caused the event
	// (strictly increasing per scim-ingest data file, shared by every event of one write), inherited
	// by every event derived from it; 0 for facts no SCIM write caused (logins, admin actions). It
	// orders a fact against others about the same user whichever lane carried it.
	Commit uint64
	// Actor says who made the fact: ActorAdmin for the admin API's facts and the events derived from
	// them (inherited like Commit); "" otherwise. Projections branch on it, never on the correlation
	// id's text.
	Actor string
	Data  Payload
}

// ActorAdmin marks a fact the admin API published (a revocation, a seat removal, an access app
// change) on the admin's request.
const ActorAdmin = "admin"

// New builds an event with a fresh ULID minted at occurredAt. The subject, type and version come from
// the payload.
func New(idpID string, occurredAt time.Time, correlationID, causationID string, p Payload) Event {
	return Event{
		ID:            NewID(occurredAt),
		Type:          p.EventType(),
		Version:       p.EventVersion(),
		OccurredAt:    occurredAt.UTC(),
		IdPID:         idpID,
		Subject:       p.Subject(idpID),
		CorrelationID: correlationID,
		CausationID:   causationID,
		Data:          p,
	}
}

// Derived builds an event caused by parent. Its id is derived from the parent's id and index, and its
// time is the parent's, so a projection that emits events stays deterministic: replaying the same
// stream mints the same ids (and JetStream deduplicates a re-publish).
func Derived(parent Event, index int, p Payload) Event {
	e := New(parent.IdPID, parent.OccurredAt, parent.CorrelationID, parent.ID, p)
	e.ID = DeriveID(parent.ID, index)
	e.Commit = parent.Commit
	e.Actor = parent.Actor
	return e
}

// NewID returns a new ULID string with the timestamp t and random entropy.
func NewID(t time.Time) string {
	return ulid.MustNew(ulid.Timestamp(t), rand.Reader).String()
}

// DeriveID returns a ULID that is a pure function of parent and index: the parent's timestamp and
// entropy from SHA-256(parent, index).
func DeriveID(parent string, index int) string {
	var ts uint64
	if p, err := ulid.ParseStrict(parent); err == nil {
		ts = p.Time()
	}
	h := sha256.New()
	h.Write([]byte(parent))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(index))
	h.Write(b[:])
	sum := h.Sum(nil)
	var id ulid.ULID
	if err := id.SetTime(ts); err != nil {
		return ""
	}
	copy(id[6:], sum[:10])
	return id.String()
}

// UserID is the default registry id of a user: a name-based UUID (version 8, SHA-256) of the IdP id and
// the lower-cased email. Any service computes it without asking identity-store; identity-store keeps
// a user's id stable if the email later changes, and auth then learns the id from the IDENTITY stream.
func UserID(idpID, email string) string {
	sum := sha256.Sum256([]byte("scimflow-user\x00" + idpID + "\x00" + person.NormalizeEmail(email)))
	u := sum[:16]
	u[6] = (u[6] & 0x0f) | 0x80 // version 8
	u[8] = (u[8] & 0x3f) | 0x80 // RFC 9562 variant
	s := hex.EncodeToString(u)
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32]
}

// ValidToken reports whether s can be one token of a subject: non-empty, no dots, wildcards or spaces.
// Ids that fail cannot be put in a subject; producers must reject them before committing.
func ValidToken(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for _, r := range s {
		switch {
		case r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f:
			return false
		}
	}
	return true
}

// Subject kinds of the entity a subject names.
const (
	KindUser  = "user"
	KindGroup = "group"
	// KindIdP names a fact about a whole identity provider (IDENTITY only); its entity id is the
	// IdP id again, so every subject keeps five tokens.
	KindIdP = "idp"
)

// ParsedSubject is a subject split into its parts.
type ParsedSubject struct {
	Prefix   string // scim, scimlog, identity, auth
	IdPID    string
	Kind     string // user, group (scim), app (identity, auth) or idp (identity); empty for scimlog
	EntityID string
	Fact     string // upserted, deleted, members, changed, …; empty for scimlog
}

// ParseSubject splits a subject built by this package.
func ParseSubject(s string) (ParsedSubject, error) {
	parts := strings.Split(s, ".")
	switch {
	case len(parts) == 2 && parts[0] == "scimlog":
		return ParsedSubject{Prefix: parts[0], IdPID: parts[1]}, nil
	case len(parts) == 5 && (parts[0] == "scim" || parts[0] == "identity" || parts[0] == "auth"):
		p := ParsedSubject{Prefix: parts[0], IdPID: parts[1], Kind: parts[2], EntityID: parts[3], Fact: parts[4]}
		if p.Kind != KindUser && !(p.Prefix == "scim" && p.Kind == KindGroup) && !(p.Prefix != "scim" && p.Kind == KindApp) &&
			!(p.Prefix == "identity" && p.Kind == KindIdP && p.EntityID == p.IdPID) {
			return ParsedSubject{}, fmt.Errorf("subject %q: unknown entity kind %q", s, p.Kind)
		}
		for _, t := range parts {
			if !ValidToken(t) {
				return ParsedSubject{}, fmt.Errorf("subject %q: empty or invalid token", s)
			}
		}
		return p, nil
	}
	return ParsedSubject{}, fmt.Errorf("subject %q: not a scimflow subject", s)
}

func entitySubject(prefix, idp, kind, id, fact string) string {
	return prefix + "." + idp + "." + kind + "." + id + "." + fact
}

// ErrUnknownType is returned when decoding an event whose type and version are not registered.
var ErrUnknownType = errors.New("unknown event type or version")
