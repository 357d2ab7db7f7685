package scimpatch

import (
	"errors"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

type deltaCase struct {
	name   string
	ops    string
	want   Delta
	wantOK bool
}

// membershipCases are the group PATCH shapes of scim-idp-requests.md.
var membershipCases = []deltaCase{
	{
		name:   "§1.2 Entra add member with $ref null (E12)",
		ops:    `{"Operations":[{"op":"Add","path":"members","value":[{"$ref":null,"value":"f648f8d5ea4e4cd38e9c"}]}]}`,
		want:   Delta{Add: []string{"f648f8d5ea4e4cd38e9c"}},
		wantOK: true,
	},
	{
		name:   "§1.2/§1.4 Entra remove member with a value list (E11)",
		ops:    `{"Operations":[{"op":"Remove","path":"members","value":[{"$ref":null,"value":"f648f8d5ea4e4cd38e9c"}]}]}`,
		want:   Delta{Remove: []string{"f648f8d5ea4e4cd38e9c"}},
		wantOK: true,
	},
	{
		name:   "§1.3 Entra remove with flag (filter path)",
		ops:    `[{"op":"remove","path":"members[value eq \"7f4bc1a3-0000-4000-8000-000000000001\"]"}]`,
		want:   Delta{Remove: []string{"7f4bc1a3-0000-4000-8000-000000000001"}},
		wantOK: true,
	},
	{
		name: "§1.2 Entra rename next to membership changes (elimity azuread/update_group.json)",
		ops: `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[
  {"op":"Replace","path":"displayName","value":"1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"},
  {"op":"Add","path":"members","value":[{"$ref":null,"value":"f648f8d5ea4e4cd38e9c"}]},
  {"op":"Remove","path":"members","value":[{"$ref":null,"value":"f648f8d5ea4e4cd38e9c"}]}]}`,
		want: Delta{
			Remove: []string{"f648f8d5ea4e4cd38e9c"},
			Rest:   []Operation{{Op: "Replace", Path: "displayName", Value: "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"}},
		},
		wantOK: true,
	},
	{
		name: "§2.1 Okta membership: remove by filter and add (E27)",
		ops: `{"Operations":[{"op":"remove","path":"members[value eq \"89bb1940-b905-4575-9e7f-6f887cfb368e\"]"},
               {"op":"add","path":"members","value":[{"value":"23a35c27-23d3-4c03-b4c5-6443c09e7173","display":"test.user@okta.local"}]}]}`,
		want:   Delta{Add: []string{"23a35c27-23d3-4c03-b4c5-6443c09e7173"}, Remove: []string{"89bb1940-b905-4575-9e7f-6f887cfb368e"}},
		wantOK: true,
	},
	{
		name: "elimity okta/update_group_membership.json: remove, add, then full replace",
		ops: `{"Operations":[
  {"op":"remove","path":"members[value eq \"89bb1940-b905-4575-9e7f-6f887cfb368e\"]"},
  {"op":"add","path":"members","value":[{"value":"23a35c27-23d3-4c03-b4c5-6443c09e7173","display":"test.user@okta.local"}]},
  {"op":"replace","path":"members","value":[{"value":"23a35c27-23d3-4c03-b4c5-6443c09e7173","display":"test.user@okta.local"},{"value":"89bb1940-b905-4575-9e7f-6f887cfb368e","display":"test.user@okta.local"}]}]}`,
		want:   Delta{Replace: true, Add: []string{"23a35c27-23d3-4c03-b4c5-6443c09e7173", "89bb1940-b905-4575-9e7f-6f887cfb368e"}},
		wantOK: true,
	},
	{
		name:   "§2.1 Okta rename (sent with every membership update)",
		ops:    `{"Operations":[{"op":"replace","value":{"id":"abf4dd94-a4c0-4f67-89c9-76b03340cb9b","displayName":"Test SCIMv2"}}]}`,
		want:   Delta{Rest: []Operation{{Op: "replace", Value: map[string]any{"id": "abf4dd94-a4c0-4f67-89c9-76b03340cb9b", "displayName": "Test SCIMv2"}}}},
		wantOK: true,
	},
	{
		name:   "§2.2 Okta push of an empty group (X1)",
		ops:    `[{"op":"replace","path":"members","value":[]}]`,
		want:   Delta{Replace: true},
		wantOK: true,
	},
	{
		name: "§2.2 Okta no-path replace with members, id and displayName (scimgateway #113)",
		ops:  `[{"op":"replace","value":{"members":[],"id":"abf4dd94-a4c0-4f67-89c9-76b03340cb9b","displayName":"Test SCIMv2"}}]`,
		want: Delta{Replace: true, Rest: []Operation{{Op: "replace", Value: map[string]any{
			"id": "abf4dd94-a4c0-4f67-89c9-76b03340cb9b", "displayName": "Test SCIMv2"}}}},
		wantOK: true,
	},
	{
		name:   "replace members with null",
		ops:    `[{"op":"replace","path":"members","value":null}]`,
		want:   Delta{Replace: true},
		wantOK: true,
	},
	{
		name:   "E36 remove with an or filter",
		ops:    `[{"op":"remove","path":"members[value eq \"a\" or value eq \"b\"]"}]`,
		want:   Delta{Remove: []string{"a", "b"}},
		wantOK: true,
	},
	{
		name:   "§1.7 Postman remove all members",
		ops:    `[{"op":"remove","path":"members"}]`,
		want:   Delta{Replace: true},
		wantOK: true,
	},
	{
		name:   "§1.7 Postman add member as a bare string, with extra name key",
		ops:    `[{"name":"addMember","op":"add","path":"members","value":"string id 1"}]`,
		want:   Delta{Add: []string{"string id 1"}},
		wantOK: true,
	},
	{
		name:   "E50 add members with a single object; ids are reported exactly",
		ops:    `[{"op":"ADD","path":"Members","value":{"value":" Mixed-Case-Id ","display":"x"}}]`,
		want:   Delta{Add: []string{" Mixed-Case-Id "}},
		wantOK: true,
	},
	{
		name:   "§4 JumpCloud remove with a value list",
		ops:    `[{"op":"remove","path":"members","value":[{"value":"u1"},{"value":"u2"}]}]`,
		want:   Delta{Remove: []string{"u1", "u2"}},
		wantOK: true,
	},
	{
		name:   "remove all then add: replace with the added",
		ops:    `[{"op":"remove","path":"members"},{"op":"add","path":"members","value":[{"value":"u1"}]},{"op":"remove","path":"members[value eq \"u2\"]"}]`,
		want:   Delta{Replace: true, Add: []string{"u1"}},
		wantOK: true,
	},
	{
		name:   "remove then add the same member: added",
		ops:    `[{"op":"remove","path":"members","value":[{"value":"u1"}]},{"op":"add","path":"members","value":[{"value":"u1"},{"value":"u1"}]}]`,
		want:   Delta{Add: []string{"u1"}},
		wantOK: true,
	},
	{
		name:   "add or replace on members[value eq]: the member is added",
		ops:    `[{"op":"add","path":"members[value eq \"u1\"]","value":{"display":"One"}},{"op":"replace","path":"members[value eq \"u2\"]","value":{"value":"u2"}},{"op":"replace","path":"members[value eq \"u3\"]","value":null}]`,
		want:   Delta{Add: []string{"u1", "u2"}, Remove: []string{"u3"}},
		wantOK: true,
	},
	{
		name:   "core URN-qualified members",
		ops:    `[{"op":"add","path":"urn:ietf:params:scim:schemas:core:2.0:Group:members","value":[{"value":"u1"}]},{"op":"replace","value":{"urn:ietf:params:scim:schemas:core:2.0:Group":{"members":[{"value":"u2"}],"displayName":"G"}}}]`,
		want:   Delta{Replace: true, Add: []string{"u2"}, Rest: []Operation{{Op: "replace", Value: map[string]any{"urn:ietf:params:scim:schemas:core:2.0:Group": map[string]any{"displayName": "G"}}}}},
		wantOK: true,
	},
	{
		name:   "a filter on display needs the member list",
		ops:    `[{"op":"remove","path":"members[display eq \"x\"]"}]`,
		wantOK: false,
	},
	{
		name:   "a sub-attribute path needs the member list",
		ops:    `[{"op":"replace","path":"members[value eq \"u1\"].display","value":"x"}]`,
		wantOK: false,
	},
	{
		name:   "a value not naming its filter's member needs the member list",
		ops:    `[{"op":"replace","path":"members[value eq \"u1\"]","value":{"value":"u2"}}]`,
		wantOK: false,
	},
}

func TestMembersDelta(t *testing.T) {
	t.Parallel()
	for _, tc := range membershipCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ops := decodeOps(t, tc.ops)
			got, ok, err := MembersDelta(ops, Options{})
			if err != nil {
				t.Fatalf("MembersDelta(%s) error = %v", tc.ops, err)
			}
			if ok != tc.wantOK {
				t.Fatalf("MembersDelta(%s) ok = %v, want %v", tc.ops, ok, tc.wantOK)
			}
			if !ok {
				return
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("MembersDelta(%s) mismatch (-want +got):\n%s", tc.ops, diff)
			}
			if diff := cmp.Diff(decodeOps(t, tc.ops), ops); diff != "" {
				t.Errorf("MembersDelta(%s) mutated its operations (-before +after):\n%s", tc.ops, diff)
			}
		})
	}
}

