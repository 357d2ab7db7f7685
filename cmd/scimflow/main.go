// Command scimflow runs scimflow: all services in one process (serve), one service against a NATS URL
// (scim-ingest, identity-store, auth), and the admin, replay and benchmark tools. It only parses flags
// and config and calls app.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/scimflow/scimflow/app"
	"github.com/scimflow/scimflow/internal/logging"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `scimflow keeps zero-trust access in step with the identity provider.

Usage:
  scimflow <command> [flags]

Commands:
  serve           run scim-ingest, identity-store and auth in one process (embedded JetStream unless nats.url is set)
  scim-ingest     run only the SCIM service, against nats.url
  identity-store  run only the registry and admin API, against nats.url
  auth            run only the OIDC/session service, against nats.url
  demo            start the embedded pipeline and a test OpenID provider, and narrate a lifecycle
  replay          rebuild a service's projection from the streams into a fresh file, and dump files
  streams         show or change the live streams' retention and replicas (the only command that does)
  bench           benchmarks (scimflow bench -h)
  healthcheck     exit 0 when the named services answer /readyz (container healthchecks)
  version         print the version

Run 'scimflow <command> -h' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "scimflow", buildVersion())
		return 0
	case "serve":
		return runServices(cmd, rest, app.AllServices, true, stdout, stderr)
	case "scim-ingest", "identity-store", "auth":
		return runServices(cmd, rest, []string{cmd}, false, stdout, stderr)
	case "demo":
		return runDemo(rest, stdout, stderr)
	case "replay":
		return runReplay(rest, stdout, stderr)
	case "bench":
		return runBench(rest, stdout, stderr)
	case "healthcheck":
		return runHealthcheck(rest, stdout, stderr)
	case "streams":
		return runStreams(rest, stdout, stderr)
	}
	fmt.Fprintf(stderr, "scimflow: unknown command %q\n\n%s", cmd, usage)
	return 2
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

const defaultConfig = "scimflow.yaml"

func runServices(cmd string, args []string, services []string, embeddedOK bool, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", defaultConfig, "config file (YAML); the default is used only if it exists")
	logFormat := fs.String("log-format", "", "log format: json or text (overrides log.format)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: scimflow %s [flags]\n\n", cmd)
		if embeddedOK {
			fmt.Fprintln(stderr, "Runs all three services in one process. With nats.url empty, JetStream is embedded under data_dir/nats.")
		} else {
			fmt.Fprintf(stderr, "Runs only %s, against the NATS server at nats.url (SCIMFLOW_NATS_URL).\n", cmd)
		}
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if !noArgs(fs, cmd, stderr) {
		return 2
	}
	f, path, err := loadConfig(fs, *configPath)
	if err != nil {
		fmt.Fprintf(stderr, "scimflow: invalid config:\n%v\n", err)
		return 2
	}
	if *logFormat != "" {
		f.Log.Format = *logFormat
	}
	if !embeddedOK && f.NATS.URL == "" {
		fmt.Fprintf(stderr, "scimflow: invalid config:\nnats.url: required for %s (set it or SCIMFLOW_NATS_URL; only serve embeds NATS)\n", cmd)
		return 2
	}
	if err := f.Validate(services...); err != nil {
		fmt.Fprintf(stderr, "scimflow: invalid config:\n%v\n", err)
		return 2
	}
	log, err := logging.New(stderr, f.Log.Format, f.Log.Level)
	if err != nil {
		fmt.Fprintf(stderr, "scimflow: invalid config:\n%v\n", err)
		return 2
	}
	if path != "" {
		log.Info("config", "file", path)
	} else {
		log.Info("config", "file", "", "note", "no config file: built-in defaults and SCIMFLOW_* environment")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, f, services, log) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		log.Info("shutting down")
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			log.Error("shutdown took longer than 10s; exiting")
			return 1
		}
	}
	if err != nil {
		// Once, through the logger (JSON in containers), not also as a plain line.
		log.Error("exit", "err", err.Error())
		return 1
	}
	log.Info("stopped")
	return 0
}

// loadConfig loads the file named by the -config flag of fs. The default path is used only if it
// exists, so a fresh checkout runs with the built-in defaults. It returns the path it read ("" for
// none) so that the caller can say which file is in effect.
func loadConfig(fs *flag.FlagSet, path string) (app.File, string, error) {
	if path == defaultConfig && !explicit(fs, "config") {
		if _, err := os.Stat(path); err != nil {
			path = ""
		}
	}
	f, err := app.LoadEnviron(path, os.Environ())
	return f, path, err
}

// noArgs reports arguments left after the flags: a command that takes none must not silently
// ignore them ("serve -config a.yaml b.yaml" would run on a.yaml alone).
// toolConfig loads and validates the config of an operator command (replay, streams), reporting a
// problem on stderr; ok is false when the command must exit with status 2.
func toolConfig(fs *flag.FlagSet, path string, stderr io.Writer) (f app.File, ok bool) {
	f, _, err := loadConfig(fs, path)
	if err == nil {
		err = f.Validate()
	}
	if err != nil {
		fmt.Fprintf(stderr, "scimflow: invalid config:\n%v\n", err)
		return f, false
	}
	return f, true
}

// parseFlags sets fs's usage to text followed by the flags and parses args. When ok is false the
// command exits with code: 0 after -h printed the usage, 2 for bad flags (already reported by fs).
func parseFlags(fs *flag.FlagSet, args []string, text string, stderr io.Writer) (code int, ok bool) {
	fs.Usage = func() {
		fmt.Fprint(stderr, text)
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	return 0, true
}

func noArgs(fs *flag.FlagSet, cmd string, stderr io.Writer) bool {
	if fs.NArg() == 0 {
		return true
	}
	fmt.Fprintf(stderr, "scimflow %s: unexpected argument %q (flags go before arguments; see scimflow %s -h)\n", cmd, fs.Arg(0), cmd)
	return false
}

func explicit(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			found = true
		}
	})
	return found
}
