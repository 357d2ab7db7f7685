package scimpatch

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// entraUser is the user Entra's tutorial POSTs (scim-idp-requests.md §1.2),
// as scimflow stores it.
const entraUser = `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
  "id": "6764549bef60420686bc",
  "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
  "userName": "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee",
  "active": true,
  "emails": [{"primary": true, "type": "work", "value": "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com"}],
  "meta": {"resourceType": "User", "created": "2018-03-27T19:59:26Z", "lastModified": "2018-03-27T19:59:26Z"},
  "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"}
}`

// oktaUser is the user Okta POSTs (§2.1), without the password.
const oktaUser = `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
  "id": "23a35c27-23d3-4c03-b4c5-6443c09e7173",
  "userName": "test.user@okta.local",
  "name": {"givenName": "Test", "familyName": "User"},
  "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work"}],
  "displayName": "Test User",
  "locale": "en-US",
  "externalId": "00ujl29u0le5T6Aj10h7",
  "active": true
}`

// oktaGroup is a group Okta pushed (§2.1) with two members.
const oktaGroup = `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
  "id": "abf4dd94-a4c0-4f67-89c9-76b03340cb9b",
  "displayName": "Test SCIMv2",
  "members": [
    {"value": "89bb1940-b905-4575-9e7f-6f887cfb368e", "display": "other.user@okta.local"},
    {"value": "f648f8d5ea4e4cd38e9c"}
  ]
}`

const enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

func decodeMap(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("json.Unmarshal(%s): %v", s, err)
	}
	return m
}

// decodeOps decodes the "Operations" array of a PatchOp body, or a bare
// array of operations.
func decodeOps(t testing.TB, s string) []Operation {
	t.Helper()
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "{") {
		var req struct{ Operations []Operation }
		if err := json.Unmarshal([]byte(s), &req); err != nil {
			t.Fatalf("json.Unmarshal(%s): %v", s, err)
		}
		return req.Operations
	}
	var ops []Operation
	if err := json.Unmarshal([]byte(s), &ops); err != nil {
		t.Fatalf("json.Unmarshal(%s): %v", s, err)
	}
	return ops
}

// edit returns a copy of the decoded fixture changed by f.
func edit(t testing.TB, fixture string, f func(m map[string]any)) map[string]any {
	t.Helper()
	m := decodeMap(t, fixture)
	f(m)
	return m
}

type applyCase struct {
	name     string
	resource string // fixture JSON
	ops      string // PatchOp body or Operations array, as the IdP sends it
	want     func(t testing.TB) map[string]any
}

func runApplyCases(t *testing.T, tests []applyCase, opts Options) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := decodeMap(t, tc.resource)
			ops := decodeOps(t, tc.ops)
			got, err := Apply(res, ops, opts)
			if err != nil {
				t.Fatalf("Apply(%s) error = %v", tc.ops, err)
			}
			if diff := cmp.Diff(tc.want(t), got); diff != "" {
				t.Errorf("Apply(%s) mismatch (-want +got):\n%s", tc.ops, diff)
			}
			if diff := cmp.Diff(decodeMap(t, tc.resource), res); diff != "" {
				t.Errorf("Apply(%s) mutated its input (-before +after):\n%s", tc.ops, diff)
			}
		})
	}
}

