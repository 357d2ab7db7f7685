package scimingest

import (
	"bytes"
	"encoding/json"
	bolt "go.etcd.io/bbolt"
	"net/http"
	"strconv"
	"strings"

	scimerrors "github.com/elimity-com/scim/errors"
	"github.com/elimity-com/scim/schema"

	"github.com/scimflow/scimflow/services/scim-ingest/scimpatch"
)

// Schema URNs scimflow stores and serves.
const (
	userURN       = "urn:ietf:params:scim:schemas:core:2.0:User"
	groupURN      = "urn:ietf:params:scim:schemas:core:2.0:Group"
	enterpriseURN = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	listURN       = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
	patchURN      = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
)

// Resource kinds, as the provisioning log names them.
const (
	kindUser  = "USER"
	kindGroup = "GROUP"
)

// schemas holds the schemas a server validates and advertises. They come from elimity-com/scim, trimmed:
// the user schema has no password (so the library's validation drops it and it is never stored), and
// members are handled by scimflow itself, not by the library's validator (the group schema used for
// validation has no members; the advertised one has).
type schemas struct {
	user, enterprise, group         schema.Schema // validation
	advertisedUser, advertisedGroup schema.Schema
	userPatch, groupPatch           scimpatch.Schema // the shapes scimpatch applies operations to
}

func newSchemas() schemas {
	externalID := schema.SimpleCoreAttribute(schema.SimpleStringParams(schema.StringParams{
		CaseExact: true, Mutability: schema.AttributeMutabilityReadWrite(), Name: schema.CommonAttributeExternalID,
		Uniqueness: schema.AttributeUniquenessNone(),
	}))
	user := without(schema.CoreUserSchema(), "password")
	group := schema.CoreGroupSchema()
	s := schemas{advertisedUser: user, advertisedGroup: group, enterprise: schema.ExtensionEnterpriseUser(),
		userPatch: scimpatch.UserSchema(), groupPatch: scimpatch.GroupSchema()}
	s.user = withAttr(user, externalID)
	s.group = withAttr(without(group, "members"), externalID)
	return s
}

func without(s schema.Schema, names ...string) schema.Schema {
	var attrs schema.Attributes
	for _, a := range s.Attributes {
		drop := false
		for _, n := range names {
			if strings.EqualFold(a.Name(), n) {
				drop = true
			}
		}
		if !drop {
			attrs = append(attrs, a)
		}
	}
	s.Attributes = attrs
	return s
}

func withAttr(s schema.Schema, a schema.CoreAttribute) schema.Schema {
	attrs := make(schema.Attributes, 0, len(s.Attributes)+1)
	attrs = append(attrs, s.Attributes...)
	s.Attributes = append(attrs, a)
	return s
}

