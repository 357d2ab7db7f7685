package scimingest

import (
	"net/http"
	"strings"

	"github.com/scimflow/scimflow/services/scim-ingest/scimfilter"
)

// applyOps applies PATCH operations (already normalised, members excluded) to a copy of a resource's
// attributes. The result is validated against the schema by the caller, which also restores the
// canonical attribute names. Operations apply in order; any error leaves the stored resource as it
// was (the transaction is not committed), so a request applies all its operations or none.
//
// Paths: attr, attr.sub, urn:…:attr[.sub], attr[filter] and attr[filter].sub; without a path, the
// value's keys may be plain, dotted (name.givenName) or extension-URN qualified. An add or replace on
// a value path that matches nothing creates the element, taking its type from the filter (Entra).
func applyOps(attrs map[string]any, ops []patchOp) (map[string]any, error) {
	for _, op := range ops {
		if op.Path == "" {
			for k, v := range op.Value.(map[string]any) {
				if strings.EqualFold(k, enterpriseURN) {
					if ext, ok := v.(map[string]any); ok {
						for ek, ev := range ext {
							if err := applyPath(attrs, op.Op, enterpriseURN+":"+ek, ev); err != nil {
								return nil, err
							}
						}
						continue
					}
				}
				if err := applyPath(attrs, op.Op, k, v); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err := applyPath(attrs, op.Op, op.Path, op.Value); err != nil {
			return nil, err
		}
	}
	return attrs, nil
}

func applyPath(attrs map[string]any, op, path string, value any) error {
	p, err := scimfilter.ParsePath(path)
	if err != nil {
		return errorf(http.StatusBadRequest, scimInvalidPath, "%s", err.Error())
	}
	container := attrs
	if p.URN != "" && !scimfilter.IsCoreURN(p.URN) {
		if !strings.EqualFold(p.URN, enterpriseURN) {
			return errorf(http.StatusBadRequest, scimInvalidPath, "unknown schema in path")
		}
		ext, _ := getFold(attrs, enterpriseURN).(map[string]any)
		if ext == nil {
			if op == "remove" {
				return nil
			}
			ext = map[string]any{}
		}
		setFold(attrs, enterpriseURN, ext)
		container = ext
	}
	if op == "replace" && value == nil {
		op = "remove"
	}
	if p.Filter == nil {
		if p.Sub == "" {
			return setAttr(container, op, p.Name, value)
		}
		sub, _ := getFold(container, p.Name).(map[string]any)
		if sub == nil {
			if op == "remove" {
				return nil
			}
			sub = map[string]any{}
			setFold(container, p.Name, sub)
		}
		return setAttr(sub, op, p.Sub, value)
	}
	list, _ := getFold(container, p.Name).([]any)
	matched := false
	var kept []any
	for _, e := range list {
		if !p.Matches(e, scimfilter.EvalOptions{}) {
			kept = append(kept, e)
			continue
		}
		matched = true
		em, _ := e.(map[string]any)
		switch {
		case op == "remove" && p.Sub == "":
			continue
		case p.Sub == "":
			if vm, ok := value.(map[string]any); ok && em != nil {
				for k, v := range vm {
					setFold(em, k, v)
				}
			}
		case em != nil:
			if err := setAttr(em, op, p.Sub, value); err != nil {
				return err
			}
		}
		kept = append(kept, e)
	}
	if !matched && op != "remove" {
		el := map[string]any{}
		if c, ok := p.Filter.(*scimfilter.Compare); ok && c.Op == scimfilter.Eq {
			if v, ok := c.Value.(string); ok {
				el[c.Attr.Name] = v
			}
		}
		if p.Sub != "" {
			el[p.Sub] = value
		} else if vm, ok := value.(map[string]any); ok {
			for k, v := range vm {
				el[k] = v
			}
		}
		kept = append(kept, el)
	}
	if len(kept) == 0 {
		deleteFold(container, p.Name)
		return nil
	}
	setFold(container, p.Name, kept)
	return nil
}

// setAttr applies op to the attribute name of m. add on a list appends; otherwise add and replace set.
func setAttr(m map[string]any, op, name string, value any) error {
	if op == "remove" {
		deleteFold(m, name)
		return nil
	}
	if op == "add" {
		if cur, ok := getFold(m, name).([]any); ok {
			switch v := value.(type) {
			case []any:
				setFold(m, name, append(cur, v...))
			default:
				setFold(m, name, append(cur, v))
			}
			return nil
		}
	}
	setFold(m, name, value)
	return nil
}

func getFold(m map[string]any, name string) any {
	if v, ok := m[name]; ok {
		return v
	}
	for k, v := range m {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return nil
}

// setFold sets name, replacing a key that differs only in case.
func setFold(m map[string]any, name string, v any) {
	deleteFold(m, name)
	m[name] = v
}

func deleteFold(m map[string]any, name string) {
	for k := range m {
		if strings.EqualFold(k, name) {
			delete(m, k)
		}
	}
}