func TestApplyEntraUser(t *testing.T) {
	t.Parallel()
	runApplyCases(t, []applyCase{
		{
			name:     "§1.2 multi-valued replace: emails value path and name.familyName (capitalised ops)",
			resource: entraUser,
			ops: `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[
  {"op":"Replace","path":"emails[type eq \"work\"].value","value":"updatedEmail@microsoft.com"},
  {"op":"Replace","path":"name.familyName","value":"updatedFamilyName"}]}`,
			want: func(t testing.TB) map[string]any {
				return edit(t, entraUser, func(m map[string]any) {
					m["emails"].([]any)[0].(map[string]any)["value"] = "updatedEmail@microsoft.com"
					m["name"].(map[string]any)["familyName"] = "updatedFamilyName"
				})
			},
		},
		{
			name:     "§1.2 single-valued replace userName",
			resource: entraUser,
			ops:      `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"userName","value":"5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"}]}`,
			want: func(t testing.TB) map[string]any {
				return edit(t, entraUser, func(m map[string]any) { m["userName"] = "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com" })
			},
		},
		{
			name:     "§1.2 disable user (E2)",
			resource: entraUser,
			ops:      `{"Operations":[{"op":"Replace","path":"active","value":false}],"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"]}`,
			want: func(t testing.TB) map[string]any {
				return edit(t, entraUser, func(m map[string]any) { m["active"] = false })
			},
		},
		{
			name:     "§1.3/§1.4 string boolean False without the flag (E1)",
			resource: entraUser,
			ops:      `[{"op":"Replace","path":"active","value":"False"}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, entraUser, func(m map[string]any) { m["active"] = false })
			},
		},
		{
			name:     "§1.4 reactivation with string True (FusionAuth #3311)",
			resource: entraUser,
			ops:      `[{"op":"Replace","path":"active","value":"False"},{"op":"Replace","path":"active","value":"True"}]`,
			want:     func(t testing.TB) map[string]any { return decodeMap(t, entraUser) },
		},
		{
			name:     "§1.3 add single-valued string, both spellings",
			resource: entraUser,
			ops:      `[{"op":"Add","path":"nickName","value":"Babs"},{"op":"add","path":"nickName","value":"Babs"}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, entraUser, func(m map[string]any) { m["nickName"] = "Babs" })
			},
		},
		{
			name:     "§1.3 replace multiple attributes, one op per path (no flag)",
			resource: entraUser,
			ops: `[{"op":"Replace","path":"displayName","value":"Pvlo"},
 {"op":"Replace","path":"emails[type eq \"work\"].value","value":"TestBcwqnm@test.microsoft.com"},
 {"op":"Replace","path":"name.givenName","value":"Gtfd"},{"op":"Replace","path":"name.familyName","value":"Pkqf"},
 {"op":"Replace","path":"externalId","value":"Eqpj"},
 {"op":"Replace","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber","value":"Eqpj"}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, entraUser, func(m map[string]any) {
					m["displayName"] = "Pvlo"
					m["emails"].([]any)[0].(map[string]any)["value"] = "TestBcwqnm@test.microsoft.com"
					m["name"].(map[string]any)["givenName"] = "Gtfd"
					m["name"].(map[string]any)["familyName"] = "Pkqf"
					m["externalId"] = "Eqpj"
					m[enterprise] = map[string]any{"employeeNumber": "Eqpj"}
				})
			},
		},
		{
			name:     "§1.3 with aadOptscim062020: one no-path op with dotted and URN keys (E9)",
			resource: entraUser,
			ops: `[{"op":"replace","path":"emails[type eq \"work\"].value","value":"TestMhvaes@test.microsoft.com"},
      {"op":"replace","value":{"displayName":"Bjfe","name.givenName":"Kkom","name.familyName":"Unua",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber":"Aklq"}}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, entraUser, func(m map[string]any) {
					m["displayName"] = "Bjfe"
					m["emails"].([]any)[0].(map[string]any)["value"] = "TestMhvaes@test.microsoft.com"
					m["name"].(map[string]any)["givenName"] = "Kkom"
					m["name"].(map[string]any)["familyName"] = "Unua"
					m[enterprise] = map[string]any{"employeeNumber": "Aklq"}
				})
			},
		},
		{
			name:     "§1.4 no-path replace with dotted and URN keys (scim-for-keycloak #26)",
			resource: entraUser,
			ops:      `[{"op":"replace","value":{"displayName":"Bjfe","name.givenName":"Kkom","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber":"Aklq"}}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, entraUser, func(m map[string]any) {
					m["displayName"] = "Bjfe"
					m["name"].(map[string]any)["givenName"] = "Kkom"
					m[enterprise] = map[string]any{"employeeNumber": "Aklq"}
				})
			},
		},
		{
			name:     "§1.4 manager as a plain string (E3, SCIM-SDK #686)",
			resource: entraUser,
			ops:      `[{"op":"add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":"2c2f6fb8-254f-492e-b7fe-c09c5a61c8a2"}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, entraUser, func(m map[string]any) {
					m[enterprise] = map[string]any{"manager": map[string]any{"value": "2c2f6fb8-254f-492e-b7fe-c09c5a61c8a2"}}
				})
			},
		},
		{
			name:     "§1.2 tutorial manager: path without URN, array value (X9)",
			resource: entraUser,
			ops:      `[{"op":"Add","path":"manager","value":[{"$ref":"http://localhost/Users/00aa00aa-bb11-cc22-dd33-44ee44ee44ee","value":"00aa00aa-bb11-cc22-dd33-44ee44ee44ee"}]}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, entraUser, func(m map[string]any) {
					m[enterprise] = map[string]any{"manager": map[string]any{
						"$ref": "http://localhost/Users/00aa00aa-bb11-cc22-dd33-44ee44ee44ee", "value": "00aa00aa-bb11-cc22-dd33-44ee44ee44ee"}}
				})
			},
		},
		{
			name:     "§1.6 manager change replaces the stale $ref (E4, User_Update_Manager_Test)",
			resource: entraUser,
			ops: `[{"op":"Add","path":"manager","value":[{"$ref":"http://localhost/Users/m1","value":"m1"}]},
 {"op":"Replace","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":{"value":"m2"}}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, entraUser, func(m map[string]any) {
					m[enterprise] = map[string]any{"manager": map[string]any{"value": "m2"}}
				})
			},
		},
		{
			name:     "§1.6 manager removal as Remove (E5)",
			resource: entraUser,
			ops: `[{"op":"add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":"m1"},
 {"op":"Remove","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"}]`,
			want: func(t testing.TB) map[string]any { return decodeMap(t, entraUser) },
		},
		{
			name:     "§1.6 manager removal as Replace with empty (N6, SCIM_Update_Manager_Test)",
			resource: entraUser,
			ops: `[{"op":"add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":"m1"},
 {"op":"Replace","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":""}]`,
			want: func(t testing.TB) map[string]any { return decodeMap(t, entraUser) },
		},
		{
			name:     "§1.4 extension container with manager string (E10, scimple #1242)",
			resource: entraUser,
			ops:      `[{"op":"replace","value":{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":"myuser","Department":"Tour Operations"}}}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, entraUser, func(m map[string]any) {
					m[enterprise] = map[string]any{"manager": map[string]any{"value": "myuser"}, "department": "Tour Operations"}
				})
			},
		},
		{
			name:     "§1.2 historic nulls: extension container null clears it, add null adds nothing (X8)",
			resource: entraUser,
			ops: `[{"op":"add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department","value":"Sales"},
 {"op":"add","value":{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":null,"addresses":null,"phoneNumbers":null}},
 {"op":"replace","value":{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":null,"manager":null}}]`,
			want: func(t testing.TB) map[string]any { return decodeMap(t, entraUser) },
		},
		{
			name:     "E6 add employeeNumber and department",
			resource: entraUser,
			ops: `[{"op":"Add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber","value":"701984"},
 {"op":"Add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department","value":"Tour Operations"}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, entraUser, func(m map[string]any) {
					m[enterprise] = map[string]any{"employeeNumber": "701984", "department": "Tour Operations"}
				})
			},
		},
		{
			name:     "§1.5 add on a value path with no match creates the element (SCIM-SDK #416, E7)",
			resource: oktaUser,
			ops:      `[{"op":"add","path":"emails[type eq \"home\"].value","value":"x@y.com"}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) {
					m["emails"] = append(m["emails"].([]any), map[string]any{"type": "home", "value": "x@y.com"})
				})
			},
		},
		{
			name:     "§1.4 replace on a value path with no match creates the element (Sourcegraph PR #49200, E8)",
			resource: oktaUser,
			ops: `[{"op":"Replace","path":"addresses[type eq \"work\"].streetAddress","value":"1 Main St"},
 {"op":"Replace","path":"phoneNumbers[type eq \"mobile\"].value","value":"+1 555 0100"},
 {"op":"Replace","path":"addresses[type eq \"other\"].Formatted","value":"Elsewhere"}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) {
					m["addresses"] = []any{
						map[string]any{"type": "work", "streetAddress": "1 Main St"},
						map[string]any{"type": "other", "formatted": "Elsewhere"},
					}
					m["phoneNumbers"] = []any{map[string]any{"type": "mobile", "value": "+1 555 0100"}}
				})
			},
		},
		{
			name:     "§1.4 add work email on a user without emails (E7)",
			resource: `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"u1","userName":"a"}`,
			ops:      `[{"op":"Add","path":"emails[type eq \"work\"].value","value":"x@y.com"}]`,
			want: func(t testing.TB) map[string]any {
				return decodeMap(t, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"u1","userName":"a","emails":[{"type":"work","value":"x@y.com"}]}`)
			},
		},
		{
			name:     "§1.4 string booleans inside arrays: roles primary True (E13)",
			resource: oktaUser,
			ops:      `[{"op":"Add","path":"roles","value":[{"primary":"True","type":"WindowsAzureActiveDirectoryRole","value":"Admin"}]}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) {
					m["roles"] = []any{map[string]any{"primary": true, "type": "WindowsAzureActiveDirectoryRole", "value": "Admin"}}
				})
			},
		},
		{
			name:     "§1.4 roles as JSON-in-string are stored as sent (SCIM-SDK #516; not unwrapped)",
			resource: oktaUser,
			ops:      `[{"op":"Add","path":"roles","value":[{"value":"{\"id\":\"827f\",\"value\":\"DocumentMgmt-Admin\",\"displayName\":\"DocumentMgmt Admin\"}"}]}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) {
					m["roles"] = []any{map[string]any{"value": `{"id":"827f","value":"DocumentMgmt-Admin","displayName":"DocumentMgmt Admin"}`}}
				})
			},
		},
		{
			name:     "§1.6 SCIM_Null_Update_Test: null with a path clears (X11/N2)",
			resource: oktaUser,
			ops:      `[{"op":"Replace","path":"displayName","value":null},{"op":"Replace","path":"name.givenName","value":null},{"op":"Replace","path":"title","value":null}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) {
					delete(m, "displayName")
					delete(m["name"].(map[string]any), "givenName")
				})
			},
		},
		{
			name:     "§1.6 SCIM_Null_Update_Test: null without a path clears (N3)",
			resource: oktaUser,
			ops:      `[{"op":"replace","value":{"displayName":null,"locale":null,"name":{"givenName":null}}}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) {
					delete(m, "displayName")
					delete(m, "locale")
					delete(m["name"].(map[string]any), "givenName")
				})
			},
		},
		{
			name:     "§1.6 SCIM_Null_Update_Test: empty strings clear (N1/N4)",
			resource: oktaUser,
			ops:      `[{"op":"Replace","path":"displayName","value":""},{"op":"replace","value":{"locale":"","name.familyName":""}}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) {
					delete(m, "displayName")
					delete(m, "locale")
					delete(m["name"].(map[string]any), "familyName")
				})
			},
		},
		{
			name:     "add with null adds nothing",
			resource: oktaUser,
			ops:      `[{"op":"add","path":"title","value":null},{"op":"add","path":"emails","value":null}]`,
			want:     func(t testing.TB) map[string]any { return decodeMap(t, oktaUser) },
		},
		{
			name:     "capitalised path Active (E35) and capitalised sub-attribute keys (Postman)",
			resource: oktaUser,
			ops:      `[{"op":"replace","path":"Active","value":"false"},{"op":"add","path":"Emails","value":[{"Value":"b@okta.local","Type":"home","Primary":"true"}]}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) {
					m["active"] = false
					m["emails"] = []any{
						map[string]any{"primary": false, "value": "test.user@okta.local", "type": "work"},
						map[string]any{"primary": true, "value": "b@okta.local", "type": "home"},
					}
				})
			},
		},
		{
			name:     "add to multi-valued appends without duplicates (RFC 7644 §3.5.2.1)",
			resource: oktaUser,
			ops:      `[{"op":"add","path":"emails","value":[{"value":"test.user@okta.local","type":"work","display":"Test"}]},{"op":"add","path":"emails","value":{"value":"test.user@okta.local","type":"work"}}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) {
					m["emails"].([]any)[0].(map[string]any)["display"] = "Test"
				})
			},
		},
		{
			name:     "replace of a complex attribute merges sub-attributes (RFC 7644 §3.5.2.3)",
			resource: oktaUser,
			ops:      `[{"op":"replace","path":"name","value":{"givenName":"Another","middleName":"Excited"}}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) {
					m["name"] = map[string]any{"givenName": "Another", "middleName": "Excited", "familyName": "User"}
				})
			},
		},
		{
			name:     "no-path keys apply in sorted order: name before name.givenName",
			resource: oktaUser,
			ops:      `[{"op":"replace","value":{"name.givenName":"G","name":{"givenName":"X","familyName":"F"}}}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) {
					m["name"] = map[string]any{"givenName": "G", "familyName": "F"}
				})
			},
		},
		{
			name:     "core URN-qualified path and core URN container",
			resource: oktaUser,
			ops:      `[{"op":"replace","path":"urn:ietf:params:scim:schemas:core:2.0:User:userName","value":"n@okta.local"},{"op":"replace","value":{"urn:ietf:params:scim:schemas:core:2.0:User":{"title":"Boss"}}}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) {
					m["userName"] = "n@okta.local"
					m["title"] = "Boss"
				})
			},
		},
		{
			name:     "custom extension container is stored and listed in schemas (§9 discovery)",
			resource: oktaUser,
			ops:      `[{"op":"add","value":{"urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User":{"costCode":"X1"}}}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) {
					m["urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"] = map[string]any{"costCode": "X1"}
					m["schemas"] = append(m["schemas"].([]any), "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User")
				})
			},
		},
		{
			name:     "enterprise attribute on an Okta user lists the extension in schemas",
			resource: oktaUser,
			ops:      `[{"op":"add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department","value":"Sales"}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) {
					m[enterprise] = map[string]any{"department": "Sales"}
					m["schemas"] = append(m["schemas"].([]any), enterprise)
				})
			},
		},
		{
			name:     "remove the work email by value path, then its sub-attribute value removes the element",
			resource: oktaUser,
			ops:      `[{"op":"add","path":"emails","value":[{"value":"h@okta.local","type":"home"}]},{"op":"remove","path":"emails[type eq \"work\"]"},{"op":"remove","path":"emails[type eq \"home\"].value"}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) { delete(m, "emails") })
			},
		},
		{
			name:     "remove of a value path matching nothing is a no-op (idempotent retries)",
			resource: oktaUser,
			ops:      `[{"op":"remove","path":"emails[type eq \"home\"]"},{"op":"remove","path":"title"},{"op":"remove","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"}]`,
			want:     func(t testing.TB) map[string]any { return decodeMap(t, oktaUser) },
		},
		{
			name:     "set primary on a value path clears it elsewhere (RFC 7643 §2.4)",
			resource: oktaUser,
			ops:      `[{"op":"add","path":"emails","value":[{"value":"h@okta.local","type":"home"}]},{"op":"replace","path":"emails[type eq \"home\"].primary","value":"True"}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) {
					m["emails"] = []any{
						map[string]any{"primary": false, "value": "test.user@okta.local", "type": "work"},
						map[string]any{"primary": true, "value": "h@okta.local", "type": "home"},
					}
				})
			},
		},
		{
			name:     "empty Operations is a no-op (Entra validator, scimmy #59)",
			resource: oktaUser,
			ops:      `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[]}`,
			want:     func(t testing.TB) map[string]any { return decodeMap(t, oktaUser) },
		},
		{
			name:     "unknown attributes are stored as sent by default",
			resource: oktaUser,
			ops:      `[{"op":"add","path":"favouriteColour","value":"blue"},{"op":"add","path":"tags","value":["a","b"]},{"op":"add","path":"tags","value":"b"}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) {
					m["favouriteColour"] = "blue"
					m["tags"] = []any{"a", "b"}
				})
			},
		},
	}, Options{})
}

func TestApplyOktaUser(t *testing.T) {
	t.Parallel()
	runApplyCases(t, []applyCase{
		{
			name:     "§2.1 deactivate with a no-path replace (E29)",
			resource: oktaUser,
			ops:      `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) { m["active"] = false })
			},
		},
		{
			name:     "§2.1 password sync with a no-path replace",
			resource: oktaUser,
			ops:      `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"password":"1mz050nq"}}]}`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) { m["password"] = "1mz050nq" })
			},
		},
		{
			name:     "§2.2 read-only id set to its current value is ignored",
			resource: oktaUser,
			ops:      `[{"op":"replace","value":{"id":"23a35c27-23d3-4c03-b4c5-6443c09e7173","active":false}}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaUser, func(m map[string]any) { m["active"] = false })
			},
		},
	}, Options{})
}

func TestApplyGroups(t *testing.T) {
	t.Parallel()
	withMembers := func(t testing.TB, members ...any) map[string]any {
		return edit(t, oktaGroup, func(m map[string]any) {
			if len(members) == 0 {
				delete(m, "members")
				return
			}
			m["members"] = members
		})
	}
	m89 := map[string]any{"value": "89bb1940-b905-4575-9e7f-6f887cfb368e", "display": "other.user@okta.local"}
	mf6 := map[string]any{"value": "f648f8d5ea4e4cd38e9c"}
	m23 := map[string]any{"value": "23a35c27-23d3-4c03-b4c5-6443c09e7173", "display": "test.user@okta.local"}
	runApplyCases(t, []applyCase{
		{
			name:     "§1.2 Entra rename",
			resource: oktaGroup,
			ops:      `{"Operations":[{"op":"Replace","path":"displayName","value":"1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"}]}`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaGroup, func(m map[string]any) { m["displayName"] = "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName" })
			},
		},
		{
			name:     "§1.2 Entra add member with $ref null (E12)",
			resource: oktaGroup,
			ops:      `{"Operations":[{"op":"Add","path":"members","value":[{"$ref":null,"value":"23a35c27-23d3-4c03-b4c5-6443c09e7173"}]}]}`,
			want: func(t testing.TB) map[string]any {
				return withMembers(t, m89, mf6, map[string]any{"value": "23a35c27-23d3-4c03-b4c5-6443c09e7173"})
			},
		},
		{
			name:     "§1.2 Entra add of an existing member does not duplicate it",
			resource: oktaGroup,
			ops:      `{"Operations":[{"op":"Add","path":"members","value":[{"$ref":null,"value":"f648f8d5ea4e4cd38e9c"}]}]}`,
			want:     func(t testing.TB) map[string]any { return decodeMap(t, oktaGroup) },
		},
		{
			name:     "§1.2/§1.4 Entra remove member with a value list removes only it (E11, azure-docs #30826)",
			resource: oktaGroup,
			ops:      `{"Operations":[{"op":"Remove","path":"members","value":[{"$ref":null,"value":"f648f8d5ea4e4cd38e9c"}]}]}`,
			want:     func(t testing.TB) map[string]any { return withMembers(t, m89) },
		},
		{
			name:     "§1.3 Entra remove member, flag form (filter path)",
			resource: oktaGroup,
			ops:      `[{"op":"remove","path":"members[value eq \"f648f8d5ea4e4cd38e9c\"]"}]`,
			want:     func(t testing.TB) map[string]any { return withMembers(t, m89) },
		},
		{
			name:     "elimity azuread/update_group.json: rename, add and remove the same member",
			resource: `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"id":"fa2ce26709934589afc5","displayName":"x"}`,
			ops: `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[
  {"op":"Replace","path":"displayName","value":"1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"},
  {"op":"Add","path":"members","value":[{"$ref":null,"value":"f648f8d5ea4e4cd38e9c"}]},
  {"op":"Remove","path":"members","value":[{"$ref":null,"value":"f648f8d5ea4e4cd38e9c"}]}]}`,
			want: func(t testing.TB) map[string]any {
				return decodeMap(t, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"id":"fa2ce26709934589afc5","displayName":"1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"}`)
			},
		},
		{
			name:     "§2.1/§2.2 Okta rename carrying the read-only id (E28, keycloak-scim-server PR #113)",
			resource: oktaGroup,
			ops:      `{"Operations":[{"op":"replace","value":{"id":"abf4dd94-a4c0-4f67-89c9-76b03340cb9b","displayName":"Test SCIMv20"}}]}`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaGroup, func(m map[string]any) { m["displayName"] = "Test SCIMv20" })
			},
		},
		{
			name:     "§2.1 Okta membership: remove by filter, add with display (E27)",
			resource: oktaGroup,
			ops: `{"Operations":[{"op":"remove","path":"members[value eq \"89bb1940-b905-4575-9e7f-6f887cfb368e\"]"},
               {"op":"add","path":"members","value":[{"value":"23a35c27-23d3-4c03-b4c5-6443c09e7173","display":"test.user@okta.local"}]}]}`,
			want: func(t testing.TB) map[string]any { return withMembers(t, mf6, m23) },
		},
		{
			name:     "§2.1 Okta full push: replace the member list (E37)",
			resource: oktaGroup,
			ops:      `{"Operations":[{"op":"replace","path":"members","value":[{"value":"23a35c27-23d3-4c03-b4c5-6443c09e7173","display":"test.user@okta.local"},{"value":"f648f8d5ea4e4cd38e9c"}]}]}`,
			want:     func(t testing.TB) map[string]any { return withMembers(t, m23, mf6) },
		},
		{
			name:     "elimity okta/update_group_membership.json",
			resource: oktaGroup,
			ops: `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[
  {"op":"remove","path":"members[value eq \"89bb1940-b905-4575-9e7f-6f887cfb368e\"]"},
  {"op":"add","path":"members","value":[{"value":"23a35c27-23d3-4c03-b4c5-6443c09e7173","display":"test.user@okta.local"}]},
  {"op":"replace","path":"members","value":[{"value":"23a35c27-23d3-4c03-b4c5-6443c09e7173","display":"test.user@okta.local"},{"value":"89bb1940-b905-4575-9e7f-6f887cfb368e","display":"test.user@okta.local"}]}]}`,
			want: func(t testing.TB) map[string]any {
				return withMembers(t, m23, map[string]any{"value": "89bb1940-b905-4575-9e7f-6f887cfb368e", "display": "test.user@okta.local"})
			},
		},
		{
			name:     "§2.2 Okta push of an empty group: replace members [] (X1, SCIM-SDK #757)",
			resource: oktaGroup,
			ops:      `[{"op":"replace","path":"members","value":[]}]`,
			want:     func(t testing.TB) map[string]any { return withMembers(t) },
		},
		{
			name:     "§2.2 Okta no-path replace with empty members, id and displayName (scimgateway #113)",
			resource: oktaGroup,
			ops:      `[{"op":"replace","value":{"members":[],"id":"abf4dd94-a4c0-4f67-89c9-76b03340cb9b","displayName":"Test SCIMv2"}}]`,
			want:     func(t testing.TB) map[string]any { return withMembers(t) },
		},
		{
			name:     "§1.4 group rename via no-path replace keeps members (langwatch #7131)",
			resource: oktaGroup,
			ops:      `[{"op":"replace","value":{"displayName":"X"}}]`,
			want: func(t testing.TB) map[string]any {
				return edit(t, oktaGroup, func(m map[string]any) { m["displayName"] = "X" })
			},
		},
		{
			name:     "E36 remove members with an or filter",
			resource: oktaGroup,
			ops:      `[{"op":"remove","path":"members[value eq \"89bb1940-b905-4575-9e7f-6f887cfb368e\" or value eq \"f648f8d5ea4e4cd38e9c\"]"}]`,
			want:     func(t testing.TB) map[string]any { return withMembers(t) },
		},
		{
			name:     "§1.7 Postman remove all members",
			resource: oktaGroup,
			ops:      `[{"op":"remove","path":"members"}]`,
			want:     func(t testing.TB) map[string]any { return withMembers(t) },
		},
		{
			name:     "§1.7 Postman add member with extra name key and displayName instead of display",
			resource: oktaGroup,
			ops:      `[{"name":"addMember","op":"add","path":"members","value":[{"displayName":"new User","value":"23a35c27-23d3-4c03-b4c5-6443c09e7173"}]}]`,
			want: func(t testing.TB) map[string]any {
				return withMembers(t, m89, mf6, map[string]any{"displayName": "new User", "value": "23a35c27-23d3-4c03-b4c5-6443c09e7173"})
			},
		},
		{
			name:     "§1.7 Postman add member as a bare string",
			resource: oktaGroup,
			ops:      `[{"op":"add","path":"members","value":"string id 1"}]`,
			want: func(t testing.TB) map[string]any {
				return withMembers(t, m89, mf6, map[string]any{"value": "string id 1"})
			},
		},
		{
			name:     "E50 add members with a single object",
			resource: oktaGroup,
			ops:      `[{"op":"add","path":"members","value":{"value":"23a35c27-23d3-4c03-b4c5-6443c09e7173","display":"test.user@okta.local"}}]`,
			want:     func(t testing.TB) map[string]any { return withMembers(t, m89, mf6, m23) },
		},
		{
			name:     "§4 JumpCloud remove with a value list",
			resource: oktaGroup,
			ops:      `[{"op":"remove","path":"members","value":[{"value":"89bb1940-b905-4575-9e7f-6f887cfb368e"}]}]`,
			want:     func(t testing.TB) map[string]any { return withMembers(t, mf6) },
		},
		{
			name:     "remove with an empty value list removes nothing",
			resource: oktaGroup,
			ops:      `[{"op":"remove","path":"members","value":[]}]`,
			want:     func(t testing.TB) map[string]any { return decodeMap(t, oktaGroup) },
		},
		{
			name:     "replace on members[value eq] with no match adds the member",
			resource: oktaGroup,
			ops:      `[{"op":"replace","path":"members[value eq \"23a35c27-23d3-4c03-b4c5-6443c09e7173\"]","value":{"display":"test.user@okta.local"}}]`,
			want:     func(t testing.TB) map[string]any { return withMembers(t, m89, mf6, m23) },
		},
	}, Options{Schema: new(GroupSchema())})
}

