// Package broker is scimflow's NATS platform: an embedded nats-server with JetStream, a connection to
// a remote one that reconnects forever, and the idempotent set-up of the streams and KV buckets every
// service relies on.
//
// The all-in-one process and the separate services differ only in how they reach NATS (docs/design.md
// §2.6): Embedded gives an in-process connection, Connect a URL one; both return a *nats.Conn.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
)

// KVIdPConfig is the KV bucket holding IdP definitions, keyed by IdP id.
const KVIdPConfig = "idp_config"

// KVAccessApps is the KV bucket holding access applications (docs/access-policies.md), keyed by app
// id: identity-store mirrors its registry of apps into it and every auth replica watches it.
const KVAccessApps = "access_apps"

// KVAdmission is the KV bucket in which every running scim-ingest publishes its admission-control
// state under its instance id (events.AdmissionState), for identity-store's console. scim-ingest
// creates it with a TTL (events.AdmissionTTL), so a dead instance's entry disappears.
const KVAdmission = "scim_ingest_admission"

// DuplicateWindow is the JetStream deduplication window of every stream (Nats-Msg-Id = event id).
const DuplicateWindow = 2 * time.Minute

// EmbeddedConfig configures the embedded server.
type EmbeddedConfig struct {
	StoreDir string // JetStream file store; required
	Listen   string // optional TCP address ("127.0.0.1:4222"); empty: in-process only
	Name     string // server name; default "scimflow"
	// Users, when set, are the only clients the server accepts (in-process ones included), each
	// limited to its role's rows of Table. Without Users the server accepts anyone: tests only.
	Users map[Role]Credential
	Table []Grant // default Permissions
}

// Embedded is a running embedded nats-server.
type Embedded struct {
	Server *server.Server
}

// StartEmbedded starts nats-server in this process with JetStream on the file store and SyncAlways
// (fsync before every ack, docs/design.md §2.4). It returns once the server accepts connections.
func StartEmbedded(cfg EmbeddedConfig, logger *slog.Logger) (*Embedded, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded nats: store dir is required")
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	opts := EmbeddedOptions(cfg)
	if len(cfg.Users) > 0 {
		table := cfg.Table
		if table == nil {
			table = Permissions
		}
		us, nus, err := serverUsers(cfg.Users, table)
		if err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
		opts.Users, opts.Nkeys = us, nus
	}
	if cfg.Listen != "" {
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats listen %q: %w", cfg.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("embedded nats listen %q: bad port", cfg.Listen)
		}
		if p == 0 {
			p = server.RANDOM_PORT // nats-server reads 0 as its default port 4222
		}
		opts.DontListen = false
		opts.Host, opts.Port = host, p
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded nats: not ready after 10s (is the listen address in use?)")
	}
	if logger != nil {
		logger.Info("embedded nats started", "store_dir", cfg.StoreDir, "listen", cfg.Listen)
	}
	return &Embedded{Server: s}, nil
}

// EmbeddedOptions returns the server options StartEmbedded uses; the config guard test asserts them.
func EmbeddedOptions(cfg EmbeddedConfig) *server.Options {
	name := cfg.Name
	if name == "" {
		name = "scimflow"
	}
	return &server.Options{
		ServerName:        name,
		JetStream:         true,
		StoreDir:          filepath.Clean(cfg.StoreDir),
		SyncAlways:        true,
		DontListen:        true,
		NoSigs:            true,
		NoLog:             true,
		JetStreamMaxStore: -1,
		MaxPayload:        1 << 20,
	}
}

// Connect returns an in-process connection named name; opts carry its credential
// (Credential.ClientOptions).
func (e *Embedded) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect("", append([]nats.Option{nats.InProcessServer(e.Server), nats.Name(name), nats.MaxReconnects(-1)}, opts...)...)
}

// ClientURL is the TCP URL clients use, or "" when the server listens in-process only.
func (e *Embedded) ClientURL() string {
	if e.Server.Addr() == nil {
		return ""
	}
	return e.Server.ClientURL()
}

// Shutdown stops the server and waits for it.
func (e *Embedded) Shutdown() {
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
}

