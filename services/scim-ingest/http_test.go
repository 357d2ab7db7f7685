package scimingest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// scimlogCount counts the provisioning-log events of an IdP in the stream.
func (h *harness) scimlogCount(idp string) int {
	n := 0
	for _, e := range h.allEvents() {
		if e.Type == events.TypeSCIMLog && e.IdPID == idp {
			n++
		}
	}
	return n
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.putIdP("idp2", true, "s3cret-idp2", "")
	h.putIdP("off", false, "s3cret-off", "")
	eventually(t, "idp2 visible", func() bool {
		return h.doAs("idp2", "s3cret-idp2", "GET", "/Users", nil, nil).status == 200
	})
	cases := []struct {
		name, idp, secret string
		hdr               map[string]string
		want              int
	}{
		{"missing token", "idp1", "", nil, 401},
		{"wrong token", "idp1", "nope", nil, 401},
		{"other IdP's token", "idp1", "s3cret-idp2", nil, 401},
		{"basic scheme", "idp1", "", map[string]string{"Authorization": "Basic czNjcmV0LWlkcDE="}, 401},
		{"empty bearer", "idp1", "", map[string]string{"Authorization": "Bearer "}, 401},
		{"unknown IdP", "nosuch", "s3cret-idp1", nil, 404},
		{"SCIM disabled", "off", "s3cret-off", nil, 404},
		{"lower-case scheme", "idp1", "", map[string]string{"Authorization": "bearer s3cret-idp1"}, 200},
	}
	for _, c := range cases {
		r := h.doAs(c.idp, c.secret, "GET", "/Users", nil, c.hdr)
		if r.status != c.want {
			t.Errorf("%s: GET = %d, want %d", c.name, r.status, c.want)
		}
		if c.want == 401 && (r.header.Get("WWW-Authenticate") == "" || r.body["schemas"].([]any)[0] != scimschema.Error) {
			t.Errorf("%s: 401 without WWW-Authenticate or SCIM error: %v %s", c.name, r.header, r.raw)
		}
	}
	// Rejected before authentication: nothing in the IdPs' provisioning logs. The authenticated GET
	// above is logged; wait for it, then count.
	last := h.doAs("idp1", "s3cret-idp1", "GET", "/Users", nil, nil)
	h.eventsOf(last)
	if n := h.scimlogCount("idp1"); n != 2 {
		t.Errorf("idp1 scimlog events = %d, want 2 (the two authenticated GETs)", n)
	}
	for _, e := range h.allEvents() {
		if e.IdPID == "off" || e.IdPID == "nosuch" {
			t.Errorf("event for %s: %s", e.IdPID, e.Type)
		}
	}
	// A user of idp2 is invisible through idp1's endpoint, even with its id.
	r := h.doAs("idp2", "s3cret-idp2", "POST", "/Users", oktaUser("x@y.test"), nil)
	if g := h.do("GET", "/Users/"+str(r.body["id"]), nil); g.status != 404 {
		t.Errorf("cross-tenant GET = %d, want 404", g.status)
	}
	if g := h.do("DELETE", "/Users/"+str(r.body["id"]), nil); g.status != 404 {
		t.Errorf("cross-tenant DELETE = %d, want 404", g.status)
	}

	// Disabling SCIM applies without restart.
	h.putIdP("idp2", false, "s3cret-idp2", "")
	eventually(t, "idp2 disabled", func() bool {
		return h.doAs("idp2", "s3cret-idp2", "GET", "/Users", nil, nil).status == 404
	})
}

