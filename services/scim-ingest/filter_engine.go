package scimingest

import (
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
