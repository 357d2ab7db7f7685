package events

import "encoding/json"

// Event types of access applications (docs/access-policies.md).
const (
	TypeAccessAppChanged = "identity.app.changed"
	TypeAccessDecided    = "auth.app.decided"
)

// KindApp is the entity kind of access-application subjects (identity.{scope}.app.{id}.changed,
// auth.{scope}.app.{id}.decided).
const KindApp = "app"

// AccessScope is the IdP id of access-application events: an app belongs to no IdP. It cannot be
// confused with an IdP's user events because the subject's kind is "app".
const AccessScope = "access"

// NoApp stands for the app id in the subject of a decision no app matched (no_application).
const NoApp = "none"

// AccessAppChanged records an admin's change to an access application: its full definition after the
// change (the access.App JSON, as the admin API returns it), or Deleted. identity-store applies it to
// its registry of apps (so a replay rebuilds them) and mirrors that registry into the access_apps KV
// bucket that every auth replica watches; the event is also the audit trail of who changed what.
type AccessAppChanged struct {
	AppID   string          `json:"app_id"`
	App     json.RawMessage `json:"app,omitempty"`
	Deleted bool            `json:"deleted,omitempty"`
	Cause   string          `json:"cause"` // e.g. "admin API request <request id>"
}

// EventType implements Payload.
func (AccessAppChanged) EventType() string { return TypeAccessAppChanged }

// EventVersion implements Payload.
func (AccessAppChanged) EventVersion() int { return 1 }

// Subject implements Payload.
func (p AccessAppChanged) Subject(scope string) string {
	return entitySubject("identity", scope, KindApp, p.AppID, "changed")
}

// AccessDecided is one access-log record: a /verify decision for an app. auth samples them (every
// deny at most once per session or client address, app and reason per 10 s; an allow once per
// session and app per 10 minutes), so Repeats counts the like decisions since the previous record.
type AccessDecided struct {
	AppID    string `json:"app_id"` // NoApp when no app matched
	AppName  string `json:"app_name,omitempty"`
	Host     string `json:"host"`
	Path     string `json:"path"`     // normalised, no query
	Decision string `json:"decision"` // allow, deny, bypass
	Reason   string `json:"reason"`   // the deciding policy's name, or no_policy, no_application, idp_not_allowed
	UserID   string `json:"user_id,omitempty"`
	Email    string `json:"email,omitempty"`
	UserIdP  string `json:"user_idp,omitempty"` // the session's IdP
	ClientIP string `json:"client_ip,omitempty"`
	Replica  string `json:"replica"`
	Repeats  int    `json:"repeats,omitempty"`
}

// EventType implements Payload.
func (AccessDecided) EventType() string { return TypeAccessDecided }

// EventVersion implements Payload.
func (AccessDecided) EventVersion() int { return 1 }

// Subject implements Payload.
func (p AccessDecided) Subject(scope string) string {
	id := p.AppID
	if id == "" {
		id = NoApp
	}
	return entitySubject("auth", scope, KindApp, id, "decided")
}
