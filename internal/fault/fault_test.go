package fault

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestKindStatus pins the one kind→status mapping every writer uses: a changed row changes what all
// three services answer, so it must show up here.
func TestKindStatus(t *testing.T) {
	t.Parallel()
	want := map[Kind]int{
		Internal:           http.StatusInternalServerError,
		Invalid:            http.StatusBadRequest,
		Unauthorized:       http.StatusUnauthorized,
		Forbidden:          http.StatusForbidden,
		NotFound:           http.StatusNotFound,
		MethodNotAllowed:   http.StatusMethodNotAllowed,
		Conflict:           http.StatusConflict,
		PreconditionFailed: http.StatusPreconditionFailed,
		TooLarge:           http.StatusRequestEntityTooLarge,
		RateLimited:        http.StatusTooManyRequests,
		Upstream:           http.StatusBadGateway,
		Unavailable:        http.StatusServiceUnavailable,
	}
	if len(want) != len(Kinds()) {
		t.Fatalf("the table has %d kinds, Kinds() = %d: add the new kind here", len(want), len(Kinds()))
	}
	for _, k := range Kinds() {
		if got := k.Status(); got != want[k] {
			t.Errorf("%v.Status() = %d, want %d", k, got, want[k])
		}
		if got := KindOf(want[k]); got != k {
			t.Errorf("KindOf(%d) = %v, want %v", want[k], got, k)
		}
	}
	if got := Kind(200).Status(); got != http.StatusInternalServerError {
		t.Errorf("Kind(200).Status() = %d, want 500", got)
	}
	if got := KindOf(http.StatusTeapot); got != Internal {
		t.Errorf("KindOf(418) = %v, want internal", got)
	}
}

func TestFrom(t *testing.T) {
	t.Parallel()
	if From(nil) != nil {
		t.Errorf("From(nil) != nil")
	}
	cause := errors.New("disk on fire at /var/lib/x")
	e := From(cause)
	if e.Kind != Internal || e.Message != "internal error" || e.Err != cause {
		t.Errorf("From(plain) = %+v, want internal with a generic message and the cause", e)
	}
	nf := E(NotFound, "user %q not found", "u1")
	if got := From(fmt.Errorf("context: %w", nf)); got != nf {
		t.Errorf("From(wrapped) = %v, want the *Error it wraps", got)
	}
	w := Wrap(Unavailable, cause, "NATS is unavailable")
	if !errors.Is(w, cause) {
		t.Errorf("errors.Is(Wrap(cause), cause) = false")
	}
	if !strings.Contains(w.Error(), cause.Error()) {
		t.Errorf("Error() = %q: the log line must carry the cause", w.Error())
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		d    time.Duration
		want int
	}{{0, 0}, {-time.Second, 0}, {time.Millisecond, 1}, {time.Second, 1}, {1500 * time.Millisecond, 2}, {3 * time.Second, 3}} {
		if got := (&Error{RetryAfter: c.d}).RetryAfterSeconds(); got != c.want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", c.d, got, c.want)
		}
	}
}

func TestLogged(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		e    *Error
		want bool
	}{
		{&Error{Kind: Internal}, true},
		{&Error{Kind: Unavailable, Err: io.EOF}, true},
		{&Error{Kind: Unavailable}, false}, // busy or starting: expected, nothing to diagnose
		{&Error{Kind: Invalid, Err: io.EOF}, false},
		{&Error{Kind: Upstream, Err: io.EOF}, true},
	} {
		if got := c.e.Logged(); got != c.want {
			t.Errorf("%v.Logged() = %v, want %v", c.e, got, c.want)
		}
	}
}
