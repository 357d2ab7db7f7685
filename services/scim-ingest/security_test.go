package scimingest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// Attacks on the SCIM trust boundary (docs/security.md, "SCIM endpoint"): each test reproduces an
// attack from the security review and asserts it is refused.

func scimUser(userName string, emails ...string) map[string]any {
	u := map[string]any{"schemas": []string{scimschema.User}, "userName": userName}
	var list []any
	for i, e := range emails {
		list = append(list, map[string]any{"value": e, "primary": i == 0, "type": "work"})
	}
	if list != nil {
		u["emails"] = list
	}
	return u
}

func wantSCIMError(t *testing.T, what string, r resp, status int, scimType string) {
	t.Helper()
	if r.status != status || r.body["scimType"] != scimType || r.body["status"] != fmt.Sprint(status) {
		t.Fatalf("%s = %d %.300s, want %d %s", what, r.status, r.raw, status, scimType)
	}
}

// TestSecondResourceCannotClaimALinkedPerson: Lena's resource is deactivated; a second resource of
// the same IdP that names her email (in another case, or as a userName with a trailing no-break space
// or tab) would link to her person and reopen her login. It is refused with 409 uniqueness and a
// provisioning-log entry, until her resource is deleted.
func TestSecondResourceCannotClaimALinkedPerson(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	lena := h.do("POST", "/Users", scimUser("lena@x.com", "lena@x.com"))
	if lena.status != http.StatusCreated {
		t.Fatalf("POST lena = %d %s", lena.status, lena.raw)
	}
	lid := str(lena.body["id"])
	if r := h.do("PATCH", "/Users/"+lid, patchBody(map[string]any{"op": "replace", "path": "active", "value": false})); r.status != http.StatusOK {
		t.Fatalf("deactivate = %d %s", r.status, r.raw)
	}
	for _, tc := range []struct {
		name string
		body map[string]any
	}{
		{"other userName, her email as primary", scimUser("contractor-7731", "LENA@x.com")},
		{"her userName with a no-break space", scimUser("lena@x.com\u00a0")},
		{"her userName with a tab", scimUser("Lena@x.com\t")},
		{"other userName, her email as the only (work) email", map[string]any{"schemas": []string{scimschema.User},
			"userName": "contractor-7732", "emails": []any{map[string]any{"value": " lena@X.com", "type": "work"}}}},
	} {
		r := h.do("POST", "/Users", tc.body)
		wantSCIMError(t, tc.name, r, http.StatusConflict, scimUniqueness)
		evs := h.eventsOf(r)
		if len(evs) != 1 || evs[0].Type != events.TypeSCIMLog {
			t.Fatalf("%s: events %v, want only the log record", tc.name, eventTypes(evs))
		}
		if l := logOf(t, evs); l.HTTPStatus != http.StatusConflict || l.Status != events.LogError {
			t.Errorf("%s: log record %+v, want an error with 409", tc.name, l)
		}
	}
	// Moving an existing resource onto her person is refused the same way.
	other := h.do("POST", "/Users", scimUser("contractor-7733", "c7733@x.com"))
	if other.status != http.StatusCreated {
		t.Fatalf("POST other = %d %s", other.status, other.raw)
	}
	r := h.do("PATCH", "/Users/"+str(other.body["id"]), patchBody(map[string]any{"op": "replace", "path": "emails",
		"value": []any{map[string]any{"value": "lena@x.com", "primary": true}}}))
	wantSCIMError(t, "PATCH onto her email", r, http.StatusConflict, scimUniqueness)

	// Once her resource is deleted, a new one may link (a rehire, an IdP that re-creates accounts).
	if r := h.do("DELETE", "/Users/"+lid, nil); r.status != http.StatusNoContent {
		t.Fatalf("DELETE lena = %d %s", r.status, r.raw)
	}
	if r := h.do("POST", "/Users", scimUser("contractor-7731", "LENA@x.com")); r.status != http.StatusCreated {
		t.Fatalf("POST after delete = %d %s, want 201", r.status, r.raw)
	}
}

