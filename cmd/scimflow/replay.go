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
  scimflow replay scim-ingest -out FILE [-config FILE]
      rebuild scim-ingest's resources from the SCIM stream into a fresh bbolt file
  scimflow replay dump FILE
      print the canonical dump of an identity-store or scim-ingest file (compare a live file with
      a rebuilt one)

Rebuilds need the streams complete from their first event (nats.max_age: 0).

With nats.url empty, replay opens the embedded JetStream store under data_dir/nats, so the
scimflow serve that owns that data dir must be stopped first. Nothing is published.
`

// runReplay rebuilds a projection from the streams, or dumps a projection file.
func runReplay(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		fmt.Fprint(stderr, replayUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "dump":
		return runReplayDump(args[1:], stdout, stderr)
	case "identity-store", "scim-ingest":
	default:
		fmt.Fprintf(stderr, "scimflow replay: unknown target %q\n\n%s", args[0], replayUsage)
		return 2
	}
	target := args[0]
	fs := flag.NewFlagSet("replay "+target, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", defaultConfig, "config file (YAML); the default is used only if it exists")
	out := fs.String("out", "", "path of the fresh bbolt file to build (must not exist)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: scimflow replay %s -out FILE [-config FILE]

Rebuilds identity-store's registry from the SCIM, AUTH and IDENTITY streams, or scim-ingest's
resources from the SCIM stream, into a fresh bbolt file, reading nats.url (or the embedded store
under data_dir/nats, whose scimflow serve must be stopped) from the config. Nothing is published.
Compare the result with the live file using scimflow replay dump.

Flags:
`, target)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if !noArgs(fs, "replay "+target, stderr) {
		return 2
	}
	if *out == "" {
		fmt.Fprintf(stderr, "scimflow replay %s: -out is required\n", target)
		return 2
	}
	f, ok := toolConfig(fs, *configPath, stderr)
	if !ok {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Replay(ctx, f, target, *out); err != nil {
		fmt.Fprintf(stderr, "scimflow replay: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "rebuilt %s\n", *out)
	return 0
}

// runReplayDump is `scimflow replay dump FILE`.
func runReplayDump(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("replay dump", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: scimflow replay dump FILE

Prints the canonical dump of an identity-store or scim-ingest bbolt file (one line per record, in
key order), so that a live file and one rebuilt by scimflow replay can be compared with diff.
The file is opened read-only; stop the service that owns it first.
`)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "scimflow replay dump: want exactly one FILE")
		fs.Usage()
		return 2
	}
	if err := app.Dump(fs.Arg(0), stdout); err != nil {
		fmt.Fprintf(stderr, "scimflow replay dump: %v\n", err)
		return 1
	}
	return 0
}
