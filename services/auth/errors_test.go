package auth

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/scimflow/scimflow/internal/fault"
)

var kindStatus = map[fault.Kind]int{
	fault.Internal: 500, fault.Invalid: 400, fault.Unauthorized: 401, fault.Forbidden: 403,
	fault.NotFound: 404, fault.MethodNotAllowed: 405, fault.Conflict: 409, fault.PreconditionFailed: 412,
	fault.TooLarge: 413, fault.RateLimited: 429, fault.Upstream: 502, fault.Unavailable: 503,
}

func errorServer(logs *bytes.Buffer) *server {
	return &server{log: slog.New(slog.NewTextHandler(logs, nil))}
}

// TestAuthErrorEveryKind pins auth's answers for each kind in both forms: the API's JSON problem
// (the kind's name as the code when the error has none), a refused login's JSON for API callers and
// its page for browsers.
func TestAuthErrorEveryKind(t *testing.T) {
	t.Parallel()
	for _, k := range fault.Kinds() {
		status, ok := kindStatus[k]
		if !ok {
			t.Errorf("kind %v has no row: say what auth answers for it", k)
			continue
		}
		var logs bytes.Buffer
		s := errorServer(&logs)

		rec := httptest.NewRecorder()
		s.writeError(rec, httptest.NewRequest(http.MethodGet, "/get-identity", nil), apiForm, fault.E(k, "about %s", k))
		want := fmt.Sprintf(`{"error":%q,"error_description":"about %s"}`+"\n", k.String(), k)
		if rec.Code != status || rec.Body.String() != want {
			t.Errorf("writeError(api, %v) = %d %s, want %d %s", k, rec.Code, rec.Body, status, want)
		}
		if h := rec.Header(); h.Get("Content-Type") != "application/json" || h.Get("Cache-Control") != "no-store" {
			t.Errorf("writeError(api, %v): headers %v", k, h)
		}

		rec = httptest.NewRecorder()
		s.writeError(rec, httptest.NewRequest(http.MethodGet, "/callback", nil), loginForm, refusal(k, "locked", nil))
		want = `{"error":"login_failed","error_description":"locked"}` + "\n"
		if rec.Code != status || rec.Body.String() != want {
			t.Errorf("writeError(login JSON, %v) = %d %s, want %d %s", k, rec.Code, rec.Body, status, want)
		}

		req := httptest.NewRequest(http.MethodGet, "/callback", nil)
		req.Header.Set("Accept", "text/html,application/xhtml+xml")
		rec = httptest.NewRecorder()
		s.writeError(rec, req, loginForm, refusal(k, "locked", nil))
		if rec.Code != status || !strings.Contains(rec.Body.String(), loginReasons["locked"]) ||
			!strings.Contains(rec.Body.String(), "<code>locked</code>") || !strings.HasPrefix(rec.Header().Get("Content-Security-Policy"), "default-src 'none'") {
			t.Errorf("writeError(login page, %v) = %d %v %s, want %d, the reason's text and code under a CSP", k, rec.Code, rec.Header(), rec.Body, status)
		}
	}
}

// TestAuthErrorLoginDetail: a refused login's sentence is error_detail in JSON and replaces the
// reason's text on the page; an unknown reason without one gets the generic text; Retry-After is sent.
func TestAuthErrorLoginDetail(t *testing.T) {
	t.Parallel()
	s := errorServer(new(bytes.Buffer))
	fe := &fault.Error{Kind: fault.Upstream, Code: "idp_unavailable", Message: "The identity provider could not be reached."}
	rec := httptest.NewRecorder()
	s.writeError(rec, httptest.NewRequest(http.MethodGet, "/test", nil), loginForm, fe)
	want := `{"error":"login_failed","error_description":"idp_unavailable","error_detail":"The identity provider could not be reached."}` + "\n"
	if rec.Code != 502 || rec.Body.String() != want {
		t.Errorf("writeError(login JSON with detail) = %d %s, want 502 %s", rec.Code, rec.Body, want)
	}
	page := func(fe *fault.Error) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/callback", nil)
		req.Header.Set("Accept", "text/html")
		rec := httptest.NewRecorder()
		s.writeError(rec, req, loginForm, fe)
		return rec
	}
	if rec := page(fe); !strings.Contains(rec.Body.String(), "could not be reached") {
		t.Errorf("page with detail: %s", rec.Body)
	}
	if rec := page(refusal(fault.Invalid, "state_mismatch", nil)); !strings.Contains(rec.Body.String(), "Start again from the application") {
		t.Errorf("page of a reason without text: %s", rec.Body)
	}
	rec = page(&fault.Error{Kind: fault.Unavailable, Code: "identity_catching_up", RetryAfter: time.Second})
	if rec.Code != 503 || rec.Header().Get("Retry-After") != "1" {
		t.Errorf("catching up: %d Retry-After %q, want 503 and 1", rec.Code, rec.Header().Get("Retry-After"))
	}
}

// TestAuthErrorHidesCause: no cause reaches a body in any form; internal causes reach the log.
func TestAuthErrorHidesCause(t *testing.T) {
	t.Parallel()
	const secret = "bolt: /data/auth.db: no space left on device"
	for _, form := range []errorForm{apiForm, loginForm} {
		for _, accept := range []string{"", "text/html"} {
			for _, err := range []error{
				errors.New(secret),
				fault.Wrap(fault.Internal, errors.New(secret), "logout failed"),
				refusal(fault.Forbidden, "invalid_id_token", errors.New(secret)),
				refusal(fault.Unavailable, "txn_store_unavailable", errors.New(secret)),
			} {
				var logs bytes.Buffer
				s := errorServer(&logs)
				req := httptest.NewRequest(http.MethodGet, "/callback", nil)
				req.Header.Set("Accept", accept)
				rec := httptest.NewRecorder()
				s.writeError(rec, req, form, err)
				if strings.Contains(rec.Body.String(), "no space") {
					t.Errorf("writeError(%v, %q, %v): body %s shows the cause", form, accept, err, rec.Body)
				}
				if form == apiForm && fault.From(err).Logged() && !strings.Contains(logs.String(), "no space") {
					t.Errorf("writeError(%v, %v): log %q lacks the cause", form, err, logs.String())
				}
			}
		}
	}
}
