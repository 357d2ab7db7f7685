package main

import (
	"fmt"
	"io"
)

// runBench runs the benchmarks of docs/benchmarks.md.
func runBench(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "scimflow bench: not implemented yet")
	return 1
}
