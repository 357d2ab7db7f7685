// Package scimingest is the SCIM 2.0 service provider: one endpoint per IdP, resources in its own
// bbolt file, and every committed change published to the SCIM stream through the outbox.
//
// # Why most verbs bypass elimity-com/scim
//
// The library (github.com/elimity-com/scim) supplies the schemas (validation of POST and PUT bodies,
// with case-insensitive attribute names, type checks, read-only attributes dropped) and serves the
// /Schemas and /ResourceTypes discovery documents. Its request handling is not used for the resource
// verbs, because it fails real IdPs or scimflow's contract there (scim-idp-requests.md §8.4):
//   - PATCH: it rejects Entra's value:null, manager-as-string, "Operations":[] and extra PatchOp URNs,
//     and does not apply operations at all;
//   - list: its filter parser rejects emails[type eq "work"].value eq "x" and mixed core/extension
//     filters, and it ignores attributes / excludedAttributes on GET;
//   - every verb: it has no If-Match / ETag, turns any handler error into a 500 carrying err.Error(),
//     and rejects statuses it deems inapplicable (a 412 or 409 from the handler becomes a 500), so the
//     one writeError of this package could not hold; the provisioning-log record must commit in the
//     same transaction as the change, which needs the status before the library would write it;
//   - discovery: POST /ServiceProviderConfig answers 200 and the SPC hard-codes etag:false, so
//     /ServiceProviderConfig is served here, and non-GET discovery requests get 405 before the library.
//
// In front of everything sits the normalisation of paths (trailing slashes, endpoint letter case:
// routes.go) and of bodies and PATCH operations (legacy OneLogin URNs, extension key case, string
// booleans, manager as a string: normalize.go). Behind the handlers, the resource store (store.go)
// owns the write transaction, uniqueness, indexes, membership and the events.
package scimingest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/scimflow/scimflow/internal/boltdb"
	"github.com/scimflow/scimflow/internal/config"
	"github.com/scimflow/scimflow/internal/outbox"
	"github.com/scimflow/scimflow/internal/platform"
)

// Name is the service name used in logs, metrics and the data file name.
const Name = "scim-ingest"

