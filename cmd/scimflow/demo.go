package main

import (
	"fmt"
	"io"
)

// runDemo starts the embedded pipeline and the test OpenID provider and narrates a lifecycle.
func runDemo(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "scimflow demo: not implemented yet")
	return 1
}