// TestMembersDeltaMatchesApply is the oracle for the delta path: applying
// the delta to the member ids and Rest to the group without members gives
// the same group as Apply on the whole group.
func TestMembersDeltaMatchesApply(t *testing.T) {
	t.Parallel()
	for _, tc := range membershipCases {
		if !tc.wantOK {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkDeltaAgainstApply(t, decodeMap(t, oktaGroup), decodeOps(t, tc.ops))
		})
	}
}

func checkDeltaAgainstApply(t *testing.T, group map[string]any, ops []Operation) {
	t.Helper()
	opts := Options{Schema: new(GroupSchema())}
	whole, applyErr := Apply(group, ops, opts)
	d, ok, err := MembersDelta(ops, opts)
	if err != nil || !ok || applyErr != nil {
		return
	}
	ids := memberSet(group)
	if d.Replace {
		ids = map[string]bool{}
	}
	for _, id := range d.Remove {
		delete(ids, id)
	}
	for _, id := range d.Add {
		ids[id] = true
	}
	bare := deepCopyMap(group)
	delete(bare, "members")
	rest, err := Apply(bare, d.Rest, opts)
	if err != nil {
		t.Fatalf("Apply(group without members, Rest) error = %v, but Apply(group, ops) succeeded", err)
	}
	wantIDs := memberSet(whole)
	if diff := cmp.Diff(sortedIDs(wantIDs), sortedIDs(ids), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("member ids via MembersDelta differ from Apply (-apply +delta):\n%s", diff)
	}
	delete(whole, "members")
	if diff := cmp.Diff(whole, rest); diff != "" {
		t.Errorf("group attributes via Rest differ from Apply (-apply +delta):\n%s", diff)
	}
}

