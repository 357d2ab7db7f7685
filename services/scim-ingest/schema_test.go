package scimingest

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/scimflow/scimflow/services/scim-ingest/scimpatch"
)

// TestPatchSchemaDerived: the PATCH shapes derived from the validation schema (schema.go) are the
// ones scimpatch's own defaults describe, so deriving them changed no PATCH behaviour. The only
// difference is password, which the stored user schema leaves out (normalizeOp drops every password
// operation before the applier sees it). Sub-attribute order does not matter to the applier.
func TestPatchSchemaDerived(t *testing.T) {
	t.Parallel()
	sc := newSchemas()
	opts := []cmp.Option{
		cmpopts.SortSlices(func(a, b scimpatch.Attribute) bool { return strings.ToLower(a.Name) < strings.ToLower(b.Name) }),
		cmpopts.IgnoreSliceElements(func(a scimpatch.Attribute) bool { return a.Name == "password" }),
	}
	if diff := cmp.Diff(scimpatch.UserSchema(), sc.userPatch, opts...); diff != "" {
		t.Errorf("user (-scimpatch default +derived):\n%s", diff)
	}
	if diff := cmp.Diff(scimpatch.GroupSchema(), sc.groupPatch, opts...); diff != "" {
		t.Errorf("group (-scimpatch default +derived):\n%s", diff)
	}
}
