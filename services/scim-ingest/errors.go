package scimingest

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/scimflow/scimflow/internal/fault"
	"github.com/scimflow/scimflow/internal/httpserv"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// SCIM error types of RFC 7644 §3.12 that this service returns.
const (
	scimInvalidFilter = "invalidFilter"
	scimTooMany       = "tooMany"
	scimUniqueness    = "uniqueness"
	scimMutability    = "mutability"
	scimInvalidSyntax = "invalidSyntax"
	scimInvalidPath   = "invalidPath"
	scimNoTarget      = "noTarget"
	scimInvalidValue  = "invalidValue"
)

func notFound(kind, id string) *fault.Error {
	return fault.E(fault.NotFound, "%s %q not found", kind, id)
}

// scimErrorBody is the RFC 7644 §3.12 error response; status is a string, as the RFC says.
type scimErrorBody struct {
	Schemas  []string `json:"schemas"`
	Status   string   `json:"status"`
	ScimType string   `json:"scimType,omitempty"`
	Detail   string   `json:"detail,omitempty"`
}

// writeError is the one place that turns any error into an RFC 7644 error response, and returns the
// status written. Handlers return a *fault.Error: its kind gives the status (fault.Kind.Status), its
// Code the scimType, its Message the detail. Any other error is internal: it is logged here (once)
// with the request id and answered with a bare 500; no cause ever reaches the body.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) int {
	fe := fault.From(err)
	if fe.Logged() {
		s.log.Error("internal error", "err", err, "request_id", httpserv.RequestIDFrom(r.Context()),
			"method", r.Method, "path", r.URL.Path)
	}
	if info := infoFrom(r); info != nil {
		info.errDetail = fe.Message
	}
	return renderSCIMError(w, fe)
}

// renderSCIMError writes fe as RFC 7644 §3.12 error JSON: the headers a kind calls for
// (WWW-Authenticate on 401, Retry-After), status and scimType. Only the public fields are written.
func renderSCIMError(w http.ResponseWriter, fe *fault.Error) int {
	status := fe.Kind.Status()
	if fe.Kind == fault.Unauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="scimflow"`)
	}
	if n := fe.RetryAfterSeconds(); n > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(n))
	}
	body, _ := json.Marshal(scimErrorBody{Schemas: []string{scimschema.Error}, Status: strconv.Itoa(status), ScimType: fe.Code, Detail: fe.Message})
	writeRaw(w, status, body)
	return status
}

// writeJSON answers with v as application/scim+json, with Content-Length (never chunked).
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		body = []byte(`{"schemas":["` + scimschema.Error + `"],"status":"500","detail":"internal error"}`)
		status = http.StatusInternalServerError
	}
	writeRaw(w, status, body)
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/scim+json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}