// Connect dials url and keeps reconnecting forever, also when the server is unreachable at start
// (the services then report /readyz 503 until set-up succeeds). opts carry the credential
// (Credential.ClientOptions).
func Connect(url, name string, logger *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	base := []nats.Option{
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		// A connection that dies without a FIN or RST (a host or container cut from the network:
		// reliability/compose_test.go's TestComposeCluster disconnects auth-2 from NATS's network)
		// is noticed only when pings go unanswered. The client default (every 2 min, 2
		// outstanding) kept such a replica cut off, failing closed, for minutes after the network
		// came back; 5 s and 2 notice it within about 15 s.
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if logger != nil {
				logger.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			if logger != nil {
				logger.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
			}
		}),
		// A refused subscription or publish (a missing row in the permission table, a wrong
		// credential) is logged instead of only timing out.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if logger != nil {
				logger.Error("nats error", "err", err)
			}
		}),
	}
	return nats.Connect(url, append(base, opts...)...)
}

// StreamsConfig is how the streams are created when they do not exist yet. Services never change an
// existing stream's retention, replicas or limits (see EnsureStreams); `scimflow streams apply` does.
type StreamsConfig struct {
	Replicas int           // 1 on one node, 3 in a cluster; default 1
	MaxAge   time.Duration // 0: unlimited; otherwise at least DuplicateWindow
	// Role, when set, limits EnsureStreams to the streams and buckets the role has a Manage row for
	// in Permissions (the ones its NATS user may create and uses); empty: all of them.
	Role Role
	// OnDrift, when set, receives the differences WaitSetup found between the live streams and this
	// configuration (none: an empty slice), so the service can expose them as a metric.
	OnDrift func([]Drift)
}

// manages reports whether c's role creates (and therefore checks) the stream or bucket.
func (c StreamsConfig) manages(stream, bucket string) bool {
	if c.Role == "" {
		return true
	}
	for _, g := range Permissions {
		if g.Role == c.Role && g.Access&Manage != 0 && g.Stream == stream && g.Bucket == bucket {
			return true
		}
	}
	return false
}

// StreamConfigs returns the configuration of the SCIM, IDENTITY and AUTH streams and of the two
// priority lanes (SCIM_PRIORITY, IDENTITY_PRIORITY): file storage, deny delete and purge (a sequence
// gap then always means loss), a 2-minute duplicate window, limits retention, discard new (refuse
// rather than silently drop).
func StreamConfigs(c StreamsConfig) []jetstream.StreamConfig {
	replicas := max(c.Replicas, 1)
	var out []jetstream.StreamConfig
	for _, name := range []string{events.StreamSCIM, events.StreamIdentity, events.StreamAuth, events.StreamSCIMPriority, events.StreamIdentityPriority} {
		out = append(out, jetstream.StreamConfig{
			Name:        name,
			Description: "scimflow " + name + " events",
			Subjects:    events.StreamSubjects[name],
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Discard:     jetstream.DiscardNew,
			MaxAge:      c.MaxAge,
			MaxMsgs:     -1,
			MaxBytes:    -1,
			MaxMsgSize:  1 << 20,
			Replicas:    replicas,
			Duplicates:  DuplicateWindow,
			DenyDelete:  true,
			DenyPurge:   true,
		})
	}
	return out
}

// KVConfigs returns the KV buckets created at start.
func KVConfigs(c StreamsConfig) []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{{
		Bucket:      KVIdPConfig,
		Description: "scimflow identity provider definitions",
		History:     5,
		Storage:     jetstream.FileStorage,
		Replicas:    max(c.Replicas, 1),
	}, {
		Bucket:      KVAccessApps,
		Description: "scimflow access applications and their policies",
		History:     5,
		Storage:     jetstream.FileStorage,
		Replicas:    max(c.Replicas, 1),
	}}
}

// WaitSetup calls EnsureStreams until it succeeds or ctx ends, backing off up to 5 s between tries.
// Services call it before reporting ready, so an unreachable NATS keeps them alive but not ready.
func WaitSetup(ctx context.Context, js jetstream.JetStream, c StreamsConfig, logger *slog.Logger) error {
	wait := 100 * time.Millisecond
	for {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		drift, err := EnsureStreams(tctx, js, c)
		cancel()
		if err == nil {
			for _, d := range drift {
				if logger != nil {
					logger.Warn("live stream differs from this service's nats settings; left as it is (change it with `scimflow streams apply`)",
						"stream", d.Stream, "field", d.Field, "live", d.Live, "configured", d.Want)
				}
			}
			if c.OnDrift != nil {
				c.OnDrift(drift)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if logger != nil {
			logger.Warn("nats set-up not done yet; retrying", "err", err, "retry_in", wait.String())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}