// decodeJSON decodes a request body into a JSON object with numbers kept as json.Number.
func decodeJSON(body []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil || m == nil {
		return nil, errorf(http.StatusBadRequest, scimInvalidSyntax, "request body is not a JSON object")
	}
	if d.More() {
		return nil, errorf(http.StatusBadRequest, scimInvalidSyntax, "trailing data after the JSON object")
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

// legacyURN maps the legacy schema URNs of OneLogin's default template to current ones; "" means
// the resource's own core URN.
func legacyURN(s string) (string, bool) {
	switch strings.ToLower(s) {
	case "urn:scim:schemas:core:2.0":
		return "", true
	case "urn:scim:schemas:core:2.0:user":
		return userURN, true
	case "urn:scim:schemas:core:2.0:group":
		return groupURN, true
	case "urn:scim:schemas:extension:enterprise:2.0":
		return enterpriseURN, true
	}
	return "", false
}

// normalizeBody rewrites, in place, the shapes real IdPs send that the library rejects or silently
// drops (scim-idp-requests.md §8.4, §9): legacy OneLogin URNs, an enterprise extension key in another
// letter case, manager sent as a plain string, and string booleans ("True", "False"). The library's own
// switch for string booleans (schema.SetAllowStringValues) is a process-wide mutable global, so it is
// not used; booleans are coerced here, per attribute, from the schema.
func (sc schemas) normalizeBody(m map[string]any, coreURN string) {
	if list, ok := m["schemas"].([]any); ok {
		for i, v := range list {
			s, _ := v.(string)
			if to, ok := legacyURN(s); ok {
				if to == "" {
					to = coreURN
				}
				list[i] = to
			}
		}
	}
	for k, v := range m {
		if to, ok := legacyURN(k); ok && to == enterpriseURN || strings.EqualFold(k, enterpriseURN) && k != enterpriseURN {
			delete(m, k)
			m[enterpriseURN] = v
		}
	}
	if coreURN == userURN {
		coerceBools(sc.user.Attributes, m)
		if ext, ok := m[enterpriseURN].(map[string]any); ok {
			for k, v := range ext {
				if strings.EqualFold(k, "manager") {
					if s, ok := v.(string); ok {
						if s == "" {
							delete(ext, k)
						} else {
							ext[k] = map[string]any{"value": s}
						}
					}
				}
			}
			coerceBools(sc.enterprise.Attributes, ext)
		}
	}
}

// coerceBools turns string booleans into booleans where the schema says boolean, and wraps a single
// object sent for a multi-valued attribute in a list.
func coerceBools(attrs schema.Attributes, m map[string]any) {
	for k, v := range m {
		for _, a := range attrs {
			if !strings.EqualFold(a.Name(), k) {
				continue
			}
			if mv, ok := v.(map[string]any); ok && a.MultiValued() {
				v = []any{mv} // a single object for a multi-valued attribute
				m[k] = v
			}
			switch {
			case a.AttributeType() == "boolean":
				m[k] = coerceBool(v)
			case a.AttributeType() == "complex":
				switch x := v.(type) {
				case map[string]any:
					coerceBools(a.SubAttributes(), x)
				case []any:
					for _, e := range x {
						if em, ok := e.(map[string]any); ok {
							coerceBools(a.SubAttributes(), em)
						}
					}
				}
			}
		}
	}
}

func coerceBool(v any) any {
	if s, ok := v.(string); ok {
		if b, err := strconv.ParseBool(strings.ToLower(strings.TrimSpace(s))); err == nil {
			return b
		}
	}
	return v
}

// validateUser validates a POST or PUT body and returns the attributes to store.
func (sc schemas) validateUser(m map[string]any) (map[string]any, error) {
	sc.normalizeBody(m, userURN)
	attrs, serr := sc.user.Validate(m)
	if serr != nil {
		return nil, libError(serr, "user")
	}
	if ext, ok := m[enterpriseURN]; ok && ext != nil {
		ea, serr := sc.enterprise.ValidateExtension(ext)
		if serr != nil {
			return nil, libError(serr, "enterprise extension")
		}
		if len(ea) > 0 {
			attrs[enterpriseURN] = ea
		}
	}
	attrs = canonical(attrs)
	if strings.TrimSpace(strAttr(attrs, "userName")) == "" {
		return nil, errorf(http.StatusBadRequest, scimInvalidValue, "userName is required")
	}
	return attrs, nil
}

// validateGroup validates a POST or PUT body and returns the attributes to store and the member ids
// (nil when the body has no members attribute).
func (sc schemas) validateGroup(m map[string]any, maxMembers int) (map[string]any, []string, error) {
	sc.normalizeBody(m, groupURN)
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
		return nil, nil, errorf(http.StatusBadRequest, scimInvalidValue, "displayName is required")
	}
	if hasMembers && members == nil {
		members = []string{}
	}
	return attrs, dedupe(members), nil
}

// memberIDs reads a members value: a list (or a single element) of {"value": id} objects; a bare
// string is taken as an id (Microsoft's Postman collection sends one).
func memberIDs(v any, maxMembers int) ([]string, error) {
	var list []any
	switch x := v.(type) {
	case nil:
		return nil, nil
	case []any:
		list = x
	default:
		list = []any{x}
	}
	if len(list) > maxMembers {
		return nil, errorf(http.StatusBadRequest, scimTooMany, "%d members in one request; the limit is %d", len(list), maxMembers)
	}
	ids := make([]string, 0, len(list))
	for _, e := range list {
		switch x := e.(type) {
		case string:
			ids = append(ids, x)
		case map[string]any:
			var id string
			for k, v := range x {
				if strings.EqualFold(k, "value") {
					id, _ = v.(string)
				}
			}
			if id == "" {
				return nil, errorf(http.StatusBadRequest, scimInvalidValue, "a member has no value")
			}
			ids = append(ids, id)
		default:
			return nil, errorf(http.StatusBadRequest, scimInvalidValue, "a member is neither an object nor an id")
		}
	}
	return ids, nil
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
	return errorf(http.StatusBadRequest, scimType, "invalid %s: %s", what, e.Detail)
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
	schemasList := []any{userURN}
	if kind == kindGroup {
		endpoint, rt = "Groups", "Group"
		schemasList = []any{groupURN}
		if members != nil {
			ms := make([]any, len(members))
			base := s.scimBase(idp) + "/Users/"
			for i, m := range members {
				ms[i] = map[string]any{"value": m, "$ref": base + m, "type": "User"}
			}
			out["members"] = ms
		}
	} else {
		if _, ok := rec.Attrs[enterpriseURN]; ok {
			schemasList = append(schemasList, enterpriseURN)
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
				a = strings.TrimPrefix(a, strings.ToLower(userURN)+":")
				a = strings.TrimPrefix(a, strings.ToLower(groupURN)+":")
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
