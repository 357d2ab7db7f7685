package auth

import (
	"net/http"
	"strconv"

	"github.com/scimflow/scimflow/internal/fault"
	"github.com/scimflow/scimflow/internal/httpserv"
)

// errorForm is how auth answers an error: the login flow is navigated by browsers, which get a page;
// everything else is an API answered in JSON.
type errorForm uint8

const (
	// apiForm answers {"error": <code>, "error_description": <message>} whatever the caller accepts;
	// the code is the fault's Code, or its kind's name (internal, unavailable) when it has none.
	apiForm errorForm = iota
	// loginForm answers a refused login (the fault's Code is the reason, its Message an optional
	// sentence about this failure): the error page for a browser, otherwise
	// {"error": "login_failed", "error_description": <reason>, "error_detail": <sentence>}.
	loginForm
)

// codeLoginFailed is the error code of every refused login in JSON; the reason is its description.
const codeLoginFailed = "login_failed"

// problem is auth's JSON error body; its field order is the wire order.
type problem struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
	Detail      string `json:"error_detail,omitempty"`
}

// writeError is auth's one error writer: the status comes from the fault's kind (fault.Kind.Status),
// the body from form. Internal errors and 5xx with a cause are logged with the request id; a cause
// never reaches the body. (A refused login is also counted and logged by loginFailed, which calls
// this.) /verify's answers are not errors in this sense: they speak the forward-auth protocol to the
// reverse proxy (verify.go).
func (s *server) writeError(w http.ResponseWriter, r *http.Request, form errorForm, err error) {
	fe := fault.From(err)
	if form == apiForm && fe.Logged() {
		s.log.Error(apiCode(fe), "err", fe.Err, "request_id", httpserv.RequestIDFrom(r.Context()), "path", r.URL.Path)
	}
	if n := fe.RetryAfterSeconds(); n > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(n))
	}
	status := fe.Kind.Status()
	switch {
	case form == apiForm:
		writeJSON(w, status, problem{Error: apiCode(fe), Description: fe.Message})
	case !wantsHTML(r):
		writeJSON(w, status, problem{Error: codeLoginFailed, Description: fe.Code, Detail: fe.Message})
	default:
		text, ok := loginReasons[fe.Code]
		if fe.Message != "" {
			text = fe.Message
		} else if !ok {
			text = "The sign-in could not be completed. Start again from the application."
		}
		writePage(w, status, errorPage, struct{ Text, Code string }{text, fe.Code})
	}
}

// apiCode is fe's code in auth's JSON: its own, or its kind's name.
func apiCode(fe *fault.Error) string {
	if fe.Code != "" {
		return fe.Code
	}
	return fe.Kind.String()
}
