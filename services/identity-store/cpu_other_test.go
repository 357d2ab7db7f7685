//go:build !unix

package identitystore

import "time"

// processCPU is not measured here (getrusage is a Unix call); cpu-ms/op then reads 0.
func processCPU() time.Duration { return 0 }
