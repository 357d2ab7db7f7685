package scimingest

import (
	"net/http"
	"strings"

	"github.com/scimflow/scimflow/services/scim-ingest/scimfilter"
)

// parseFilter parses a SCIM filter with scimfilter, the full RFC 7644 grammar plus Entra's forms.
// Its errors never echo the filter (which holds e-mail addresses), so they can go to the client.
func parseFilter(raw string) (filter, error) {
	e, err := scimfilter.Parse(raw)
	if err != nil {
		return nil, err
	}
	return parsedFilter{e: e, raw: strings.ToLower(raw)}, nil
}

type parsedFilter struct {
	e   scimfilter.Expr
	raw string
}

func (f parsedFilter) match(res map[string]any) bool {
	return scimfilter.Match(f.e, res, scimfilter.EvalOptions{})
}

func (f parsedFilter) lookup(attrs ...string) (string, string, bool) {
	return scimfilter.IndexLookup(f.e, attrs...)
}

func (f parsedFilter) mentions(name string) bool {
	return strings.Contains(f.raw, strings.ToLower(name))
}

// memberSelector interprets a members[filter] PATCH path. A filter made only of value eq "id" terms
// joined by or gives the ids directly (Okta's remove members[value eq "…"]); any other filter gives
// a selector evaluated against each stored member.
func memberSelector(path string) ([]string, func(string) bool, error) {
	p, err := scimfilter.ParsePath(path)
	if err != nil {
		return nil, nil, errorf(http.StatusBadRequest, scimInvalidPath, "%s", err.Error())
	}
	if !strings.EqualFold(p.Name, "members") || p.Filter == nil || p.Sub != "" {
		return nil, nil, errorf(http.StatusBadRequest, scimInvalidPath, "unsupported members path")
	}
	if ids, ok := valueEqIDs(p.Filter); ok {
		return ids, nil, nil
	}
	return nil, func(id string) bool { return p.Matches(map[string]any{"value": id}, scimfilter.EvalOptions{}) }, nil
}

func valueEqIDs(e scimfilter.Expr) ([]string, bool) {
	switch x := e.(type) {
	case *scimfilter.Compare:
		v, ok := x.Value.(string)
		if x.Op != scimfilter.Eq || !ok || !strings.EqualFold(x.Attr.Name, "value") || x.Attr.Sub != "" || x.Attr.URN != "" {
			return nil, false
		}
		return []string{v}, true
	case *scimfilter.Logical:
		if x.Op != scimfilter.Or {
			return nil, false
		}
		l, ok1 := valueEqIDs(x.Left)
		r, ok2 := valueEqIDs(x.Right)
		return append(l, r...), ok1 && ok2
	}
	return nil, false
}
