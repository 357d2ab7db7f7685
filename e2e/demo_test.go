package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDemo runs `scimflow demo -exit` (on free ports) as a user would and checks that the story reaches its end:
// the deprovisioned sessions went from 200 to 401 and the explore commands were printed.
func TestDemo(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "demo", "-exit", "-random-ports").CombinedOutput()
	if err != nil {
		t.Fatalf("scimflow demo -exit: %v\n%s", err, out)
	}
	for _, want := range []string{"/verify 200 → 401", "a new login is refused: /callback 403", "groups now Admins,Engineering", "Explore (copy and paste)",
		"app.example.com:     /verify 200  X-Scimflow-App: ", "finance.example.com: /verify 403  X-Scimflow-Deny-Reason: no_policy", "X-Scimflow-Deny-Reason: no_application",
		"/ui/   (sign in by pasting the admin token"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}

// TestBenchRevocationSmoke runs a tiny `scimflow bench revocation` so the benchmark keeps working;
// its figures are not asserted (performance is measured, never tested by timing).
func TestBenchRevocationSmoke(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "bench", "revocation", "-users", "5", "-rate", "10",
		"-background", "20", "-background-idps", "1", "-background-users", "5", "-warmup", "100ms", "-baseline", "50").CombinedOutput()
	if err != nil {
		t.Fatalf("scimflow bench revocation: %v\n%s", err, out)
	}
	for _, want := range []string{"revocation: SCIM response → /verify 401      n=5", "baseline: /verify round trip", "background achieved"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("bench output lacks %q:\n%s", want, out)
		}
	}
	help, _ := exec.CommandContext(ctx, binary, "bench", "-h").CombinedOutput()
	if !strings.Contains(string(help), "revocation") {
		t.Errorf("scimflow bench -h does not list revocation:\n%s", help)
	}
}
