package scimingest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"

	scimerrors "github.com/elimity-com/scim/errors"

	"github.com/scimflow/scimflow/internal/fault"
	"github.com/scimflow/scimflow/person"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// Resource kinds, as the provisioning log names them.
const (
	kindUser  = "USER"
	kindGroup = "GROUP"
)

// decodeJSON decodes a request body into a JSON object with numbers kept as json.Number.
func decodeJSON(body []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil || m == nil {
		return nil, fault.Coded(fault.Invalid, scimInvalidSyntax, "request body is not a JSON object")
	}
	if d.More() {
		return nil, fault.Coded(fault.Invalid, scimInvalidSyntax, "trailing data after the JSON object")
	}
	return m, nil
}

// canonical round-trips v through JSON so that stored and freshly validated attributes compare equal
// (int64 and json.Number, []any and typed slices), and drops unassigned values (RFC 7643 §2.5: null,
// [] and {} mean "no value"). Without that, Entra's "roles": [] came back from the library as null,
// was stored and served as null, and the next PATCH, which drops it, looked like a change.
func canonical(v map[string]any) map[string]any {
	b, _ := json.Marshal(v)
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var out map[string]any
	d.Decode(&out)
	if out == nil {
		return map[string]any{}
	}
	pruneMap(out)
	return out
}

