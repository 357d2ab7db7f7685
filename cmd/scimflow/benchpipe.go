package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scimflow/scimflow/app"
	"github.com/scimflow/scimflow/internal/config"
	"github.com/scimflow/scimflow/internal/scenario"
)

// pipelineConfig are the flags of `bench pipeline`.
type pipelineConfig struct {
	clients  int
	duration time.Duration
	idps     int
	maxLag   time.Duration
	dataDir  string
	logLevel string
}

func benchPipeline(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c pipelineConfig
	fs := flag.NewFlagSet("bench pipeline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.clients, "clients", 32, "concurrent SCIM clients sending creates")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long the clients send creates")
	fs.IntVar(&c.idps, "idps", 1, "IdPs the clients are spread over")
	fs.DurationVar(&c.maxLag, "admission-max-lag", time.Second, "scim_ingest.admission_max_lag (a refused create is retried after Retry-After, as IdPs do)")
	fs.StringVar(&c.dataDir, "data-dir", "", "data directory (default: a temporary one, removed at exit)")
	fs.StringVar(&c.logLevel, "log-level", "error", "log level of the services (stderr)")
	if code, ok := parseFlags(fs, args, "Usage: scimflow bench pipeline [flags]\n"+
		"\nStarts the all-in-one pipeline in this process (embedded JetStream, fsync on, rate_limit 0) and\n"+
		"sends SCIM creates from -clients clients for -duration; then waits until auth has applied the\n"+
		"identity of the last created user. Reports creates accepted per second, creates applied end to end\n"+
		"per second (SCIM 2xx → identity-store → auth), and a plain net/http server's requests per second\n"+
		"with the same clients and bodies as the same-run baseline.\n", stderr); !ok {
		return code
	}
	if c.clients < 1 || c.duration <= 0 || c.idps < 1 || c.maxLag <= 0 {
		fmt.Fprintln(stderr, "scimflow bench pipeline: -clients, -duration, -idps and -admission-max-lag must be positive")
		return 2
	}
	dir, cleanup, err := benchDir(c.dataDir, "scimflow-bench-")
	if err != nil {
		fmt.Fprintf(stderr, "scimflow bench: %v\n", err)
		return 1
	}
	defer cleanup()
	if err := pipeline(ctx, c, dir, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "scimflow bench pipeline: %v\n", err)
		return 1
	}
	return 0
}

// createLoad sends POST /Users from clients goroutines for d, retrying a 429 after Retry-After. It
// returns the creates answered 201 and the 429s.
func createLoad(ctx context.Context, clients []*scenario.SCIM, workers int, d time.Duration, prefix string) (created, refused int64, err error) {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := clients[w%len(clients)]
			for time.Now().Before(end) && ctx.Err() == nil {
				n := next.Add(1)
				body := map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"},
					"userName": fmt.Sprintf("%s%08d@bench.example.com", prefix, n), "externalId": fmt.Sprintf("ext-%s%d", prefix, n),
					"name": map[string]any{"givenName": "Bench", "familyName": strconv.FormatInt(n, 10)}, "active": true}
				for {
					r, err := s.Do(ctx, http.MethodPost, "/Users", body)
					if err != nil {
						if ctx.Err() == nil {
							once.Do(func() { firstErr = err })
						}
						return
					}
					if r.Status == http.StatusTooManyRequests {
						atomic.AddInt64(&refused, 1)
						wait, _ := strconv.Atoi(strings.TrimSpace(r.RetryAfter))
						select {
						case <-time.After(time.Duration(max(wait, 1)) * time.Second):
						case <-ctx.Done():
							return
						}
						continue
					}
					if r.Status != http.StatusCreated {
						once.Do(func() { firstErr = fmt.Errorf("POST /Users = %d %s", r.Status, r.Body) })
						return
					}
					atomic.AddInt64(&created, 1)
					break
				}
			}
		}()
	}
	wg.Wait()
	return created, refused, firstErr
}

