package scimfilter

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// rfcFilters are the filter examples of RFC 7644 §3.4.2.2, with the
// canonical form String renders for each.
var rfcFilters = []struct{ in, want string }{
	{`userName eq "bjensen"`, `userName eq "bjensen"`},
	{`name.familyName co "O'Malley"`, `name.familyName co "O'Malley"`},
	{`userName sw "J"`, `userName sw "J"`},
	{`urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J"`, `urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J"`},
	{`title pr`, `title pr`},
	{`meta.lastModified gt "2011-05-13T04:42:34Z"`, `meta.lastModified gt "2011-05-13T04:42:34Z"`},
	{`meta.lastModified ge "2011-05-13T04:42:34Z"`, `meta.lastModified ge "2011-05-13T04:42:34Z"`},
	{`meta.lastModified lt "2011-05-13T04:42:34Z"`, `meta.lastModified lt "2011-05-13T04:42:34Z"`},
	{`meta.lastModified le "2011-05-13T04:42:34Z"`, `meta.lastModified le "2011-05-13T04:42:34Z"`},
	{`title pr and userType eq "Employee"`, `title pr and userType eq "Employee"`},
	{`title pr or userType eq "Intern"`, `title pr or userType eq "Intern"`},
	{`schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"`, `schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"`},
	{`userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")`, `userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")`},
	{`userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")`, `userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")`},
	{`userType eq "Employee" and (emails.type eq "work")`, `userType eq "Employee" and emails.type eq "work"`},
	{`userType eq "Employee" and emails[type eq "work" and value co "@example.com"]`, `userType eq "Employee" and emails[type eq "work" and value co "@example.com"]`},
	{`emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]`, `emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]`},
}

// idpFilters are the filters scim-idp-requests.md quotes from Entra ID, Okta
// and the Microsoft Postman collections.
var idpFilters = []struct{ name, in, want string }{
	{"entra userName (§1.2)", `userName eq "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee"`, `userName eq "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee"`},
	{"entra non-existent user (§1.2)", `userName eq "non-existent user"`, `userName eq "non-existent user"`},
	{"entra externalId (E15)", `externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"`, `externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"`},
	{"entra group displayName (E16)", `displayName eq "displayName"`, `displayName eq "displayName"`},
	{"entra work email value path with sub-attribute (E17)", `emails[type eq "work"].value eq "user@contoso.com"`, `emails[type eq "work" and value eq "user@contoso.com"]`},
	{"entra manager reference check (X13)", `id eq "a" and manager eq "b"`, `id eq "a" and manager eq "b"`},
	{"entra group membership check (E18)", `id eq "g1" and members[value eq "u1"]`, `id eq "g1" and members[value eq "u1"]`},
	{"entra core + extension (E19)", `userName eq "a" and urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "b"`, `userName eq "a" and urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "b"`},
	{"extension-only filter (E20)", `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915-6090-4610-87e4-49d8ca9f808d"`, `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915-6090-4610-87e4-49d8ca9f808d"`},
	{"entra inbound delta sync (X14)", `active eq true and (meta.lastModified ge "0001-01-03T00:00:00.0000000Z" and meta.lastModified le "2024-01-01T00:00:00Z")`, `active eq true and (meta.lastModified ge "0001-01-03T00:00:00.0000000Z" and meta.lastModified le "2024-01-01T00:00:00Z")`},
	{"entra inbound mixed case names (§1.7)", `(ActiVe eq true) and meta.lastmodified ge "2021-09-23T19:35:41.8420572Z"`, `ActiVe eq true and meta.lastmodified ge "2021-09-23T19:35:41.8420572Z"`},
	{"upper-case operator (E49)", `USERNAME EQ "a"`, `USERNAME eq "a"`},
	{"parentheses (E46)", `(userName eq "a" or userName eq "b") and active eq true`, `(userName eq "a" or userName eq "b") and active eq true`},
	{"not (E47)", `not (userName eq "a")`, `not (userName eq "a")`},
	{"postman capitalised attribute (§1.7)", `DisplayName eq "BobIsAmazing"`, `DisplayName eq "BobIsAmazing"`},
	{"okta userName case check (§2.3)", `userName eq "UPPERCASED@OKTA.LOCAL"`, `userName eq "UPPERCASED@OKTA.LOCAL"`},
	{"okta userName with query encoding decoded (§2.1)", `userName eq "test.user@okta.local"`, `userName eq "test.user@okta.local"`},
	{"remove filter with or (E36)", `value eq "a" or value eq "b"`, `value eq "a" or value eq "b"`},
}

