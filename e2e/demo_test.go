package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDemo runs `scimflow demo -exit` as a user would and checks that the story reaches its end:
// the deprovisioned sessions went from 200 to 401 and the explore commands were printed.
func TestDemo(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "demo", "-exit").CombinedOutput()
	if err != nil {
		t.Fatalf("scimflow demo -exit: %v\n%s", err, out)
	}
	for _, want := range []string{"/verify 200 → 401", "a new login is refused: /callback 403", "groups now Admins,Engineering", "Explore (copy and paste)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}
