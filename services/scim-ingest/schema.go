package scimingest

import (
	"strings"

	"github.com/elimity-com/scim/schema"

	"github.com/scimflow/scimflow/services/scim-ingest/scimpatch"
)

// The schemas are defined once, by elimity-com/scim's schema package: validation of POST and PUT
// bodies, the /Schemas discovery documents, the PATCH applier's attribute shapes (patchSchema derives
// them) and the normalisation of request bodies (normalize.go) all read these definitions. A new
// attribute or extension is added here and reaches every one of them.

// schemas holds the schemas a server validates and advertises. They come from elimity-com/scim, trimmed:
// the user schema has no password (so the library's validation drops it and it is never stored), and
// members are handled by scimflow itself, not by the library's validator (the group schema used for
// validation has no members; the advertised one has).
type schemas struct {
	user, enterprise, group         schema.Schema // validation
	advertisedUser, advertisedGroup schema.Schema
	userPatch, groupPatch           scimpatch.Schema // the shapes scimpatch applies operations to
}

func newSchemas() schemas {
	externalID := schema.SimpleCoreAttribute(schema.SimpleStringParams(schema.StringParams{
		CaseExact: true, Mutability: schema.AttributeMutabilityReadWrite(), Name: schema.CommonAttributeExternalID,
		Uniqueness: schema.AttributeUniquenessNone(),
	}))
	user := without(schema.CoreUserSchema(), "password")
	group := schema.CoreGroupSchema()
	s := schemas{advertisedUser: user, advertisedGroup: group, enterprise: schema.ExtensionEnterpriseUser()}
	s.user = withAttr(user, externalID)
	s.group = withAttr(without(group, "members"), externalID)
	s.userPatch = patchSchema(user, s.enterprise)
	s.groupPatch = patchSchema(group)
	// RFC 7643 §4.2 calls members' sub-attributes immutable (a member reference is not edited, it is
	// removed and added); for scimpatch, Immutable means "may be set once", which would refuse the
	// replace of members that Okta and Entra send. Membership is applied as deltas by the store, so
	// the PATCH shapes treat them as readWrite.
	if m := findPatchAttr(s.groupPatch.Attributes, "members"); m != nil {
		for i := range m.SubAttributes {
			m.SubAttributes[i].Mutability = scimpatch.ReadWrite
		}
	}
	return s
}

func without(s schema.Schema, names ...string) schema.Schema {
	var attrs schema.Attributes
	for _, a := range s.Attributes {
		drop := false
		for _, n := range names {
			if strings.EqualFold(a.Name(), n) {
				drop = true
			}
		}
		if !drop {
			attrs = append(attrs, a)
		}
	}
	s.Attributes = attrs
	return s
}

func withAttr(s schema.Schema, a schema.CoreAttribute) schema.Schema {
	attrs := make(schema.Attributes, 0, len(s.Attributes)+1)
	attrs = append(attrs, s.Attributes...)
	s.Attributes = append(attrs, a)
	return s
}

// patchSchema derives the shapes scimpatch applies operations to from the schema that validates and
// is advertised: names, types, multi-valuedness, required and mutability of every attribute and
// sub-attribute, plus the common attributes (id, externalId, meta, schemas) that RFC 7643 §3.1 does
// not list in a schema.
func patchSchema(core schema.Schema, exts ...schema.Schema) scimpatch.Schema {
	out := scimpatch.Schema{URN: core.ID, Attributes: scimpatch.CommonAttributes()}
	for _, a := range core.Attributes {
		if findPatchAttr(out.Attributes, a.Name()) == nil {
			out.Attributes = append(out.Attributes, patchAttr(a))
		}
	}
	for _, e := range exts {
		x := scimpatch.Extension{URN: e.ID}
		for _, a := range e.Attributes {
			x.Attributes = append(x.Attributes, patchAttr(a))
		}
		out.Extensions = append(out.Extensions, x)
	}
	return out
}

func findPatchAttr(attrs []scimpatch.Attribute, name string) *scimpatch.Attribute {
	for i := range attrs {
		if strings.EqualFold(attrs[i].Name, name) {
			return &attrs[i]
		}
	}
	return nil
}

func patchAttr(a schema.CoreAttribute) scimpatch.Attribute {
	out := scimpatch.Attribute{Name: a.Name(), MultiValued: a.MultiValued(), Required: a.Required()}
	switch a.AttributeType() {
	case "boolean":
		out.Type = scimpatch.Boolean
	case "decimal":
		out.Type = scimpatch.Decimal
	case "integer":
		out.Type = scimpatch.Integer
	case "dateTime":
		out.Type = scimpatch.DateTime
	case "binary":
		out.Type = scimpatch.Binary
	case "reference":
		out.Type = scimpatch.Reference
	case "complex":
		out.Type = scimpatch.Complex
	default:
		out.Type = scimpatch.String
	}
	switch a.Mutability() {
	case "readOnly":
		out.Mutability = scimpatch.ReadOnly
	case "immutable":
		out.Mutability = scimpatch.Immutable
	case "writeOnly":
		out.Mutability = scimpatch.WriteOnly
	default:
		out.Mutability = scimpatch.ReadWrite
	}
	for _, s := range a.SubAttributes() {
		out.SubAttributes = append(out.SubAttributes, patchAttr(s))
	}
	return out
}
