package scimingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

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

// apiError is an error as data: the HTTP status and SCIM type a request fails with. Handlers return
// it; writeError is the one place that turns any error into an RFC 7644 error response. Any other
// error is internal: it is logged with the request id and answered with a bare 500.
type apiError struct {
	status     int
	scimType   string
	detail     string
	retryAfter int // seconds; sets Retry-After when > 0
}

func (e *apiError) Error() string {
	if e.scimType != "" {
		return fmt.Sprintf("%d %s: %s", e.status, e.scimType, e.detail)
	}
	return fmt.Sprintf("%d: %s", e.status, e.detail)
}

func errorf(status int, scimType, format string, args ...any) *apiError {
	return &apiError{status: status, scimType: scimType, detail: fmt.Sprintf(format, args...)}
}

func notFound(kind, id string) *apiError {
	return errorf(http.StatusNotFound, "", "%s %q not found", kind, id)
}

// scimErrorBody is the RFC 7644 §3.12 error response; status is a string, as the RFC says.
type scimErrorBody struct {
	Schemas  []string `json:"schemas"`
	Status   string   `json:"status"`
	ScimType string   `json:"scimType,omitempty"`
	Detail   string   `json:"detail,omitempty"`
}

// writeError answers r with err in RFC 7644 form and returns the status written. Internal errors are
// logged here (once) and never leak their text to the client.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) int {
	var ae *apiError
	if !errors.As(err, &ae) {
		s.log.Error("internal error", "err", err, "request_id", httpserv.RequestIDFrom(r.Context()),
			"method", r.Method, "path", r.URL.Path)
		ae = &apiError{status: http.StatusInternalServerError, detail: "internal error"}
	}
	if ae.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="scimflow"`)
	}
	if ae.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(ae.retryAfter))
	}
	if info := infoFrom(r); info != nil {
		info.errDetail = ae.detail
	}
	body, _ := json.Marshal(scimErrorBody{Schemas: []string{scimschema.Error}, Status: strconv.Itoa(ae.status), ScimType: ae.scimType, Detail: ae.detail})
	writeRaw(w, ae.status, body)
	return ae.status
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
