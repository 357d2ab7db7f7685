package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/internal/app"
	"github.com/scimflow/scimflow/internal/broker"
	identitystore "github.com/scimflow/scimflow/services/identity-store"
)

const replayUsage = `Usage:
  scimflow replay identity-store -out FILE [-config FILE]
      rebuild the registry from the SCIM, AUTH and IDENTITY streams into a fresh bbolt file
  scimflow replay dump FILE
      print the canonical dump of an identity-store file (compare a live file with a rebuilt one)

With nats.url empty, replay opens the embedded JetStream store under data_dir/nats, so the
scimflow serve that owns that data dir must be stopped first. Nothing is published.
`

// runReplay rebuilds a projection from the streams, or dumps a projection file.
func runReplay(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, replayUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "dump":
		if len(args) != 2 {
			fmt.Fprint(stderr, replayUsage)
			return 2
		}
		if err := identitystore.DumpFile(args[1], stdout); err != nil {
			fmt.Fprintf(stderr, "scimflow replay dump: %v\n", err)
			return 1
		}
		return 0
	case identitystore.Name:
	default:
		fmt.Fprintf(stderr, "scimflow replay: unknown target %q\n\n%s", args[0], replayUsage)
		return 2
	}
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", defaultConfig, "config file (YAML); the default is used only if it exists")
	out := fs.String("out", "", "path of the fresh bbolt file to build (must not exist)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *out == "" {
		fmt.Fprintln(stderr, "scimflow replay: -out is required")
		return 2
	}
	f, err := loadConfig(fs, *configPath)
	if err == nil {
		err = f.Validate()
	}
	if err != nil {
		fmt.Fprintf(stderr, "scimflow: invalid config:\n%v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, cleanup, err := replayConn(f)
	if err != nil {
		fmt.Fprintf(stderr, "scimflow replay: %v\n", err)
		return 1
	}
	defer cleanup()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintf(stderr, "scimflow replay: %v\n", err)
		return 1
	}
	if err := identitystore.ReplayWith(ctx, js, *out, identitystore.ReplayOptions{SCIMLogRetention: f.IdentityStore.SCIMLogRetention.D()}); err != nil {
		fmt.Fprintf(stderr, "scimflow replay: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "rebuilt %s\n", *out)
	return 0
}

// replayConn connects to nats.url, or opens the embedded store of data_dir (refusing while a serve
// holds the data dir).
func replayConn(f app.File) (*nats.Conn, func(), error) {
	if f.NATS.URL != "" {
		nc, err := nats.Connect(f.NATS.URL, nats.Name("scimflow-replay"))
		if err != nil {
			return nil, nil, fmt.Errorf("connect %s: %w", f.NATS.URL, err)
		}
		return nc, nc.Close, nil
	}
	unlock, err := app.LockDataDir(f.DataDir)
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