func TestSecretRotationGrace(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.SecretGrace = 3600e9 })
	h.putIdP("idp1", true, "new-secret", "s3cret-idp1")
	eventually(t, "rotation visible", func() bool {
		return h.doAs("idp1", "new-secret", "GET", "/Users", nil, nil).status == 200
	})
	if r := h.doAs("idp1", "s3cret-idp1", "GET", "/Users", nil, nil); r.status != 200 {
		t.Errorf("previous secret within grace = %d, want 200", r.status)
	}
	// Without grace the previous secret is refused at once.
	h2 := newHarness(t)
	h2.putIdP("idp1", true, "new-secret", "s3cret-idp1")
	eventually(t, "rotation visible", func() bool {
		return h2.doAs("idp1", "new-secret", "GET", "/Users", nil, nil).status == 200
	})
	if r := h2.doAs("idp1", "s3cret-idp1", "GET", "/Users", nil, nil); r.status != 401 {
		t.Errorf("previous secret without grace = %d, want 401", r.status)
	}
}

func TestListAndFilter(t *testing.T) {
	t.Parallel()
	h := newHarness(t, noRateLimit)
	var ids []string
	for i := range 12 {
		u := oktaUser(fmt.Sprintf("User%02d@Example.test", i))
		u["externalId"] = fmt.Sprintf("ext-%d", i%3)
		u["emails"] = []any{map[string]any{"type": "work", "value": fmt.Sprintf("Work%02d@corp.test", i)}}
		r := h.do("POST", "/Users", u)
		ids = append(ids, str(r.body["id"]))
	}
	q := func(filter string, extra string) resp {
		return h.do("GET", "/Users?filter="+url.QueryEscape(filter)+extra, nil)
	}
	cases := []struct {
		filter string
		want   int
	}{
		{`userName eq "user03@example.test"`, 1},
		{`USERNAME EQ "USER03@EXAMPLE.TEST"`, 1},
		{`userName eq "nobody@example.test"`, 0},
		{`externalId eq "ext-1"`, 4},
		{`externalId eq "EXT-1"`, 0},
		{`emails[type eq "work"].value eq "work05@corp.test"`, 1},
		{`emails[type eq "work" and value eq "WORK05@corp.test"]`, 1},
		{`userName sw "user1"`, 2},
		{`active eq true and (externalId eq "ext-0" or externalId eq "ext-2")`, 8},
		{`meta.lastModified gt "2000-01-01T00:00:00Z"`, 12},
		{`id eq "` + ids[4] + `"`, 1},
	}
	for _, c := range cases {
		r := q(c.filter, "")
		if r.status != 200 || r.body["totalResults"] != jsonNumber(c.want) {
			t.Errorf("filter %s = %d totalResults %v, want %d (%s)", c.filter, r.status, r.body["totalResults"], c.want, r.raw)
		}
	}
	empty := q(`userName eq "0a1b2c3d-guid"`, "")
	if !strings.Contains(string(empty.raw), `"Resources":[]`) || empty.body["itemsPerPage"] != jsonNumber(0) || empty.body["startIndex"] != jsonNumber(1) {
		t.Errorf("empty result = %s", empty.raw)
	}
	// Trailing slash and lower-case startindex (Entra).
	r := h.do("GET", "/Users/?startindex=11&count=5", nil)
	if r.status != 200 || r.body["totalResults"] != jsonNumber(12) || r.body["itemsPerPage"] != jsonNumber(2) || r.body["startIndex"] != jsonNumber(11) {
		t.Errorf("page = %d %v/%v/%v", r.status, r.body["totalResults"], r.body["itemsPerPage"], r.body["startIndex"])
	}
	// Pages are stable: concatenated pages list every user once, in creation order.
	var paged []string
	for start := 1; start <= 12; start += 5 {
		p := h.do("GET", fmt.Sprintf("/Users?startIndex=%d&count=5&attributes=userName", start), nil)
		for _, res := range p.body["Resources"].([]any) {
			m := res.(map[string]any)
			if m["emails"] != nil || m["userName"] == nil {
				t.Errorf("attributes=userName returned %v", m)
			}
			paged = append(paged, str(m["id"]))
		}
	}
	if diff := cmp.Diff(ids, paged); diff != "" {
		t.Errorf("paged ids (-creation order +pages):\n%s", diff)
	}
	if r := h.do("GET", "/Users?count=0", nil); r.body["totalResults"] != jsonNumber(12) || len(r.body["Resources"].([]any)) != 0 {
		t.Errorf("count=0 = %s", r.raw)
	}
	for _, bad := range []string{`userName eq`, `userName xx "a"`, `(userName eq "a"`, strings.Repeat("(", 5000)} {
		r := q(bad, "")
		if r.status != 400 || r.body["scimType"] != "invalidFilter" {
			t.Errorf("filter %.30q = %d %s, want 400 invalidFilter", bad, r.status, r.raw)
		}
		if diff := cmp.Diff([]string{events.TypeSCIMLog}, eventTypes(h.eventsOf(r))); diff != "" {
			t.Errorf("bad filter events (-want +got):\n%s", diff)
		}
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.MaxPatchOps = 3; c.MaxMembersPerRequest = 2 })
	uid := h.createUser("limits@x.test")

	big := `{"schemas":["` + scimschema.User + `"],"userName":"big@x.test","title":"` + strings.Repeat("a", 1<<20) + `"}`
	r := h.do("POST", "/Users", big)
	if r.status != http.StatusRequestEntityTooLarge || r.body["status"] != "413" {
		t.Errorf("1 MiB body = %d %s", r.status, r.raw)
	}
	if diff := cmp.Diff([]string{events.TypeSCIMLog}, eventTypes(h.eventsOf(r))); diff != "" {
		t.Errorf("413 events (-want +got):\n%s", diff)
	}
	// Chunked body (no Content-Length): still 413.
	req, _ := http.NewRequest("POST", h.url+"/populations/idp1/scim/v2/Users", io.MultiReader(strings.NewReader(big)))
	req.Header.Set("Authorization", "Bearer s3cret-idp1")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked 1 MiB body = %d, want 413", res.StatusCode)
	}

	op := map[string]any{"op": "replace", "path": "title", "value": "x"}
	r = h.do("PATCH", "/Users/"+uid, patchBody(op, op, op, op))
	if r.status != 400 || r.body["scimType"] != "tooMany" {
		t.Errorf("4 ops = %d %s, want 400 tooMany", r.status, r.raw)
	}
	r = h.do("POST", "/Groups", map[string]any{"schemas": []string{scimschema.Group}, "displayName": "g",
		"members": []any{map[string]any{"value": uid}, map[string]any{"value": "b"}, map[string]any{"value": "c"}}})
	if r.status != 400 || r.body["scimType"] != "tooMany" {
		t.Errorf("3 members = %d %s, want 400 tooMany", r.status, r.raw)
	}
	if diff := cmp.Diff([]string{events.TypeSCIMLog}, eventTypes(h.eventsOf(r))); diff != "" {
		t.Errorf("tooMany events (-want +got):\n%s", diff)
	}
	r = h.do("GET", "/Users?filter="+url.QueryEscape(`userName eq "`+strings.Repeat("a", 5000)+`"`), nil)
	if r.status != 400 || r.body["scimType"] != "invalidFilter" {
		t.Errorf("long filter = %d, want 400 invalidFilter", r.status)
	}
}

