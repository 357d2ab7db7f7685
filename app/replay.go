package app

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/internal/broker"
	identitystore "github.com/scimflow/scimflow/services/identity-store"
	scimingest "github.com/scimflow/scimflow/services/scim-ingest"
)

// ReplayTargets names the projections `scimflow replay` can rebuild.
var ReplayTargets = []string{identitystore.Name, scimingest.Name}

// Replay rebuilds the projection of target from the streams into a fresh bbolt file at out. With
// nats.url empty it opens the embedded JetStream store under data_dir, refusing while a serve holds
// the data dir. Nothing is published.
func Replay(ctx context.Context, f File, target, out string) error {
	if target != identitystore.Name && target != scimingest.Name {
		return fmt.Errorf("unknown replay target %q", target)
	}
	nc, cleanup, err := operatorConn(f)
	if err != nil {
		return err
	}
	defer cleanup()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if target == scimingest.Name {
		return scimingest.Replay(ctx, js, out)
	}
	return identitystore.ReplayWith(ctx, js, out, identitystore.ReplayOptions{SCIMLogRetention: f.IdentityStore.SCIMLogRetention.D()})
}

// Dump writes the canonical dump of an identity-store or scim-ingest bbolt file (told apart by their
// buckets): the replay oracle compares a live file's dump with a rebuilt one's.
func Dump(path string, w io.Writer) error {
	if scimingest.IsDataFile(path) {
		return scimingest.DumpFile(path, w)
	}
	return identitystore.DumpFile(path, w)
}

// operatorConn is the connection of the operator commands (replay, streams): nats.url, or the embedded
// store of data_dir opened in this process (refusing while a serve holds the data dir).
func operatorConn(f File) (*nats.Conn, func(), error) {
	if f.NATS.URL != "" {
		nc, err := nats.Connect(f.NATS.URL, nats.Name("scimflow-replay"))
		if err != nil {
			return nil, nil, fmt.Errorf("connect %s: %w", f.NATS.URL, err)
		}
		return nc, nc.Close, nil
	}
	unlock, err := LockDataDir(f.DataDir)
	if err != nil {
		return nil, nil, err
	}
	emb, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: filepath.Join(f.DataDir, "nats")}, nil)
	if err != nil {
		unlock()
		return nil, nil, err
	}
	nc, err := emb.Connect("scimflow-replay")
	if err != nil {
		emb.Shutdown()
		unlock()
		return nil, nil, err
	}
	return nc, func() { nc.Close(); emb.Shutdown(); unlock() }, nil
}
