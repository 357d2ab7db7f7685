package scimingest

import (
	"strings"
	"testing"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// TestOddBodiesNeverFail5xx sends malformed and unusual bodies to every write endpoint: each gets a
// 2xx or a 4xx SCIM error, never a 5xx, and a rejected request publishes only its log record.
func TestOddBodiesNeverFail5xx(t *testing.T) {
	t.Parallel()
	h := newHarness(t, noRateLimit)
	uid := h.createUser("odd@x.test")
	g := h.do("POST", "/Groups", map[string]any{"schemas": []string{scimschema.Group}, "displayName": "odd"})
	gid := str(g.body["id"])
	bodies := []string{
		``, `null`, `[]`, `"x"`, `42`, `{}`, `{"schemas":"x"}`, `{"schemas":[1,2]}`,
		`{"schemas":["` + scimschema.User + `"],"userName":42}`,
		`{"schemas":["` + scimschema.User + `"],"userName":"u@x.test","emails":"nope"}`,
		`{"schemas":["` + scimschema.User + `"],"userName":"u2@x.test","name":[1]}`,
		`{"schemas":["` + scimschema.User + `"],"userName":"u3@x.test","active":1e999}`,
		`{"schemas":["` + scimschema.Group + `"],"displayName":"d","members":[null]}`,
		`{"schemas":["` + scimschema.Group + `"],"displayName":"d","members":[{"value":7}]}`,
		`{"Operations":{}}`, `{"Operations":[null]}`, `{"Operations":[{"op":7}]}`,
		`{"Operations":[{"op":"add","path":"members","value":[{"value":null}]}]}`,
		`{"Operations":[{"op":"add","path":"members[value eq \"a\"].display","value":"x"}]}`,
		`{"Operations":[{"op":"replace","path":"emails[type eq \"work\"].value","value":{"a":1}}]}`,
		`{"Operations":[{"op":"replace","path":"name","value":"flat"}]}`,
		`{"Operations":[{"op":"add","value":{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":"x"}}]}`,
		`{"Operations":[{"op":"replace","path":"` + strings.Repeat("a.", 3000) + `b","value":1}]}`,
		strings.Repeat(`[`, 20000) + strings.Repeat(`]`, 20000),
		`{"a":` + strings.Repeat(`{"a":`, 5000) + `1` + strings.Repeat(`}`, 5001),
		"{\"schemas\":[\"" + scimschema.User + "\"],\"userName\":\"\xff\xfe\"}",
	}
	targets := []struct{ method, path string }{
		{"POST", "/Users"}, {"PUT", "/Users/" + uid}, {"PATCH", "/Users/" + uid},
		{"POST", "/Groups"}, {"PUT", "/Groups/" + gid}, {"PATCH", "/Groups/" + gid},
	}
	for _, tg := range targets {
		for _, b := range bodies {
			r := h.do(tg.method, tg.path, b)
			if r.status >= 500 {
				t.Errorf("%s %s with %.40q = %d %s", tg.method, tg.path, b, r.status, r.raw)
				continue
			}
			if r.status >= 400 {
				if r.body["schemas"] == nil {
					t.Errorf("%s %s with %.40q: %d without a SCIM error body", tg.method, tg.path, b, r.status)
				}
				evs := h.eventsOf(r)
				if len(evs) != 1 || evs[0].Type != events.TypeSCIMLog {
					t.Errorf("%s %s with %.40q: rejected request published %v", tg.method, tg.path, b, eventTypes(evs))
				}
			}
		}
	}
}
