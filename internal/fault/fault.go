// Package fault is scimflow's one error type: an error as data, with a kind saying what went wrong
// in terms every protocol can express, a message that may be shown to the caller, and the cause,
// which is logged and never shown.
//
// Errors are created where the decision is made (a handler, a store method, a parser) and rendered
// once, at the edge, by the one writer of each surface: scim-ingest's writeError (RFC 7644 §3.12 SCIM
// error JSON), identity-store's writeError (the admin API envelope) and auth's writeError (an error
// page for browsers, JSON for API callers). Those writers take the HTTP status from Kind.Status, the
// one place that maps kinds to statuses. Any error that is not a *Error is internal: its text never
// reaches a response.
package fault

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Kind classifies an error by what the caller can do about it; each kind has one HTTP status.
type Kind uint8

// The kinds the three services answer with. Internal is the zero value, so an Error built without a
// kind never claims to be the caller's fault.
const (
	Internal           Kind = iota // a bug or a failure the caller cannot fix: 500
	Invalid                        // the request is malformed or a value is refused: 400
	Unauthorized                   // no or bad credentials: 401
	Forbidden                      // credentials are fine, the answer is no: 403
	NotFound                       // no such resource or endpoint: 404
	MethodNotAllowed               // the resource exists, the method does not: 405
	Conflict                       // the change collides with existing state (uniqueness): 409
	PreconditionFailed             // If-Match names another version: 412
	TooLarge                       // the body or resource exceeds a limit: 413
	RateLimited                    // the caller must slow down (Retry-After): 429
	Upstream                       // a provider outside scimflow (an IdP) failed or cannot work: 502
	Unavailable                    // scimflow cannot answer right now (NATS, starting, catching up): 503
	numKinds
)

var kindInfo = [numKinds]struct {
	name   string
	status int
}{
	Internal:           {"internal", http.StatusInternalServerError},
	Invalid:            {"invalid", http.StatusBadRequest},
	Unauthorized:       {"unauthorized", http.StatusUnauthorized},
	Forbidden:          {"forbidden", http.StatusForbidden},
	NotFound:           {"not_found", http.StatusNotFound},
	MethodNotAllowed:   {"method_not_allowed", http.StatusMethodNotAllowed},
	Conflict:           {"conflict", http.StatusConflict},
	PreconditionFailed: {"precondition_failed", http.StatusPreconditionFailed},
	TooLarge:           {"too_large", http.StatusRequestEntityTooLarge},
	RateLimited:        {"rate_limited", http.StatusTooManyRequests},
	Upstream:           {"upstream", http.StatusBadGateway},
	Unavailable:        {"unavailable", http.StatusServiceUnavailable},
}

// Kinds lists every kind, for renderers' tests that must cover each one.
func Kinds() []Kind {
	ks := make([]Kind, numKinds)
	for i := range ks {
		ks[i] = Kind(i)
	}
	return ks
}

// Status is the HTTP status of k: the one place kinds meet HTTP. An unknown kind is a 500.
func (k Kind) Status() int {
	if k >= numKinds {
		return http.StatusInternalServerError
	}
	return kindInfo[k].status
}

func (k Kind) String() string {
	if k >= numKinds {
		return fmt.Sprintf("kind(%d)", uint8(k))
	}
	return kindInfo[k].name
}

// KindOf is the kind whose status is status, for answers produced by a library that speaks HTTP
// (scim-ingest's discovery endpoints); a status without a kind is Internal.
func KindOf(status int) Kind {
	for k, info := range kindInfo {
		if info.status == status {
			return Kind(k)
		}
	}
	return Internal
}

// Error is an error as data. Only Message, Code, Problems and RetryAfter reach a response; Err is the
// cause, for the log.
type Error struct {
	Kind Kind
	// Code is a machine-readable code in the protocol's own vocabulary: the SCIM scimType of RFC 7644
	// §3.12 (invalidValue, uniqueness, ...), or auth's error code or refused-login reason. Empty: none.
	Code string
	// Message is the sentence the caller is shown (SCIM detail, the admin API's message, auth's
	// error_description or error_detail).
	Message string
	// Problems are field-level problems shown one by one (the admin API's validation: every problem
	// of a request at once); when set, they replace Message in the admin envelope.
	Problems []string
	// RetryAfter, when positive, is sent as Retry-After (whole seconds, rounded up).
	RetryAfter time.Duration
	// Err is the cause: logged by the writer, never shown.
	Err error
}

// Error is the message for logs: what the caller was told, then the cause.
func (e *Error) Error() string {
	msg := e.Message
	if msg == "" && len(e.Problems) > 0 {
		msg = e.Problems[0]
		for _, p := range e.Problems[1:] {
			msg += "; " + p
		}
	}
	if e.Code != "" {
		msg = e.Code + ": " + msg
	}
	msg = e.Kind.String() + ": " + msg
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the cause, so errors.Is sees through an Error.
func (e *Error) Unwrap() error { return e.Err }

// RetryAfterSeconds is RetryAfter in whole seconds, rounded up; 0 means no Retry-After header.
func (e *Error) RetryAfterSeconds() int {
	if e.RetryAfter <= 0 {
		return 0
	}
	return int((e.RetryAfter + time.Second - 1) / time.Second)
}

// E is an error of kind k with a public message.
func E(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// Coded is E with a protocol code (a SCIM scimType, an auth error code).
func Coded(k Kind, code, format string, args ...any) *Error {
	return &Error{Kind: k, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap is an error of kind k with a public message and a cause that is logged, never shown.
func Wrap(k Kind, err error, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...), Err: err}
}

// Invalids is an Invalid error listing every problem found in a request.
func Invalids(problems []string) *Error {
	return &Error{Kind: Invalid, Problems: problems}
}

// From is err as an *Error: err itself (or the *Error it wraps), or, for any other error, an Internal
// one whose public message says nothing of err. nil stays nil.
func From(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Kind: Internal, Message: "internal error", Err: err}
}

// Logged reports whether a writer logs e (with its cause and the request id): an internal error, and
// a server-side failure (5xx) with a cause, since only the log can say what happened. A caller's
// mistake, and an expected refusal without a cause (busy, starting), is not logged.
func (e *Error) Logged() bool {
	return e.Kind == Internal || (e.Err != nil && e.Kind.Status() >= 500)
}
