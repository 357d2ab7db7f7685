package scimingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/scimflow/scimflow/internal/fault"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// TestSCIMErrorEveryKind pins what an IdP sees for each kind: the RFC 7644 status (as a number and
// as the body's string), the scimType carried by the error, and the headers a kind calls for. A
// changed mapping fails here.
func TestSCIMErrorEveryKind(t *testing.T) {
	t.Parallel()
	want := map[fault.Kind]struct {
		status   int
		scimType string
		header   http.Header
	}{
		fault.Internal:           {500, "", nil},
		fault.Invalid:            {400, scimInvalidValue, nil},
		fault.Unauthorized:       {401, "", http.Header{"Www-Authenticate": {`Bearer realm="scimflow"`}}},
		fault.Forbidden:          {403, "", nil},
		fault.NotFound:           {404, "", nil},
		fault.MethodNotAllowed:   {405, "", nil},
		fault.Conflict:           {409, scimUniqueness, nil},
		fault.PreconditionFailed: {412, "", nil},
		fault.TooLarge:           {413, "", nil},
		fault.RateLimited:        {429, "", http.Header{"Retry-After": {"3"}}},
		fault.Upstream:           {502, "", nil},
		fault.Unavailable:        {503, "", http.Header{"Retry-After": {"1"}}},
	}
	for _, k := range fault.Kinds() {
		w, ok := want[k]
		if !ok {
			t.Errorf("kind %v has no row: say what an IdP sees for it", k)
			continue
		}
		fe := &fault.Error{Kind: k, Code: w.scimType, Message: "detail of " + k.String()}
		if ra := w.header.Get("Retry-After"); ra != "" {
			fmt.Sscan(ra, &fe.RetryAfter)
			fe.RetryAfter *= time.Second
		}
		rec := httptest.NewRecorder()
		if got := renderSCIMError(rec, fe); got != w.status {
			t.Errorf("renderSCIMError(%v) = %d, want %d", k, got, w.status)
		}
		if rec.Code != w.status {
			t.Errorf("%v: status %d, want %d", k, rec.Code, w.status)
		}
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%v: body %q: %v", k, rec.Body, err)
		}
		wantBody := map[string]any{"schemas": []any{scimschema.Error}, "status": fmt.Sprint(w.status), "detail": fe.Message}
		if w.scimType != "" {
			wantBody["scimType"] = w.scimType
		}
		if diff := cmp.Diff(wantBody, body); diff != "" {
			t.Errorf("%v: body (-want +got):\n%s", k, diff)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/scim+json; charset=utf-8" {
			t.Errorf("%v: Content-Type %q", k, ct)
		}
		for _, h := range []string{"Www-Authenticate", "Retry-After"} {
			if got, want := rec.Header().Get(h), w.header.Get(h); got != want {
				t.Errorf("%v: %s = %q, want %q", k, h, got, want)
			}
		}
	}
}

// TestSCIMErrorHidesCause: neither a plain error nor a fault's cause reaches the body; both reach the
// log, with the request's path.
func TestSCIMErrorHidesCause(t *testing.T) {
	t.Parallel()
	const secret = "bolt: /data/scim.db: input/output error"
	for _, err := range []error{
		errors.New(secret),
		fmt.Errorf("commit: %w", errors.New(secret)),
		fault.Wrap(fault.Unavailable, errors.New(secret), "NATS is unavailable; retry later"),
		fault.Wrap(fault.Invalid, errors.New(secret), "reading the request body failed"),
	} {
		var logs bytes.Buffer
		s := &server{log: slog.New(slog.NewTextHandler(&logs, nil))}
		rec := httptest.NewRecorder()
		s.writeError(rec, httptest.NewRequest(http.MethodGet, "/scim/v2/idp/Users", nil), err)
		if strings.Contains(rec.Body.String(), "input/output") {
			t.Errorf("writeError(%v): body %s shows the cause", err, rec.Body)
		}
		if fe := fault.From(err); fe.Logged() && !strings.Contains(logs.String(), "input/output") {
			t.Errorf("writeError(%v): log %q lacks the cause", err, logs.String())
		}
	}
	rec := httptest.NewRecorder()
	s := &server{log: slog.New(slog.DiscardHandler)}
	s.writeError(rec, httptest.NewRequest(http.MethodGet, "/", nil), errors.New(secret))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), `"detail":"internal error"`) {
		t.Errorf("plain error: %d %s, want 500 internal error", rec.Code, rec.Body)
	}
}