func TestApplyDefaultSchemaFromSchemas(t *testing.T) {
	t.Parallel()
	// Without Options.Schema a Group resource gets GroupSchema, so a bare
	// string member becomes {"value": …}.
	got, err := Apply(decodeMap(t, oktaGroup), decodeOps(t, `[{"op":"add","path":"members","value":"u9"}]`), Options{})
	if err != nil {
		t.Fatalf("Apply error = %v", err)
	}
	want := edit(t, oktaGroup, func(m map[string]any) {
		m["members"] = append(m["members"].([]any), map[string]any{"value": "u9"})
	})
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Apply(group, add bare member) mismatch (-want +got):\n%s", diff)
	}
}

func TestApplyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		resource string
		ops      string
		opts     Options
		want     string
	}{
		{"E38 unknown op Update", oktaUser, `[{"op":"Update","path":"active","value":false}]`, Options{}, ScimTypeInvalidSyntax},
		{"missing op", oktaUser, `[{"path":"active","value":false}]`, Options{}, ScimTypeInvalidSyntax},
		{"remove without path", oktaUser, `[{"op":"remove"}]`, Options{}, ScimTypeNoTarget},
		{"unparsable path", oktaUser, `[{"op":"replace","path":"emails[type eq \"work\"","value":"x"}]`, Options{}, ScimTypeInvalidPath},
		{"unparsable no-path key", oktaUser, `[{"op":"replace","value":{"emails[":"x"}}]`, Options{}, ScimTypeInvalidPath},
		{"sub-attribute of a simple attribute", oktaUser, `[{"op":"replace","path":"userName.first","value":"x"}]`, Options{}, ScimTypeInvalidPath},
		{"filter on a single-valued attribute", oktaUser, `[{"op":"replace","path":"name[givenName eq \"Test\"].familyName","value":"x"}]`, Options{}, ScimTypeInvalidPath},
		{"unknown attribute with RejectUnknown", oktaUser, `[{"op":"add","path":"favouriteColour","value":"blue"}]`, Options{RejectUnknown: true}, ScimTypeInvalidPath},
		{"unknown sub-attribute with RejectUnknown", oktaUser, `[{"op":"add","path":"name.nickname","value":"x"}]`, Options{RejectUnknown: true}, ScimTypeInvalidPath},
		{"unknown sub-attribute in value with RejectUnknown", oktaUser, `[{"op":"add","path":"emails","value":[{"value":"x","colour":"red"}]}]`, Options{RejectUnknown: true}, ScimTypeInvalidValue},
		{"unknown URN with RejectUnknown", oktaUser, `[{"op":"add","path":"urn:example:ext:1.0:User:x","value":"y"}]`, Options{RejectUnknown: true}, ScimTypeInvalidPath},
		{"non-boolean for active", oktaUser, `[{"op":"replace","path":"active","value":"maybe"}]`, Options{}, ScimTypeInvalidValue},
		{"number for active", oktaUser, `[{"op":"replace","path":"active","value":1}]`, Options{}, ScimTypeInvalidValue},
		{"number for userName", oktaUser, `[{"op":"replace","path":"userName","value":12}]`, Options{}, ScimTypeInvalidValue},
		{"string for a complex attribute without value", oktaUser, `[{"op":"replace","path":"name","value":"Test User"}]`, Options{}, ScimTypeInvalidValue},
		{"number as an email", oktaUser, `[{"op":"add","path":"emails","value":[1]}]`, Options{}, ScimTypeInvalidValue},
		{"two managers", oktaUser, `[{"op":"add","path":"manager","value":[{"value":"a"},{"value":"b"}]}]`, Options{}, ScimTypeInvalidValue},
		{"no-path with a non-object value", oktaUser, `[{"op":"replace","value":"x"}]`, Options{}, ScimTypeInvalidValue},
		{"no-path with a null value", oktaUser, `[{"op":"replace","value":null}]`, Options{}, ScimTypeInvalidValue},
		{"extension container with a string", oktaUser, `[{"op":"replace","value":{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":"x"}}]`, Options{}, ScimTypeInvalidValue},
		{"value path without sub-attribute given a number", oktaUser, `[{"op":"replace","path":"emails[type eq \"work\"]","value":5}]`, Options{}, ScimTypeInvalidValue},
		{"change id", oktaUser, `[{"op":"replace","path":"id","value":"other"}]`, Options{}, ScimTypeMutability},
		{"Okta rename with a different id", oktaGroup, `[{"op":"replace","value":{"id":"other","displayName":"x"}}]`, Options{}, ScimTypeMutability},
		{"remove id", oktaUser, `[{"op":"remove","path":"id"}]`, Options{}, ScimTypeMutability},
		{"replace meta", entraUser, `[{"op":"replace","path":"meta","value":{"version":"W/\"1\""}}]`, Options{}, ScimTypeMutability},
		{"replace meta.lastModified", entraUser, `[{"op":"replace","path":"meta.lastModified","value":"2030-01-01T00:00:00Z"}]`, Options{}, ScimTypeMutability},
		{"remove meta", entraUser, `[{"op":"remove","path":"meta"}]`, Options{}, ScimTypeMutability},
		{"add groups", oktaUser, `[{"op":"add","path":"groups","value":[{"value":"g1"}]}]`, Options{}, ScimTypeMutability},
		{"change schemas", oktaUser, `[{"op":"replace","path":"schemas","value":["urn:x"]}]`, Options{}, ScimTypeMutability},
		{"manager displayName is read-only", entraUser, `[{"op":"add","path":"manager.displayName","value":"Boss"}]`, Options{}, ScimTypeMutability},
		{"remove required userName", oktaUser, `[{"op":"remove","path":"userName"}]`, Options{}, ScimTypeInvalidValue},
		{"replace required userName with null", oktaUser, `[{"op":"replace","path":"userName","value":null}]`, Options{}, ScimTypeInvalidValue},
		{"remove required group displayName", oktaGroup, `[{"op":"replace","value":{"displayName":""}}]`, Options{}, ScimTypeInvalidValue},
		{"no match and filter cannot describe the element", oktaUser, `[{"op":"add","path":"emails[value co \"@x\"].display","value":"x"}]`, Options{}, ScimTypeNoTarget},
		{"too many operations", oktaUser, `[{"op":"add","path":"title","value":"a"},{"op":"add","path":"title","value":"b"},{"op":"add","path":"title","value":"c"}]`, Options{MaxOperations: 2}, ScimTypeTooMany},
		{"second operation fails, first is not applied", oktaUser, `[{"op":"replace","path":"active","value":false},{"op":"bogus"}]`, Options{}, ScimTypeInvalidSyntax},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := decodeMap(t, tc.resource)
			got, err := Apply(res, decodeOps(t, tc.ops), tc.opts)
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("Apply(%s) = %v, %v, want *Error %s", tc.ops, got, err, tc.want)
			}
			if perr.ScimType != tc.want {
				t.Errorf("Apply(%s) scimType = %q (%v), want %q", tc.ops, perr.ScimType, err, tc.want)
			}
			if got != nil {
				t.Errorf("Apply(%s) returned a resource with an error", tc.ops)
			}
			if diff := cmp.Diff(decodeMap(t, tc.resource), res); diff != "" {
				t.Errorf("Apply(%s) mutated its input (-before +after):\n%s", tc.ops, diff)
			}
		})
	}
}