// Config is the scim_ingest section of the config file.
type Config struct {
	Listen  string `json:"listen"`   // default ":8080"
	BaseURL string `json:"base_url"` // absolute; meta.location and scim_base_url are built from it
	DataDir string `json:"-"`        // set by the wiring from data_dir

	MaxBodyBytes         int64           `json:"max_body_bytes"`          // request body limit; 413 beyond; default 1 MiB
	MaxPatchOps          int             `json:"max_patch_operations"`    // PATCH Operations per request; default 1,000
	MaxMembersPerRequest int             `json:"max_members_per_request"` // member ids in one request; default 10,000
	MaxFilterLength      int             `json:"max_filter_length"`       // bytes; default 4,096
	MaxResults           int             `json:"max_results"`             // largest page (filter.maxResults); default 1,000
	DefaultCount         int             `json:"default_count"`           // page size when count is absent; default 100
	FilterScanLimit      int             `json:"filter_scan_limit"`       // resources a non-indexed filter may scan; 400 tooMany beyond; default 200,000
	FilterScanTimeout    config.Duration `json:"filter_scan_timeout"`     // how long a non-indexed filter may scan; 400 tooMany beyond; default 2s
	MaxPatchWork         int             `json:"max_patch_work"`          // value comparisons one PATCH may cost (operations × values scanned); 400 tooMany beyond; default 200,000
	RateLimit            float64         `json:"rate_limit"`              // requests per second per IdP (token bucket); 0 disables; default 200
	RateBurst            int             `json:"rate_burst"`              // bucket size; default 400
	OutboxMaxDepth       int64           `json:"outbox_max_depth"`        // unpublished events at which bulk writes get 429; default 100,000
	AdmissionMaxLag      config.Duration `json:"admission_max_lag"`       // pipeline lag beyond which bulk writes get 429 (security facts always pass); default 1s
	SecretGrace          config.Duration `json:"secret_grace"`            // how long the previous SCIM secret stays valid after a refresh; default 0
	MaxCommitBatch       int             `json:"max_commit_batch"`        // writes grouped into one bbolt commit at most; default 256
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Listen: ":8080", BaseURL: "http://localhost:8080",
		MaxBodyBytes: 1 << 20, MaxPatchOps: 1000, MaxMembersPerRequest: 10000, MaxFilterLength: 4096,
		MaxResults: 1000, DefaultCount: 100, FilterScanLimit: 200000,
		FilterScanTimeout: config.Duration(2 * time.Second), MaxPatchWork: 200000,
		RateLimit: 200, RateBurst: 400, OutboxMaxDepth: 100000, MaxCommitBatch: 256,
		AdmissionMaxLag: config.Duration(time.Second),
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("scim_ingest.listen: required"))
	}
	if c.BaseURL == "" {
		errs = append(errs, errors.New("scim_ingest.base_url: required"))
	} else if !strings.HasPrefix(c.BaseURL, "http://") && !strings.HasPrefix(c.BaseURL, "https://") {
		errs = append(errs, fmt.Errorf("scim_ingest.base_url: %q is not an absolute http(s) URL", c.BaseURL))
	}
	positive := func(name string, v int64) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("scim_ingest.%s: %d, must be positive", name, v))
		}
	}
	positive("max_body_bytes", c.MaxBodyBytes)
	positive("max_patch_operations", int64(c.MaxPatchOps))
	positive("max_members_per_request", int64(c.MaxMembersPerRequest))
	positive("max_filter_length", int64(c.MaxFilterLength))
	positive("max_results", int64(c.MaxResults))
	positive("default_count", int64(c.DefaultCount))
	positive("filter_scan_limit", int64(c.FilterScanLimit))
	positive("filter_scan_timeout", int64(c.FilterScanTimeout))
	positive("max_patch_work", int64(c.MaxPatchWork))
	positive("outbox_max_depth", c.OutboxMaxDepth)
	positive("max_commit_batch", int64(c.MaxCommitBatch))
	positive("admission_max_lag", int64(c.AdmissionMaxLag))
	if c.RateLimit < 0 {
		errs = append(errs, errors.New("scim_ingest.rate_limit: must not be negative"))
	}
	if c.RateLimit > 0 && c.RateBurst < 1 {
		errs = append(errs, errors.New("scim_ingest.rate_burst: must be at least 1 when rate_limit is set"))
	}
	if c.SecretGrace < 0 {
		errs = append(errs, errors.New("scim_ingest.secret_grace: must not be negative"))
	}
	return errors.Join(errs...)
}

// Deps are the service's dependencies.
type Deps = platform.Deps

// Run serves SCIM until ctx ends.
func Run(ctx context.Context, cfg Config, d Deps) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	db, err := boltdb.Open(filepath.Join(cfg.DataDir, Name+".db"), append([]string{outbox.Bucket}, allBuckets...)...)
	if err != nil {
		return err
	}
	defer db.Close()
	relay, err := outbox.NewRelay(db, d.JS, outbox.RelayConfig{MetricsPrefix: "scimflow_scim_ingest"}, d.Registry, d.Log(), d.Now)
	if err != nil {
		return err
	}
	s, err := newServer(cfg, d, db, relay)
	if err != nil {
		return err
	}
	// The committer outlives the HTTP server: platform.Serve returns only after in-flight requests
	// finished, and they may still be waiting for their commit.
	cctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.commits.Run(cctx); close(done) }()
	defer func() { s.logs.flushNow(); stop(); <-done }()
	return platform.Serve(ctx, platform.Service{
		Name: Name, Addr: cfg.Listen, Handler: s.routes(), Start: s.start(relay),
	}, d)
}

// retryAfter is what 429 and 503 answers tell IdPs to wait, at least.
const retryAfter = time.Second
