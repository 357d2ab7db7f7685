package identitystore

import (
	"testing"
	"time"

	"github.com/scimflow/scimflow/events"
)

// TestAdminFactsByActor: admin facts are recognised by the envelope's Actor (inherited by derived
// events), and facts recorded before the field existed by their legacy correlation prefix — so a
// SCIM request whose correlation id happened to start with "admin-" is never taken for one.
func TestAdminFactsByActor(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	admin := events.New("idp", at, "req-1", "", events.SeatRemoved{UserID: "u", Email: "a@x.com"})
	admin.Actor = events.ActorAdmin
	derived := events.Derived(admin, 0, events.SeatRemoved{UserID: "u", Email: "a@x.com"})
	legacy := events.New("idp", at, adminCorrelationPrefix+"req-2", "", events.SeatRemoved{UserID: "u", Email: "a@x.com"})
	scim := events.New("idp", at, adminCorrelationPrefix+"looks-like-admin", "", events.SeatRemoved{UserID: "u", Email: "a@x.com"})
	scim.Actor = "scim"
	for _, c := range []struct {
		name          string
		ev            events.Event
		admin, origin bool
	}{
		{"admin fact", admin, true, true},
		{"derived from an admin fact", derived, false, true},
		{"legacy admin fact", legacy, true, true},
		{"another actor with an admin-looking correlation id", scim, false, false},
	} {
		if got := isAdminEvent(c.ev); got != c.admin {
			t.Errorf("%s: isAdminEvent = %v, want %v", c.name, got, c.admin)
		}
		if got := adminOrigin(c.ev); got != c.origin {
			t.Errorf("%s: adminOrigin = %v, want %v", c.name, got, c.origin)
		}
	}
	// The field survives the wire.
	b, err := events.Marshal(admin)
	if err != nil {
		t.Fatal(err)
	}
	back, err := events.Decode(admin.Subject, b)
	if err != nil {
		t.Fatal(err)
	}
	if back.Actor != events.ActorAdmin {
		t.Errorf("Unmarshal(Marshal(admin)).Actor = %q, want %q", back.Actor, events.ActorAdmin)
	}
}
