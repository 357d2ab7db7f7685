package scimpatch

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// fuzzOpsSeeds are PatchOp bodies from scim-idp-requests.md and the
// reliability suite's bad-input cases.
var fuzzOpsSeeds = []string{
	`{"Operations":[{"op":"Replace","path":"emails[type eq \"work\"].value","value":"updatedEmail@microsoft.com"},{"op":"Replace","path":"name.familyName","value":"updatedFamilyName"}]}`,
	`{"Operations":[{"op":"Replace","path":"active","value":"False"}]}`,
	`{"Operations":[{"op":"replace","value":{"displayName":"Bjfe","name.givenName":"Kkom","name.familyName":"Unua","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber":"Aklq"}}]}`,
	`{"Operations":[{"op":"add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":"2c2f6fb8-254f-492e-b7fe-c09c5a61c8a2"}]}`,
	`{"Operations":[{"op":"Add","path":"manager","value":[{"$ref":"http://localhost/Users/00aa","value":"00aa"}]}]}`,
	`{"Operations":[{"op":"replace","value":{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":"myuser"}}}]}`,
	`{"Operations":[{"op":"Add","path":"roles","value":[{"primary":"True","type":"WindowsAzureActiveDirectoryRole","value":"Admin"}]}]}`,
	`{"Operations":[{"op":"Replace","path":"addresses[type eq \"work\"].streetAddress","value":"1 Main St"}]}`,
	`{"Operations":[{"op":"replace","path":"title","value":null},{"op":"replace","value":{"displayName":null}}]}`,
	`{"Operations":[{"op":"Add","path":"members","value":[{"$ref":null,"value":"f648f8d5ea4e4cd38e9c"}]},{"op":"Remove","path":"members","value":[{"$ref":null,"value":"f648f8d5ea4e4cd38e9c"}]}]}`,
	`{"Operations":[{"op":"remove","path":"members[value eq \"89bb1940-b905-4575-9e7f-6f887cfb368e\"]"},{"op":"add","path":"members","value":[{"value":"23a35c27","display":"t"}]}]}`,
	`{"Operations":[{"op":"replace","value":{"members":[],"id":"abf4dd94-a4c0-4f67-89c9-76b03340cb9b","displayName":"Test SCIMv2"}}]}`,
	`{"Operations":[{"op":"replace","path":"members","value":[]}]}`,
	`{"Operations":[{"op":"remove","path":"members[value eq \"a\" or value eq \"b\"]"}]}`,
	`{"Operations":[{"op":"add","path":"members","value":"string id 1"}]}`,
	`{"Operations":[{"op":"Update","path":"active","value":false}]}`,
	`{"Operations":[{"op":"replace","path":"id","value":"x"}]}`,
	`{"Operations":[{"op":"add","path":"emails[value co \"@x\"].display","value":"x"}]}`,
	`{"Operations":[{"op":"replace","value":{"urn:ietf:params:scim:schemas:core:2.0:User":{"title":"Boss"},"urn:x:y:1.0:User":{"a":[1,{"b":null}]}}}]}`,
	`{"Operations":[]}`,
}

var fuzzResourceSeeds = []string{entraUser, oktaUser, oktaGroup, `{}`, `{"emails":"x","name":[1],"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":"x","members":[null,"a",{"value":1}]}`}

// FuzzApply checks that Apply never panics, never modifies its arguments,
// returns either a resource or an *Error, shares no memory with its input,
// and agrees with MembersDelta on groups.
func FuzzApply(f *testing.F) {
	for _, r := range fuzzResourceSeeds {
		for _, o := range fuzzOpsSeeds {
			f.Add(r, o)
		}
	}
	f.Fuzz(func(t *testing.T, resourceJSON, opsJSON string) {
		var res map[string]any
		if json.Unmarshal([]byte(resourceJSON), &res) != nil || res == nil {
			return
		}
		var req struct{ Operations []Operation }
		if json.Unmarshal([]byte(opsJSON), &req) != nil {
			return
		}
		resBefore := mustMarshal(t, res)
		opsBefore := mustMarshal(t, req.Operations)
		for _, opts := range []Options{{}, {Schema: new(GroupSchema())}, {RejectUnknown: true}} {
			got, err := Apply(res, req.Operations, opts)
			if err != nil {
				if _, ok := err.(*Error); !ok {
					t.Fatalf("Apply error type %T, want *Error", err)
				}
				if got != nil {
					t.Fatalf("Apply returned a resource with error %v", err)
				}
			} else if got == nil {
				t.Fatalf("Apply returned neither resource nor error")
			} else {
				mustMarshal(t, got)
				inputs := map[uintptr]bool{}
				collectPointers(res, inputs, nil)
				collectPointers(opsValues(req.Operations), inputs, nil)
				collectPointers(got, map[uintptr]bool{}, func(p uintptr, dup bool) {
					if dup {
						t.Fatalf("Apply's result holds one map or slice in two places")
					}
					if inputs[p] {
						t.Fatalf("Apply's result shares a map or slice with its input")
					}
				})
				scribble(got)
			}
			if !bytes.Equal(resBefore, mustMarshal(t, res)) {
				t.Fatalf("Apply mutated the resource:\nbefore %s\nafter  %s", resBefore, mustMarshal(t, res))
			}
			if !bytes.Equal(opsBefore, mustMarshal(t, req.Operations)) {
				t.Fatalf("Apply mutated the operations:\nbefore %s\nafter  %s", opsBefore, mustMarshal(t, req.Operations))
			}
			if _, _, err := MembersDelta(req.Operations, opts); err != nil {
				if _, ok := err.(*Error); !ok {
					t.Fatalf("MembersDelta error type %T, want *Error", err)
				}
			}
		}
		if members, ok := res["members"].([]any); ok && wellFormedMembers(members) {
			checkDeltaAgainstApply(t, res, req.Operations)
		}
	})
}

// wellFormedMembers reports whether every stored member is an object with a
// distinct string value and at most a display, the shape the server keeps, for which
// Apply and MembersDelta must agree.
func wellFormedMembers(members []any) bool {
	seen := map[string]bool{}
	for _, m := range members {
		obj, ok := m.(map[string]any)
		if !ok {
			return false
		}
		id, ok := obj["value"].(string)
		if !ok || id == "" || seen[id] {
			return false
		}
		for k := range obj {
			if k != "value" && k != "display" {
				return false
			}
		}
		seen[id] = true
	}
	return true
}

func opsValues(ops []Operation) []any {
	out := make([]any, len(ops))
	for i, op := range ops {
		out[i] = op.Value
	}
	return out
}

// collectPointers records the identity of every map and non-empty slice
// reachable from v, calling visit (if set) with whether it was seen before.
func collectPointers(v any, seen map[uintptr]bool, visit func(p uintptr, dup bool)) {
	var p uintptr
	switch x := v.(type) {
	case map[string]any:
		p = reflect.ValueOf(x).Pointer()
	case []any:
		if len(x) == 0 {
			return
		}
		p = reflect.ValueOf(x).Pointer()
	default:
		return
	}
	if visit != nil {
		visit(p, seen[p])
	}
	seen[p] = true
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			collectPointers(e, seen, visit)
		}
	case []any:
		for _, e := range x {
			collectPointers(e, seen, visit)
		}
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	return b
}
