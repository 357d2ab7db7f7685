// Package natstest starts a real embedded nats-server with JetStream for tests, on a loopback TCP port
// so a test can stop it and start it again on the same store (an outage) while clients reconnect.
package natstest

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/internal/broker"
)

// Server is a restartable embedded server.
type Server struct {
	t        testing.TB
	StoreDir string
	Addr     string
	emb      *broker.Embedded
}

// Start starts a server with a fresh store and creates scimflow's streams.
func Start(t testing.TB) *Server {
	t.Helper()
	s := StartBare(t)
	nc, js := s.Connect("setup")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := broker.EnsureStreams(ctx, js, broker.StreamsConfig{}); err != nil {
		t.Fatalf("EnsureStreams: %v", err)
	}
	nc.Close()
	return s
}

// StartBare starts a server with a fresh store and no streams.
func StartBare(t testing.TB) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &Server{t: t, StoreDir: t.TempDir(), Addr: addr}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// URL is the client URL.
func (s *Server) URL() string { return "nats://" + s.Addr }

// Stop shuts the server down (no-op if stopped).
func (s *Server) Stop() {
	if s.emb != nil {
		s.emb.Shutdown()
		s.emb = nil
	}
}

// Restart starts the server again on the same store and address.
func (s *Server) Restart() {
	s.t.Helper()
	if s.emb != nil {
		s.Stop()
	}
	var err error
	for i := 0; i < 50; i++ { // the port may linger briefly after a shutdown
		s.emb, err = broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: s.StoreDir, Listen: s.Addr}, nil)
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("start nats: %v", err)
}

// Connect returns a reconnecting TCP connection and its JetStream context, closed at cleanup.
func (s *Server) Connect(name string) (*nats.Conn, jetstream.JetStream) {
	s.t.Helper()
	nc, err := broker.Connect(s.URL(), name, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		s.t.Fatal(err)
	}
	return nc, js
}

// WaitFor polls cond every 10 ms until it returns nil or the deadline passes, then fails with its
// last error. Tests poll; they never sleep for a fixed time.
func WaitFor(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s: %v", d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Errorf is fmt.Errorf, for WaitFor conditions.
func Errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }
