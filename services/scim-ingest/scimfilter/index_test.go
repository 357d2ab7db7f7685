package scimfilter

import "testing"

func TestIndexLookup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		filter    string
		attrs     []string
		wantAttr  string
		wantValue string
		wantOK    bool
	}{
		{`userName eq "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee"`, nil, "userName", "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee", true},
		{`USERNAME EQ "A@B.com"`, nil, "userName", "A@B.com", true},
		{`urn:ietf:params:scim:schemas:core:2.0:User:userName eq "a"`, nil, "userName", "a", true},
		{`externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"`, nil, "externalId", "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef", true},
		{`displayName eq "displayName"`, nil, "displayName", "displayName", true},
		{`emails[type eq "work"].value eq "user@contoso.com"`, nil, "emails.value", "user@contoso.com", true},
		{`emails[type eq "work" and value eq "user@contoso.com"]`, nil, "emails.value", "user@contoso.com", true},
		{`emails[value eq "user@contoso.com"]`, nil, "emails.value", "user@contoso.com", true},
		{`emails.value eq "user@contoso.com"`, nil, "emails.value", "user@contoso.com", true},
		{`emails eq "user@contoso.com"`, nil, "emails.value", "user@contoso.com", true},
		{`id eq "a" and manager eq "b"`, nil, "id", "a", true},
		{`active eq true and userName eq "a"`, nil, "userName", "a", true},
		{`userName eq "a" and externalId eq "b"`, nil, "userName", "a", true},
		{`(title pr and (externalId eq "b")) and emails[type eq "work"]`, nil, "externalId", "b", true},
		{`id eq "g" and members[value eq "u"]`, []string{"members.value"}, "members.value", "u", true},
		{`userName eq "a" and urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "b"`,
			[]string{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"},
			"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", "b", true},
		// Not usable: the equality is not required of every match.
		{`userName eq "a" or userName eq "b"`, nil, "", "", false},
		{`not (userName eq "a")`, nil, "", "", false},
		{`userName ne "a"`, nil, "", "", false},
		{`userName sw "a"`, nil, "", "", false},
		{`userName eq null`, nil, "", "", false},
		{`emails[type eq "work" or value eq "x"]`, nil, "", "", false},
		{`emails[type eq "work"]`, nil, "", "", false},
		{`title eq "x"`, nil, "", "", false},
		{`meta.lastModified gt "2011-05-13T04:42:34Z"`, nil, "", "", false},
		{`emails[type eq "work"].value eq "x"`, []string{"userName"}, "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.filter, func(t *testing.T) {
			t.Parallel()
			e, err := Parse(tc.filter)
			if err != nil {
				t.Fatalf("Parse(%q) error = %v", tc.filter, err)
			}
			attr, value, ok := IndexLookup(e, tc.attrs...)
			if attr != tc.wantAttr || value != tc.wantValue || ok != tc.wantOK {
				t.Errorf("IndexLookup(%q, %q) = %q, %q, %v, want %q, %q, %v", tc.filter, tc.attrs, attr, value, ok, tc.wantAttr, tc.wantValue, tc.wantOK)
			}
		})
	}
}

// TestIndexLookupSound checks the contract: every resource that Match
// accepts has the looked-up value in the looked-up attribute.
func TestIndexLookupSound(t *testing.T) {
	t.Parallel()
	user := decode(t, bjensen)
	for _, f := range []string{
		`userName eq "BJENSEN@example.com"`,
		`emails[type eq "work"].value eq "bjensen@example.com"`,
		`emails eq "babs@jensen.org" and active eq true`,
		`externalId eq "701984" and (title pr or nosuch pr)`,
	} {
		e, err := Parse(f)
		if err != nil {
			t.Fatalf("Parse(%q) error = %v", f, err)
		}
		if !Match(e, user, EvalOptions{}) {
			t.Fatalf("Match(%q, bjensen) = false, want true", f)
		}
		attr, value, ok := IndexLookup(e)
		if !ok {
			t.Fatalf("IndexLookup(%q) ok = false, want true", f)
		}
		p, err := ParsePath(attr)
		if err != nil {
			t.Fatalf("ParsePath(%q) error = %v", attr, err)
		}
		probe := &Compare{Attr: p.AttrPath, Op: Eq, Value: value}
		if !Match(probe, user, EvalOptions{}) {
			t.Errorf("IndexLookup(%q) = %q, %q, which bjensen does not satisfy", f, attr, value)
		}
	}
}
