package scimingest

import (
	"bytes"
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/internal/fault"
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
		return 0, fault.Coded(fault.Invalid, scimInvalidValue, "%s must be an integer", name)
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
			return fault.Coded(fault.Invalid, scimInvalidFilter, "filter longer than %d bytes", s.cfg.MaxFilterLength)
		}
		var err error
		if f, err = parseFilter(raw); err != nil {
			return fault.Coded(fault.Invalid, scimInvalidFilter, "%s", err.Error())
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
	withRelated := (kind == kindGroup && proj.wants("members")) || (kind == kindUser && proj.wants("groups"))
	q := listQuery{kind: kind, idp: idp, start: start, count: count, withRelated: withRelated,
		scanLimit: s.cfg.FilterScanLimit, scanTimeout: s.cfg.FilterScanTimeout.D()}
	if f != nil {
		q.filter = f
		q.filterRelated = (kind == kindGroup && f.mentions("members")) || (kind == kindUser && f.mentions("groups"))
		q.match = func(id string, rec *resourceRec, related []string) bool {
			return f.match(s.render(idp, kind, id, rec, related))
		}
	}
	total, page, err := s.store.list(r.Context(), q)
	if err != nil {
		return err
	}
	resp := listResponse{Schemas: []string{scimschema.ListResponse}, StartIndex: start, TotalResults: total, Resources: []any{}}
	for _, it := range page {
		resp.Resources = append(resp.Resources, proj.apply(s.render(idp, kind, it.id, it.rec, it.related)))
	}
	resp.ItemsPerPage = len(resp.Resources)
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// listQuery is a list request as the store runs it.
type listQuery struct {
	kind, idp    string
	start, count int
	withRelated  bool // read each returned resource's members (group) or groups (user)
	// filter, when set, selects resources: match is called with the resource (and its related ids
	// when filterRelated) for every candidate.
	filter        filter
	filterRelated bool
	match         func(id string, rec *resourceRec, related []string) bool
	scanLimit     int           // resources a non-indexed filter may read
	scanTimeout   time.Duration // how long a non-indexed filter may scan
}

// listed is one resource of a page.
type listed struct {
	id      string
	rec     *resourceRec
	related []string
}

// scanCheckEvery is how many resources a scan reads between checks of its context and time budget.
const scanCheckEvery = 64

// list returns the number of resources q selects and the page of them it asks for, in stable
// (creation) order. An equality on an indexed attribute reads only the index's candidates; any other
// filter scans the IdP's resources, at most scanLimit of them and for at most scanTimeout, and stops
// when ctx ends (the client left): past either budget it answers 400 tooMany, as the scan cap does.
func (st *store) list(ctx context.Context, q listQuery) (int, []listed, error) {
	bucket := kindBucket(q.kind)
	var page []listed
	total := 0
	err := st.db.View(func(tx *bolt.Tx) error {
		emit := func(id string, rec *resourceRec) {
			var related []string
			if q.withRelated {
				related = relatedIDs(tx, q.kind, q.idp, id)
			}
			page = append(page, listed{id: id, rec: rec, related: related})
		}
		p := prefix(q.idp)
		if q.filter == nil {
			// No filter: count the keys, decode only the page.
			c := tx.Bucket([]byte(bucket)).Cursor()
			for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
				total++
				if total >= q.start && len(page) < q.count {
					rec, err := decodeRec(v)
					if err != nil {
						return err
					}
					emit(string(k[len(p):]), rec)
				}
			}
			return nil
		}
		check := func(id string, rec *resourceRec) {
			var related []string
			if q.filterRelated {
				if q.kind == kindGroup {
					related = children(tx, bucketMembers, q.idp, id)
				} else {
					related = userGroups(tx, q.idp, id)
				}
			}
			if !q.match(id, rec, related) {
				return
			}
			total++
			if total >= q.start && len(page) < q.count {
				emit(id, rec)
			}
		}
		if ids, indexed := candidates(tx, q.kind, q.idp, q.filter); indexed {
			for _, id := range ids {
				rec, err := getRec(tx, bucket, q.idp, id)
				if err != nil {
					return err
				}
				if rec != nil {
					check(id, rec)
				}
			}
			return nil
		}
		start := st.now()
		scanned := 0
		c := tx.Bucket([]byte(bucket)).Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			if scanned++; scanned > q.scanLimit {
				return fault.Coded(fault.Invalid, scimTooMany,
					"the filter uses no indexed equality and would scan more than %d resources; add userName, externalId, emails or displayName eq", q.scanLimit)
			}
			if scanned%scanCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
				if st.now().Sub(start) > q.scanTimeout {
					return fault.Coded(fault.Invalid, scimTooMany,
						"the filter uses no indexed equality and its scan took longer than %s; add userName, externalId, emails or displayName eq", q.scanTimeout)
				}
			}
			rec, err := decodeRec(v)
			if err != nil {
				return err
			}
			check(string(k[len(p):]), rec)
		}
		return nil
	})
	return total, page, err
}

// candidates returns, in stable order, the ids an indexed equality of f allows; ok is false when f
// has none.
func candidates(tx *bolt.Tx, kind, idp string, f filter) ([]string, bool) {
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
			if id := lookupUnique(tx, bucketUserName, idp, userNameKey(v)); id != "" {
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