// pruneMap removes unassigned values from m, depth first.
func pruneMap(m map[string]any) {
	for k, v := range m {
		if v = prune(v); v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
}

// prune returns v without unassigned values, or nil if nothing is left.
func prune(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case map[string]any:
		pruneMap(x)
		if len(x) == 0 {
			return nil
		}
		return x
	case []any:
		out := x[:0]
		for _, e := range x {
			if e = prune(e); e != nil {
				out = append(out, e)
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	}
	return v
}

// validateUser validates a POST or PUT body and returns the attributes to store.
func (sc schemas) validateUser(m map[string]any) (map[string]any, error) {
	sc.normalizeBody(m, scimschema.User)
	attrs, serr := sc.user.Validate(m)
	if serr != nil {
		return nil, libError(serr, "user")
	}
	if ext, ok := m[scimschema.Enterprise]; ok && ext != nil {
		ea, serr := sc.enterprise.ValidateExtension(ext)
		if serr != nil {
			return nil, libError(serr, "enterprise extension")
		}
		if len(ea) > 0 {
			attrs[scimschema.Enterprise] = ea
		}
	}
	attrs = canonical(attrs)
	if strings.TrimSpace(strAttr(attrs, "userName")) == "" {
		return nil, fault.Coded(fault.Invalid, scimInvalidValue, "userName is required")
	}
	if err := checkEmails(attrs); err != nil {
		return nil, err
	}
	return attrs, nil
}

// checkEmails refuses email addresses that cannot safely identify a person (person.CheckEmail:
// control, format and zero-width characters, white space inside, not exactly one '@'): the userName
// and every value of emails that looks like an address (holds an '@'). Such characters make two
// addresses look alike to a person while differing to a program, and would reach the registry, the
// login checks and the identity headers auth sets. Values without an '@' are not addresses and are
// kept as sent (Microsoft's SCIM Inbound collection sends an ISO timestamp as an email value); they
// can never equal an address a login presents.
func checkEmails(attrs map[string]any) error {
	if u := strAttr(attrs, "userName"); strings.Contains(u, "@") {
		if err := person.CheckEmail(u); err != nil {
			return fault.Coded(fault.Invalid, scimInvalidValue, "userName: %v", err)
		}
	}
	for i, e := range emailValues(attrs) {
		if !strings.Contains(e, "@") {
			continue
		}
		if err := person.CheckEmail(e); err != nil {
			return fault.Coded(fault.Invalid, scimInvalidValue, "emails[%d].value: %v", i, err)
		}
	}
	return nil
}

// validateGroup validates a POST or PUT body and returns the attributes to store and the member ids
// (nil when the body has no members attribute).
func (sc schemas) validateGroup(m map[string]any, maxMembers int) (map[string]any, []string, error) {
	sc.normalizeBody(m, scimschema.Group)
	var members []string
	var hasMembers bool
	for k, v := range m {
		if strings.EqualFold(k, "members") {
			hasMembers = true
			ids, err := memberIDs(v, maxMembers)
			if err != nil {
				return nil, nil, err
			}
			members = append(members, ids...)
			delete(m, k)
		}
	}
	attrs, serr := sc.group.Validate(m)
	if serr != nil {
		return nil, nil, libError(serr, "group")
	}
	attrs = canonical(attrs)
	if strings.TrimSpace(strAttr(attrs, "displayName")) == "" {
		return nil, nil, fault.Coded(fault.Invalid, scimInvalidValue, "displayName is required")
	}
	if hasMembers && members == nil {
		members = []string{}
	}
	return attrs, dedupe(members), nil
}

func dedupe(ids []string) []string {
	if ids == nil {
		return nil
	}
	seen := make(map[string]bool, len(ids))
	out := ids[:0:0]
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// libError turns the library's validation error into ours, saying what was validated; the library's
// details are generic.
func libError(e *scimerrors.ScimError, what string) error {
	scimType := string(e.ScimType)
	if scimType == "" {
		scimType = scimInvalidValue
	}
	return fault.Coded(fault.Invalid, scimType, "invalid %s: %s", what, e.Detail)
}

// render builds the SCIM representation of a stored resource. related is a group's member ids, or a
// user's groups (from userGroups); nil leaves the attribute out.
func (s *server) render(idp, kind, id string, rec *resourceRec, related []string) map[string]any {
	members := related
	out := make(map[string]any, len(rec.Attrs)+4)
	for k, v := range rec.Attrs {
		out[k] = v
	}
	out["id"] = id
	endpoint, rt := "Users", "User"
	schemasList := []any{scimschema.User}
	if kind == kindGroup {
		endpoint, rt = "Groups", "Group"
		schemasList = []any{scimschema.Group}
		if members != nil {
			ms := make([]any, len(members))
			base := s.scimBase(idp) + "/Users/"
			for i, m := range members {
				ms[i] = map[string]any{"value": m, "$ref": base + m, "type": "User"}
			}
			out["members"] = ms
		}
	} else {
		if _, ok := rec.Attrs[scimschema.Enterprise]; ok {
			schemasList = append(schemasList, scimschema.Enterprise)
		}
		if related != nil {
			gs := make([]any, 0, len(related)/2)
			base := s.scimBase(idp) + "/Groups/"
			for i := 0; i+1 < len(related); i += 2 {
				gs = append(gs, map[string]any{"value": related[i], "display": related[i+1], "$ref": base + related[i], "type": "direct"})
			}
			if len(gs) > 0 {
				out["groups"] = gs
			}
		}
	}
	out["schemas"] = schemasList
	out["meta"] = map[string]any{
		"resourceType": rt,
		"created":      rec.Created.UTC().Format("2006-01-02T15:04:05.000Z07:00"),
		"lastModified": rec.Modified.UTC().Format("2006-01-02T15:04:05.000Z07:00"),
		"location":     s.scimBase(idp) + "/" + endpoint + "/" + id,
		"version":      etag(rec.Version),
	}
	return out
}

func etag(version int64) string { return `W/"` + strconv.FormatInt(version, 10) + `"` }

// scimBase is the absolute SCIM base URL of an IdP.
func (s *server) scimBase(idp string) string {
	return s.baseURL + "/populations/" + idp + "/scim/v2"
}

// projection is the attributes / excludedAttributes query of RFC 7644 §3.9.
type projection struct {
	include, exclude []string // lower-case attribute paths
}

func parseProjection(r *http.Request) projection {
	var p projection
	for k, vs := range r.URL.Query() {
		for _, v := range vs {
			for _, a := range strings.Split(v, ",") {
				a = strings.ToLower(strings.TrimSpace(a))
				if a == "" {
					continue
				}
				a = strings.TrimPrefix(a, strings.ToLower(scimschema.User)+":")
				a = strings.TrimPrefix(a, strings.ToLower(scimschema.Group)+":")
				switch strings.ToLower(k) {
				case "attributes":
					p.include = append(p.include, a)
				case "excludedattributes":
					p.exclude = append(p.exclude, a)
				}
			}
		}
	}
	return p
}

// wants reports whether the top-level attribute name is returned.
func (p projection) wants(name string) bool {
	name = strings.ToLower(name)
	for _, e := range p.exclude {
		if e == name {
			return false
		}
	}
	if len(p.include) == 0 {
		return true
	}
	for _, a := range p.include {
		if a == name || strings.HasPrefix(a, name+".") || strings.HasPrefix(a, name+":") || strings.HasPrefix(a, name+"[") {
			return true
		}
	}
	return false
}

// apply removes what the projection excludes; id and schemas are always returned (RFC 7643 §7).
func (p projection) apply(m map[string]any) map[string]any {
	if len(p.include) == 0 && len(p.exclude) == 0 {
		return m
	}
	for k, v := range m {
		lk := strings.ToLower(k)
		if lk == "id" || lk == "schemas" {
			continue
		}
		if !p.wants(k) {
			delete(m, k)
			continue
		}
		sub, ok := v.(map[string]any)
		if !ok {
			continue
		}
		for sk := range sub {
			full := lk + "." + strings.ToLower(sk)
			if strings.HasPrefix(lk, "urn:") {
				full = lk + ":" + strings.ToLower(sk)
			}
			if !p.subWanted(lk, full) {
				delete(sub, sk)
			}
		}
	}
	return m
}

// subWanted applies sub-attribute paths (name.givenName) of the projection.
func (p projection) subWanted(parent, full string) bool {
	for _, e := range p.exclude {
		if e == full {
			return false
		}
	}
	if len(p.include) == 0 {
		return true
	}
	for _, a := range p.include {
		if a == parent || a == full {
			return true
		}
	}
	return false
}

// userGroups returns a user's groups as id, displayName pairs for render (the readOnly "groups"
// attribute of RFC 7643 §4.1.2), or nil when the user is in none.
func userGroups(tx *bolt.Tx, idp, uid string) []string {
	var out []string
	for _, gid := range children(tx, bucketUserGroups, idp, uid) {
		name := ""
		if g, err := getRec(tx, bucketGroups, idp, gid); err == nil && g != nil {
			name = strAttr(g.Attrs, "displayName")
		}
		out = append(out, gid, name)
	}
	return out
}
