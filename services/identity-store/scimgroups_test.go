package identitystore

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/scimflow/scimflow/events"
)

// TestSCIMGroupsInSnapshots: every identity snapshot carries the user's current SCIM groups, in every
// update mode, and a membership change that leaves the registry groups alone (reauth, no_action) still
// publishes IdentityChanged with changed "scim_groups", so auth can build the next login's session
// from them (docs/design.md §4: at every login the identity is rebuilt from the latest SCIM state). A group
// rename does too; the login that follows makes Groups equal to them again.
func TestSCIMGroupsInSnapshots(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	for _, mode := range []string{events.UpdateAutomatic, events.UpdateReauth, events.UpdateNoAction} {
		t.Run(mode, func(t *testing.T) {
			g := h.gen("sg-" + mode)
			p := pol(mode, true, false)
			member := func(gid, name string, add, rm []string, v int64) events.Event {
				m := events.Chunk(gid, name, false, add, rm, v)[0]
				m.Policy = p
				return g.ev(m)
			}
			admins := events.SCIMGroupUpserted{GroupID: "ga", DisplayName: "Admins", Created: true, ResourceVersion: 1, Policy: p}
			h.publishPhased([]events.Event{
				g.ev(admins),
				g.ev(events.SCIMGroupUpserted{GroupID: "ge", DisplayName: "Eng", Created: true, ResourceVersion: 1, Policy: p}),
				g.ev(scimUser("u1", "vic@example.com", "Vic", true, 1, p)),
				member("ga", "Admins", []string{"u1"}, nil, 2),
				member("ge", "Eng", []string{"u1"}, nil, 2),
			})
			uid := events.UserID(g.idp, "vic@example.com")
			pre := h.user(uid).identity()
			if got := names(pre.SCIMGroups); !cmp.Equal(got, []string{"Admins", "Eng"}) {
				t.Errorf("provisioned user's scim_groups = %v, want [Admins Eng]", got)
			}
			h.publishPhased([]events.Event{g.login("vic@example.com", "Vic", "s1", true)})
			id := h.user(uid).identity()
			if gs, sg := names(id.Groups), names(id.SCIMGroups); !cmp.Equal(gs, []string{"Admins", "Eng"}) || !cmp.Equal(sg, gs) {
				t.Errorf("after login: groups %v scim_groups %v, want both [Admins Eng]", gs, sg)
			}

			// The IdP removes the user from Admins.
			rm := member("ga", "Admins", nil, []string{"u1"}, 3)
			h.publishPhased([]events.Event{rm})
			h.drain()
			wantGroups, wantChanged := []string{"Admins", "Eng"}, []string{"scim_groups"}
			switch mode {
			case events.UpdateAutomatic:
				wantGroups, wantChanged = []string{"Eng"}, []string{"groups", "scim_groups"}
			case events.UpdateReauth:
				wantChanged = []string{"scim_groups", "revoked_before"}
			}
			ic, ok := h.identityCausedBy(rm.ID)
			if !ok {
				t.Fatalf("removal from Admins published no IdentityChanged")
			}
			if diff := cmp.Diff(wantChanged, ic.Changed); diff != "" {
				t.Errorf("IdentityChanged.Changed after the removal (-want +got):\n%s", diff)
			}
			if got := names(ic.Identity.Groups); !cmp.Equal(got, wantGroups) {
				t.Errorf("published groups = %v, want %v", got, wantGroups)
			}
			if got := names(ic.Identity.SCIMGroups); !cmp.Equal(got, []string{"Eng"}) {
				t.Errorf("published scim_groups = %v, want [Eng] (what the next login reads)", got)
			}

			// A rename of a group the user is in changes the current SCIM groups too.
			ren := admins
			ren.GroupID, ren.DisplayName, ren.Created, ren.ResourceVersion = "ge", "Engineering", false, 3
			re := g.ev(ren)
			h.publishPhased([]events.Event{re})
			h.drain()
			if ic, ok := h.identityCausedBy(re.ID); !ok || !cmp.Equal(names(ic.Identity.SCIMGroups), []string{"Engineering"}) {
				t.Errorf("after the rename: IdentityChanged %v (published %v), want scim_groups [Engineering]", ic, ok)
			}

			// The next login reads them.
			li := g.login("vic@example.com", "Vic", "s2", true)
			h.publishPhased([]events.Event{li})
			h.drain()
			id = h.user(uid).identity()
			if gs, sg := names(id.Groups), names(id.SCIMGroups); !cmp.Equal(gs, []string{"Engineering"}) || !cmp.Equal(sg, gs) {
				t.Errorf("after the next login: groups %v scim_groups %v, want both [Engineering]", gs, sg)
			}

			// Deleting the SCIM user leaves no SCIM groups.
			del := g.ev(events.SCIMUserDeleted{UserID: "u1", UserName: "vic@example.com", Email: "vic@example.com", Groups: []string{"ge"}, ResourceVersion: 2, Policy: p})
			h.publishPhased([]events.Event{del})
			h.drain()
			if ic, ok := h.identityCausedBy(del.ID); !ok || len(ic.Identity.SCIMGroups) != 0 {
				t.Errorf("after SCIM delete: IdentityChanged %+v (published %v), want no scim_groups", ic, ok)
			}
		})
	}
	h.oracle()
}