func TestApplyErrorDetailHasNoValues(t *testing.T) {
	t.Parallel()
	secret := "jane.doe@secret.example"
	for _, ops := range []string{
		`[{"op":"replace","path":"emails[value eq \"` + secret + `\"","value":"x"}]`,
		`[{"op":"add","path":"emails[value co \"` + secret + `\"].display","value":"x"}]`,
		`[{"op":"replace","path":"active","value":"` + secret + `"}]`,
		`[{"op":"replace","path":"id","value":"` + secret + `"}]`,
	} {
		_, err := Apply(decodeMap(t, oktaUser), decodeOps(t, ops), Options{})
		if err == nil {
			t.Fatalf("Apply(%s) error = nil, want error", ops)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("Apply(%s) error %q quotes a value", ops, err)
		}
	}
}

func TestApplyDefaultMaxOperations(t *testing.T) {
	t.Parallel()
	ops := make([]Operation, DefaultMaxOperations+1)
	for i := range ops {
		ops[i] = Operation{Op: "add", Path: "members", Value: map[string]any{"value": fmt.Sprintf("u%d", i)}}
	}
	if _, err := Apply(decodeMap(t, oktaGroup), ops[:DefaultMaxOperations], Options{}); err != nil {
		t.Errorf("Apply(%d operations) error = %v, want nil", DefaultMaxOperations, err)
	}
	_, err := Apply(decodeMap(t, oktaGroup), ops, Options{})
	var perr *Error
	if !errors.As(err, &perr) || perr.ScimType != ScimTypeTooMany {
		t.Errorf("Apply(%d operations) error = %v, want scimType %s", len(ops), err, ScimTypeTooMany)
	}
}