func TestRateLimitPerIdP(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.RateLimit = 0.001; c.RateBurst = 2 })
	h.putIdP("idp2", true, "s3cret-idp2", "")
	for range 2 {
		if r := h.do("GET", "/Users", nil); r.status != 200 {
			t.Fatalf("GET within burst = %d", r.status)
		}
	}
	r := h.do("GET", "/Users", nil)
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Errorf("GET beyond burst = %d Retry-After %q, want 429 with Retry-After", r.status, r.header.Get("Retry-After"))
	}
	// Another IdP is not slowed down.
	eventually(t, "idp2 visible", func() bool {
		return h.doAs("idp2", "s3cret-idp2", "GET", "/Users", nil, nil).status == 200
	})
}

func TestDiscovery(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	spc := h.do("GET", "/ServiceProviderConfig", nil)
	if spc.status != 200 || spc.body["etag"].(map[string]any)["supported"] != true ||
		spc.body["filter"].(map[string]any)["maxResults"] != jsonNumber(1000) ||
		spc.body["authenticationSchemes"].([]any)[0].(map[string]any)["type"] != "oauthbearertoken" {
		t.Errorf("SPC = %d %s", spc.status, spc.raw)
	}
	rts := h.do("GET", "/ResourceTypes", nil)
	if rts.status != 200 || rts.body["totalResults"] != jsonNumber(2) {
		t.Errorf("ResourceTypes = %d %s", rts.status, rts.raw)
	}
	sch := h.do("GET", "/Schemas", nil)
	if sch.status != 200 || strings.Contains(string(sch.raw), `"password"`) || !strings.Contains(string(sch.raw), scimschema.Enterprise) {
		t.Errorf("Schemas = %d (password advertised or enterprise missing)", sch.status)
	}
	if r := h.do("GET", "/Schemas/"+scimschema.User, nil); r.status != 200 || r.body["id"] != scimschema.User {
		t.Errorf("Schemas/User = %d %s", r.status, r.raw)
	}
	for _, p := range []string{"/ServiceProviderConfig", "/Schemas", "/ResourceTypes"} {
		r := h.do("POST", p, "test")
		if r.status != http.StatusMethodNotAllowed {
			t.Errorf("POST %s = %d, want 405", p, r.status)
		}
		if diff := cmp.Diff([]string{events.TypeSCIMLog}, eventTypes(h.eventsOf(r))); diff != "" {
			t.Errorf("POST %s events (-want +got):\n%s", p, diff)
		}
	}
	if r := h.do("GET", "/Bulk", nil); r.status != 404 {
		t.Errorf("GET /Bulk = %d, want 404", r.status)
	}
}

func TestIfMatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	uid := h.createUser("etag@x.test")
	body := patchBody(map[string]any{"op": "replace", "path": "title", "value": "CTO"})
	r := h.doAs("idp1", "s3cret-idp1", "PATCH", "/Users/"+uid, body, map[string]string{"If-Match": `W/"7"`})
	if r.status != http.StatusPreconditionFailed {
		t.Errorf("PATCH with stale If-Match = %d, want 412", r.status)
	}
	if diff := cmp.Diff([]string{events.TypeSCIMLog}, eventTypes(h.eventsOf(r))); diff != "" {
		t.Errorf("412 events (-want +got):\n%s", diff)
	}
	r = h.doAs("idp1", "s3cret-idp1", "PATCH", "/Users/"+uid, body, map[string]string{"If-Match": `W/"1"`})
	if r.status != 200 || r.header.Get("ETag") != `W/"2"` || r.body["title"] != "CTO" {
		t.Errorf("PATCH with current If-Match = %d ETag %q %s", r.status, r.header.Get("ETag"), r.raw)
	}
	if r := h.doAs("idp1", "s3cret-idp1", "GET", "/Users/"+uid, nil, map[string]string{"If-None-Match": `W/"2"`}); r.status != http.StatusNotModified {
		t.Errorf("GET with current If-None-Match = %d, want 304", r.status)
	}
	if r := h.doAs("idp1", "s3cret-idp1", "GET", "/Users/"+uid, nil, map[string]string{"If-None-Match": `W/"1"`}); r.status != 200 {
		t.Errorf("GET with stale If-None-Match = %d, want 200", r.status)
	}
	r = h.doAs("idp1", "s3cret-idp1", "DELETE", "/Users/"+uid, nil, map[string]string{"If-Match": `W/"1"`})
	if r.status != http.StatusPreconditionFailed {
		t.Errorf("DELETE with stale If-Match = %d, want 412", r.status)
	}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	uid := h.createUser("bad@x.test")
	cases := []struct {
		name, method, path string
		body               any
		want               int
		scimType           string
	}{
		{"junk JSON", "POST", "/Users", "{nope", 400, "invalidSyntax"},
		{"no schemas", "POST", "/Users", map[string]any{"userName": "n@x.test"}, 400, "invalidSyntax"},
		{"no userName", "POST", "/Users", map[string]any{"schemas": []string{scimschema.User}}, 400, "invalidValue"},
		{"bad active", "POST", "/Users", map[string]any{"schemas": []string{scimschema.User}, "userName": "q@x.test", "active": "maybe"}, 400, "invalidValue"},
		{"PUT unknown id", "PUT", "/Users/nope", oktaUser("p@x.test"), 404, ""},
		{"PATCH unknown op", "PATCH", "/Users/" + uid, patchBody(map[string]any{"op": "update", "path": "title", "value": "x"}), 400, "invalidSyntax"},
		{"PATCH no Operations", "PATCH", "/Users/" + uid, map[string]any{"schemas": []string{scimschema.PatchOp}}, 400, "invalidSyntax"},
		{"PATCH bad path", "PATCH", "/Users/" + uid, patchBody(map[string]any{"op": "replace", "path": "emails[type eq", "value": "x"}), 400, "invalidPath"},
		{"group without displayName", "POST", "/Groups", map[string]any{"schemas": []string{scimschema.Group}}, 400, "invalidValue"},
		{"method on collection", "DELETE", "/Users", nil, 405, ""},
	}
	for _, c := range cases {
		r := h.do(c.method, c.path, c.body)
		if r.status != c.want || str(r.body["scimType"]) != c.scimType || r.body["status"] != fmt.Sprint(c.want) {
			t.Errorf("%s: %s %s = %d %s, want %d %s", c.name, c.method, c.path, r.status, r.raw, c.want, c.scimType)
			continue
		}
		evs := h.eventsOf(r)
		if diff := cmp.Diff([]string{events.TypeSCIMLog}, eventTypes(evs)); diff != "" {
			t.Errorf("%s: events (-want +got):\n%s", c.name, diff)
		}
		if l := logOf(t, evs); l.Status != events.LogError || l.HTTPStatus != c.want {
			t.Errorf("%s: scimlog = %+v", c.name, l)
		}
	}
}

