package main

import (
	"fmt"
	"io"
)

// runReplay rebuilds a projection from the streams.
func runReplay(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "scimflow replay: not implemented yet")
	return 1
}
