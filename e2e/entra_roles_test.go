package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/scimflow/scimflow/internal/scenario"
)

// TestEntraUnchangedPatchKeepsVersion: Entra's create carries `"roles": []` (scim-idp-requests.md
// §1.2). It once came back as `"roles": null` in GET, which Entra's guidance forbids ("no nulls"),
// and the next PATCH, even one that changed nothing, bumped the version and published an upserted
// event with changed ["roles"]. Expected: no JSON null anywhere in the resource; the unchanged PATCH
// keeps the version. (An earlier version of this test searched the body for the text "null" and
// matched the tenant's own name.)
func TestEntraUnchangedPatchKeepsVersion(t *testing.T) {
	t.Parallel()
	e := shared.get(t)
	tn := newTenant(t, e, "entraroles", scenario.Entra, "automatic", false, false)
	p := tn.person("pat", "Pat", "Lee")
	tn.must(tn.scim.CreateUser(tn.ctx, p.User))
	get := func() (string, string) {
		r, err := tn.scim.Do(tn.ctx, http.MethodGet, "/Users/"+p.User.ID, nil)
		if err != nil || r.Status != http.StatusOK {
			t.Fatalf("GET user = %d %v", r.Status, err)
		}
		var v struct {
			Meta struct {
				Version string `json:"version"`
			} `json:"meta"`
		}
		json.Unmarshal(r.Body, &v)
		return v.Meta.Version, string(r.Body)
	}
	v1, body := get()
	if path := findNull(body); path != "" {
		t.Errorf("GET after Entra's create has a null at %s: %s", path, body)
	}
	tn.must(tn.scim.Rename(tn.ctx, p.User, p.User.GivenName, p.User.FamilyName)) // the same values again
	if v2, body := get(); v2 != v1 {
		t.Errorf("version after an unchanged PATCH = %s, want %s (unchanged); resource now %s", v2, v1, body)
	}
}

// findNull returns the path of the first JSON null in doc, or "".
func findNull(doc string) string {
	var v any
	if err := json.Unmarshal([]byte(doc), &v); err != nil {
		return "(not JSON)"
	}
	var walk func(v any, path string) string
	walk = func(v any, path string) string {
		switch x := v.(type) {
		case nil:
			return path
		case map[string]any:
			for k, c := range x {
				if p := walk(c, path+"."+k); p != "" {
					return p
				}
			}
		case []any:
			for i, c := range x {
				if p := walk(c, fmt.Sprintf("%s[%d]", path, i)); p != "" {
					return p
				}
			}
		}
		return ""
	}
	return walk(v, "$")
}
