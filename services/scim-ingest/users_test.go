package scimingest

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

func oktaUser(userName string) map[string]any {
	return map[string]any{
		"schemas":     []string{scimschema.User},
		"userName":    userName,
		"name":        map[string]any{"givenName": "Test", "familyName": "User"},
		"emails":      []any{map[string]any{"primary": true, "value": userName, "type": "work"}},
		"displayName": "Test User", "locale": "en-US", "externalId": "00ujl29u0le5T6Aj10h7",
		"groups": []any{}, "password": "1mz050nq", "active": true,
	}
}

func TestUserLifecycle(t *testing.T) {
	t.Parallel()
	h := newHarness(t)

	// POST (Okta's create, with a password that must never be stored, returned or logged).
	created := h.do("POST", "/Users", oktaUser("Test.User@okta.local"))
	if created.status != http.StatusCreated {
		t.Fatalf("POST /Users = %d %s, want 201", created.status, created.raw)
	}
	id := str(created.body["id"])
	loc := "https://scim.example.test/populations/idp1/scim/v2/Users/" + id
	if got := created.header.Get("Location"); got != loc {
		t.Errorf("Location = %q, want %q", got, loc)
	}
	if got := created.header.Get("ETag"); got != `W/"1"` {
		t.Errorf("ETag = %q, want W/\"1\"", got)
	}
	if strings.Contains(string(created.raw), "1mz050nq") || created.body["password"] != nil {
		t.Errorf("POST response contains the password: %s", created.raw)
	}
	meta := created.body["meta"].(map[string]any)
	if meta["location"] != loc || meta["version"] != `W/"1"` || meta["resourceType"] != "User" {
		t.Errorf("meta = %v", meta)
	}
	evs := h.eventsOf(created)
	if diff := cmp.Diff([]string{events.TypeSCIMUserUpserted, events.TypeSCIMLog}, eventTypes(evs)); diff != "" {
		t.Fatalf("POST events (-want +got):\n%s", diff)
	}
	up := evs[0].Data.(events.SCIMUserUpserted)
	if up.UserID != id || !up.Created || up.ResourceVersion != 1 || up.Email != "test.user@okta.local" || !up.Active ||
		up.Policy.IdentityUpdateBehavior != events.UpdateAutomatic || up.Attributes["password"] != nil {
		t.Errorf("upserted = %+v", up)
	}
	if evs[0].Subject != "scim.idp1.user."+id+".upserted" || evs[0].CorrelationID != created.reqID {
		t.Errorf("subject %q correlation %q", evs[0].Subject, evs[0].CorrelationID)
	}
	l := logOf(t, evs)
	if l.Status != events.LogSuccess || l.HTTPStatus != 201 || l.ResourceType != kindUser || l.ResourceID != id ||
		l.ResourceUserEmail != "test.user@okta.local" || l.ResourceIdPID != "00ujl29u0le5T6Aj10h7" {
		t.Errorf("scimlog = %+v", l)
	}
	if strings.Contains(string(l.RequestBody), "1mz050nq") || !strings.Contains(string(l.RequestBody), redacted) {
		t.Errorf("scimlog body not redacted: %s", l.RequestBody)
	}

	// GET.
	got := h.do("GET", "/Users/"+id, nil)
	if got.status != 200 || got.body["userName"] != "Test.User@okta.local" || got.body["password"] != nil {
		t.Fatalf("GET = %d %s", got.status, got.raw)
	}

	// Duplicate userName, other letter case: 409 uniqueness, only the ERROR log event.
	dup := h.do("POST", "/Users", oktaUser("test.user@OKTA.local"))
	if dup.status != http.StatusConflict || dup.body["scimType"] != "uniqueness" || dup.body["status"] != "409" {
		t.Fatalf("duplicate POST = %d %s, want 409 uniqueness", dup.status, dup.raw)
	}
	devs := h.eventsOf(dup)
	if diff := cmp.Diff([]string{events.TypeSCIMLog}, eventTypes(devs)); diff != "" {
		t.Errorf("duplicate POST events (-want +got):\n%s", diff)
	}
	if l := logOf(t, devs); l.Status != events.LogError || l.HTTPStatus != 409 || l.ErrorDescription == "" {
		t.Errorf("duplicate scimlog = %+v", l)
	}

	// PUT that changes the name.
	put := oktaUser("Test.User@okta.local")
	put["name"] = map[string]any{"givenName": "Another", "familyName": "User"}
	put["id"] = id
	r := h.do("PUT", "/Users/"+id, put)
	if r.status != 200 || r.header.Get("ETag") != `W/"2"` {
		t.Fatalf("PUT = %d %s ETag %q", r.status, r.raw, r.header.Get("ETag"))
	}
	evs = h.eventsOf(r)
	if len(evs) != 2 {
		t.Fatalf("PUT events = %v", eventTypes(evs))
	}
	up = evs[0].Data.(events.SCIMUserUpserted)
	if diff := cmp.Diff([]string{"name"}, up.Changed); diff != "" || up.ResourceVersion != 2 || up.Created {
		t.Errorf("PUT upserted changed (-want +got):\n%s version %d", diff, up.ResourceVersion)
	}

	// The same PUT again changes nothing: no resource event, same version.
	r = h.do("PUT", "/Users/"+id, put)
	if r.status != 200 || r.header.Get("ETag") != `W/"2"` {
		t.Fatalf("no-op PUT = %d ETag %q", r.status, r.header.Get("ETag"))
	}
	if diff := cmp.Diff([]string{events.TypeSCIMLog}, eventTypes(h.eventsOf(r))); diff != "" {
		t.Errorf("no-op PUT events (-want +got):\n%s", diff)
	}

	// Entra's deactivation: capitalised op, string boolean.
	r = h.do("PATCH", "/Users/"+id, map[string]any{"schemas": []string{scimschema.PatchOp},
		"Operations": []any{map[string]any{"op": "Replace", "path": "active", "value": "False"}}})
	if r.status != 200 || r.body["active"] != false {
		t.Fatalf("PATCH active=False = %d %s", r.status, r.raw)
	}
	evs = h.eventsOf(r)
	if up := evs[0].Data.(events.SCIMUserUpserted); up.Active || !slices.Equal(up.Changed, []string{"active"}) {
		t.Errorf("deactivation event = %+v", up)
	}
	// Still readable, and found by filter, while inactive.
	if g := h.do("GET", "/Users/"+id, nil); g.status != 200 || g.body["active"] != false {
		t.Errorf("GET inactive = %d %s", g.status, g.raw)
	}
	if l := h.do("GET", `/Users?filter=userName+eq+%22test.user%40okta.local%22`, nil); l.body["totalResults"] != jsonNum(1) {
		t.Errorf("filter on inactive = %s", l.raw)
	}

	// DELETE → 204, then 404.
	r = h.do("DELETE", "/Users/"+id, nil)
	if r.status != http.StatusNoContent {
		t.Fatalf("DELETE = %d %s", r.status, r.raw)
	}
	evs = h.eventsOf(r)
	del, ok := evs[0].Data.(events.SCIMUserDeleted)
	if !ok || del.UserID != id || del.ResourceVersion != 4 || del.Email != "test.user@okta.local" {
		t.Errorf("DELETE event = %+v", evs[0].Data)
	}
	if g := h.do("GET", "/Users/"+id, nil); g.status != 404 || g.body["schemas"].([]any)[0] != scimschema.Error || g.body["detail"] == "" {
		t.Errorf("GET after DELETE = %d %s", g.status, g.raw)
	}
	if g := h.do("DELETE", "/Users/"+id, nil); g.status != 404 {
		t.Errorf("second DELETE = %d", g.status)
	}
}

