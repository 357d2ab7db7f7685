package identitystore

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/scimflow/scimflow/internal/fault"
)

// TestAdminErrorEveryKind pins the admin API's answer for each kind, byte for byte: the status, and
// the envelope with success false and one {code, message} per problem whose code is the status.
func TestAdminErrorEveryKind(t *testing.T) {
	t.Parallel()
	want := map[fault.Kind]int{
		fault.Internal: 500, fault.Invalid: 400, fault.Unauthorized: 401, fault.Forbidden: 403,
		fault.NotFound: 404, fault.MethodNotAllowed: 405, fault.Conflict: 409, fault.PreconditionFailed: 412,
		fault.TooLarge: 413, fault.RateLimited: 429, fault.Upstream: 502, fault.Unavailable: 503,
	}
	for _, k := range fault.Kinds() {
		status, ok := want[k]
		if !ok {
			t.Errorf("kind %v has no row: say what an admin client sees for it", k)
			continue
		}
		rec := httptest.NewRecorder()
		writeError(rec, httptest.NewRequest(http.MethodGet, "/api/v1/users", nil), slog.New(slog.DiscardHandler),
			fault.E(k, "about %s", k))
		wantBody := fmt.Sprintf(`{
  "success": false,
  "errors": [
    {
      "code": %d,
      "message": "about %s"
    }
  ],
  "messages": [],
  "result": null
}
`, status, k)
		if rec.Code != status || rec.Body.String() != wantBody {
			t.Errorf("writeError(%v) = %d %s, want %d %s", k, rec.Code, rec.Body, status, wantBody)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("writeError(%v): Content-Type %q", k, ct)
		}
	}
}

// TestAdminErrorProblems: validation reports every problem as an error of its own.
func TestAdminErrorProblems(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	writeError(rec, httptest.NewRequest(http.MethodPost, "/api/v1/identity_providers", nil), slog.New(slog.DiscardHandler),
		fault.Invalids([]string{"name: required", "type: want oidc"}))
	want := `"errors": [
    {
      "code": 400,
      "message": "name: required"
    },
    {
      "code": 400,
      "message": "type: want oidc"
    }
  ]`
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), want) {
		t.Errorf("writeError(Invalids) = %d %s, want 400 with %s", rec.Code, rec.Body, want)
	}
}

// TestAdminErrorHidesCause: a cause reaches the log, never the body.
func TestAdminErrorHidesCause(t *testing.T) {
	t.Parallel()
	const secret = "nats: connection refused to 10.0.0.7:4222"
	for _, c := range []struct {
		err  error
		want string
	}{
		{errors.New(secret), `"message": "internal error"`},
		{internal(errors.New(secret)), `"message": "internal error"`},
		{unavailable(errors.New(secret)), `"message": "NATS is unavailable; retry later"`},
		{fault.Wrap(fault.Invalid, errors.New(secret), "bad body"), `"message": "bad body"`},
	} {
		var logs bytes.Buffer
		rec := httptest.NewRecorder()
		writeError(rec, httptest.NewRequest(http.MethodGet, "/api/v1/users", nil), slog.New(slog.NewTextHandler(&logs, nil)), c.err)
		if strings.Contains(rec.Body.String(), "10.0.0.7") || !strings.Contains(rec.Body.String(), c.want) {
			t.Errorf("writeError(%v): body %s, want %s and no cause", c.err, rec.Body, c.want)
		}
		if fault.From(c.err).Logged() && !strings.Contains(logs.String(), "10.0.0.7") {
			t.Errorf("writeError(%v): log %q lacks the cause", c.err, logs.String())
		}
	}
}
