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

const streamsUsage = `Usage:
  scimflow streams status [-config FILE]
      show how the live SCIM, IDENTITY and AUTH streams differ from the config's nats section
  scimflow streams apply [-config FILE] [-dry-run] [-force]
      change the live streams to match nats.max_age and nats.replicas

Services create missing streams but never change an existing stream's retention, replicas or
limits; a difference is logged and exposed as scimflow_<service>_stream_config_drift. This command
is the one way to change them. A change that could delete history (a shorter or new max_age) is
refused without -force. With nats.url empty it opens the embedded store under data_dir, so the
scimflow serve that owns that data dir must be stopped first.

Flags:
`

// runStreams is `scimflow streams`.
func runStreams(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, streamsUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	sub := args[0]
	if sub != "status" && sub != "apply" {
		fmt.Fprintf(stderr, "scimflow streams: unknown subcommand %q\n\n%s", sub, streamsUsage)
		return 2
	}
	fs := flag.NewFlagSet("streams "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, streamsUsage); fs.PrintDefaults() }
	configPath := fs.String("config", defaultConfig, "config file (YAML); the default is used only if it exists")
	force := fs.Bool("force", false, "apply: allow changes that shorten retention (JetStream deletes what falls outside)")
	dryRun := fs.Bool("dry-run", false, "apply: print the plan, change nothing")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if !noArgs(fs, "streams "+sub, stderr) {
		return 2
	}
	f, ok := toolConfig(fs, *configPath, stderr)
	if !ok {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if sub == "status" {
		drift, err := app.StreamsStatus(ctx, f)
		if err != nil {
			fmt.Fprintf(stderr, "scimflow streams status: %v\n", err)
			return 1
		}
		if len(drift) == 0 {
			fmt.Fprintln(stdout, "streams match the config")
		}
		for _, d := range drift {
			fmt.Fprintln(stdout, d)
		}
		return 0
	}
	plan, err := app.StreamsApply(ctx, f, *force, *dryRun)
	if err != nil {
		fmt.Fprintf(stderr, "scimflow streams apply: %v\n", err)
		return 1
	}
	verb := "changed"
	if *dryRun {
		verb = "would change"
	}
	if len(plan) == 0 {
		fmt.Fprintln(stdout, "streams match the config; nothing to change")
	}
	for _, d := range plan {
		fmt.Fprintf(stdout, "%s %s\n", verb, d)
	}
	return 0
}
