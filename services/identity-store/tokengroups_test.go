package identitystore

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/scimflow/scimflow/events"
)

// TestTokenGroupsUntilSCIMKnowsThePerson: with SCIM enabled, a login of a person SCIM
// never provisioned takes the token's groups claim; once a SCIM resource links to them (even with no
// groups) SCIM membership replaces the claim; after SCIM deletes them the claim applies again. The
// snapshot says which (scim_linked).
func TestTokenGroupsUntilSCIMKnowsThePerson(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	g := h.gen("tg")
	p := pol(events.UpdateNoAction, true, false)
	uid := events.UserID(g.idp, "kim@example.com")
	check := func(when string, wantGroups []string, wantLinked bool) {
		t.Helper()
		id := h.user(uid).identity()
		if got := names(id.Groups); !cmp.Equal(got, wantGroups) || id.SCIMLinked != wantLinked {
			t.Errorf("%s: groups %v scim_linked %v, want %v %v", when, got, id.SCIMLinked, wantGroups, wantLinked)
		}
	}

	h.publishPhased([]events.Event{g.login("kim@example.com", "Kim", "s1", true, "eng", "Ops")})
	check("never provisioned", []string{"eng", "Ops"}, false)

	h.publishPhased([]events.Event{g.ev(scimUser("u1", "kim@example.com", "Kim", true, 1, p))})
	h.publishPhased([]events.Event{g.login("kim@example.com", "Kim", "s2", true, "eng", "Ops")})
	check("linked by SCIM, no groups", []string{}, true)

	h.publishPhased([]events.Event{g.ev(events.SCIMUserDeleted{UserID: "u1", Email: "kim@example.com", ResourceVersion: 2,
		Policy: pol(events.UpdateNoAction, false, false)})})
	h.publishPhased([]events.Event{g.login("kim@example.com", "Kim", "s3", true, "eng")})
	check("deleted by SCIM", []string{"eng"}, false)
}
