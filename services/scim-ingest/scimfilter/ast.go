// Package scimfilter parses and evaluates SCIM 2.0 filters (RFC 7644
// §3.4.2.2) and attribute paths (RFC 7644 §3.5.2, §3.10), including the
// forms real identity providers send that the RFC grammar lacks.
//
// It exists because the SCIM library scimflow builds on rejects filters that
// Microsoft Entra ID sends (emails[type eq "work"].value eq "x", mixed core
// and extension attributes), does not decode string escapes, and panics when
// evaluating against untyped data. This package has no dependencies beyond
// the standard library and never panics on any input.
//
// Parsing is bounded: a filter longer than MaxLength bytes or nested deeper
// than MaxDepth is rejected with an *Error, which the server maps to a SCIM
// 400 with the error's ScimType ("invalidFilter" or "invalidPath").
// Error messages carry an offset and a reason but never echo the input, so
// they are safe to return to a client and to log (filters hold e-mail
// addresses).
package scimfilter

import (
	"encoding/json"
	"strings"

	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// MaxLength is the longest filter or path, in bytes, that Parse and ParsePath
// accept; it bounds parse time and memory for hostile input (RFC 7644 leaves
// the limit to the server, and IdPs send filters of well under 1 KiB).
const MaxLength = 8192

// MaxDepth is the deepest nesting of parentheses, "not" and value-path
// brackets that Parse accepts, so that recursion stays shallow whatever the
// input.
const MaxDepth = 32

// Expr is a parsed filter: a *Compare, *Logical, *Not or *ValuePath. It is
// an interface with an unexported method so that servers can switch on the
// concrete types to translate a filter into storage queries, and evaluate
// it in memory with Match.
type Expr interface {
	// String renders the expression in canonical filter syntax; parsing the
	// result yields an equal expression.
	String() string
	expr()
}

// CompareOp is a lower-case attribute operator of RFC 7644 §3.4.2.2, named
// so that translations to storage queries need no string literals.
type CompareOp string

// The attribute operators of RFC 7644 §3.4.2.2.
const (
	Eq CompareOp = "eq" // equal
	Ne CompareOp = "ne" // not equal
	Co CompareOp = "co" // contains
	Sw CompareOp = "sw" // starts with
	Ew CompareOp = "ew" // ends with
	Pr CompareOp = "pr" // present (has a value)
	Gt CompareOp = "gt" // greater than
	Ge CompareOp = "ge" // greater than or equal to
	Lt CompareOp = "lt" // less than
	Le CompareOp = "le" // less than or equal to
)

// LogicalOp is "and" or "or", the binary logical operators of the filter
// grammar.
type LogicalOp string

// The logical operators of RFC 7644 §3.4.2.2; "and" binds tighter than "or".
const (
	And LogicalOp = "and"
	Or  LogicalOp = "or"
)

// AttrPath names an attribute: an optional schema URN, an attribute name and
// an optional sub-attribute (RFC 7644 §3.10). Names keep the client's
// spelling; they are matched case-insensitively (RFC 7643 §2.1).
type AttrPath struct {
	// URN is the schema URN prefix without the trailing colon, or empty.
	URN string
	// Name is the attribute name.
	Name string
	// Sub is the sub-attribute name, or empty.
	Sub string
}

// String renders the path as it appears in a filter.
func (a AttrPath) String() string {
	var b strings.Builder
	if a.URN != "" {
		b.WriteString(a.URN)
		b.WriteByte(':')
	}
	b.WriteString(a.Name)
	if a.Sub != "" {
		b.WriteByte('.')
		b.WriteString(a.Sub)
	}
	return b.String()
}

// Key is the canonical, lower-case form of the path that CaseExact functions
// and IndexLookup receive: a core schema URN is dropped
// ("urn:…:core:2.0:User:userName" → "username"), an extension URN is kept
// ("urn:…:enterprise:2.0:user:employeenumber").
func (a AttrPath) Key() string {
	k := strings.ToLower(a.Name)
	if a.Sub != "" {
		k += "." + strings.ToLower(a.Sub)
	}
	if a.URN != "" && !IsCoreURN(a.URN) {
		k = strings.ToLower(a.URN) + ":" + k
	}
	return k
}

// IsCoreURN reports whether urn is a core SCIM schema (its attributes live at
// the top level of a resource rather than in an extension container).
func IsCoreURN(urn string) bool {
	return len(urn) >= len(scimschema.CorePrefix) && strings.EqualFold(urn[:len(scimschema.CorePrefix)], scimschema.CorePrefix)
}

// Compare is an attribute expression: Attr Op Value, or Attr pr.
// Inside a ValuePath filter, Attr is relative to the element (a bare
// sub-attribute name such as "type").
type Compare struct {
	Attr AttrPath
	Op   CompareOp
	// Value is the comparison value: string, bool, json.Number, or nil for
	// null and for the pr operator.
	Value any
}

// Logical is "Left and Right" or "Left or Right".
type Logical struct {
	Op          LogicalOp
	Left, Right Expr
}

// Not is "not (X)".
type Not struct {
	X Expr
}

// ValuePath is attr[filter]: it matches when at least one element of the
// multi-valued attribute Attr satisfies Filter, whose attribute paths name
// sub-attributes of that element. Entra's form attr[filter].sub op value,
// which RFC 7644's grammar lacks, parses as attr[filter and sub op value].
type ValuePath struct {
	Attr   AttrPath
	Filter Expr
}

func (*Compare) expr()   {}
func (*Logical) expr()   {}
func (*Not) expr()       {}
func (*ValuePath) expr() {}

// String renders the comparison in canonical filter syntax.
func (c *Compare) String() string { return render(c) }

// String renders the logical expression, adding parentheses only where the
// tree's shape needs them so that re-parsing gives the same tree.
func (l *Logical) String() string { return render(l) }

// String renders "not (X)".
func (n *Not) String() string { return render(n) }

// String renders attr[filter].
func (v *ValuePath) String() string { return render(v) }

// render writes e into one buffer, so that long and/or chains render in
// linear time.
func render(e Expr) string {
	var b strings.Builder
	write(&b, e)
	return b.String()
}

func write(b *strings.Builder, e Expr) {
	switch x := e.(type) {
	case *Compare:
		b.WriteString(x.Attr.String())
		if x.Op == Pr {
			b.WriteString(" pr")
			return
		}
		b.WriteByte(' ')
		b.WriteString(string(x.Op))
		b.WriteByte(' ')
		b.WriteString(formatValue(x.Value))
	case *Logical:
		ll, ok := x.Left.(*Logical)
		writeGroup(b, x.Left, ok && ll.Op == Or && x.Op == And)
		b.WriteByte(' ')
		b.WriteString(string(x.Op))
		b.WriteByte(' ')
		rl, ok := x.Right.(*Logical)
		writeGroup(b, x.Right, ok && (rl.Op == x.Op || rl.Op == Or))
	case *Not:
		b.WriteString("not ")
		writeGroup(b, x.X, true)
	case *ValuePath:
		b.WriteString(x.Attr.String())
		b.WriteByte('[')
		write(b, x.Filter)
		b.WriteByte(']')
	case nil:
	default:
		b.WriteString(e.String())
	}
}

func writeGroup(b *strings.Builder, e Expr, paren bool) {
	if paren {
		b.WriteByte('(')
	}
	write(b, e)
	if paren {
		b.WriteByte(')')
	}
}

// formatValue renders a comparison value as a JSON literal.
func formatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		if x {
			return "true"
		}
		return "false"
	case json.Number:
		return string(x)
	case string:
		return quote(x)
	default:
		return "null"
	}
}

// quote renders s as a JSON string without HTML escaping.
func quote(s string) string {
	const hex = "0123456789abcdef"
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hex[r>>4])
			b.WriteByte(hex[r&0xf])
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