// TestApplyResultSharesNothing checks that changing the result (or the
// operations' values afterwards) cannot reach the input.
func TestApplyResultSharesNothing(t *testing.T) {
	t.Parallel()
	res := decodeMap(t, entraUser)
	ops := decodeOps(t, `[{"op":"add","path":"emails","value":[{"value":"h@x","type":"home"}]},{"op":"replace","value":{"name":{"givenName":"G"}}}]`)
	got, err := Apply(res, ops, Options{})
	if err != nil {
		t.Fatal(err)
	}
	scribble(got)
	if diff := cmp.Diff(decodeMap(t, entraUser), res); diff != "" {
		t.Errorf("changing Apply's result changed its input (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(decodeOps(t, `[{"op":"add","path":"emails","value":[{"value":"h@x","type":"home"}]},{"op":"replace","value":{"name":{"givenName":"G"}}}]`), ops); diff != "" {
		t.Errorf("changing Apply's result changed its operations (-before +after):\n%s", diff)
	}
}

// scribble overwrites every map entry and slice element reachable from v.
func scribble(v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			scribble(e)
			x[k] = "scribbled"
		}
		x["scribbled"] = true
	case []any:
		for i, e := range x {
			scribble(e)
			x[i] = "scribbled"
		}
	}
}

func TestApplyLargeGroup(t *testing.T) {
	t.Parallel()
	const n = 100_000
	members := make([]any, n)
	for i := range members {
		members[i] = map[string]any{"value": fmt.Sprintf("user-%06d", i)}
	}
	group := map[string]any{"schemas": []any{scimschema.Group}, "id": "g", "displayName": "big", "members": members}
	ops := []Operation{
		{Op: "Add", Path: "members", Value: []any{map[string]any{"value": "user-000001"}, map[string]any{"value": "new"}}},
		{Op: "Remove", Path: "members", Value: []any{map[string]any{"value": "user-000002"}}},
		{Op: "remove", Path: `members[value eq "user-000003"]`},
	}
	got, err := Apply(group, ops, Options{Schema: new(GroupSchema())})
	if err != nil {
		t.Fatal(err)
	}
	if l := len(got["members"].([]any)); l != n-1 {
		t.Errorf("Apply(100k-member group) has %d members, want %d", l, n-1)
	}
}

