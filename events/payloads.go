package events

import (
	"encoding/json"
	"time"
)

// Event types. The type names the fact; the subject adds the IdP and entity ids.
const (
	TypeSCIMUserUpserted    = "scim.user.upserted"
	TypeSCIMUserDeleted     = "scim.user.deleted"
	TypeSCIMGroupUpserted   = "scim.group.upserted"
	TypeSCIMGroupMembers    = "scim.group.members"
	TypeSCIMGroupDeleted    = "scim.group.deleted"
	TypeSCIMLog             = "scimlog.request"
	TypeIdentityChanged     = "identity.user.changed"
	TypeSessionsRevoked     = "identity.user.sessions_revoked"
	TypeSeatRemoved         = "identity.user.seat_removed"
	TypeUserLocked          = "identity.user.locked"
	TypeUserUnlocked        = "identity.user.unlocked"
	TypeSubBound            = "identity.user.sub_bound"
	TypeSubReset            = "identity.user.sub_reset"
	TypeSessionRevoked      = "identity.user.session_revoked"
	TypeIdPSessionsRevoked  = "identity.idp.sessions_revoked"
	TypeIdPSubBindingsReset = "identity.idp.sub_bindings_reset"
	TypeLoggedIn            = "auth.user.logged_in"
	TypeLoggedOut           = "auth.user.logged_out"
	TypeLoginDenied         = "auth.user.login_denied"
)

// MaxMembersPerEvent bounds the ids in one GroupMembers event, so a 50k-member group never produces a
// message near JetStream's 1 MB limit.
const MaxMembersPerEvent = 1000

// Name is a SCIM complex name.
type Name struct {
	Formatted  string `json:"formatted,omitempty"`
	GivenName  string `json:"given_name,omitempty"`
	FamilyName string `json:"family_name,omitempty"`
	MiddleName string `json:"middle_name,omitempty"`
}

// SCIMUserUpserted is the full normalised snapshot of a SCIM user after a create or a change.
type SCIMUserUpserted struct {
	UserID          string         `json:"user_id"`   // scimflow's SCIM resource id
	UserName        string         `json:"user_name"` // as sent by the IdP
	ExternalID      string         `json:"external_id,omitempty"`
	Email           string         `json:"email"` // lower-cased registry key: userName if it is an email, else primary/work email
	DisplayName     string         `json:"display_name,omitempty"`
	Name            Name           `json:"name"`
	Active          bool           `json:"active"`
	Attributes      map[string]any `json:"attributes"`       // the full SCIM resource as stored (no password, no meta)
	Changed         []string       `json:"changed"`          // top-level attribute names that changed; all of them on create
	Created         bool           `json:"created"`          // true on the resource's first version
	ResourceVersion int64          `json:"resource_version"` // meta.version; strictly increasing per resource
	Policy          Policy         `json:"policy"`           // the IdP's policy when the change committed
}

// EventType implements Payload.
func (SCIMUserUpserted) EventType() string { return TypeSCIMUserUpserted }

// EventVersion implements Payload.
func (SCIMUserUpserted) EventVersion() int { return 1 }

// Subject implements Payload.
func (p SCIMUserUpserted) Subject(idp string) string {
	return entitySubject("scim", idp, KindUser, p.UserID, "upserted")
}

// SCIMUserDeleted says a SCIM user was deleted; Groups lists the groups it was removed from (no
// separate membership events are published for that removal).
type SCIMUserDeleted struct {
	UserID          string   `json:"user_id"`
	UserName        string   `json:"user_name"`
	ExternalID      string   `json:"external_id,omitempty"`
	Email           string   `json:"email"`
	Groups          []string `json:"groups"`
	ResourceVersion int64    `json:"resource_version"`
	Policy          Policy   `json:"policy"`
}

// EventType implements Payload.
func (SCIMUserDeleted) EventType() string { return TypeSCIMUserDeleted }

// EventVersion implements Payload.
func (SCIMUserDeleted) EventVersion() int { return 1 }

