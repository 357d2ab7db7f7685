package identitystore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/boltdb"
	"github.com/scimflow/scimflow/internal/consumer"
	"github.com/scimflow/scimflow/internal/outbox"
	"github.com/scimflow/scimflow/person"
)

// Buckets of the registry. Keys join their parts with a NUL byte, which no email, IdP id or SCIM id
// in a subject can contain (events.ValidToken refuses control characters).
const (
	bkUsers       = "users"           // registry id → user (JSON)
	bkEmail       = "users_by_email"  // email NUL idp → registry id
	bkIdPUsers    = "users_by_idp"    // idp NUL registry id → ""
	bkSCIMUsers   = "scim_users"      // idp NUL scim user id → scimRef (JSON); tombstones kept
	bkGroups      = "groups"          // idp NUL group id → group (JSON)
	bkMembers     = "group_members"   // idp NUL group id NUL scim user id → ""
	bkMemberships = "user_groups"     // idp NUL scim user id NUL group id → ""
	bkStaging     = "group_staging"   // idp NUL group id NUL scim user id → "" (multi-chunk replace in progress)
	bkSessions    = "sessions"        // registry id NUL session id hash → session (JSON)
	bkHistory     = "history"         // registry id NUL event time (8 bytes) event id → historyEntry (JSON)
	bkSCIMLog     = "scimlog"         // event time (8 bytes) event id → logRow (JSON)
	bkStats       = "stats"           // counter name → uint64 (big endian)
	bkSCIMAttrs   = "scim_attributes" // registry id → the user's full SCIM resource (JSON), read only by the admin API
	bkNames       = "users_by_name"   // lower-cased name or name word NUL registry id → "" (search.go)
	bkSCIMLogLast = "scimlog_last"    // idp → key of the IdP's newest scimlog row (the console's overview)
	bkStatus      = "users_by_status" // status NUL idp NUL registry id → "" (search.go)
	bkAccessApps  = "access_apps"     // app id → storedApp (JSON): access applications (access.go)
	bkAccessLog   = "access_log"      // event time (8 bytes) event id → accessRow (JSON)
	bkAccessIdent = "access_identity" // registry id → what access policies read of the user (access_index.go)
	bkIdPs        = "idps"            // idp id → idpState (JSON): facts about a whole IdP
)

var allBuckets = []string{bkUsers, bkEmail, bkIdPUsers, bkSCIMUsers, bkGroups, bkMembers, bkMemberships, bkStaging,
	bkSessions, bkHistory, bkSCIMLog, bkStats, bkSCIMAttrs, bkNames, bkSCIMLogLast, bkStatus, bkAccessApps, bkAccessLog, bkAccessIdent, bkIdPs, outbox.Bucket}

// DumpSkip lists the buckets left out of the canonical dump: the outbox is transport state (records
// leave it once JetStream has them), consumer cursors and poison records are bookkeeping of the
// runner. Everything else — the projection — must be byte-identical between a live store and a
// clean replay of the streams.
var DumpSkip = []string{outbox.Bucket, outbox.PriorityBucket, outbox.DeadBucket, consumer.CursorBucket, consumer.PoisonBucket, consumer.SeenBucket}

func key(parts ...string) []byte {
	return []byte(strings.Join(parts, "\x00"))
}

func timeKey(t time.Time) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(t.UnixNano()))
	return b[:]
}

// scimRef links a SCIM user resource to its registry user and keeps its last applied version, also
// after deletion (a tombstone), so late or duplicate events are no-ops.
type scimRef struct {
	UID     string `json:"uid"`
	Version int64  `json:"version"`
	Deleted bool   `json:"deleted,omitempty"`
}

// scimState is the latest SCIM snapshot of a user, kept whatever the update mode: it is what the next
// login reads.
type scimState struct {
	UserID      string         `json:"user_id"`
	UserName    string         `json:"user_name"`
	ExternalID  string         `json:"external_id,omitempty"`
	Email       string         `json:"email"`
	DisplayName string         `json:"display_name,omitempty"`
	Name        events.Name    `json:"name"`
	Active      bool           `json:"active"`
	Deleted     bool           `json:"deleted,omitempty"`
	Attributes  map[string]any `json:"attributes,omitempty"` // kept in bkSCIMAttrs, not in the user record
	Version     int64          `json:"version"`
	Policy      events.Policy  `json:"policy"`
	UpdatedAt   time.Time      `json:"updated_at"`
}

func (s *scimState) displayName() string {
	if s == nil {
		return ""
	}
	switch {
	case s.DisplayName != "":
		return s.DisplayName
	case s.Name.Formatted != "":
		return s.Name.Formatted
	}
	return strings.TrimSpace(s.Name.GivenName + " " + s.Name.FamilyName)
}

