package scimingest

import (
	"bytes"
	"net/http"
	"slices"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// filter is the narrow interface list needs from a parsed SCIM filter: in-memory evaluation and the
// indexed equality that narrows the candidates. filter_engine.go adapts the parser to it.
type filter interface {
	// match reports whether the rendered resource satisfies the filter.
	match(res map[string]any) bool
	// lookup returns an equality on one of attrs (in order of preference) that every match satisfies.
	lookup(attrs ...string) (attr, value string, ok bool)
	// mentions reports whether the filter refers to the attribute (top-level name, any case).
	mentions(name string) bool
}

// queryParam returns the first value of a query parameter matched case-insensitively (Entra's
// inbound collection sends startindex).
func queryParam(r *http.Request, name string) (string, bool) {
	for k, vs := range r.URL.Query() {
		if strings.EqualFold(k, name) && len(vs) > 0 {
			return vs[0], true
		}
	}
	return "", false
}

func intParam(r *http.Request, name string, def int) (int, error) {
	v, ok := queryParam(r, name)
	if !ok || strings.TrimSpace(v) == "" {
		return def, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 0, errorf(http.StatusBadRequest, scimInvalidValue, "%s must be an integer", name)
	}
	return n, nil
}

// listResponse is RFC 7644 §3.4.2's ListResponse; Resources is never null.
type listResponse struct {
	Schemas      []string `json:"schemas"`
	TotalResults int      `json:"totalResults"`
	StartIndex   int      `json:"startIndex"`
	ItemsPerPage int      `json:"itemsPerPage"`
	Resources    []any    `json:"Resources"`
}

// list answers GET /Users and /Groups: filter, pagination in stable (creation) order, projection.
// An equality on an indexed attribute (userName, externalId, emails.value, displayName, id) reads
// only the index's candidates; any other filter scans the IdP's resources, at most FilterScanLimit.
func (s *server) list(w http.ResponseWriter, r *http.Request, kind string, info *reqInfo) error {
	var f filter
	if raw, ok := queryParam(r, "filter"); ok && strings.TrimSpace(raw) != "" {
		if len(raw) > s.cfg.MaxFilterLength {
			return errorf(http.StatusBadRequest, scimInvalidFilter, "filter longer than %d bytes", s.cfg.MaxFilterLength)
		}
		var err error
		if f, err = parseFilter(raw); err != nil {
			return errorf(http.StatusBadRequest, scimInvalidFilter, "%s", err.Error())
		}
	}
	start, err := intParam(r, "startIndex", 1)
	if err != nil {
		return err
	}
	count, err := intParam(r, "count", s.cfg.DefaultCount)
	if err != nil {
		return err
	}
	start = max(start, 1)
	count = min(max(count, 0), s.cfg.MaxResults)
	proj := parseProjection(r)
	idp := info.idp.ID
	bucket := bucketUsers
	if kind == kindGroup {
		bucket = bucketGroups
	}
	resp := listResponse{Schemas: []string{scimschema.ListResponse}, StartIndex: start, Resources: []any{}}
	err = s.db.View(func(tx *bolt.Tx) error {
		withMembers := kind == kindGroup && proj.wants("members")
		withGroups := kind == kindUser && proj.wants("groups")
		emit := func(id string, rec *resourceRec) {
			var members []string
			switch {
			case withMembers:
				members = children(tx, bucketMembers, idp, id)
				if members == nil {
					members = []string{}
				}
			case withGroups:
				members = userGroups(tx, idp, id)
			}
			resp.Resources = append(resp.Resources, proj.apply(s.render(idp, kind, id, rec, members)))
		}
		if f == nil {
			// No filter: count the keys, decode only the page.
			p := prefix(idp)
			c := tx.Bucket([]byte(bucket)).Cursor()
			n := 0
			for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
				n++
				if n >= start && len(resp.Resources) < count {
					rec, err := decodeRec(v)
					if err != nil {
						return err
					}
					emit(string(k[len(p):]), rec)
				}
			}
			resp.TotalResults = n
			return nil
		}
		ids, indexed := s.candidates(tx, kind, idp, f)
		filterMembers := kind == kindGroup && f.mentions("members")
		filterGroups := kind == kindUser && f.mentions("groups")
		n, scanned := 0, 0
		check := func(id string, rec *resourceRec) {
			var members []string
			switch {
			case filterMembers:
				members = children(tx, bucketMembers, idp, id)
			case filterGroups:
				members = userGroups(tx, idp, id)
			}
			if !f.match(s.render(idp, kind, id, rec, members)) {
				return
			}
			n++
			if n >= start && len(resp.Resources) < count {
				emit(id, rec)
			}
		}
		if indexed {
			for _, id := range ids {
				rec, err := getRec(tx, bucket, idp, id)
				if err != nil {
					return err
				}
				if rec != nil {
					check(id, rec)
				}
			}
		} else {
			p := prefix(idp)
			c := tx.Bucket([]byte(bucket)).Cursor()
			for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
				if scanned++; scanned > s.cfg.FilterScanLimit {
					return errorf(http.StatusBadRequest, scimTooMany,
						"the filter uses no indexed equality and would scan more than %d resources; add userName, externalId, emails or displayName eq", s.cfg.FilterScanLimit)
				}
				rec, err := decodeRec(v)
				if err != nil {
					return err
				}
				check(string(k[len(p):]), rec)
			}
		}
		resp.TotalResults = n
		return nil
	})
	if err != nil {
		return err
	}
	resp.ItemsPerPage = len(resp.Resources)
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// candidates returns, in stable order, the ids an indexed equality of f allows; ok is false when f
// has none.
func (s *server) candidates(tx *bolt.Tx, kind, idp string, f filter) ([]string, bool) {
	var ids []string
	if kind == kindUser {
		attr, v, ok := f.lookup("id", "userName", "externalId", "emails.value")
		if !ok {
			return nil, false
		}
		switch attr {
		case "id":
			ids = []string{v}
		case "userName":
			if id := lookupUnique(tx, bucketUserName, idp, v); id != "" {
				ids = []string{id}
			}
		case "externalId":
			ids = lookupMulti(tx, bucketUserExtID, idp, v)
		case "emails.value":
			ids = lookupMulti(tx, bucketUserEmail, idp, strings.ToLower(v))
		}
	} else {
		attr, v, ok := f.lookup("id", "displayName", "externalId")
		if !ok {
			return nil, false
		}
		switch attr {
		case "id":
			ids = []string{v}
		case "displayName":
			if id := lookupUnique(tx, bucketGroupName, idp, v); id != "" {
				ids = []string{id}
			}
		case "externalId":
			ids = lookupMulti(tx, bucketGroupExtID, idp, v)
		}
	}
	slices.Sort(ids)
	return ids, true
}