// Subject implements Payload.
func (p SCIMUserDeleted) Subject(idp string) string {
	return entitySubject("scim", idp, KindUser, p.UserID, "deleted")
}

// SCIMGroupUpserted is a group's own attributes after a create or a change; never its members.
type SCIMGroupUpserted struct {
	GroupID         string   `json:"group_id"`
	DisplayName     string   `json:"display_name"`
	ExternalID      string   `json:"external_id,omitempty"`
	Changed         []string `json:"changed"`
	Created         bool     `json:"created"`
	ResourceVersion int64    `json:"resource_version"`
	Policy          Policy   `json:"policy"`
}

// EventType implements Payload.
func (SCIMGroupUpserted) EventType() string { return TypeSCIMGroupUpserted }

// EventVersion implements Payload.
func (SCIMGroupUpserted) EventVersion() int { return 1 }

// Subject implements Payload.
func (p SCIMGroupUpserted) Subject(idp string) string {
	return entitySubject("scim", idp, KindGroup, p.GroupID, "upserted")
}

// SCIMGroupMembers is a membership delta. A full replacement sets Replace on the first chunk (Chunk 0):
// the consumer empties the group, then applies Added of every chunk. At most MaxMembersPerEvent ids in
// Added and Removed together.
type SCIMGroupMembers struct {
	GroupID         string   `json:"group_id"`
	DisplayName     string   `json:"display_name"`
	Replace         bool     `json:"replace,omitempty"`
	Added           []string `json:"added"`
	Removed         []string `json:"removed"`
	Chunk           int      `json:"chunk"`  // 0-based index of this event among the change's events
	Chunks          int      `json:"chunks"` // number of events the change was split into
	ResourceVersion int64    `json:"resource_version"`
	Policy          Policy   `json:"policy"`
}

// EventType implements Payload.
func (SCIMGroupMembers) EventType() string { return TypeSCIMGroupMembers }

// EventVersion implements Payload.
func (SCIMGroupMembers) EventVersion() int { return 1 }

// Subject implements Payload.
func (p SCIMGroupMembers) Subject(idp string) string {
	return entitySubject("scim", idp, KindGroup, p.GroupID, "members")
}

// SCIMGroupDeleted says a SCIM group was deleted; its memberships go with it.
type SCIMGroupDeleted struct {
	GroupID         string `json:"group_id"`
	DisplayName     string `json:"display_name"`
	ExternalID      string `json:"external_id,omitempty"`
	ResourceVersion int64  `json:"resource_version"`
	Policy          Policy `json:"policy"`
}

// EventType implements Payload.
func (SCIMGroupDeleted) EventType() string { return TypeSCIMGroupDeleted }

// EventVersion implements Payload.
func (SCIMGroupDeleted) EventVersion() int { return 1 }

// Subject implements Payload.
func (p SCIMGroupDeleted) Subject(idp string) string {
	return entitySubject("scim", idp, KindGroup, p.GroupID, "deleted")
}

// SCIM log statuses, as Cloudflare names them.
const (
	LogSuccess = "SUCCESS"
	LogError   = "ERROR"
)

// SCIMLog is one provisioning-log record per SCIM request, failures included. The request body has
// secrets (password and the like) removed before it is put here.
type SCIMLog struct {
	RequestID         string          `json:"request_id"`
	Method            string          `json:"request_method"`
	Path              string          `json:"path"`
	ResourceType      string          `json:"resource_type"` // USER, GROUP, or empty for discovery
	ResourceID        string          `json:"resource_id,omitempty"`
	ResourceIdPID     string          `json:"resource_idp_id,omitempty"` // the IdP's id of the resource (externalId)
	ResourceUserEmail string          `json:"resource_user_email,omitempty"`
	ResourceGroupName string          `json:"resource_group_name,omitempty"`
	Status            string          `json:"status"`      // SUCCESS or ERROR
	HTTPStatus        int             `json:"http_status"` // the status code returned
	ErrorDescription  string          `json:"error_description,omitempty"`
	RequestBody       json.RawMessage `json:"request_body,omitempty"`
}

