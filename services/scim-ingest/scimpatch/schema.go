package scimpatch

import (
	"strings"

	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// Type is an attribute's data type (RFC 7643 §2.3). Apply uses it to coerce
// what IdPs send ("False" for a boolean, a bare id for manager) and to
// reject values of the wrong shape.
type Type int

// The data types of RFC 7643 §2.3.
const (
	String Type = iota
	Boolean
	Decimal
	Integer
	DateTime
	Binary
	Reference
	Complex
)

// Mutability is an attribute's mutability characteristic (RFC 7643 §2.2);
// Apply refuses to change ReadOnly attributes and set Immutable ones twice.
type Mutability int

// The mutability values of RFC 7643 §2.2.
const (
	ReadWrite Mutability = iota
	Immutable
	ReadOnly
	WriteOnly
)

// Attribute describes one attribute or sub-attribute, as much of RFC 7643
// §7 as applying a PATCH needs.
type Attribute struct {
	// Name is the canonical spelling; Apply stores values under it whatever
	// case the client used.
	Name        string
	Type        Type
	MultiValued bool
	// Required attributes (userName, a group's displayName) cannot be
	// removed by a PATCH.
	Required   bool
	Mutability Mutability
	// SubAttributes of a Complex attribute.
	SubAttributes []Attribute
}

// sub finds a sub-attribute case-insensitively.
func (a *Attribute) sub(name string) *Attribute {
	if a == nil {
		return nil
	}
	for i := range a.SubAttributes {
		if strings.EqualFold(a.SubAttributes[i].Name, name) {
			return &a.SubAttributes[i]
		}
	}
	return nil
}

// Extension is a schema extension whose attributes a resource holds inside
// a container object keyed by URN (RFC 7643 §3.3).
type Extension struct {
	URN        string
	Attributes []Attribute
}

// Schema tells Apply the shape of one resource type: which attributes are
// multi-valued, boolean, complex, read-only or required, and which URNs
// name extension containers. Apply treats attributes it does not describe
// leniently (see Options.RejectUnknown).
type Schema struct {
	// URN is the core schema URN; a path qualified with it names a top-level
	// attribute.
	URN string
	// Attributes are the top-level attributes, including the common ones
	// (id, externalId, meta, schemas).
	Attributes []Attribute
	// Extensions are the schema extensions the resource type accepts.
	Extensions []Extension
}

func findAttr(attrs []Attribute, name string) *Attribute {
	for i := range attrs {
		if strings.EqualFold(attrs[i].Name, name) {
			return &attrs[i]
		}
	}
	return nil
}

func (s *Schema) extension(urn string) *Extension {
	for i := range s.Extensions {
		if strings.EqualFold(s.Extensions[i].URN, urn) {
			return &s.Extensions[i]
		}
	}
	return nil
}

// CommonAttributes are RFC 7643 §3.1's id, externalId and meta, plus
// schemas (§3): the server, not the client, owns id, meta and schemas.
// Schemas list none of them, so a server that derives its Schema from its
// own definitions adds these.
func CommonAttributes() []Attribute {
	return []Attribute{
		{Name: "id", Mutability: ReadOnly},
		{Name: "externalId"},
		{Name: "meta", Type: Complex, Mutability: ReadOnly, SubAttributes: []Attribute{
			{Name: "resourceType", Mutability: ReadOnly},
			{Name: "created", Type: DateTime, Mutability: ReadOnly},
			{Name: "lastModified", Type: DateTime, Mutability: ReadOnly},
			{Name: "location", Type: Reference, Mutability: ReadOnly},
			{Name: "version", Mutability: ReadOnly},
		}},
		{Name: "schemas", Type: Reference, MultiValued: true, Mutability: ReadOnly},
	}
}

// multiValuedDefaults are the default sub-attributes of RFC 7643 §2.4.
func multiValuedDefaults(name string, valueType Type) Attribute {
	return Attribute{Name: name, Type: Complex, MultiValued: true, SubAttributes: []Attribute{
		{Name: "value", Type: valueType},
		{Name: "display"},
		{Name: "type"},
		{Name: "primary", Type: Boolean},
	}}
}

// UserSchema describes the core User (RFC 7643 §4.1) with the enterprise
// extension (§4.3). It returns a fresh value on every call so that callers
// may change their copy.
func UserSchema() Schema {
	attrs := CommonAttributes()
	attrs = append(attrs,
		Attribute{Name: "userName", Required: true},
		Attribute{Name: "name", Type: Complex, SubAttributes: []Attribute{
			{Name: "formatted"}, {Name: "familyName"}, {Name: "givenName"},
			{Name: "middleName"}, {Name: "honorificPrefix"}, {Name: "honorificSuffix"},
		}},
		Attribute{Name: "displayName"},
		Attribute{Name: "nickName"},
		Attribute{Name: "profileUrl", Type: Reference},
		Attribute{Name: "title"},
		Attribute{Name: "userType"},
		Attribute{Name: "preferredLanguage"},
		Attribute{Name: "locale"},
		Attribute{Name: "timezone"},
		Attribute{Name: "active", Type: Boolean},
		Attribute{Name: "password", Mutability: WriteOnly},
		multiValuedDefaults("emails", String),
		multiValuedDefaults("phoneNumbers", String),
		multiValuedDefaults("ims", String),
		multiValuedDefaults("photos", Reference),
		Attribute{Name: "addresses", Type: Complex, MultiValued: true, SubAttributes: []Attribute{
			{Name: "formatted"}, {Name: "streetAddress"}, {Name: "locality"}, {Name: "region"},
			{Name: "postalCode"}, {Name: "country"}, {Name: "type"}, {Name: "primary", Type: Boolean},
		}},
		Attribute{Name: "groups", Type: Complex, MultiValued: true, Mutability: ReadOnly, SubAttributes: []Attribute{
			{Name: "value", Mutability: ReadOnly},
			{Name: "$ref", Type: Reference, Mutability: ReadOnly},
			{Name: "display", Mutability: ReadOnly},
			{Name: "type", Mutability: ReadOnly},
		}},
		multiValuedDefaults("entitlements", String),
		multiValuedDefaults("roles", String),
		multiValuedDefaults("x509Certificates", Binary),
	)
	return Schema{
		URN:        scimschema.User,
		Attributes: attrs,
		Extensions: []Extension{{
			URN: scimschema.Enterprise,
			Attributes: []Attribute{
				{Name: "employeeNumber"},
				{Name: "costCenter"},
				{Name: "organization"},
				{Name: "division"},
				{Name: "department"},
				{Name: "manager", Type: Complex, SubAttributes: []Attribute{
					{Name: "value"},
					{Name: "$ref", Type: Reference},
					{Name: "displayName", Mutability: ReadOnly},
				}},
			},
		}},
	}
}

// GroupSchema describes the core Group (RFC 7643 §4.2), including the
// members.display sub-attribute that §4.2 uses and §8.7.1 omits (erratum
// 6011). It returns a fresh value on every call.
func GroupSchema() Schema {
	attrs := CommonAttributes()
	attrs = append(attrs,
		Attribute{Name: "displayName", Required: true},
		Attribute{Name: "members", Type: Complex, MultiValued: true, SubAttributes: []Attribute{
			{Name: "value"},
			{Name: "$ref", Type: Reference},
			{Name: "display"},
			{Name: "type"},
		}},
	)
	return Schema{URN: scimschema.Group, Attributes: attrs}
}
