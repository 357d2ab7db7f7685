// Package scimschema holds the SCIM URNs every part of scim-ingest names (the service, the filter
// parser, the PATCH applier): one set of constants, so a URN is spelt in one place.
package scimschema

// Schema URNs of the resource types scimflow serves (RFC 7643 §8.7.1) and of the enterprise
// extension (§4.3).
const (
	// CorePrefix is the URN prefix of the core schemas: a path qualified with a core URN
	// ("urn:ietf:params:scim:schemas:core:2.0:User:userName") names a top-level attribute.
	CorePrefix    = "urn:ietf:params:scim:schemas:core:2.0:"
	User          = CorePrefix + "User"
	Group         = CorePrefix + "Group"
	Enterprise    = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	ServiceConfig = CorePrefix + "ServiceProviderConfig"
)

// Message URNs of the protocol (RFC 7644 §3.4.2, §3.5.2, §3.12).
const (
	ListResponse = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
	PatchOp      = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
	Error        = "urn:ietf:params:scim:api:messages:2.0:Error"
)