// user is a registry record. Status and seat are derived from event-time stamps (seatHeld, status), so
// they do not depend on how the SCIM and AUTH streams interleave.
type user struct {
	ID         string         `json:"id"`
	IdPID      string         `json:"idp_id"`
	Email      string         `json:"email"` // registry identity email
	Name       string         `json:"name,omitempty"`
	Groups     []events.Group `json:"groups"`
	OIDCFields map[string]any `json:"oidc_fields,omitempty"`
	// Sub is the OIDC sub bound to this person: the sub of the first login applied while no binding
	// held (docs/security.md, finding 9). SubBoundAt is that login's event time, SubResetAt the latest admin
	// reset for the person; the binding holds while SubBoundAt is after it and after the IdP's
	// reset (idpState.SubResetAt). Event times, so a reset orders against a login alike in every
	// service and in a replay.
	Sub        string     `json:"sub,omitempty"`
	SubBoundAt time.Time  `json:"sub_bound_at,omitzero"`
	SubResetAt time.Time  `json:"sub_reset_at,omitzero"`
	SCIMUserID string     `json:"scim_user_id,omitempty"`
	SCIM       *scimState `json:"scim,omitempty"`
	// SCIMGroups is the current SCIM membership of SCIMUserID, kept whatever the update mode (Groups
	// follows it only in automatic mode, or at a login): what the next login reads, published so
	// auth can build that login's session from it (finish recomputes it).
	SCIMGroups []events.Group `json:"scim_groups,omitempty"`

	Deprovisioned bool      `json:"deprovisioned,omitempty"` // SCIM active=false or deleted
	Locked        bool      `json:"locked,omitempty"`
	RevokedBefore time.Time `json:"revoked_before,omitzero"`
	FirstLoginAt  time.Time `json:"first_login_at,omitzero"`
	LastLoginAt   time.Time `json:"last_login_at,omitzero"`
	SeatTakenAt   time.Time `json:"seat_taken_at,omitzero"`
	SeatRemovedAt time.Time `json:"seat_removed_at,omitzero"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	HistorySeq    uint64    `json:"history_seq"` // history entries written so far (apply order)
}

func (u *user) seatHeld() bool {
	return !u.SeatTakenAt.IsZero() && u.SeatTakenAt.After(u.SeatRemovedAt)
}

func (u *user) status() string {
	switch {
	case u.Deprovisioned:
		return events.StatusInactive
	case u.FirstLoginAt.IsZero():
		return events.StatusProvisioned
	case !u.seatHeld():
		return events.StatusInactive // seat removed: inactive until the next login (Cloudflare)
	}
	return events.StatusActive
}

func (u *user) identity() events.Identity {
	id := events.Identity{
		UserID: u.ID, Email: u.Email, Name: u.Name, Groups: u.Groups, OIDCFields: u.OIDCFields,
		Status: u.status(), SeatHeld: u.seatHeld(), Locked: u.Locked, SCIMUserID: u.SCIMUserID,
		SCIMGroups: u.SCIMGroups, SCIMLinked: u.scimLinked(),
	}
	if id.Groups == nil {
		id.Groups = []events.Group{}
	}
	if !u.RevokedBefore.IsZero() {
		rb := u.RevokedBefore
		id.RevokedBefore = &rb
	}
	return id
}

// scimLinked reports whether a live SCIM resource links to u: SCIM has told scimflow about the person
// and not deleted them since, so SCIM membership replaces the token's groups claim.
func (u *user) scimLinked() bool {
	return u.SCIMUserID != "" && (u.SCIM == nil || !u.SCIM.Deleted)
}

// clone copies u deeply enough for apply: maps (oidc_fields, SCIM attributes) are replaced, never
// changed in place, so they are shared.
func (u *user) clone() *user {
	c := *u
	c.Groups = slices.Clone(u.Groups)
	c.SCIMGroups = slices.Clone(u.SCIMGroups)
	if u.SCIM != nil {
		s := *u.SCIM
		c.SCIM = &s
	}
	return &c
}

// boundSub returns the sub bound to u that still holds against the IdP's resets, or "".
func (u *user) boundSub(ip idpState) string {
	if u.Sub == "" || !u.SubBoundAt.After(u.SubResetAt) || !u.SubBoundAt.After(ip.SubResetAt) {
		return ""
	}
	return u.Sub
}

// idpState is what the registry knows about a whole IdP beyond its configuration (which lives in the
// idp_config bucket): when its sessions were revoked (it was deleted) and when its sub bindings were
// reset. Kept by id after the IdP is deleted, so an IdP created again under that id starts from it.
type idpState struct {
	SessionsRevokedBefore time.Time `json:"sessions_revoked_before,omitzero"`
	SubResetAt            time.Time `json:"sub_reset_at,omitzero"`
}

func getIdPState(tx *bolt.Tx, idp string) (idpState, error) {
	var st idpState
	_, err := getJSON(tx, bkIdPs, []byte(idp), &st)
	return st, err
}

// group is a SCIM group. Attribute and membership versions are tracked apart because one SCIM change
// produces an upserted event and membership events with the same resource version.
type group struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	ExternalID     string `json:"external_id,omitempty"`
	AttrVersion    int64  `json:"attr_version"`
	MembersVersion int64  `json:"members_version"`
	LastChunk      int    `json:"last_chunk"`
	Staging        bool   `json:"staging,omitempty"`
	Deleted        bool   `json:"deleted,omitempty"`
}

// session is one login's session as the registry knows it (auth holds the authoritative copy).
type session struct {
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	EventID   string    `json:"event_id"`
}

// historyEntry is one change of a user: when, what caused it and the identity before and after.
type historyEntry struct {
	At time.Time `json:"at"`
	// Seq is the entry's place in apply order for this user. Entries are listed by event time, but an
	// event can be applied after one stamped later (a login overtaking a deprovisioning on another
	// stream); each After reflects everything applied before it, so the identity at a time is the
	// After of the entry applied last among those stamped at or before it.
	Seq       uint64           `json:"seq"`
	EventID   string           `json:"event_id"`
	EventType string           `json:"event_type"`
	Cause     string           `json:"cause,omitempty"` // correlation id: the SCIM request, login or admin request
	Changes   []string         `json:"changes"`
	Notes     []string         `json:"notes,omitempty"`
	Before    *events.Identity `json:"before,omitempty"`
	After     events.Identity  `json:"after"`
}

// logRow is one SCIM provisioning-log row, in Cloudflare's field names.
type logRow struct {
	ID                string          `json:"id"`
	IdPID             string          `json:"idp_id"`
	LoggedAt          time.Time       `json:"logged_at"`
	RequestID         string          `json:"request_id,omitempty"`
	RequestMethod     string          `json:"request_method"`
	Path              string          `json:"path,omitempty"`
	ResourceType      string          `json:"resource_type"`
	CFResourceID      string          `json:"cf_resource_id,omitempty"`
	IdPResourceID     string          `json:"idp_resource_id,omitempty"`
	ResourceUserEmail string          `json:"resource_user_email,omitempty"`
	ResourceGroupName string          `json:"resource_group_name,omitempty"`
	Status            string          `json:"status"`
	HTTPStatus        int             `json:"http_status"`
	ErrorDescription  string          `json:"error_description,omitempty"`
	RequestBody       json.RawMessage `json:"request_body,omitempty"`
}

// getJSON decodes the value under k in bucket b into v; false when absent.
func getJSON(tx *bolt.Tx, b string, k []byte, v any) (bool, error) {
	raw := tx.Bucket([]byte(b)).Get(k)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("decode %s/%q: %w", b, k, err)
	}
	return true, nil
}

func putJSON(tx *bolt.Tx, b string, k []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket([]byte(b)).Put(k, raw)
}

func getUser(tx *bolt.Tx, uid string) (*user, error) {
	if uid == "" {
		return nil, nil
	}
	var u user
	ok, err := getJSON(tx, bkUsers, []byte(uid), &u)
	if !ok || err != nil {
		return nil, err
	}
	return &u, nil
}

func lookupEmail(tx *bolt.Tx, idp, email string) string {
	return string(tx.Bucket([]byte(bkEmail)).Get(key(normEmail(email), idp)))
}

func normEmail(s string) string { return person.NormalizeEmail(s) }

// statAdd adds d to the named counter.
func statAdd(tx *bolt.Tx, name string, d int64) error {
	b := tx.Bucket([]byte(bkStats))
	var v uint64
	if raw := b.Get([]byte(name)); len(raw) == 8 {
		v = binary.BigEndian.Uint64(raw)
	}
	v = uint64(int64(v) + d)
	var out [8]byte
	binary.BigEndian.PutUint64(out[:], v)
	return b.Put([]byte(name), out[:])
}

// Stat counter names; the metrics collector parses them back.
func statUsers(idp, status string) string  { return string(key("users", idp, status)) }
func statSeats(idp string) string          { return string(key("seats", idp)) }
func statLocked(idp string) string         { return string(key("locked", idp)) }
func statRevocations(idp, r string) string { return string(key("revocations", idp, r)) }
func statInactive(idp string) string       { return string(key("inactive_transitions", idp)) }

// prefixScan calls f for every key with the prefix p in bucket b, stopping on the first error.
func prefixScan(tx *bolt.Tx, b string, p []byte, f func(k, v []byte) error) error {
	c := tx.Bucket([]byte(b)).Cursor()
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if err := f(k, v); err != nil {
			return err
		}
	}
	return nil
}

// lastPart returns what follows the last NUL of k.
func lastPart(k []byte) string {
	i := bytes.LastIndexByte(k, 0)
	return string(k[i+1:])
}

func sortedGroups(gs []events.Group) []events.Group {
	slices.SortFunc(gs, func(a, b events.Group) int {
		if c := strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return slices.CompactFunc(gs, func(a, b events.Group) bool { return strings.EqualFold(a.Name, b.Name) })
}

// openStore opens (creating) the registry file with every bucket.
func openStore(path string) (*bolt.DB, error) {
	return boltdb.Open(path, allBuckets...)
}

// DumpFile writes the canonical dump of the registry file at path (DumpSkip left out), for comparing
// a live store with a replay. The file must not be open by a running service.
func DumpFile(path string, w io.Writer) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("dump %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: boltdb.LockTimeout, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("dump %s: %w", path, err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error { return boltdb.Dump(tx, w, DumpSkip...) })
}
