package scimingest

import (
	"fmt"
	"net/url"
	"testing"

	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// TestFilterIndexes proves which filters are answered from an index: with filter_scan_limit below the
// number of stored resources, a filter that needs a scan is refused (400 tooMany) while an equality on
// userName, externalId, emails or displayName, alone or under "and", still answers correctly.
func TestFilterIndexes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, noRateLimit, func(c *Config) { c.FilterScanLimit = 3 })
	var ids []string
	for i := range 5 {
		r := h.do("POST", "/Users", map[string]any{"schemas": []string{scimschema.User}, "userName": fmt.Sprintf("User%d@Idx.test", i),
			"externalId": fmt.Sprintf("ext-%d", i%2), "title": "t",
			"emails": []any{map[string]any{"type": "work", "value": fmt.Sprintf("Mail%d@Corp.test", i)}}})
		ids = append(ids, str(r.body["id"]))
	}
	for i := range 5 {
		h.do("POST", "/Groups", map[string]any{"schemas": []string{scimschema.Group}, "displayName": fmt.Sprintf("Group %d", i)})
	}
	cases := []struct {
		endpoint, filter string
		want             int // totalResults; -1: 400 tooMany (needs a scan beyond the limit)
	}{
		{"Users", `userName eq "USER3@idx.test"`, 1},
		{"Users", `externalId eq "ext-1"`, 2},
		{"Users", `emails.value eq "mail4@corp.test"`, 1},
		{"Users", `emails[type eq "work"].value eq "MAIL2@CORP.TEST"`, 1},
		{"Users", `emails[type eq "work" and value eq "mail1@corp.test"]`, 1},
		{"Users", `emails eq "mail0@corp.test"`, 1},
		{"Users", `urn:ietf:params:scim:schemas:core:2.0:User:userName eq "user0@idx.test"`, 1},
		{"Users", `externalId eq "ext-0" and title eq "t" and not (userName eq "user0@idx.test")`, 2},
		{"Users", `id eq "` + ids[2] + `"`, 1},
		{"Users", `userName eq "nobody@idx.test"`, 0},
		{"Groups", `displayName eq "GROUP 2"`, 1},
		{"Groups", `displayName eq "Group 2" and externalId pr`, 0},
		// No indexed equality, or only under "or" / "not": a scan, refused past the limit.
		{"Users", `title eq "t"`, -1},
		{"Users", `userName sw "user"`, -1},
		{"Users", `userName eq "user0@idx.test" or userName eq "user1@idx.test"`, -1},
		{"Users", `not (userName ne "user0@idx.test")`, -1},
		{"Users", `meta.lastModified gt "2000-01-01T00:00:00Z"`, -1},
		{"Groups", `displayName co "Group"`, -1},
	}
	for _, c := range cases {
		r := h.do("GET", "/"+c.endpoint+"?filter="+url.QueryEscape(c.filter), nil)
		switch {
		case c.want < 0:
			if r.status != 400 || r.body["scimType"] != "tooMany" {
				t.Errorf("GET /%s filter %s = %d %s, want 400 tooMany", c.endpoint, c.filter, r.status, r.raw)
			}
		case r.status != 200 || r.body["totalResults"] != jsonNumber(c.want):
			t.Errorf("GET /%s filter %s = %d %s, want totalResults %d", c.endpoint, c.filter, r.status, r.raw, c.want)
		}
	}
	// Without a filter, listing never scans for matching and is not limited.
	if r := h.do("GET", "/Users", nil); r.status != 200 || r.body["totalResults"] != jsonNumber(5) {
		t.Errorf("GET /Users = %d %s", r.status, r.raw)
	}
}
