package scimingest

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// TestConcurrentDuplicateCreates: concurrent creates of one userName are committed in shared
// transactions; exactly one wins, the others get 409, and only the winner's event is published.
func TestConcurrentDuplicateCreates(t *testing.T) {
	t.Parallel()
	h := newHarness(t, noRateLimit)
	const n = 24
	results := make([]resp, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Half the requests race on one name (in varying case), half create distinct users.
			name := "Same@X.test"
			if i%2 == 1 {
				name = fmt.Sprintf("other%d@x.test", i)
			} else if i%4 == 0 {
				name = "same@x.TEST"
			}
			results[i] = h.do("POST", "/Users", map[string]any{"schemas": []string{scimschema.User}, "userName": name})
		}()
	}
	wg.Wait()
	created, conflicts := 0, 0
	for i, r := range results {
		switch {
		case i%2 == 1 && r.status != http.StatusCreated:
			t.Errorf("distinct create %d = %d %s", i, r.status, r.raw)
		case i%2 == 0 && r.status == http.StatusCreated:
			created++
		case i%2 == 0 && r.status == http.StatusConflict:
			conflicts++
		case i%2 == 0:
			t.Errorf("racing create %d = %d %s", i, r.status, r.raw)
		}
	}
	if created != 1 || conflicts != n/2-1 {
		t.Errorf("racing creates: %d created, %d conflicts; want 1 and %d", created, conflicts, n/2-1)
	}
	upserts := 0
	for _, r := range results {
		for _, e := range h.eventsOf(r) {
			if u, ok := e.Data.(events.SCIMUserUpserted); ok && (u.UserName == "Same@X.test" || u.UserName == "same@x.TEST") {
				upserts++
			}
		}
	}
	if upserts != 1 {
		t.Errorf("upserted events for the raced name = %d, want 1", upserts)
	}
}

// TestGroupPatchNeedingMembers: a members filter that is not a value equality is applied to the
// whole member list (scimpatch.MembersDelta cannot express it) and still publishes a delta.
func TestGroupPatchNeedingMembers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	u1, u2 := h.createUser("p1@x.test"), h.createUser("p2@x.test")
	r := h.do("POST", "/Groups", map[string]any{"schemas": []string{scimschema.Group}, "displayName": "G",
		"members": []any{map[string]any{"value": u1}, map[string]any{"value": u2}}})
	gid := str(r.body["id"])
	r = h.do("PATCH", "/Groups/"+gid, patchBody(map[string]any{"op": "remove", "path": fmt.Sprintf("members[value sw %q]", u2[:len(u2)-2])}))
	if r.status != http.StatusNoContent {
		t.Fatalf("PATCH remove by sw filter = %d %s", r.status, r.raw)
	}
	added, removed, replace := memberDelta(t, h.eventsOf(r))
	if replace || len(added) != 0 || !slices.Equal(removed, []string{u2}) {
		t.Errorf("delta = replace %v +%v -%v, want -[%s]", replace, added, removed, u2)
	}
	if got := h.members(gid); !slices.Equal(got, []string{u1}) {
		t.Errorf("members = %v, want [%s]", got, u1)
	}
	// Entra's membership check: id eq "g" and members[value eq "u"].
	for u, want := range map[string]int{u1: 1, u2: 0} {
		f := url.QueryEscape(fmt.Sprintf(`id eq %q and members[value eq %q]`, gid, u))
		if r := h.do("GET", "/Groups?excludedAttributes=members&filter="+f, nil); r.status != 200 || r.body["totalResults"] != jsonNumber(want) {
			t.Errorf("membership filter for %s = %d %s, want %d result(s)", u, r.status, r.raw, want)
		}
	}
}

// TestConcurrentMembershipPatches: concurrent PATCHes adding different members to one group lose none
// of them (fleetdm/fleet #50724 lost members through an unlocked read-modify-write of the list): each
// membership is its own key, and every PATCH's delta is computed inside its write transaction.
func TestConcurrentMembershipPatches(t *testing.T) {
	t.Parallel()
	h := newHarness(t, noRateLimit)
	uids := h.seedUsers(24)
	g := h.do("POST", "/Groups", map[string]any{"schemas": []string{scimschema.Group}, "displayName": "busy"})
	gid := str(g.body["id"])
	var wg sync.WaitGroup
	reqs := make([]resp, len(uids))
	for i, uid := range uids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reqs[i] = h.do("PATCH", "/Groups/"+gid, patchBody(map[string]any{"op": "add", "path": "members", "value": []any{map[string]any{"value": uid}}}))
		}()
	}
	wg.Wait()
	added := 0
	for i, r := range reqs {
		if r.status != 204 {
			t.Fatalf("PATCH %d = %d %s", i, r.status, r.raw)
		}
		a, _, _ := memberDelta(t, h.eventsOf(r))
		added += len(a)
	}
	if got := h.members(gid); len(got) != len(uids) || added != len(uids) {
		t.Errorf("members = %d, added in events = %d, want %d", len(got), added, len(uids))
	}
}