// EventType implements Payload.
func (SCIMLog) EventType() string { return TypeSCIMLog }

// EventVersion implements Payload.
func (SCIMLog) EventVersion() int { return 1 }

// Subject implements Payload.
func (SCIMLog) Subject(idp string) string { return "scimlog." + idp }

// Group is a group as identities carry it: id and display name.
type Group struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// User statuses in the registry.
const (
	StatusProvisioned = "provisioned" // known from SCIM, never logged in
	StatusActive      = "active"
	StatusInactive    = "inactive"
)

// Identity is the registry's view of a user, as published in IDENTITY events.
type Identity struct {
	UserID        string         `json:"user_id"` // registry id (user_uuid)
	Email         string         `json:"email"`
	Name          string         `json:"name,omitempty"`
	Groups        []Group        `json:"groups"`
	OIDCFields    map[string]any `json:"oidc_fields,omitempty"`
	Status        string         `json:"status"`
	SeatHeld      bool           `json:"seat_held"`
	Locked        bool           `json:"locked"`
	RevokedBefore *time.Time     `json:"revoked_before,omitempty"`
	SCIMUserID    string         `json:"scim_user_id,omitempty"`
	// SCIMGroups is the user's current SCIM group membership: what a login would read now, in every
	// update mode. Groups is the registry identity's groups, which in reauth and no_action modes stay
	// as the last login set them; auth builds a new session's groups from SCIMGroups when the IdP
	// has SCIM enabled (docs/design.md §4: at every login the identity is rebuilt from the latest SCIM
	// state). Empty for a user SCIM never linked, or one whose SCIM resource was deleted.
	SCIMGroups []Group `json:"scim_groups,omitempty"`
	// SCIMLinked is true while a live SCIM resource links to the person (even with no groups): then
	// SCIM membership replaces the ID token's groups claim at login; otherwise — never provisioned,
	// or deleted by SCIM — the claim applies (docs/design.md §4).
	SCIMLinked bool `json:"scim_linked,omitempty"`
}

// IdentityChanged carries the registry identity after a change.
type IdentityChanged struct {
	Identity Identity `json:"identity"`
	Changed  []string `json:"changed"` // which parts changed: email, name, groups, scim_groups, status, seat, oidc_fields, …
}

// EventType implements Payload.
func (IdentityChanged) EventType() string { return TypeIdentityChanged }

// EventVersion implements Payload.
func (IdentityChanged) EventVersion() int { return 1 }

// Subject implements Payload.
func (p IdentityChanged) Subject(idp string) string {
	return entitySubject("identity", idp, KindUser, p.Identity.UserID, "changed")
}

// Revocation reasons.
const (
	ReasonDeprovisioned = "deprovisioned"  // active=false or DELETE with user_deprovision
	ReasonGroupsChanged = "groups_changed" // reauth mode
	ReasonAdmin         = "admin"          // POST /api/v1/users/{id}/revoke
	ReasonSeatRemoved   = "seat_removed"
	ReasonUnlocked      = "admin_unlock" // POST /api/v1/users/{id}/unlock
)

// SessionsRevoked invalidates every session of a user issued at or before RevokedBefore.
type SessionsRevoked struct {
	UserID        string    `json:"user_id"`
	Email         string    `json:"email"`
	RevokedBefore time.Time `json:"revoked_before"`
	Reason        string    `json:"reason"`
	Cause         string    `json:"cause,omitempty"` // human-readable: the SCIM request or admin action
}

// EventType implements Payload.
func (SessionsRevoked) EventType() string { return TypeSessionsRevoked }

// EventVersion implements Payload.
func (SessionsRevoked) EventVersion() int { return 1 }

// Subject implements Payload.
func (p SessionsRevoked) Subject(idp string) string {
	return entitySubject("identity", idp, KindUser, p.UserID, "sessions_revoked")
}

