package scimfilter

import "strings"

// IndexLookup finds an equality on an indexed attribute that every resource
// matching e must satisfy, so that the server can fetch candidates from an
// index and then run Match on them instead of scanning every resource.
//
// It looks at e itself and, through "and", at its conjuncts (never under
// "or" or "not"), for attr eq "string": plain (userName eq "x"),
// URN-qualified with a core URN, dotted (emails.value eq "x"), a complex
// attribute without sub-attribute (emails eq "x", which compares
// emails.value), and inside value paths (emails[type eq "work" and
// value eq "x"], and Entra's emails[type eq "work"].value eq "x").
//
// attrs lists the indexed attributes in order of preference, spelled as the
// caller wants them returned ("userName", "emails.value",
// "urn:…:enterprise:2.0:User:employeeNumber"); they match case-insensitively.
// Without attrs the preference is id, userName, externalId, displayName,
// emails.value. The returned value is the literal from the filter, unfolded:
// an index for a case-insensitive attribute (see DefaultCaseExact) must be
// keyed by strings.ToLower of the value to find every candidate Match
// would accept.
func IndexLookup(e Expr, attrs ...string) (attr, value string, ok bool) {
	if len(attrs) == 0 {
		attrs = []string{"id", "userName", "externalId", "displayName", "emails.value"}
	}
	found := map[string]string{}
	collectEqualities(e, "", found)
	for _, a := range attrs {
		if v, ok := found[canonicalKey(a)]; ok {
			return a, v, true
		}
	}
	return "", "", false
}

// collectEqualities records key → value for the string equalities that e
// requires. prefix is the Key of the enclosing value path, if any. The first
// equality found for a key wins; any of them is a valid lookup because all
// must hold.
func collectEqualities(e Expr, prefix string, found map[string]string) {
	switch x := e.(type) {
	case *Logical:
		if x.Op == And {
			collectEqualities(x.Left, prefix, found)
			collectEqualities(x.Right, prefix, found)
		}
	case *ValuePath:
		if prefix == "" {
			collectEqualities(x.Filter, AttrPath{URN: x.Attr.URN, Name: x.Attr.Name}.Key(), found)
		}
	case *Compare:
		s, isString := x.Value.(string)
		if x.Op != Eq || !isString {
			return
		}
		key := x.Attr.Key()
		if prefix != "" {
			key = prefix + "." + strings.ToLower(x.Attr.Name)
		}
		add := func(k string) {
			if _, dup := found[k]; !dup {
				found[k] = s
			}
		}
		add(key)
		if x.Attr.Sub == "" && prefix == "" {
			// emails eq "x" compares emails.value.
			add(key + ".value")
		}
	}
}

// canonicalKey turns a caller's attribute spelling into the form Key uses.
func canonicalKey(a string) string {
	p, err := ParsePath(a)
	if err != nil || p.Filter != nil {
		return strings.ToLower(a)
	}
	return p.Key()
}
