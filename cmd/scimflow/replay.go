package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/scimflow/scimflow/app"
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
		if err := app.Dump(args[1], stdout); err != nil {
			fmt.Fprintf(stderr, "scimflow replay dump: %v\n", err)
			return 1
		}
		return 0
	case "identity-store":
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
	if err := app.Replay(ctx, f, args[0], *out); err != nil {
		fmt.Fprintf(stderr, "scimflow replay: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "rebuilt %s\n", *out)
	return 0
}