// SeatRemoved says a user no longer holds a seat.
type SeatRemoved struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
	Reason string `json:"reason"`
}

// EventType implements Payload.
func (SeatRemoved) EventType() string { return TypeSeatRemoved }

// EventVersion implements Payload.
func (SeatRemoved) EventVersion() int { return 1 }

// Subject implements Payload.
func (p SeatRemoved) Subject(idp string) string {
	return entitySubject("identity", idp, KindUser, p.UserID, "seat_removed")
}

// UserLocked forbids a user's logins until UserUnlocked.
type UserLocked struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
	Reason string `json:"reason"`
}

// EventType implements Payload.
func (UserLocked) EventType() string { return TypeUserLocked }

// EventVersion implements Payload.
func (UserLocked) EventVersion() int { return 1 }

// Subject implements Payload.
func (p UserLocked) Subject(idp string) string {
	return entitySubject("identity", idp, KindUser, p.UserID, "locked")
}

// UserUnlocked lifts a lock; sessions issued before the lock stay invalid (revoked_before).
type UserUnlocked struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
	Reason string `json:"reason"`
}

// EventType implements Payload.
func (UserUnlocked) EventType() string { return TypeUserUnlocked }

// EventVersion implements Payload.
func (UserUnlocked) EventVersion() int { return 1 }

// Subject implements Payload.
func (p UserUnlocked) Subject(idp string) string {
	return entitySubject("identity", idp, KindUser, p.UserID, "unlocked")
}

// LoggedIn records a successful OIDC login and the session it created.
type LoggedIn struct {
	UserID        string         `json:"user_id"` // auth's best knowledge: registry id by email, else UserID(idp, email)
	Email         string         `json:"email"`
	Sub           string         `json:"sub"`
	Name          string         `json:"name,omitempty"`
	Groups        []string       `json:"groups,omitempty"` // the groups claim; used unless SCIM knows the person (docs/design.md §4)
	OIDCFields    map[string]any `json:"oidc_fields,omitempty"`
	SessionIDHash string         `json:"session_id_hash"` // SHA-256 of the session id, hex
	SCIMEnabled   bool           `json:"scim_enabled"`    // the IdP's scim_config.enabled at login: SCIM groups replace the claim for people SCIM knows
	IssuedAt      time.Time      `json:"issued_at"`
	ExpiresAt     time.Time      `json:"expires_at"`
}

// EventType implements Payload.
func (LoggedIn) EventType() string { return TypeLoggedIn }

// EventVersion implements Payload.
func (LoggedIn) EventVersion() int { return 1 }

// Subject implements Payload.
func (p LoggedIn) Subject(idp string) string {
	return entitySubject("auth", idp, KindUser, p.UserID, "logged_in")
}

// LoggedOut ends one session on every replica.
type LoggedOut struct {
	UserID        string    `json:"user_id"`
	Email         string    `json:"email"`
	SessionIDHash string    `json:"session_id_hash"`
	ExpiresAt     time.Time `json:"expires_at"`
}

// EventType implements Payload.
func (LoggedOut) EventType() string { return TypeLoggedOut }

// EventVersion implements Payload.
func (LoggedOut) EventVersion() int { return 1 }

// Subject implements Payload.
func (p LoggedOut) Subject(idp string) string {
	return entitySubject("auth", idp, KindUser, p.UserID, "logged_out")
}

// LoginDenied records a login refused after the IdP let the user in (locked user, missing email, …).
type LoginDenied struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
	Sub    string `json:"sub,omitempty"`
	Reason string `json:"reason"`
}

// EventType implements Payload.
func (LoginDenied) EventType() string { return TypeLoginDenied }

// EventVersion implements Payload.
func (LoginDenied) EventVersion() int { return 1 }

// Subject implements Payload.
func (p LoginDenied) Subject(idp string) string {
	return entitySubject("auth", idp, KindUser, p.UserID, "login_denied")
}

