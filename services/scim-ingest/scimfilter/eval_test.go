package scimfilter

import (
	"encoding/json"
	"testing"
)

// bjensen is the full User of RFC 7643 §8.2 plus the enterprise extension of
// §8.3, with Entra-style mixed-case keys in places.
const bjensen = `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
  "id": "2819c223-7f76-453a-919d-413861904646",
  "externalId": "701984",
  "userName": "bjensen@example.com",
  "name": {"formatted": "Ms. Barbara J Jensen, III", "familyName": "Jensen", "givenName": "Barbara", "middleName": "Jane"},
  "displayName": "Babs Jensen",
  "nickName": "Babs",
  "profileUrl": "https://login.example.com/bjensen",
  "emails": [
    {"value": "bjensen@example.com", "type": "work", "primary": true},
    {"value": "babs@jensen.org", "type": "home"}
  ],
  "phoneNumbers": [{"value": "555-555-8377", "type": "work"}],
  "userType": "Employee",
  "title": "Tour Guide",
  "active": true,
  "loginCount": 42,
  "ratio": 0.5,
  "emptyTitle": "",
  "groups": [],
  "Meta": {
    "resourceType": "User",
    "created": "2010-01-23T04:56:22Z",
    "lastModified": "2011-05-13T04:42:34Z",
    "version": "W/\"3694e05e9dff591\"",
    "location": "https://example.com/v2/Users/2819c223-7f76-453a-919d-413861904646"
  },
  "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
    "employeeNumber": "701984",
    "costCenter": "4130",
    "department": "Tour Operations",
    "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d", "$ref": "../Users/26118915-6090-4610-87e4-49d8ca9f808d", "displayName": "John Smith"}
  }
}`

const group = `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
  "id": "e9e30dba-f08f-4109-8486-d5c6a331660a",
  "displayName": "Tour Guides",
  "members": [
    {"value": "2819c223-7f76-453a-919d-413861904646", "$ref": "https://example.com/v2/Users/2819c223-7f76-453a-919d-413861904646", "display": "Babs Jensen"},
    {"value": "902c246b-6245-4190-8e05-00816be7344a", "display": "Mandy Pepperidge"}
  ]
}`

func decode(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("json.Unmarshal: %v", err)
	}
	return m
}

func TestMatch(t *testing.T) {
	t.Parallel()
	user := decode(t, bjensen)
	tests := []struct {
		filter string
		want   bool
	}{
		// RFC 7644 §3.4.2.2 examples.
		{`userName eq "bjensen@example.com"`, true},
		{`name.familyName co "ens"`, true},
		{`name.familyName co "O'Malley"`, false},
		{`userName sw "B"`, true},
		{`userName sw "J"`, false},
		{`urn:ietf:params:scim:schemas:core:2.0:User:userName sw "bJ"`, true},
		{`title pr`, true},
		{`meta.lastModified gt "2011-05-13T04:42:34Z"`, false},
		{`meta.lastModified ge "2011-05-13T04:42:34Z"`, true},
		{`meta.lastModified lt "2011-05-13T04:42:34Z"`, false},
		{`meta.lastModified le "2011-05-13T04:42:34Z"`, true},
		{`meta.lastModified gt "2011-05-13T04:42:33.9Z"`, true},
		{`meta.lastModified eq "2011-05-13T06:42:34+02:00"`, true},
		{`meta.lastModified lt "2011-05-13T06:42:35.0000001+02:00"`, true},
		{`meta.lastModified ge "0001-01-03T00:00:00.0000000Z"`, true},
		{`meta.created gt "2010-01-23T04:56:22"`, false},
		{`title pr and userType eq "Employee"`, true},
		{`title pr or userType eq "Intern"`, true},
		{`schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"`, true},
		{`userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")`, true},
		{`userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")`, false},
		{`userType eq "Employee" and (emails.type eq "work")`, true},
		{`userType eq "Employee" and emails[type eq "work" and value co "@example.com"]`, true},
		{`emails[type eq "home" and value co "@example.com"]`, false},
		{`emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]`, true},
		// Case-insensitive names, operators and (non-caseExact) values.
		{`USERNAME EQ "BJENSEN@EXAMPLE.COM"`, true},
		{`DisplayName eq "babs jensen"`, true},
		{`(ActiVe eq true) and meta.lastmodified ge "2011-05-13T04:42:34Z"`, true},
		{`meta.resourceType eq "user"`, false},
		{`meta.resourceType eq "User"`, true},
		// caseExact attributes (DefaultCaseExact).
		{`externalId eq "701984"`, true},
		{`id eq "2819C223-7F76-453A-919D-413861904646"`, false},
		{`id eq "2819c223-7f76-453a-919d-413861904646"`, true},
		{`profileUrl eq "https://login.example.com/BJENSEN"`, false},
		// Entra shapes.
		{`emails[type eq "work"].value eq "BJensen@example.com"`, true},
		{`emails[type eq "home"].value eq "bjensen@example.com"`, false},
		{`id eq "2819c223-7f76-453a-919d-413861904646" and manager eq "26118915-6090-4610-87e4-49d8ca9f808d"`, true},
		{`userName eq "bjensen@example.com" and urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984"`, true},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:user:manager.value eq "26118915-6090-4610-87e4-49d8ca9f808d"`, true},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.$ref pr`, true},
		{`urn:ietf:params:scim:schemas:extension:other:2.0:User:employeeNumber pr`, false},
		{`active eq true and (meta.lastModified ge "0001-01-03T00:00:00.0000000Z" and meta.lastModified le "2011-05-13T04:42:34Z")`, true},
		// Types.
		{`active eq false`, false},
		{`active ne false`, true},
		{`active eq "true"`, false},
		{`loginCount eq 42`, true},
		{`loginCount gt 41.5`, true},
		{`loginCount le 4.2e1`, true},
		{`loginCount eq "42"`, false},
		{`ratio lt 1`, true},
		{`title gt "A"`, true},
		{`title lt "a"`, false},
		// Presence and null (RFC 7643 §2.5).
		{`emptyTitle pr`, false},
		{`groups pr`, false},
		{`nosuch pr`, false},
		{`name pr`, true},
		{`nosuch eq null`, true},
		{`groups eq null`, true},
		{`title eq null`, false},
		{`title ne null`, true},
		{`nosuch ne "x"`, true},
		{`title ne "Tour Guide"`, false},
		{`emails.type ne "work"`, true},
		{`nosuch eq "x"`, false},
		{`not (nosuch eq "x")`, true},
		{`name.nosuch co "x"`, false},
		{`emails[nosuch pr]`, false},
		{`emails[not (type eq "work")]`, true},
		{`emails[primary eq true]`, true},
		{`phoneNumbers[primary eq true]`, false},
		{`title[value eq "x"]`, false},
		{`schemas[value sw "urn:ietf:params:scim:schemas:extension"]`, true},
	}
	for _, tc := range tests {
		t.Run(tc.filter, func(t *testing.T) {
			t.Parallel()
			e, err := Parse(tc.filter)
			if err != nil {
				t.Fatalf("Parse(%q) error = %v", tc.filter, err)
			}
			if got := Match(e, user, EvalOptions{}); got != tc.want {
				t.Errorf("Match(%q, bjensen) = %v, want %v", tc.filter, got, tc.want)
			}
		})
	}
}

