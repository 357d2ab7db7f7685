package identitystore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
)

// TestSCIMLogQueryValidation: nonsense values and unknown parameter names are
// refused with 400 naming the parameter (they used to return nothing); each row names its IdP by id
// and name; page/per_page page through the rows with total_count; limit is an alias of per_page.
func TestSCIMLogQueryValidation(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.start()
	a := newAPI(t, s)
	kv, err := h.js.KeyValue(context.Background(), broker.KVIdPConfig)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(events.IdP{ID: "okta", Name: "Okta prod", Type: "oidc"})
	if _, err := kv.Put(context.Background(), "okta", raw); err != nil {
		t.Fatal(err)
	}
	g := h.gen("okta")
	var rows []events.Event
	for i := range 7 {
		rows = append(rows, g.ev(events.SCIMLog{RequestID: fmt.Sprintf("r%d", i), Method: "POST", ResourceType: "USER", Status: events.LogSuccess, HTTPStatus: 201}))
		g.clock.Add(1)
	}
	h.publish(rows...)
	h.caughtUp()

	for _, c := range []struct{ query, param string }{
		{"?status=MAYBE", "status"},
		{"?request_method=TRACE", "request_method"},
		{"?resource_type=ROLE", "resource_type"},
		{"?staus=ERROR", "staus"},
		{"?page=0", "page"},
		{"?per_page=5000", "per_page"},
		{"?per_page=5&limit=6", "limit"},
		{"?direction=sideways", "direction"},
	} {
		r := a.do("GET", "/api/v1/logs/scim"+c.query, testToken, nil)
		if r.Status != 400 || len(r.Errors) != 1 || !strings.HasPrefix(r.Errors[0].Message, c.param+":") {
			t.Errorf("GET /api/v1/logs/scim%s = %d %+v, want 400 naming %s", c.query, r.Status, r.Errors, c.param)
		}
	}

	var got []logView
	ids := func() []string {
		var out []string
		for _, l := range got {
			out = append(out, l.RequestID)
		}
		return out
	}
	for _, c := range []struct {
		query      string
		want       []string
		page, per  int
		totalCount int
	}{
		{"?per_page=3", []string{"r6", "r5", "r4"}, 1, 3, 7},
		{"?per_page=3&page=2", []string{"r3", "r2", "r1"}, 2, 3, 7},
		{"?per_page=3&page=3", []string{"r0"}, 3, 3, 7},
		{"?per_page=3&page=4", nil, 4, 3, 7},
		{"?limit=2&direction=asc", []string{"r0", "r1"}, 1, 2, 7},
		{"?limit=2&per_page=2&page=2&direction=asc", []string{"r2", "r3"}, 2, 2, 7},
		{"?status=error", nil, 1, 100, 0},
	} {
		got = nil
		r := a.call("GET", "/api/v1/logs/scim"+c.query, nil, 200, &got)
		if diff := cmp.Diff(c.want, ids()); diff != "" {
			t.Errorf("GET /api/v1/logs/scim%s (-want +got):\n%s", c.query, diff)
		}
		if ri := r.ResultInfo; ri == nil || ri.Page != c.page || ri.PerPage != c.per || ri.TotalCount != c.totalCount || ri.Count != len(c.want) {
			t.Errorf("GET /api/v1/logs/scim%s: result_info = %+v, want page %d per_page %d count %d total_count %d", c.query, ri, c.page, c.per, len(c.want), c.totalCount)
		}
	}
	got = nil
	a.call("GET", "/api/v1/logs/scim?per_page=1", nil, 200, &got)
	if len(got) != 1 || got[0].IdP != (logIdP{ID: "okta", Name: "Okta prod"}) {
		t.Errorf("row idp = %+v, want id okta and name Okta prod", got)
	}
}
