package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBenchPeople runs `scimflow bench people` small: it generates the people, runs the replicas as
// child processes (the permission table enforced) and prints a row for each start, the restoring
// replica's included, which only appears once a snapshot was published and restored.
func TestBenchPeople(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(binary, "bench", "people", "-n", "1500", "-batch", "100").CombinedOutput()
	if err != nil {
		t.Fatalf("bench people: %v\n%s", err, out)
	}
	for _, want := range []string{"1500 people in", "| baseline (empty streams) |", "| fresh, replaying the stream |",
		"| warm restart (own data dir) |", "| fresh, restoring the snapshot |", "snapshot: "} {
		if !strings.Contains(string(out), want) {
			t.Errorf("bench people output lacks %q:\n%s", want, out)
		}
	}
}
