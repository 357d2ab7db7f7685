package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStreamsCommand: `scimflow streams` is the only way to change live stream settings, and it
// refuses to shorten retention without -force.
func TestStreamsCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := func(extra string) string {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte("data_dir: "+dir+"\n"+extra), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unlimited, week := cfg(""), cfg("nats:\n  max_age: 168h\n")
	streams := func(want int, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run(append([]string{"streams"}, args...), &out, &errb); code != want {
			t.Fatalf("scimflow streams %v = exit %d, want %d; stdout %q stderr %q", args, code, want, out.String(), errb.String())
		}
		return out.String() + errb.String()
	}
	if out := streams(0, "apply", "-config", unlimited); !strings.Contains(out, "changed SCIM.stream") {
		t.Errorf("first apply = %q, want the streams created", out)
	}
	if out := streams(0, "status", "-config", unlimited); !strings.Contains(out, "streams match the config") {
		t.Errorf("status after apply = %q, want a match", out)
	}
	if out := streams(0, "status", "-config", week); !strings.Contains(out, "max_age: live unlimited, configured 168h0m0s (shortens retention)") {
		t.Errorf("status with 168h = %q, want the max_age drift", out)
	}
	if out := streams(1, "apply", "-config", week); !strings.Contains(out, "refusing to shorten retention without -force") {
		t.Errorf("apply 168h without -force = %q, want a refusal", out)
	}
	if out := streams(0, "apply", "-dry-run", "-force", "-config", week); !strings.Contains(out, "would change") {
		t.Errorf("dry run = %q", out)
	}
	if out := streams(0, "status", "-config", week); !strings.Contains(out, "shortens retention") {
		t.Errorf("status after a dry run = %q, want the drift still there", out)
	}
	streams(0, "apply", "-force", "-config", week)
	if out := streams(0, "status", "-config", week); !strings.Contains(out, "streams match the config") {
		t.Errorf("status after a forced apply = %q, want a match", out)
	}
	if out := streams(2, "apply", "-config", cfg("nats:\n  max_age: 1m\n")); !strings.Contains(out, "below the 2m0s duplicate window") {
		t.Errorf("apply with max_age 1m = %q, want a config error naming the duplicate window", out)
	}
	streams(2, "apply", "stray", "-config", unlimited)
	streams(2, "frobnicate")
}