func TestMatchGroup(t *testing.T) {
	t.Parallel()
	g := decode(t, group)
	tests := []struct {
		filter string
		want   bool
	}{
		{`displayName eq "tour guides"`, true},
		{`id eq "e9e30dba-f08f-4109-8486-d5c6a331660a" and members[value eq "902c246b-6245-4190-8e05-00816be7344a"]`, true},
		{`members[value eq "nobody"]`, false},
		{`members.value eq "2819c223-7f76-453a-919d-413861904646"`, true},
		{`members eq "902c246b-6245-4190-8e05-00816be7344a"`, true},
		{`members eq "902C246B-6245-4190-8E05-00816BE7344A"`, false},
		{`members[value eq "902C246B-6245-4190-8E05-00816BE7344A"]`, false},
		{`members[$ref sw "https://example.com/"]`, true},
		{`members[$ref sw "HTTPS://example.com/"]`, false},
		{`members[display co "mandy"]`, true},
	}
	for _, tc := range tests {
		t.Run(tc.filter, func(t *testing.T) {
			t.Parallel()
			e, err := Parse(tc.filter)
			if err != nil {
				t.Fatalf("Parse(%q) error = %v", tc.filter, err)
			}
			if got := Match(e, g, EvalOptions{}); got != tc.want {
				t.Errorf("Match(%q, group) = %v, want %v", tc.filter, got, tc.want)
			}
		})
	}
}

func TestMatchCaseExactOption(t *testing.T) {
	t.Parallel()
	user := decode(t, bjensen)
	e, err := Parse(`userName eq "BJENSEN@example.com"`)
	if err != nil {
		t.Fatal(err)
	}
	exact := EvalOptions{CaseExact: func(key string) bool { return key == "username" }}
	if got := Match(e, user, exact); got {
		t.Errorf("Match(%v, bjensen, userName caseExact) = %v, want false", e, got)
	}
	if got := Match(e, user, EvalOptions{}); !got {
		t.Errorf("Match(%v, bjensen, default) = %v, want true", e, got)
	}
}

func TestPathMatches(t *testing.T) {
	t.Parallel()
	p, err := ParsePath(`emails[type eq "work"].value`)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Matches(map[string]any{"type": "Work", "value": "x"}, EvalOptions{}); !got {
		t.Errorf("%v.Matches(work email) = %v, want true", p, got)
	}
	if got := p.Matches(map[string]any{"type": "home"}, EvalOptions{}); got {
		t.Errorf("%v.Matches(home email) = %v, want false", p, got)
	}
	if got := p.Matches("scalar", EvalOptions{}); got {
		t.Errorf("%v.Matches(scalar) = %v, want false", p, got)
	}
	all, err := ParsePath(`emails`)
	if err != nil {
		t.Fatal(err)
	}
	if got := all.Matches(nil, EvalOptions{}); !got {
		t.Errorf("%v.Matches(nil) = %v, want true", all, got)
	}
}

func TestDefaultCaseExact(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]bool{
		"id": true, "externalid": true, "meta.version": true, "meta.resourcetype": true, "meta.location": true,
		"members.$ref": true, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user:manager.$ref": true,
		"members.value": true, "manager.value": true, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user:manager.value": true,
		"username": false, "emails.value": false, "displayname": false, "meta.lastmodified": false, "emails.type": false,
	} {
		if got := DefaultCaseExact(key); got != want {
			t.Errorf("DefaultCaseExact(%q) = %v, want %v", key, got, want)
		}
	}
}
