package scimfilter

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fuzzFilterSeeds are the RFC and IdP filters plus malformed variants.
func fuzzFilterSeeds() []string {
	seeds := []string{
		`emails[type eq "work"] eq "user@contoso.com"`,
		`externalId eq jyoung`,
		`active gt true`,
		`displayName eq "caf\u00e9 O\"Brien"`,
		`x eq -1.5e3 or y eq null and not (z pr)`,
		`members[value eq "a" or value eq "b"]`,
		`((((a pr))))`,
		`emails[type eq "work"].value pr`,
		`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.$ref pr`,
	}
	for _, f := range rfcFilters {
		seeds = append(seeds, f.in)
	}
	for _, f := range idpFilters {
		seeds = append(seeds, f.in)
	}
	return seeds
}

// FuzzParse checks that Parse never panics, that whatever it accepts renders
// to text that parses back to the same tree, and that evaluating and index
// extraction never panic.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzFilterSeeds() {
		f.Add(s)
	}
	user := decode(f, bjensen)
	grp := decode(f, group)
	f.Fuzz(func(t *testing.T, s string) {
		e, err := Parse(s)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("Parse(%q) error type %T, want *Error", s, err)
			}
			return
		}
		text := e.String()
		if len(text) <= MaxLength {
			again, err := Parse(text)
			if err != nil {
				t.Fatalf("Parse(%q) error = %v; it rendered from Parse(%q)", text, err, s)
			}
			if diff := cmp.Diff(e, again); diff != "" {
				t.Fatalf("Parse(Parse(%q).String()) mismatch (-first +second):\n%s", s, diff)
			}
		}
		Match(e, user, EvalOptions{})
		Match(e, grp, EvalOptions{})
		IndexLookup(e)
	})
}

// FuzzParsePath checks that ParsePath never panics and that what it accepts
// round-trips through String.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		`userName`, `name.familyName`, `Active`,
		`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber`,
		`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`,
		`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`,
		`emails[type eq "work"].value`,
		`addresses[type eq "work"].streetAddress`,
		`addresses[type eq "other"].Formatted`,
		`phoneNumbers[type eq "mobile"].value`,
		`members[value eq "89bb1940-b905-4575-9e7f-6f887cfb368e"]`,
		`members[value eq "a" or value eq "b"]`,
		`members`, `emails[type eq "work"`, `emails[`, `.x`,
	} {
		f.Add(s)
	}
	user := decode(f, bjensen)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePath(s)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("ParsePath(%q) error type %T, want *Error", s, err)
			}
			return
		}
		text := p.String()
		if len(text) <= MaxLength {
			again, err := ParsePath(text)
			if err != nil {
				t.Fatalf("ParsePath(%q) error = %v; it rendered from ParsePath(%q)", text, err, s)
			}
			if diff := cmp.Diff(p, again); diff != "" {
				t.Fatalf("ParsePath(ParsePath(%q).String()) mismatch (-first +second):\n%s", s, diff)
			}
		}
		_ = p.Key()
		if emails, ok := user["emails"].([]any); ok {
			for _, el := range emails {
				p.Matches(el, EvalOptions{})
			}
		}
	})
}