// TestControlCharactersInEmailsRefused: an email (or an email-like userName) holding a control,
// format or zero-width character is refused with 400 invalidValue and changes nothing.
func TestControlCharactersInEmailsRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ok := h.do("POST", "/Users", scimUser("alice@x.com", "alice@x.com"))
	if ok.status != http.StatusCreated {
		t.Fatalf("POST alice = %d %s", ok.status, ok.raw)
	}
	for _, tc := range []struct {
		name string
		body map[string]any
	}{
		{"NUL in userName", scimUser("bob@x.com\x00", "bob@x.com")},
		{"zero-width space in userName", scimUser("b\u200bob@x.com")},
		{"NUL in an email", scimUser("bob", "bob@x.com\x00")},
		{"bidi override in a secondary email", scimUser("bob@x.com", "bob@x.com", "\u202ebob@x.com")},
		{"BOM in an email", scimUser("bob", "bob@x.com\ufeff")},
	} {
		r := h.do("POST", "/Users", tc.body)
		wantSCIMError(t, tc.name, r, http.StatusBadRequest, scimInvalidValue)
		if evs := h.eventsOf(r); len(evs) != 1 {
			t.Errorf("%s: events %v, want only the log record", tc.name, eventTypes(evs))
		}
	}
	r := h.do("PATCH", "/Users/"+str(ok.body["id"]), patchBody(map[string]any{"op": "add", "path": "emails",
		"value": []any{map[string]any{"value": "alice\u200d@x.com", "type": "home"}}}))
	wantSCIMError(t, "PATCH adding a zero-width joiner", r, http.StatusBadRequest, scimInvalidValue)
	// A non-email userName is not an address: its characters are the IdP's business.
	if r := h.do("POST", "/Users", scimUser("bob\u00a0smith", "bob@x.com")); r.status != http.StatusCreated {
		t.Errorf("POST plain userName = %d %s, want 201", r.status, r.raw)
	}
}

// TestPatchWorkBudget: the review's 135 KB PATCH (1,000 filtered operations on a user with 12,000
// emails, 12 million filter comparisons, 16 s inside the shared write transaction) is refused with
// 400 tooMany before any work, and the user is unchanged. Another IdP's create is answered while it
// is refused (the updater never runs inside the write transaction: TestStoreUpdaterRunsOutsideTheWritePath).
func TestPatchWorkBudget(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.MaxBodyBytes = 4 << 20 })
	var emails []any
	for i := range 12000 {
		emails = append(emails, map[string]any{"value": fmt.Sprintf("a%d@x.com", i), "type": fmt.Sprintf("t%d", i)})
	}
	emails[0].(map[string]any)["primary"] = true
	u := h.do("POST", "/Users", map[string]any{"schemas": []string{scimschema.User}, "userName": "big@x.com", "emails": emails})
	if u.status != http.StatusCreated {
		t.Fatalf("POST big user = %d %.200s", u.status, u.raw)
	}
	uid := str(u.body["id"])
	var ops []any
	for i := range 1000 {
		ops = append(ops, map[string]any{"op": "replace", "path": fmt.Sprintf(`emails[type eq "t%d"].display`, i), "value": "x"})
	}
	body := map[string]any{"schemas": []string{scimschema.PatchOp}, "Operations": ops}
	raw, _ := json.Marshal(body)
	if len(raw) < 60<<10 {
		t.Fatalf("PATCH body is %d bytes, want the review's size class", len(raw))
	}
	r := h.do("PATCH", "/Users/"+uid, body)
	wantSCIMError(t, "1,000 filtered ops on 12,000 emails", r, http.StatusBadRequest, scimTooMany)
	if !strings.Contains(str(r.body["detail"]), "split") {
		t.Errorf("detail %q does not say what to do", r.body["detail"])
	}
	if g := h.do("GET", "/Users/"+uid+"?attributes=meta", nil); g.body["meta"].(map[string]any)["version"] != `W/"1"` {
		t.Errorf("user changed by a refused PATCH: %s", g.raw)
	}
	// A PATCH of the same user within the budget is applied.
	if r := h.do("PATCH", "/Users/"+uid, patchBody(map[string]any{"op": "replace", "path": `emails[type eq "t5"].display`, "value": "five"})); r.status != http.StatusOK {
		t.Errorf("small PATCH = %d %.300s, want 200", r.status, r.raw)
	}
	h.putIdP("idp2", true, "s3cret-idp2", "")
	eventually(t, "idp2 known", func() bool {
		return h.doAs("idp2", "s3cret-idp2", "GET", "/Users", nil, nil).status == http.StatusOK
	})
	if r := h.doAs("idp2", "s3cret-idp2", "POST", "/Users", scimUser("someone@y.com"), nil); r.status != http.StatusCreated {
		t.Errorf("idp2 POST = %d %s", r.status, r.raw)
	}
}