func TestParseRFCExamples(t *testing.T) {
	t.Parallel()
	for _, tc := range rfcFilters {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			e, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse(%q) error = %v", tc.in, err)
			}
			if got := e.String(); got != tc.want {
				t.Errorf("Parse(%q).String() = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseIdPFilters(t *testing.T) {
	t.Parallel()
	for _, tc := range idpFilters {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse(%q) error = %v", tc.in, err)
			}
			if got := e.String(); got != tc.want {
				t.Errorf("Parse(%q).String() = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseTree(t *testing.T) {
	t.Parallel()
	enterprise := "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	tests := []struct {
		in   string
		want Expr
	}{
		{`userName eq "bjensen"`, &Compare{Attr: AttrPath{Name: "userName"}, Op: Eq, Value: "bjensen"}},
		{`title pr`, &Compare{Attr: AttrPath{Name: "title"}, Op: Pr}},
		{`name.givenName ne null`, &Compare{Attr: AttrPath{Name: "name", Sub: "givenName"}, Op: Ne}},
		{`active eq TRUE`, &Compare{Attr: AttrPath{Name: "active"}, Op: Eq, Value: true}},
		{`active eq false`, &Compare{Attr: AttrPath{Name: "active"}, Op: Eq, Value: false}},
		{`x gt -1.5e3`, &Compare{Attr: AttrPath{Name: "x"}, Op: Gt, Value: json.Number("-1.5e3")}},
		{`displayName eq "O\"Brien"`, &Compare{Attr: AttrPath{Name: "displayName"}, Op: Eq, Value: `O"Brien`}},
		{`displayName eq "caf\u00e9 \\ \/"`, &Compare{Attr: AttrPath{Name: "displayName"}, Op: Eq, Value: `café \ /`}},
		{`displayName eq "café"`, &Compare{Attr: AttrPath{Name: "displayName"}, Op: Eq, Value: "café"}},
		{enterprise + `:manager.value eq "m"`, &Compare{Attr: AttrPath{URN: enterprise, Name: "manager", Sub: "value"}, Op: Eq, Value: "m"}},
		{enterprise + `:employeeNumber pr`, &Compare{Attr: AttrPath{URN: enterprise, Name: "employeeNumber"}, Op: Pr}},
		{`members.$ref pr`, &Compare{Attr: AttrPath{Name: "members", Sub: "$ref"}, Op: Pr}},
		{`a pr or b pr and c pr`, &Logical{Op: Or,
			Left:  &Compare{Attr: AttrPath{Name: "a"}, Op: Pr},
			Right: &Logical{Op: And, Left: &Compare{Attr: AttrPath{Name: "b"}, Op: Pr}, Right: &Compare{Attr: AttrPath{Name: "c"}, Op: Pr}}}},
		{`a pr and b pr or c pr`, &Logical{Op: Or,
			Left:  &Logical{Op: And, Left: &Compare{Attr: AttrPath{Name: "a"}, Op: Pr}, Right: &Compare{Attr: AttrPath{Name: "b"}, Op: Pr}},
			Right: &Compare{Attr: AttrPath{Name: "c"}, Op: Pr}}},
		{`emails[type eq "work"].value eq "x"`, &ValuePath{Attr: AttrPath{Name: "emails"}, Filter: &Logical{Op: And,
			Left:  &Compare{Attr: AttrPath{Name: "type"}, Op: Eq, Value: "work"},
			Right: &Compare{Attr: AttrPath{Name: "value"}, Op: Eq, Value: "x"}}}},
		{`not(a pr)`, &Not{X: &Compare{Attr: AttrPath{Name: "a"}, Op: Pr}}},
		{`not eq "x"`, &Compare{Attr: AttrPath{Name: "not"}, Op: Eq, Value: "x"}},
		{`  and eq 1  `, &Compare{Attr: AttrPath{Name: "and"}, Op: Eq, Value: json.Number("1")}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse(%q) error = %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Parse(%q) mismatch (-want +got):\n%s", tc.in, diff)
			}
			again, err := Parse(got.String())
			if err != nil {
				t.Fatalf("Parse(%q) error = %v", got.String(), err)
			}
			if diff := cmp.Diff(got, again); diff != "" {
				t.Errorf("Parse(String()) of %q mismatch (-first +second):\n%s", tc.in, diff)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in string }{
		{"empty", ``},
		{"blank", `   `},
		{"unquoted value (X15, Entra doc bug)", `externalId eq jyoung`},
		{"okta 2016 bare value (§2.3)", `RandomUsernameCAPS`},
		{"postman unquoted values (§1.7)", `name.FamilyName eq Employee and (emails.Value co example.com or emails.Value co example.org)`},
		{"postman unquoted sw (§1.7)", `userName sw O`},
		{"postman unquoted datetime (§1.7)", `meta.Created gt 2015-10-10T14:38:21.8617979-07:00`},
		{"entra doc bug value path compared (azure-docs #83855)", `emails[type eq "work"] eq "user@contoso.com"`},
		{"ordering boolean (E48)", `active gt true`},
		{"ordering null", `title lt null`},
		{"substring of number", `title co 12`},
		{"unknown operator", `userName xx "a"`},
		{"missing operator", `userName`},
		{"missing value", `userName eq`},
		{"missing space before operator", `userName"eq"`},
		{"trailing and", `title pr and`},
		{"leading or", `or title pr`},
		{"dangling operator word", `title pr userName`},
		{"not without parentheses", `not title pr`},
		{"unbalanced open", `(title pr`},
		{"unbalanced close", `title pr)`},
		{"empty parentheses", `()`},
		{"unterminated value path", `emails[type eq "work"`},
		{"empty value path", `emails[]`},
		{"nested value path", `emails[value[type eq "x"] pr]`},
		{"URN inside value path", `emails[urn:x:y:value eq "x"]`},
		{"sub-attribute inside value path", `emails[value.x eq "x"]`},
		{"value path after sub-attribute", `name.givenName[value eq "x"]`},
		{"two sub-attributes", `name.givenName.x eq "a"`},
		{"bad name start", `1abc eq "a"`},
		{"unterminated string", `userName eq "abc`},
		{"bad escape", `userName eq "a\x"`},
		{"short unicode escape", `userName eq "\u12"`},
		{"raw control character", "userName eq \"a\tb\""},
		{"NUL byte", "userName eq \"a\x00\""},
		{"NUL outside string", "userName\x00eq \"a\""},
		{"invalid UTF-8", "userName eq \"\xff\""},
		{"number out of range", `x eq 1e999`},
		{"bad number", `x eq 01`},
		{"bad number fraction", `x eq 1.`},
		{"URN without attribute", `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User: eq "x"`},
		{"bare urn", `urn: eq "x"`},
		{"too deep", strings.Repeat("(", MaxDepth+1) + "a pr" + strings.Repeat(")", MaxDepth+1)},
		{"1k parentheses (S5)", strings.Repeat("(", 1000) + "a pr" + strings.Repeat(")", 1000)},
		{"1k nots", strings.Repeat("not (", 1000) + "a pr" + strings.Repeat(")", 1000)},
		{"100 KB filter (S5)", `userName eq "` + strings.Repeat("a", 100<<10) + `"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, err := Parse(tc.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %v, want error", tc.in, e)
			}
			var perr *Error
			if !errors.As(err, &perr) || perr.ScimType != InvalidFilter {
				t.Fatalf("Parse(%q) error = %#v, want *Error with ScimType %q", tc.in, err, InvalidFilter)
			}
			if len(tc.in) < 100 && len(tc.in) > 8 && strings.Contains(err.Error(), tc.in) {
				t.Errorf("Parse(%q) error %q echoes the input", tc.in, err)
			}
		})
	}
}

func TestParseDepthLimit(t *testing.T) {
	t.Parallel()
	in := strings.Repeat("(", MaxDepth) + "a pr" + strings.Repeat(")", MaxDepth)
	if _, err := Parse(in); err != nil {
		t.Errorf("Parse(%d nested parentheses) error = %v, want nil", MaxDepth, err)
	}
	long := `userName eq "` + strings.Repeat("a", MaxLength-len(`userName eq ""`)) + `"`
	if _, err := Parse(long); err != nil {
		t.Errorf("Parse(%d bytes) error = %v, want nil", len(long), err)
	}
	if _, err := Parse(long + " "); err == nil {
		t.Errorf("Parse(%d bytes) error = nil, want error", len(long)+1)
	}
}

func TestParsePath(t *testing.T) {
	t.Parallel()
	enterprise := "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	tests := []struct {
		in       string
		want     Path
		wantText string
	}{
		{"userName", Path{AttrPath: AttrPath{Name: "userName"}}, "userName"},
		{"Active", Path{AttrPath: AttrPath{Name: "Active"}}, "Active"},
		{"name.familyName", Path{AttrPath: AttrPath{Name: "name", Sub: "familyName"}}, "name.familyName"},
		{" displayName ", Path{AttrPath: AttrPath{Name: "displayName"}}, "displayName"},
		{enterprise + ":employeeNumber", Path{AttrPath: AttrPath{URN: enterprise, Name: "employeeNumber"}}, enterprise + ":employeeNumber"},
		{enterprise + ":manager.value", Path{AttrPath: AttrPath{URN: enterprise, Name: "manager", Sub: "value"}}, enterprise + ":manager.value"},
		{"urn:ietf:params:scim:schemas:core:2.0:User:userName", Path{AttrPath: AttrPath{URN: "urn:ietf:params:scim:schemas:core:2.0:User", Name: "userName"}}, "urn:ietf:params:scim:schemas:core:2.0:User:userName"},
		{enterprise, Path{AttrPath: AttrPath{URN: "urn:ietf:params:scim:schemas:extension:enterprise:2.0", Name: "User"}}, enterprise},
		{`emails[type eq "work"].value`, Path{AttrPath: AttrPath{Name: "emails", Sub: "value"}, Filter: &Compare{Attr: AttrPath{Name: "type"}, Op: Eq, Value: "work"}}, `emails[type eq "work"].value`},
		{`members[value eq "89bb1940-b905-4575-9e7f-6f887cfb368e"]`, Path{AttrPath: AttrPath{Name: "members"}, Filter: &Compare{Attr: AttrPath{Name: "value"}, Op: Eq, Value: "89bb1940-b905-4575-9e7f-6f887cfb368e"}}, `members[value eq "89bb1940-b905-4575-9e7f-6f887cfb368e"]`},
		{`addresses[type eq "other"].Formatted`, Path{AttrPath: AttrPath{Name: "addresses", Sub: "Formatted"}, Filter: &Compare{Attr: AttrPath{Name: "type"}, Op: Eq, Value: "other"}}, `addresses[type eq "other"].Formatted`},
		{`members[value eq "a" or value eq "b"]`, Path{AttrPath: AttrPath{Name: "members"}, Filter: &Logical{Op: Or,
			Left:  &Compare{Attr: AttrPath{Name: "value"}, Op: Eq, Value: "a"},
			Right: &Compare{Attr: AttrPath{Name: "value"}, Op: Eq, Value: "b"}}}, `members[value eq "a" or value eq "b"]`},
		{`emails[type eq "work"]`, Path{AttrPath: AttrPath{Name: "emails"}, Filter: &Compare{Attr: AttrPath{Name: "type"}, Op: Eq, Value: "work"}}, `emails[type eq "work"]`},
		{enterprise + `:manager[value eq "x"].displayName`, Path{AttrPath: AttrPath{URN: enterprise, Name: "manager", Sub: "displayName"}, Filter: &Compare{Attr: AttrPath{Name: "value"}, Op: Eq, Value: "x"}}, enterprise + `:manager[value eq "x"].displayName`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParsePath(tc.in)
			if err != nil {
				t.Fatalf("ParsePath(%q) error = %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParsePath(%q) mismatch (-want +got):\n%s", tc.in, diff)
			}
			if s := got.String(); s != tc.wantText {
				t.Errorf("ParsePath(%q).String() = %q, want %q", tc.in, s, tc.wantText)
			}
		})
	}
}

func TestParsePathInvalid(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		``,
		`.value`,
		`name.`,
		`name.givenName.x`,
		`emails[type eq "work"`,
		`emails[type eq "work"].`,
		`emails[type eq "work"]x`,
		`emails[type eq "work"].value.x`,
		`name.givenName[type eq "work"]`,
		`userName eq "x"`,
		`urn:`,
		`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:`,
		`emails[type eq work]`,
		"user\xffName",
		strings.Repeat("a", MaxLength+1),
	} {
		t.Run(in, func(t *testing.T) {
			t.Parallel()
			p, err := ParsePath(in)
			if err == nil {
				t.Fatalf("ParsePath(%q) = %v, want error", in, p)
			}
			var perr *Error
			if !errors.As(err, &perr) || perr.ScimType != InvalidPath {
				t.Fatalf("ParsePath(%q) error = %#v, want *Error with ScimType %q", in, err, InvalidPath)
			}
		})
	}
}

func TestAttrPathKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   AttrPath
		want string
	}{
		{AttrPath{Name: "userName"}, "username"},
		{AttrPath{Name: "Emails", Sub: "Value"}, "emails.value"},
		{AttrPath{URN: "urn:ietf:params:scim:schemas:core:2.0:User", Name: "userName"}, "username"},
		{AttrPath{URN: "URN:IETF:params:scim:schemas:core:2.0:Group", Name: "members", Sub: "value"}, "members.value"},
		{AttrPath{URN: "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", Name: "manager", Sub: "value"}, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user:manager.value"},
	}
	for _, tc := range tests {
		if got := tc.in.Key(); got != tc.want {
			t.Errorf("%#v.Key() = %q, want %q", tc.in, got, tc.want)
		}
	}
}
