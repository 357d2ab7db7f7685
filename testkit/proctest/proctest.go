// Package proctest holds what tests that run scimflow as a subprocess share.
package proctest

import (
	"bytes"
	"sync"
)

// SyncBuffer is a bytes.Buffer that a subprocess's output copier and the test reading it can use at
// once (exec writes from its own goroutine).
type SyncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

// Write implements io.Writer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