func memberSet(group map[string]any) map[string]bool {
	ids := map[string]bool{}
	list, _ := group["members"].([]any)
	for _, m := range list {
		if id, ok := elementValue(m); ok {
			ids[id] = true
		}
	}
	return ids
}

func sortedIDs(ids map[string]bool) []string {
	out := make([]string, 0, len(ids))
	for id := range ids {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func TestMembersDeltaErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ops  string
		opts Options
		want string
	}{
		{"unknown op", `[{"op":"Update","path":"members","value":[]}]`, Options{}, ScimTypeInvalidSyntax},
		{"bad path", `[{"op":"remove","path":"members[value eq"}]`, Options{}, ScimTypeInvalidPath},
		{"member without value", `[{"op":"add","path":"members","value":[{"display":"x"}]}]`, Options{}, ScimTypeInvalidValue},
		{"member with a number value", `[{"op":"add","path":"members","value":[{"value":7}]}]`, Options{}, ScimTypeInvalidValue},
		{"member as a number", `[{"op":"replace","value":{"members":[7]}}]`, Options{}, ScimTypeInvalidValue},
		{"too many", `[{"op":"remove","path":"members"},{"op":"remove","path":"members"}]`, Options{MaxOperations: 1}, ScimTypeTooMany},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := MembersDelta(decodeOps(t, tc.ops), tc.opts)
			var perr *Error
			if !errors.As(err, &perr) || perr.ScimType != tc.want {
				t.Errorf("MembersDelta(%s) error = %v, want scimType %s", tc.ops, err, tc.want)
			}
		})
	}
}

func TestDeltaEmpty(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		d    Delta
		want bool
	}{
		{Delta{}, true},
		{Delta{Rest: []Operation{{Op: "replace"}}}, true},
		{Delta{Replace: true}, false},
		{Delta{Add: []string{"a"}}, false},
		{Delta{Remove: []string{"a"}}, false},
	} {
		if got := tc.d.Empty(); got != tc.want {
			t.Errorf("%+v.Empty() = %v, want %v", tc.d, got, tc.want)
		}
	}
}

// TestMembersDeltaCaseExactIDs pins that member ids compare exactly in both
// paths: a filter for "abc" does not remove member "ABC" (ids are caseExact,
// RFC 7643 §3.1), so Apply and the delta agree.
func TestMembersDeltaCaseExactIDs(t *testing.T) {
	t.Parallel()
	group := decodeMap(t, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"id":"g","displayName":"G","members":[{"value":"ABC"},{"value":"def"}]}`)
	ops := decodeOps(t, `[{"op":"remove","path":"members[value eq \"abc\"]"},{"op":"add","path":"members","value":[{"value":"DEF"}]}]`)
	got, err := Apply(group, ops, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ABC", "DEF", "def"}
	if diff := cmp.Diff(want, sortedIDs(memberSet(got))); diff != "" {
		t.Errorf("Apply(case-variant member ops) members mismatch (-want +got):\n%s", diff)
	}
	checkDeltaAgainstApply(t, group, ops)
}