// TestFilterScanBudget: a non-indexed filter whose scan outlasts filter_scan_timeout answers 400
// tooMany, like the scan cap.
func TestFilterScanBudget(t *testing.T) {
	t.Parallel()
	h := newHarness(t, noRateLimit, func(c *Config) { c.FilterScanTimeout = 1 })
	h.seedUsers(2 * scanCheckEvery)
	r := h.do("GET", "/Users?filter="+url.QueryEscape(`title co "x"`), nil)
	wantSCIMError(t, "slow scan", r, http.StatusBadRequest, scimTooMany)
	// An indexed equality reads the index, not a scan, and is answered.
	if r := h.do("GET", "/Users?filter="+url.QueryEscape(`userName eq "nobody"`), nil); r.status != http.StatusOK {
		t.Errorf("indexed filter = %d %s", r.status, r.raw)
	}
}

// TestProvisioningLogRedaction: the provisioning log never stores a secret: the password attribute
// wherever it appears, any key named like a secret in any case, and anything under an extension
// scimflow does not know.
func TestProvisioningLogRedaction(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const ext = "urn:example:params:scim:schemas:extension:acme:2.0:User"
	body := scimUser("carol@x.com", "carol@x.com")
	body["Password"] = "pw-top"
	body[ext] = map[string]any{"passwd": "pw-ext", "credential": "cred-ext", "badge": "badge-ext"}
	body["x-Api-TOKEN"] = "tok-top"
	body["name"] = map[string]any{"givenName": "Carol", "PWD": "pw-nested", "clientSecret": "sec-nested"}
	r := h.do("POST", "/Users", body)
	if r.status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.status, r.raw)
	}
	p := h.do("PATCH", "/Users/"+str(r.body["id"]), patchBody(
		map[string]any{"op": "add", "path": ext + ":passwd", "value": "pw-patch-ext"},
		map[string]any{"op": "replace", "path": "userCredential", "value": "cred-patch"},
		map[string]any{"op": "replace", "value": map[string]any{ext: map[string]any{"badge": "badge-patch"}, "title": "Boss"}},
	))
	if p.status != http.StatusOK {
		t.Fatalf("PATCH = %d %s", p.status, p.raw)
	}
	for _, req := range []resp{r, p} {
		l := logOf(t, h.eventsOf(req))
		logged := string(l.RequestBody)
		for _, secret := range []string{"pw-top", "pw-ext", "cred-ext", "badge-ext", "tok-top", "pw-nested", "sec-nested",
			"pw-patch-ext", "cred-patch", "badge-patch"} {
			if strings.Contains(logged, secret) {
				t.Errorf("log record of %s holds %q: %s", req.reqID, secret, logged)
			}
		}
		if !strings.Contains(logged, "carol@x.com") && !strings.Contains(logged, "Boss") {
			t.Errorf("log record lost the non-secret attributes: %s", logged)
		}
	}
}
