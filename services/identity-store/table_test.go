package identitystore

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
)

// expect is the registry state and the IDENTITY events one SCIM change must produce.
type expect struct {
	name   string
	groups []string
	// scimGroups is the current SCIM membership the identity carries (what the next login reads),
	// the same in every mode; the IdentityChanged the change caused, if any, publishes it.
	scimGroups []string
	status     string
	seat       bool
	locked     bool
	revoked    bool     // revoked_before equals the time of the revoking change
	caused     []string // IDENTITY event types caused by the last change event, in order
	// setupRevoked: revoked_before equals the time of the setup's membership change (before the
	// login). reauth revokes on every membership change, whether or not a login was applied yet,
	// so in reauth mode a change that revokes nothing itself leaves that revocation in place.
	setupRevoked bool
}

const (
	tChanged  = events.TypeIdentityChanged
	tRevoked  = events.TypeSessionsRevoked
	tLocked   = events.TypeUserLocked
	tUnlocked = events.TypeUserUnlocked
	tSeat     = events.TypeSeatRemoved
)

// TestIdentitySemantics checks every cell of the docs/design.md §4 table: for each update mode and each
// kind of SCIM change, the registry identity, status, seat, lock, revoked_before, and the IDENTITY
// events published. Each cell runs on its own IdP in one shared store: a user provisioned by SCIM
// (member of Eng), logged in once with SCIM enabled, then the change.
func TestIdentitySemantics(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()

	type cell struct {
		row, mode string
		pol       events.Policy
		change    func(g *gen, p events.Policy) []events.Event
		want      expect
	}
	attrs := func(g *gen, p events.Policy) []events.Event {
		u := scimUser("u1", "ann@example.com", "New Name", true, 2, p)
		u.Changed = []string{"displayName", "name"}
		return []events.Event{g.ev(u)}
	}
	groups := func(g *gen, p events.Policy) []events.Event {
		m := events.Chunk("g2", "Ops", false, []string{"u1"}, nil, 2)[0]
		m.Policy = p
		return []events.Event{g.ev(m)}
	}
	deactivate := func(g *gen, p events.Policy) []events.Event {
		u := scimUser("u1", "ann@example.com", "Old Name", false, 2, p)
		u.Changed = []string{"active"}
		return []events.Event{g.ev(u)}
	}
	del := func(g *gen, p events.Policy) []events.Event {
		return []events.Event{g.ev(events.SCIMUserDeleted{UserID: "u1", UserName: "ann@example.com", Email: "ann@example.com", Groups: []string{"g1"}, ResourceVersion: 2, Policy: p})}
	}
	reactivate := func(g *gen, p events.Policy) []events.Event {
		u := scimUser("u1", "ann@example.com", "Old Name", true, 3, p)
		u.Changed = []string{"active"}
		return append(deactivate(g, p), g.ev(u))
	}
	var cells []cell
	for _, mode := range []string{events.UpdateAutomatic, events.UpdateReauth, events.UpdateNoAction} {
		auto := mode == events.UpdateAutomatic
		reauth := mode == events.UpdateReauth
		// Row 1: attributes.
		w := expect{name: "Old Name", groups: []string{"Eng"}, scimGroups: []string{"Eng"}, status: events.StatusActive, seat: true, setupRevoked: reauth}
		if auto {
			w.name, w.caused = "New Name", []string{tChanged}
		}
		cells = append(cells, cell{"attributes", mode, pol(mode, true, true), attrs, w})
		// Row 2: group membership. Registry groups change only in automatic mode, but the current SCIM
		// groups change in every mode, so every mode publishes IdentityChanged (auth reads them at the
		// next login).
		w = expect{name: "Old Name", groups: []string{"Eng"}, scimGroups: []string{"Eng", "Ops"}, status: events.StatusActive, seat: true}
		switch mode {
		case events.UpdateAutomatic:
			w.groups, w.caused = []string{"Eng", "Ops"}, []string{tChanged}
		case events.UpdateReauth:
			w.revoked, w.caused = true, []string{tRevoked, tChanged}
		case events.UpdateNoAction:
			w.caused = []string{tChanged}
		}
		cells = append(cells, cell{"groups", mode, pol(mode, true, true), groups, w})
		// Row 3: active=false or DELETE, for each deprovision setting.
		for _, row := range []string{"deactivate", "delete"} {
			f := deactivate
			if row == "delete" {
				f = del
			}
			g, sg := []string{"Eng"}, []string{"Eng"}
			if row == "delete" {
				sg = []string{} // memberships go with the SCIM user
				if auto {
					g = []string{}
				}
			}
			cells = append(cells,
				cell{row + "/keep", mode, pol(mode, false, false), f, expect{name: "Old Name", groups: g, scimGroups: sg, status: events.StatusInactive, seat: true, setupRevoked: reauth, caused: []string{tChanged}}},
				cell{row + "/user_deprovision", mode, pol(mode, true, false), f, expect{name: "Old Name", groups: g, scimGroups: sg, status: events.StatusInactive, seat: true, locked: true, revoked: true, caused: []string{tRevoked, tLocked, tChanged}}},
				cell{row + "/seat_deprovision", mode, pol(mode, true, true), f, expect{name: "Old Name", groups: g, scimGroups: sg, status: events.StatusInactive, seat: false, locked: true, revoked: true, caused: []string{tRevoked, tLocked, tSeat, tChanged}}},
			)
		}
		// Row 4: active=true again. revoked_before stays at the deprovisioning.
		cells = append(cells,
			cell{"reactivate/user_deprovision", mode, pol(mode, true, false), reactivate, expect{name: "Old Name", groups: []string{"Eng"}, scimGroups: []string{"Eng"}, status: events.StatusActive, seat: true, revoked: true, caused: []string{tUnlocked, tChanged}}},
			cell{"reactivate/seat_deprovision", mode, pol(mode, true, true), reactivate, expect{name: "Old Name", groups: []string{"Eng"}, scimGroups: []string{"Eng"}, status: events.StatusInactive, seat: false, revoked: true, caused: []string{tUnlocked, tChanged}}},
		)
	}
	t.Run("cells", func(t *testing.T) {
		for i, c := range cells {
			t.Run(c.row+"/"+c.mode, func(t *testing.T) {
				t.Parallel()
				g := h.gen(fmt.Sprintf("idp%02d", i))
				setup := []events.Event{
					g.ev(events.SCIMGroupUpserted{GroupID: "g1", DisplayName: "Eng", Created: true, ResourceVersion: 1, Policy: c.pol}),
					g.ev(events.SCIMGroupUpserted{GroupID: "g2", DisplayName: "Ops", Created: true, ResourceVersion: 1, Policy: c.pol}),
					g.ev(scimUser("u1", "ann@example.com", "Old Name", true, 1, c.pol)),
				}
				m := events.Chunk("g1", "Eng", false, []string{"u1"}, nil, 2)[0]
				m.Policy = c.pol
				me := g.ev(m)
				setup = append(setup, me)
				h.waitSeq(h.service().scim.Cursor, h.publish(setup...))
				li := g.login("ann@example.com", "Old Name", "s1", true)
				h.waitSeq(h.service().auth.Cursor, h.publish(li))
				uid := events.UserID(g.idp, "ann@example.com")
				if u := h.user(uid); u == nil || u.status() != events.StatusActive || !u.seatHeld() {
					t.Fatalf("after setup: user %+v, want active with a seat", u)
				}

				evs := c.change(g, c.pol)
				h.waitSeq(h.service().scim.Cursor, h.publish(evs...))
				h.drain()
				last := evs[len(evs)-1]
				revoker := evs[0] // the event whose time becomes revoked_before

				u := h.user(uid)
				got := expect{name: u.Name, status: u.status(), seat: u.seatHeld(), locked: u.Locked, groups: names(u.Groups),
					scimGroups: names(u.identity().SCIMGroups), revoked: u.RevokedBefore.Equal(revoker.OccurredAt),
					setupRevoked: u.RevokedBefore.Equal(me.OccurredAt), caused: h.causedBy(last.ID)}
				if ic, ok := h.identityCausedBy(last.ID); ok {
					if pub := names(ic.Identity.SCIMGroups); !cmp.Equal(pub, c.want.scimGroups) {
						t.Errorf("published scim_groups = %v, want %v", pub, c.want.scimGroups)
					}
				}
				if u.RevokedBefore.IsZero() {
					got.revoked, got.setupRevoked = false, false
				} else if !got.revoked && !got.setupRevoked {
					t.Errorf("revoked_before = %v, want %v (the change), %v (the setup's membership) or none", u.RevokedBefore, revoker.OccurredAt, me.OccurredAt)
				}
				if diff := cmp.Diff(c.want, got, cmp.AllowUnexported(expect{})); diff != "" {
					t.Errorf("state after %s in %s mode (-want +got):\n%s", c.row, c.mode, diff)
				}
				if strings.HasPrefix(c.row, "reactivate") {
					// Sessions issued before the lock stay invalid forever; a new login is valid.
					if s := h.sessions(uid); len(s) != 0 {
						t.Errorf("after reactivation active sessions = %v, want none (s1 predates the lock)", s)
					}
					h.waitSeq(h.service().auth.Cursor, h.publish(g.login("ann@example.com", "Old Name", "s2", true)))
					s := h.sessions(uid)
					if len(s) != 1 || s[0].SessionIDHash != "s2" {
						t.Errorf("after a new login active sessions = %v, want only s2", s)
					}
					if u := h.user(uid); u.status() != events.StatusActive || !u.seatHeld() {
						t.Errorf("after a new login status=%s seat=%v, want active with a seat", u.status(), u.seatHeld())
					}
				}
			})
		}
	})
	// The oracle: the live store equals a clean replay of the streams.
	h.caughtUp()
	if diff := cmp.Diff(readable(h.replayDump()), readable(h.dump())); diff != "" {
		t.Errorf("live store differs from a clean replay (-replay +live):\n%s", diff)
	}
}

// names lists the groups' names; never nil, so an empty list compares equal to []string{}.
func names(gs []events.Group) []string {
	out := []string{}
	for _, g := range gs {
		out = append(out, g.Name)
	}
	return out
}

// identityCausedBy returns the last IdentityChanged event caused by parent.
func (h *harness) identityCausedBy(parent string) (events.IdentityChanged, bool) {
	h.t.Helper()
	var (
		out events.IdentityChanged
		ok  bool
	)
	for _, e := range h.streamEvents(events.StreamIdentity) {
		if ic, is := e.Data.(events.IdentityChanged); is && e.CausationID == parent {
			out, ok = ic, true
		}
	}
	return out, ok
}

func (h *harness) sessions(uid string) []sessionView {
	h.t.Helper()
	var out []sessionView
	h.view(func(tx *bolt.Tx) error {
		u, err := getUser(tx, uid)
		if err != nil || u == nil {
			return err
		}
		out, err = activeSessions(tx, u, time.Now())
		return err
	})
	return out
}