// Reasons of the facts below.
const (
	ReasonSubMismatch = "sub_mismatch" // a login whose OIDC sub differs from the person's bound sub
	ReasonIdPDeleted  = "idp_deleted"  // DELETE /api/v1/identity_providers/{id}
)

// SubBound records the OIDC sub bound to a person: identity-store binds the sub of the first login it
// applies for (IdP, person) and refuses every other sub until an admin resets the binding (SubReset,
// IdPSubBindingsReset). The event time is the login's, so a reset (by its event time) orders against
// it the same way in every service and in a replay.
type SubBound struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
	Sub    string `json:"sub"`
}

// EventType implements Payload.
func (SubBound) EventType() string { return TypeSubBound }

// EventVersion implements Payload.
func (SubBound) EventVersion() int { return 1 }

// Subject implements Payload.
func (p SubBound) Subject(idp string) string {
	return entitySubject("identity", idp, KindUser, p.UserID, "sub_bound")
}

// SubReset voids a person's sub binding as of its event time (DELETE /api/v1/users/{id}/sub): the next
// login binds its sub afresh.
type SubReset struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
	Reason string `json:"reason"`
}

// EventType implements Payload.
func (SubReset) EventType() string { return TypeSubReset }

// EventVersion implements Payload.
func (SubReset) EventVersion() int { return 1 }

// Subject implements Payload.
func (p SubReset) Subject(idp string) string {
	return entitySubject("identity", idp, KindUser, p.UserID, "sub_reset")
}

// SessionRevoked ends one session on every replica: identity-store publishes it for a login it
// refused after the fact (another replica let in a sub that lost the race for the person's binding).
type SessionRevoked struct {
	UserID        string    `json:"user_id"`
	Email         string    `json:"email"`
	SessionIDHash string    `json:"session_id_hash"`
	ExpiresAt     time.Time `json:"expires_at"`
	Reason        string    `json:"reason"`
}

// EventType implements Payload.
func (SessionRevoked) EventType() string { return TypeSessionRevoked }

// EventVersion implements Payload.
func (SessionRevoked) EventVersion() int { return 1 }

// Subject implements Payload.
func (p SessionRevoked) Subject(idp string) string {
	return entitySubject("identity", idp, KindUser, p.UserID, "session_revoked")
}

// IdPSessionsRevoked invalidates every session the IdP authenticated up to RevokedBefore (published
// when the IdP is deleted). It names the IdP, not a user: auth keeps it per IdP, so an IdP created
// again under the same id (a config seed at start) does not revive the old sessions.
type IdPSessionsRevoked struct {
	RevokedBefore time.Time `json:"revoked_before"`
	Reason        string    `json:"reason"`
	Cause         string    `json:"cause,omitempty"`
}

// EventType implements Payload.
func (IdPSessionsRevoked) EventType() string { return TypeIdPSessionsRevoked }

// EventVersion implements Payload.
func (IdPSessionsRevoked) EventVersion() int { return 1 }

// Subject implements Payload.
func (IdPSessionsRevoked) Subject(idp string) string {
	return entitySubject("identity", idp, KindIdP, idp, "sessions_revoked")
}

// IdPSubBindingsReset voids every sub binding of the IdP as of its event time (POST
// /api/v1/identity_providers/{id}/reset_sub_bindings: an app registration replaced at the IdP, which
// changes every sub in Entra ID).
type IdPSubBindingsReset struct {
	Reason string `json:"reason"`
	Cause  string `json:"cause,omitempty"`
}

// EventType implements Payload.
func (IdPSubBindingsReset) EventType() string { return TypeIdPSubBindingsReset }

// EventVersion implements Payload.
func (IdPSubBindingsReset) EventVersion() int { return 1 }

// Subject implements Payload.
func (IdPSubBindingsReset) Subject(idp string) string {
	return entitySubject("identity", idp, KindIdP, idp, "sub_bindings_reset")
}