func jsonNum(n int) any { return jsonNumber(n) }

// TestUnassignedValuesAreNotStored: Entra creates users with "roles": [] (and older payloads with
// nulls); they are not stored or served, and an unchanged PATCH afterwards keeps the version.
func TestUnassignedValuesAreNotStored(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	r := h.do("POST", "/Users", map[string]any{"schemas": []string{scimschema.User, scimschema.Enterprise}, "userName": "roles@x.test",
		"roles": []any{}, "addresses": nil, "phoneNumbers": nil, "name": map[string]any{"givenName": "R", "familyName": "L"},
		"emails": []any{map[string]any{"value": "roles@x.test", "type": "work", "primary": true}}, "active": true,
		scimschema.Enterprise: map[string]any{}})
	if r.status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.status, r.raw)
	}
	id := str(r.body["id"])
	g := h.do("GET", "/Users/"+id, nil)
	if strings.Contains(string(g.raw), "null") || g.body["roles"] != nil || g.body[scimschema.Enterprise] != nil {
		t.Errorf("GET after create has unassigned values: %s", g.raw)
	}
	p := h.do("PATCH", "/Users/"+id, patchBody(
		map[string]any{"op": "Replace", "path": "name.givenName", "value": "R"},
		map[string]any{"op": "Replace", "path": "name.familyName", "value": "L"}))
	if p.status != 200 || p.header.Get("ETag") != `W/"1"` {
		t.Errorf("unchanged PATCH = %d ETag %s, want 200 W/\"1\"", p.status, p.header.Get("ETag"))
	}
	if diff := cmp.Diff([]string{events.TypeSCIMLog}, eventTypes(h.eventsOf(p))); diff != "" {
		t.Errorf("unchanged PATCH events (-want +got):\n%s", diff)
	}
}