// counterSum sums the samples of a counter on one metrics listener (ep.Metrics) whose line starts with prefix
// and contains every string of having.
func counterSum(ctx context.Context, hc *http.Client, base, prefix string, having ...string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
lines:
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		for _, h := range having {
			if !strings.Contains(line, h) {
				continue lines
			}
		}
		i := strings.LastIndexByte(line, ' ')
		var v float64
		if _, err := fmt.Sscan(line[i+1:], &v); err == nil {
			sum += v
		}
	}
	return sum, nil
}

func pipeline(ctx context.Context, c pipelineConfig, dir string, stdout, stderr io.Writer) error {
	fmt.Fprintf(stdout, "starting scimflow (data in %s)\n", dir)
	e, err := startEmbedded(ctx, dir, false, stderr, c.logLevel, func(f *app.File) {
		f.SCIMIngest.RateLimit = 0
		f.SCIMIngest.AdmissionMaxLag = config.Duration(c.maxLag)
	})
	if err != nil {
		return err
	}
	defer e.stop()
	tr := &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var clients []*scenario.SCIM
	for k := range c.idps {
		_, s, err := e.newIdP(ctx, fmt.Sprintf("bench pipeline %d", k), "automatic", true, false, scenario.Okta)
		if err != nil {
			return err
		}
		s.HTTP = hc
		s.NoRetry = true // createLoad counts and retries 429s itself
		clients = append(clients, s)
	}
	const applied = "scimflow_auth_consumer_events_applied_total{"
	before, err := counterSum(ctx, hc, e.ep.Metrics[2], applied, `type="identity.user.changed"`)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "sending creates from %d clients for %s\n", c.clients, c.duration)
	start := time.Now()
	created, refused, err := createLoad(ctx, clients, c.clients, c.duration, "p")
	if err != nil {
		return err
	}
	accepted := time.Since(start)
	// Every create makes identity-store publish one identity.user.changed; auth applied them all
	// when its counter moved by the number of creates.
	for {
		n, err := counterSum(ctx, hc, e.ep.Metrics[2], applied, `type="identity.user.changed"`)
		if err != nil {
			return err
		}
		if n-before >= float64(created) {
			break
		}
		if time.Since(start) > c.duration+10*time.Minute {
			return fmt.Errorf("auth applied %.0f of %d creates after 10 minutes", n-before, created)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	endToEnd := time.Since(start)
	msgs, _ := counterSum(ctx, hc, e.ep.Metrics[0], "scimflow_scim_ingest_outbox_messages_total")
	recs, _ := counterSum(ctx, hc, e.ep.Metrics[0], "scimflow_scim_ingest_outbox_published_total")

	base, err := baselineHTTP(ctx, c.clients, c.duration)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nscimflow bench pipeline — %d CPUs, %s/%s, %s\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Fprintf(stdout, "  %d clients over %d IdP(s) for %s, admission_max_lag %s\n", c.clients, c.idps, c.duration, c.maxLag)
	fmt.Fprintf(stdout, "  accepted:    %d creates in %s = %.0f/s (%d answered 429 and retried)\n", created, accepted.Round(time.Millisecond), float64(created)/accepted.Seconds(), refused)
	fmt.Fprintf(stdout, "  end to end:  last create applied by auth after %s = %.0f/s (backlog drained %s after the load stopped)\n",
		endToEnd.Round(time.Millisecond), float64(created)/endToEnd.Seconds(), (endToEnd - accepted).Round(time.Millisecond))
	if msgs > 0 {
		fmt.Fprintf(stdout, "  scim-ingest published %.0f events in %.0f JetStream messages (%.1f per message)\n", recs, msgs, recs/msgs)
	}
	fmt.Fprintf(stdout, "  baseline:    plain net/http, same clients and bodies: %.0f requests/s\n", base)
	return nil
}

// baselineHTTP is the same load against a plain net/http server that reads the body and answers 201.
func baselineHTTP(ctx context.Context, clients int, d time.Duration) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/scim+json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"id":"x"}`)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	tr := &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512}
	defer tr.CloseIdleConnections()
	s := &scenario.SCIM{BaseURL: "http://" + ln.Addr().String(), Secret: "x", NoRetry: true, HTTP: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	start := time.Now()
	n, _, err := createLoad(ctx, []*scenario.SCIM{s}, clients, d, "b")
	return float64(n) / time.Since(start).Seconds(), err
}