func TestApplyElementsShareNothing(t *testing.T) {
	t.Parallel()
	res := decodeMap(t, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a","emails":[{"type":"home","value":"a"},{"type":"home","value":"b"}]}`)
	ops := decodeOps(t, `[{"op":"replace","path":"emails[type eq \"home\"]","value":{"extra":{"k":"v"}}},{"op":"replace","path":"emails[type eq \"home\"].more","value":["x"]}]`)
	got, err := Apply(res, ops, Options{})
	if err != nil {
		t.Fatal(err)
	}
	emails := got["emails"].([]any)
	emails[0].(map[string]any)["extra"].(map[string]any)["k"] = "changed"
	emails[0].(map[string]any)["more"].([]any)[0] = "changed"
	if v := emails[1].(map[string]any)["extra"].(map[string]any)["k"]; v != "v" {
		t.Errorf("changing one element's sub-attribute changed another's: %v", v)
	}
	if v := emails[1].(map[string]any)["more"].([]any)[0]; v != "x" {
		t.Errorf("changing one element's sub-attribute changed another's: %v", v)
	}
}

func TestApplyEmptyValueOnUnmatchedValuePath(t *testing.T) {
	t.Parallel()
	// [] unwraps to nothing; with no home e-mail, no other e-mail may lose
	// its value.
	got, err := Apply(decodeMap(t, oktaUser), decodeOps(t, `[{"op":"replace","path":"emails[type eq \"home\"].value","value":[]}]`), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(decodeMap(t, oktaUser), got); diff != "" {
		t.Errorf("Apply(replace unmatched value path with []) mismatch (-want +got):\n%s", diff)
	}
}
