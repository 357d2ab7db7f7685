package scimingest

import (
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

func (h *harness) createUser(userName string) string {
	h.t.Helper()
	r := h.do("POST", "/Users", oktaUser(userName))
	if r.status != http.StatusCreated {
		h.t.Fatalf("POST /Users %s = %d %s", userName, r.status, r.raw)
	}
	return str(r.body["id"])
}

func patchBody(ops ...map[string]any) map[string]any {
	list := make([]any, len(ops))
	for i, o := range ops {
		list[i] = o
	}
	return map[string]any{"schemas": []string{scimschema.PatchOp}, "Operations": list}
}

func (h *harness) members(gid string) []string {
	h.t.Helper()
	r := h.do("GET", "/Groups/"+gid, nil)
	if r.status != 200 {
		h.t.Fatalf("GET group = %d %s", r.status, r.raw)
	}
	var out []string
	list, _ := r.body["members"].([]any)
	for _, m := range list {
		out = append(out, str(m.(map[string]any)["value"]))
	}
	slices.Sort(out)
	return out
}

func sorted(ids ...string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

func memberDelta(t *testing.T, evs []events.Event) (added, removed []string, replace bool) {
	t.Helper()
	for _, e := range evs {
		if m, ok := e.Data.(events.SCIMGroupMembers); ok {
			added = append(added, m.Added...)
			removed = append(removed, m.Removed...)
			replace = replace || m.Replace
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	return added, removed, replace
}

func TestGroupMembership(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	u1, u2, u3 := h.createUser("a@x.test"), h.createUser("b@x.test"), h.createUser("c@x.test")

	// Entra's create: extra ADSCIM schema URN, no members.
	r := h.do("POST", "/Groups", map[string]any{
		"schemas":    []string{scimschema.Group, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"},
		"externalId": "8aa1a0c0", "displayName": "Engineering", "meta": map[string]any{"resourceType": "Group"}})
	if r.status != http.StatusCreated {
		t.Fatalf("POST /Groups = %d %s", r.status, r.raw)
	}
	gid := str(r.body["id"])
	if diff := cmp.Diff([]string{events.TypeSCIMGroupUpserted, events.TypeSCIMLog}, eventTypes(h.eventsOf(r))); diff != "" {
		t.Errorf("create events (-want +got):\n%s", diff)
	}
	if d := h.do("POST", "/Groups", map[string]any{"schemas": []string{scimschema.Group}, "displayName": "ENGINEERING"}); d.status != http.StatusConflict {
		t.Errorf("duplicate displayName = %d, want 409", d.status)
	}

	// Entra adds members with $ref null: 204 and one members event.
	r = h.do("PATCH", "/Groups/"+gid, patchBody(map[string]any{"op": "Add", "path": "members",
		"value": []any{map[string]any{"$ref": nil, "value": u1}, map[string]any{"value": u2}}}))
	if r.status != http.StatusNoContent {
		t.Fatalf("PATCH add = %d %s", r.status, r.raw)
	}
	evs := h.eventsOf(r)
	if added, removed, _ := memberDelta(t, evs); !slices.Equal(added, sorted(u1, u2)) || len(removed) != 0 {
		t.Errorf("add delta = +%v -%v", added, removed)
	}
	if m := evs[0].Data.(events.SCIMGroupMembers); m.DisplayName != "Engineering" || m.ResourceVersion != 2 || m.Chunks != 1 {
		t.Errorf("members event = %+v", m)
	}
	if got := h.members(gid); !slices.Equal(got, sorted(u1, u2)) {
		t.Errorf("members = %v", got)
	}

	// Adding an existing member again changes nothing.
	r = h.do("PATCH", "/Groups/"+gid, patchBody(map[string]any{"op": "add", "path": "members", "value": []any{map[string]any{"value": u1}}}))
	if diff := cmp.Diff([]string{events.TypeSCIMLog}, eventTypes(h.eventsOf(r))); r.status != 204 || diff != "" {
		t.Errorf("no-op add = %d, events (-want +got):\n%s", r.status, diff)
	}

	// Okta: rename with id inside the value plus remove by filter plus add, in one request.
	r = h.do("PATCH", "/Groups/"+gid, patchBody(
		map[string]any{"op": "replace", "value": map[string]any{"id": gid, "displayName": "Eng"}},
		map[string]any{"op": "remove", "path": fmt.Sprintf("members[value eq %q]", u1)},
		map[string]any{"op": "add", "path": "members", "value": []any{map[string]any{"value": u3, "display": "c"}}}))
	if r.status != 204 {
		t.Fatalf("Okta PATCH = %d %s", r.status, r.raw)
	}
	evs = h.eventsOf(r)
	if diff := cmp.Diff([]string{events.TypeSCIMGroupUpserted, events.TypeSCIMGroupMembers, events.TypeSCIMLog}, eventTypes(evs)); diff != "" {
		t.Fatalf("Okta PATCH events (-want +got):\n%s", diff)
	}
	if g := evs[0].Data.(events.SCIMGroupUpserted); g.DisplayName != "Eng" || !slices.Equal(g.Changed, []string{"displayName"}) {
		t.Errorf("rename event = %+v", g)
	}
	if added, removed, _ := memberDelta(t, evs); !slices.Equal(added, []string{u3}) || !slices.Equal(removed, []string{u1}) {
		t.Errorf("Okta delta = +%v -%v", added, removed)
	}

	// Entra removes with a value list: only the listed member goes.
	r = h.do("PATCH", "/Groups/"+gid, patchBody(map[string]any{"op": "Remove", "path": "members", "value": []any{map[string]any{"value": u2}}}))
	if got := h.members(gid); r.status != 204 || !slices.Equal(got, []string{u3}) {
		t.Errorf("Entra remove = %d, members %v, want [%s]", r.status, got, u3)
	}

	// A member that is not a user of this IdP: 400, nothing changes.
	r = h.do("PATCH", "/Groups/"+gid, patchBody(map[string]any{"op": "add", "path": "members", "value": []any{map[string]any{"value": "nope"}}}))
	if diff := cmp.Diff([]string{events.TypeSCIMLog}, eventTypes(h.eventsOf(r))); r.status != 400 || diff != "" {
		t.Errorf("unknown member = %d, events (-want +got):\n%s", r.status, diff)
	}

	// Okta full push: replace the list.
	r = h.do("PATCH", "/Groups/"+gid, patchBody(map[string]any{"op": "replace", "path": "members",
		"value": []any{map[string]any{"value": u1}, map[string]any{"value": u2}}}))
	if got := h.members(gid); r.status != 204 || !slices.Equal(got, sorted(u1, u2)) {
		t.Errorf("replace = %d, members %v", r.status, got)
	}
	if added, removed, _ := memberDelta(t, h.eventsOf(r)); !slices.Equal(added, sorted(u1, u2)) || !slices.Equal(removed, []string{u3}) {
		t.Errorf("replace delta = +%v -%v", added, removed)
	}

	// The user's readOnly groups attribute.
	if g := h.do("GET", "/Users/"+u2, nil); len(g.body["groups"].([]any)) != 1 || g.body["groups"].([]any)[0].(map[string]any)["display"] != "Eng" {
		t.Errorf("user groups = %v", g.body["groups"])
	}

	// excludedAttributes=members.
	r = h.do("GET", "/Groups/"+gid+"?excludedAttributes=members", nil)
	if r.status != 200 || r.body["members"] != nil || r.body["displayName"] != "Eng" {
		t.Errorf("GET excludedAttributes=members = %d %s", r.status, r.raw)
	}

	// Deleting a user removes it from its groups and says so in the event.
	r = h.do("DELETE", "/Users/"+u1, nil)
	evs = h.eventsOf(r)
	if del := evs[0].Data.(events.SCIMUserDeleted); r.status != 204 || !slices.Equal(del.Groups, []string{gid}) {
		t.Errorf("user DELETE = %d, event %+v", r.status, evs[0].Data)
	}
	if got := h.members(gid); !slices.Equal(got, []string{u2}) {
		t.Errorf("members after user delete = %v", got)
	}

	// Okta's empty push clears the group.
	r = h.do("PATCH", "/Groups/"+gid, patchBody(map[string]any{"op": "replace", "path": "members", "value": []any{}}))
	if got := h.members(gid); r.status != 204 || len(got) != 0 {
		t.Errorf("replace [] = %d, members %v", r.status, got)
	}

	r = h.do("DELETE", "/Groups/"+gid, nil)
	evs = h.eventsOf(r)
	if d, ok := evs[0].Data.(events.SCIMGroupDeleted); r.status != 204 || !ok || d.DisplayName != "Eng" {
		t.Errorf("group DELETE = %d %+v", r.status, evs[0].Data)
	}
	if g := h.do("GET", "/Groups/"+gid, nil); g.status != 404 {
		t.Errorf("GET deleted group = %d", g.status)
	}
}

func TestGroupMembersChunked(t *testing.T) {
	t.Parallel()
	h := newHarness(t, noRateLimit)
	var ids []any
	var want []string
	srvIDs := h.seedUsers(1500)
	for _, id := range srvIDs {
		ids = append(ids, map[string]any{"value": id})
		want = append(want, id)
	}
	r := h.do("POST", "/Groups", map[string]any{"schemas": []string{scimschema.Group}, "displayName": "Big", "members": ids})
	if r.status != http.StatusCreated {
		t.Fatalf("POST big group = %d %s", r.status, r.raw)
	}
	evs := h.eventsOf(r)
	if diff := cmp.Diff([]string{events.TypeSCIMGroupUpserted, events.TypeSCIMGroupMembers, events.TypeSCIMGroupMembers, events.TypeSCIMLog}, eventTypes(evs)); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	for i, e := range evs[1:3] {
		m := e.Data.(events.SCIMGroupMembers)
		if m.Chunk != i || m.Chunks != 2 || len(m.Added) > events.MaxMembersPerEvent {
			t.Errorf("chunk %d = chunk %d/%d with %d ids", i, m.Chunk, m.Chunks, len(m.Added))
		}
	}
	added, _, _ := memberDelta(t, evs)
	slices.Sort(want)
	if !slices.Equal(added, want) {
		t.Errorf("added %d ids, want %d", len(added), len(want))
	}
}

// TestPatchAddBareStringMember: Microsoft's SCIM reference collection adds a member with a bare
// string value, {"op":"add","path":"members","value":"<user id>"}: it is one member, added as a
// delta like any other; a bare string naming no user of the IdP is 400 invalidValue.
func TestPatchAddBareStringMember(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	u1, u2 := h.createUser("bare1@x.test"), h.createUser("bare2@x.test")
	g := h.do("POST", "/Groups", map[string]any{"schemas": []string{scimschema.Group}, "displayName": "bare",
		"members": []any{map[string]any{"value": u1}}})
	if g.status != http.StatusCreated {
		t.Fatalf("POST group = %d %s", g.status, g.raw)
	}
	gid := str(g.body["id"])
	r := h.do("PATCH", "/Groups/"+gid, patchBody(map[string]any{"op": "add", "path": "members", "value": u2}))
	if r.status != http.StatusNoContent {
		t.Fatalf("PATCH add bare string = %d %s, want 204", r.status, r.raw)
	}
	added, removed, replace := memberDelta(t, h.eventsOf(r))
	if !slices.Equal(added, []string{u2}) || removed != nil || replace {
		t.Errorf("delta = +%v -%v replace %v, want +[%s]", added, removed, replace, u2)
	}
	if got := h.members(gid); !slices.Equal(got, sorted(u1, u2)) {
		t.Errorf("members = %v, want %v", got, sorted(u1, u2))
	}
	r = h.do("PATCH", "/Groups/"+gid, patchBody(map[string]any{"op": "add", "path": "members", "value": "not-a-user"}))
	if r.status != http.StatusBadRequest || r.body["scimType"] != scimInvalidValue {
		t.Errorf("PATCH add unknown bare string = %d %s, want 400 invalidValue", r.status, r.raw)
	}
}
