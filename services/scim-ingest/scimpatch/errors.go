package scimpatch

import "fmt"

// SCIM error types (RFC 7644 §3.12) that Apply and MembersDelta report; the
// server answers each with HTTP 400 and this scimType.
const (
	// ScimTypeInvalidSyntax: an op other than add, remove or replace.
	ScimTypeInvalidSyntax = "invalidSyntax"
	// ScimTypeInvalidPath: a path that does not parse or does not fit the
	// schema (a filter on a single-valued attribute, a sub-attribute of a
	// simple one).
	ScimTypeInvalidPath = "invalidPath"
	// ScimTypeInvalidValue: a value of the wrong type or shape, or the
	// removal of a required attribute.
	ScimTypeInvalidValue = "invalidValue"
	// ScimTypeMutability: a change to a readOnly attribute (id, meta) or to
	// an immutable one that already has a value.
	ScimTypeMutability = "mutability"
	// ScimTypeNoTarget: a remove without a path, or an add/replace whose
	// value filter matches nothing and cannot describe a new element.
	ScimTypeNoTarget = "noTarget"
	// ScimTypeTooMany: more operations than Options.MaxOperations.
	ScimTypeTooMany = "tooMany"
)

// Error is a PATCH rejected for a reason the client caused. It carries the
// RFC 7644 scimType so that the server maps it to a 400 without parsing
// messages. Detail names the operation's index and attribute but never
// quotes values or filters, which hold personal data.
type Error struct {
	ScimType string
	Detail   string
}

// Error implements error.
func (e *Error) Error() string {
	return "scim patch: " + e.ScimType + ": " + e.Detail
}

func opError(scimType string, index int, what, format string, args ...any) *Error {
	detail := fmt.Sprintf("operation %d", index)
	if what != "" {
		detail += " (" + what + ")"
	}
	return &Error{ScimType: scimType, Detail: detail + ": " + fmt.Sprintf(format, args...)}
}

// short bounds client-supplied names quoted in error details.
func short(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}

func tooMany(n, limit int) *Error {
	return &Error{ScimType: ScimTypeTooMany, Detail: fmt.Sprintf("%d operations, at most %d allowed", n, limit)}
}