func TestEntraAndOktaShapes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// Entra's POST with the enterprise extension, manager as a string, string boolean.
	r := h.do("POST", "/Users", map[string]any{
		"schemas": []string{scimschema.User, scimschema.Enterprise}, "externalId": "0a21f0f2", "userName": "Test_User_00aa",
		"active": "True", "emails": []any{map[string]any{"primary": "true", "type": "work", "value": "Test_User_11bb@testuser.com"}},
		"name": map[string]any{"familyName": "familyName", "givenName": "givenName"}, "roles": []any{},
		"urn:ietf:params:scim:schemas:extension:enterprise:2.0:user": map[string]any{"department": "R&D", "manager": "boss-id"},
	})
	if r.status != 201 || r.body["active"] != true {
		t.Fatalf("Entra POST = %d %s", r.status, r.raw)
	}
	uid := str(r.body["id"])
	ext, _ := r.body[scimschema.Enterprise].(map[string]any)
	if ext["department"] != "R&D" || ext["manager"].(map[string]any)["value"] != "boss-id" {
		t.Errorf("enterprise extension = %v", r.body[scimschema.Enterprise])
	}
	up := h.eventsOf(r)[0].Data.(events.SCIMUserUpserted)
	if up.Email != "test_user_11bb@testuser.com" {
		t.Errorf("registry email = %q, want the primary email (userName is not an email)", up.Email)
	}
	// Entra PATCH: multi-valued replace through a value path, sub-attribute, manager as a URN path string.
	r = h.do("PATCH", "/Users/"+uid, patchBody(
		map[string]any{"op": "Replace", "path": `emails[type eq "work"].value`, "value": "updated@microsoft.com"},
		map[string]any{"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
		map[string]any{"op": "add", "path": scimschema.Enterprise + ":manager", "value": "boss-2"},
	))
	if r.status != 200 {
		t.Fatalf("Entra PATCH = %d %s", r.status, r.raw)
	}
	emails := r.body["emails"].([]any)
	if len(emails) != 1 || emails[0].(map[string]any)["value"] != "updated@microsoft.com" ||
		r.body["name"].(map[string]any)["familyName"] != "updatedFamilyName" ||
		r.body[scimschema.Enterprise].(map[string]any)["manager"].(map[string]any)["value"] != "boss-2" {
		t.Errorf("after Entra PATCH = %s", r.raw)
	}
	// Flag-on no-path replace with dotted and URN keys.
	r = h.do("PATCH", "/Users/"+uid, patchBody(map[string]any{"op": "replace", "value": map[string]any{
		"displayName": "Bjfe", "name.givenName": "Kkom", scimschema.Enterprise + ":employeeNumber": "Aklq"}}))
	if r.status != 200 || r.body["displayName"] != "Bjfe" || r.body["name"].(map[string]any)["givenName"] != "Kkom" ||
		r.body[scimschema.Enterprise].(map[string]any)["employeeNumber"] != "Aklq" {
		t.Errorf("no-path PATCH = %d %s", r.status, r.raw)
	}
	// Null update: replace with null removes; read back empty.
	r = h.do("PATCH", "/Users/"+uid, patchBody(map[string]any{"op": "Replace", "path": "displayName", "value": nil}))
	if r.status != 200 || r.body["displayName"] != nil {
		t.Errorf("null PATCH = %d %s", r.status, r.raw)
	}
	// Empty Operations: a no-op, 200.
	r = h.do("PATCH", "/Users/"+uid, map[string]any{"schemas": []string{scimschema.PatchOp}, "Operations": []any{}})
	if diff := cmp.Diff([]string{events.TypeSCIMLog}, eventTypes(h.eventsOf(r))); r.status != 200 || diff != "" {
		t.Errorf("empty Operations = %d, events (-want +got):\n%s", r.status, diff)
	}
	// Okta's deactivate and password sync (password dropped, so nothing but active changes).
	r = h.do("PATCH", "/Users/"+uid, patchBody(map[string]any{"op": "replace", "value": map[string]any{"active": false, "password": "pw"}}))
	if r.status != 200 || r.body["active"] != false || strings.Contains(string(r.raw), `"pw"`) {
		t.Errorf("Okta deactivate = %d %s", r.status, r.raw)
	}
	evs := h.eventsOf(r)
	if l := logOf(t, evs); strings.Contains(string(l.RequestBody), `"pw"`) {
		t.Errorf("password in scimlog: %s", l.RequestBody)
	}
	// OneLogin: legacy URNs.
	r = h.do("POST", "/Users", map[string]any{"schemas": []string{"urn:scim:schemas:core:2.0", "urn:scim:schemas:extension:enterprise:2.0"},
		"userName": "onelogin-test-user01", "name": map[string]any{"familyName": " User 01", "givenName": "AAA Test"},
		"urn:scim:schemas:extension:enterprise:2.0": map[string]any{"department": "Ops"}})
	if r.status != 201 || r.body[scimschema.Enterprise].(map[string]any)["department"] != "Ops" {
		t.Errorf("OneLogin POST = %d %s", r.status, r.raw)
	}
	_ = context.Background
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.createUser("m@x.test")
	h.doAs("idp1", "wrong", "GET", "/Users", nil, nil)
	// Not on the SCIM port, which IdPs reach (docs/security.md, finding 11).
	if res, err := http.Get(h.url + "/metrics"); err != nil {
		t.Fatal(err)
	} else if res.Body.Close(); res.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics on the SCIM port = %d, want 404", res.StatusCode)
	}
	res, err := http.Get(h.metricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		`scimflow_scim_ingest_requests_total{idp="idp1",method="POST",resource="Users",status="201"} 1`,
		`scimflow_scim_ingest_requests_total{idp="unknown",method="GET",resource="Users",status="401"} 1`,
		`scimflow_scim_ingest_users{idp="idp1"} 1`,
		`scimflow_scim_ingest_request_duration_seconds_bucket`,
		`scimflow_scim_ingest_outbox_depth`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
