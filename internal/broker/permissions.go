package broker

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/scimflow/scimflow/events"
)

// Role is a NATS user kind. Each service connects as its own role, and every auth replica shares
// the auth role, so a leaked credential opens only what that one service needs (docs/security.md).
type Role string

// The roles. Their names are also NATS user names and appear in docs/security.md and
// deploy/compose/nats.conf.
const (
	RoleSCIMIngest    Role = "scim-ingest"
	RoleIdentityStore Role = "identity-store"
	RoleAuth          Role = "auth"
)

// Roles lists every role, in the order the tables print them.
var Roles = []Role{RoleSCIMIngest, RoleIdentityStore, RoleAuth}

// ServiceRole returns the role a service connects as; services are named as their roles.
func ServiceRole(service string) (Role, error) {
	r := Role(service)
	if !slices.Contains(Roles, r) {
		return "", fmt.Errorf("no NATS role for service %q", service)
	}
	return r, nil
}

// InboxPrefix is the role's reply-subject prefix. Each role subscribes only under its own, so one
// service cannot read the replies another receives (a KV get of auth_keys answers on auth's inbox).
func (r Role) InboxPrefix() string { return "_INBOX." + string(r) }

// Access is what a role may do with one stream or bucket.
type Access uint8

// Kinds of access. A row may combine several.
const (
	// Publish: publish events to the stream's subjects (events.StreamSubjects) through JetStream.
	Publish Access = 1 << iota
	// Consume: create, read, recreate and delete the durable consumers named in the row, ack their
	// messages, and read single messages by sequence (the consumer's gap check).
	Consume
	// Read: KV get, watch and key listing.
	Read
	// Write: KV put, create, compare-and-set update and delete. Implies Read.
	Write
	// Manage: create the stream or bucket and update its configuration (every service creates what
	// it uses at start, so any of them may start first).
	Manage
	// Observe: read the state (CONSUMER.INFO) of the consumers named in the row and single messages
	// by sequence, but create, pull from or delete no consumer: how far another service's projection
	// is behind (admission control).
	Observe
	// Request: publish requests on a core NATS subject (the reply comes to the role's inbox).
	Request
	// Serve: subscribe to a core NATS subject and answer each request once on its reply subject
	// (nats-server's allow_responses: the answer may go only where a request came from).
	Serve
)

// String names the access as docs/security.md prints it.
func (a Access) String() string {
	var parts []string
	for _, x := range []struct {
		a    Access
		name string
	}{{Publish, "publish"}, {Consume, "consume"}, {Read, "read"}, {Write, "write"}, {Manage, "manage"}, {Observe, "observe"}, {Request, "request"}, {Serve, "serve"}} {
		if a&x.a != 0 {
			parts = append(parts, x.name)
		}
	}
	return strings.Join(parts, ", ")
}

// Grant is one row of the permission table: one role's access to one stream, KV bucket or
// request subject.
type Grant struct {
	Role    Role
	Stream  string // a stream name (events.StreamSCIM, …) — or
	Bucket  string // a KV bucket name — or
	Subject string // a core NATS request subject (wildcards allowed) — or
	Object  string // a JetStream object store bucket name; exactly one of the four is set
	Access  Access
	// Consumers are the durable consumer names a Consume row may use; "*" stands for any name
	// (auth's are per replica, "auth-<replica_id>", and NATS wildcards match whole tokens only).
	Consumers []string
	Why       string // one line for docs/security.md
}

// KV bucket names owned by services. They are repeated here (not imported) because platform code
// never imports a service; a test in app checks they agree with the services' constants.
const (
	BucketAuthKeys     = "auth_keys"
	BucketAuthLoginTxn = "auth_login_txn"
	BucketAuthReplicas = "auth_replicas"
	// ObjectAuthSnapshots is the object store of auth's projection snapshots.
	ObjectAuthSnapshots = "auth_snapshots"
)

// Permissions is the one NATS permission table. The embedded server (Users), deploy/compose/nats.conf
// (NATSConf) and docs/security.md (PermissionsMarkdown) are built from it, and tests run with it
// enforced, so a stream, consumer or bucket used without a row here fails a test. Adding a stream,
// consumer or bucket means adding its rows here (and running the broker tests with -update to
// refresh nats.conf and docs/security.md).
var Permissions = []Grant{
	{Role: RoleSCIMIngest, Stream: events.StreamSCIM, Access: Publish | Manage,
		Why: "SCIM changes and provisioning-log records, from its outbox"},
	{Role: RoleSCIMIngest, Stream: events.StreamSCIM, Access: Observe, Consumers: []string{"identitystore-scim"},
		Why: "admission control reads how far identity-store's SCIM consumer is behind"},
	{Role: RoleSCIMIngest, Stream: events.StreamIdentity, Access: Observe, Consumers: []string{"*"},
		Why: "admission control reads how far each live auth replica's IDENTITY consumer (auth-<replica_id>) is behind, and the message after its ack floor"},
	{Role: RoleSCIMIngest, Bucket: BucketAuthReplicas, Access: Read,
		Why: "admission control counts only auth replicas with a live lease"},
	{Role: RoleSCIMIngest, Stream: events.StreamSCIMPriority, Access: Publish | Manage,
		Why: "the priority lane of its outbox"},
	{Role: RoleSCIMIngest, Bucket: KVIdPConfig, Access: Read | Manage,
		Why: "IdP definitions (SCIM tokens, policies), watched live"},
	{Role: RoleSCIMIngest, Bucket: KVAdmission, Access: Write | Manage,
		Why: "publishes its admission-control state (on/off, since, lag) per instance, for the console"},
	{Role: RoleSCIMIngest, Subject: events.BarrierSCIMSubjects, Access: Serve,
		Why: "answers auth's read-your-writes barrier: the SCIM sequence of an IdP's last write"},

	// identity-store's durables are identitystore-scim, -auth and -identity; `scimflow replay`
	// connects as identity-store and reads the same streams through ordered consumers with
	// generated names, hence any name.
	{Role: RoleIdentityStore, Stream: events.StreamSCIM, Access: Consume | Manage, Consumers: []string{"*"},
		Why: "projects SCIM changes into the registry"},
	{Role: RoleIdentityStore, Stream: events.StreamAuth, Access: Consume | Manage, Consumers: []string{"*"},
		Why: "projects logins and logouts"},
	{Role: RoleIdentityStore, Stream: events.StreamIdentity, Access: Publish | Consume | Manage, Consumers: []string{"*"},
		Why: "publishes identity facts from its outbox and reads them back for history"},
	{Role: RoleIdentityStore, Stream: events.StreamSCIMPriority, Access: Consume | Manage, Consumers: []string{"*"},
		Why: "SCIM changes on the priority lane; the console looks up caused events"},
	{Role: RoleIdentityStore, Stream: events.StreamIdentityPriority, Access: Publish | Consume | Manage, Consumers: []string{"*"},
		Why: "identity facts on the priority lane; the console looks up caused events"},
	{Role: RoleIdentityStore, Bucket: KVIdPConfig, Access: Write | Manage,
		Why: "the admin API and the config seed write IdP definitions"},
	{Role: RoleIdentityStore, Bucket: KVAccessApps, Access: Write | Manage,
		Why: "the admin API writes access applications and their policies"},
	{Role: RoleIdentityStore, Bucket: KVAdmission, Access: Read,
		Why: "the console's overview shows each scim-ingest's admission-control state"},
	{Role: RoleIdentityStore, Stream: events.StreamSCIM, Access: Observe, Consumers: []string{"*"},
		Why: "the console's overview lists every consumer's position"},
	{Role: RoleIdentityStore, Stream: events.StreamAuth, Access: Observe, Consumers: []string{"*"},
		Why: "the console's overview lists every consumer's position"},
	{Role: RoleIdentityStore, Stream: events.StreamIdentity, Access: Observe, Consumers: []string{"*"},
		Why: "the console's overview lists every consumer's position (each auth replica's lag)"},
	{Role: RoleIdentityStore, Stream: events.StreamSCIMPriority, Access: Observe, Consumers: []string{"*"},
		Why: "the console's overview lists every consumer's position"},
	{Role: RoleIdentityStore, Stream: events.StreamIdentityPriority, Access: Observe, Consumers: []string{"*"},
		Why: "the console's overview lists every consumer's position (each auth replica's priority lag)"},
	{Role: RoleIdentityStore, Subject: events.BarrierIdentitySubjects, Access: Serve,
		Why: "answers auth's read-your-writes barrier: the IDENTITY sequence covering a SCIM sequence"},

	{Role: RoleAuth, Stream: events.StreamIdentity, Access: Consume | Manage, Consumers: []string{"*"},
		Why: "revocation projection, one durable consumer per replica"},
	{Role: RoleAuth, Stream: events.StreamAuth, Access: Publish | Consume | Manage, Consumers: []string{"*"},
		Why: "publishes logins and logouts; every replica reads logouts"},
	{Role: RoleAuth, Stream: events.StreamIdentityPriority, Access: Consume | Manage, Consumers: []string{"*"},
		Why: "identity facts on the priority lane (revocations that must not wait behind a backlog)"},
	{Role: RoleAuth, Bucket: KVIdPConfig, Access: Read | Manage,
		Why: "IdP definitions (OIDC clients), watched live"},
	{Role: RoleAuth, Bucket: KVAccessApps, Access: Read | Manage,
		Why: "access applications and policies /verify enforces, watched live"},
	{Role: RoleAuth, Bucket: BucketAuthKeys, Access: Write | Manage,
		Why: "signing keys and the login-transaction key, sealed with the key-encryption key"},
	{Role: RoleAuth, Bucket: BucketAuthLoginTxn, Access: Write | Manage,
		Why: "login transactions already used, so a state/code pair is accepted once"},
	{Role: RoleAuth, Bucket: BucketAuthReplicas, Access: Write | Manage,
		Why: "leases on replica ids, so two processes never share one replica's consumers"},
	{Role: RoleAuth, Object: ObjectAuthSnapshots, Access: Write | Manage,
		Why: "projection snapshots: replicas publish them and a fresh replica restores one instead of replaying the streams"},
	{Role: RoleAuth, Subject: events.BarrierSCIMSubjects, Access: Request,
		Why: "a login's read-your-writes barrier, step 1 (scim-ingest answers)"},
	{Role: RoleAuth, Subject: events.BarrierIdentitySubjects, Access: Request,
		Why: "a login's read-your-writes barrier, step 2 (identity-store answers)"},
}

// kvStream is the stream behind a KV bucket.
func kvStream(bucket string) string { return "KV_" + bucket }

// objStream is the stream behind an object store bucket.
func objStream(bucket string) string { return "OBJ_" + bucket }

// RolePermissions expands the table's rows for role into NATS subject permissions. Everything not
// listed is denied: no role may publish to another role's inbox, touch another stream's consumers,
// delete or purge messages, or use the JetStream API beyond its rows.
func RolePermissions(role Role, table []Grant) *server.Permissions {
	var pub []string
	sub := []string{role.InboxPrefix() + ".>"}
	serves := false
	add := func(s ...string) { pub = append(pub, s...) }
	const api = "$JS.API."
	// Account information (limits and usage, no data): the KV client asks for it before creating
	// a bucket.
	add(api + "INFO")
	for _, g := range table {
		if g.Role != role {
			continue
		}
		if g.Stream != "" {
			s := g.Stream
			if g.Access&Manage != 0 {
				add(api+"STREAM.CREATE."+s, api+"STREAM.UPDATE."+s, api+"STREAM.INFO."+s)
			}
			if g.Access&Publish != 0 {
				add(events.StreamSubjects[s]...)
			}
			if g.Access&Observe != 0 {
				add(api+"STREAM.INFO."+s, api+"STREAM.MSG.GET."+s)
				for _, c := range g.Consumers {
					add(api + "CONSUMER.INFO." + s + "." + c)
					if c == "*" {
						// Any consumer: listing them is how an observer finds each auth replica's.
						add(api+"CONSUMER.LIST."+s, api+"CONSUMER.NAMES."+s)
					}
				}
			}
			if g.Access&Consume != 0 {
				add(api+"STREAM.INFO."+s, api+"STREAM.MSG.GET."+s)
				for _, c := range g.Consumers {
					add(api+"CONSUMER.CREATE."+s+"."+c, api+"CONSUMER.CREATE."+s+"."+c+".>",
						api+"CONSUMER.DURABLE.CREATE."+s+"."+c, api+"CONSUMER.DELETE."+s+"."+c,
						api+"CONSUMER.INFO."+s+"."+c, api+"CONSUMER.MSG.NEXT."+s+"."+c,
						"$JS.ACK."+s+"."+c+".>")
				}
			}
		}
		if g.Subject != "" {
			if g.Access&Request != 0 {
				add(g.Subject)
			}
			if g.Access&Serve != 0 {
				sub = append(sub, g.Subject)
				serves = true
			}
		}
		if g.Bucket != "" {
			st := kvStream(g.Bucket)
			if g.Access&Manage != 0 {
				add(api+"STREAM.CREATE."+st, api+"STREAM.UPDATE."+st, api+"STREAM.INFO."+st)
			}
			if g.Access&(Read|Write) != 0 {
				// Gets (direct or by the stream API) and watches: an ordered push consumer whose
				// flow-control replies go to $JS.FC.
				add(api+"STREAM.INFO."+st, api+"DIRECT.GET."+st, api+"DIRECT.GET."+st+".>", api+"STREAM.MSG.GET."+st,
					api+"CONSUMER.CREATE."+st, api+"CONSUMER.CREATE."+st+".>", api+"CONSUMER.DELETE."+st+".>",
					api+"CONSUMER.INFO."+st+".>", "$JS.FC."+st+".>")
			}
			if g.Access&Write != 0 {
				add("$KV." + g.Bucket + ".>")
			}
		}
		if g.Object != "" {
			st := objStream(g.Object)
			if g.Access&Manage != 0 {
				add(api+"STREAM.CREATE."+st, api+"STREAM.UPDATE."+st, api+"STREAM.INFO."+st)
			}
			if g.Access&(Read|Write) != 0 {
				// Object info (direct or by the stream API), lists and downloads: ordered push
				// consumers whose flow-control replies go to $JS.FC.
				add(api+"STREAM.INFO."+st, api+"DIRECT.GET."+st, api+"DIRECT.GET."+st+".>", api+"STREAM.MSG.GET."+st,
					api+"CONSUMER.CREATE."+st, api+"CONSUMER.CREATE."+st+".>", api+"CONSUMER.DELETE."+st+".>",
					api+"CONSUMER.INFO."+st+".>", "$JS.FC."+st+".>")
			}
			if g.Access&Write != 0 {
				// Chunks and metadata; deleting or replacing an object purges its chunks.
				add("$O."+g.Object+".>", api+"STREAM.PURGE."+st)
			}
		}
	}
	slices.Sort(pub)
	pub = slices.Compact(pub)
	slices.Sort(sub)
	p := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
	}
	if serves {
		// nats-server's allow_responses defaults: one answer per request, within 2 minutes.
		p.Response = &server.ResponsePermission{MaxMsgs: server.DEFAULT_ALLOW_RESPONSE_MAX_MSGS, Expires: server.DEFAULT_ALLOW_RESPONSE_EXPIRATION}
	}
	return p
}

// PermissionsMarkdown renders the table for docs/security.md.
func PermissionsMarkdown(table []Grant) string {
	var b strings.Builder
	b.WriteString("| role | stream / KV bucket | access | consumers | why |\n|---|---|---|---|---|\n")
	for _, g := range table {
		what := "stream `" + g.Stream + "`"
		if g.Bucket != "" {
			what = "bucket `" + g.Bucket + "`"
		}
		if g.Subject != "" {
			what = "subject `" + g.Subject + "`"
		}
		if g.Object != "" {
			what = "object store `" + g.Object + "`"
		}
		cons := ""
		if len(g.Consumers) > 0 {
			var q []string
			for _, c := range g.Consumers {
				if c == "*" {
					q = append(q, "any name")
				} else {
					q = append(q, "`"+c+"`")
				}
			}
			cons = strings.Join(q, ", ")
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", g.Role, what, g.Access, cons, g.Why)
	}
	b.WriteString("\nEvery role also subscribes to its own reply inbox, `_INBOX.<role>.>`, and to nothing else but the subjects it serves; a serving role may answer each request once, on its reply subject (`allow_responses`).\n")
	return b.String()
}

// NATSConfPasswordVar is the environment variable deploy/compose/nats.conf reads a role's password
// from (the compose file passes it from .env), e.g. NATS_AUTH_PASSWORD.
func NATSConfPasswordVar(r Role) string {
	return "NATS_" + strings.ToUpper(strings.ReplaceAll(string(r), "-", "_")) + "_PASSWORD"
}

// NATSConf renders a nats-server `authorization` block with one password user per role and the
// table's permissions; passwords are environment variable references (NATSConfPasswordVar).
// deploy/compose/nats.conf holds this block verbatim (a test compares them), and a cluster's nodes
// use the same block.
func NATSConf(table []Grant) string {
	var b strings.Builder
	b.WriteString("# Generated from internal/broker/permissions.go (go test ./internal/broker -run TestGenerated -update).\n")
	b.WriteString("authorization {\n  users: [\n")
	for _, r := range Roles {
		p := RolePermissions(r, table)
		fmt.Fprintf(&b, "    {\n      user: %q\n      password: $%s\n      permissions: {\n", r, NATSConfPasswordVar(r))
		fmt.Fprintf(&b, "        publish: {allow: [\n")
		for _, s := range p.Publish.Allow {
			fmt.Fprintf(&b, "          %q\n", s)
		}
		b.WriteString("        ]}\n        subscribe: {allow: [\n")
		for _, s := range p.Subscribe.Allow {
			fmt.Fprintf(&b, "          %q\n", s)
		}
		b.WriteString("        ]}\n")
		if p.Response != nil {
			b.WriteString("        allow_responses: true\n")
		}
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

// RouteUser is the user a node of a NATS cluster presents on another node's route port (6222).
// Without it any host that reaches the route port could join the cluster as a route and receive
// every replicated message, including the sealed signing keys and all identity data, past the
// per-role users above: client authorization does not apply to routes.
const RouteUser = "route"

// RoutePasswordVar is the environment variable the generated cluster block reads the route
// password from (compose passes it from .env).
const RoutePasswordVar = "NATS_ROUTE_PASSWORD"

// RoutesVar is the environment variable the generated cluster block reads the route URLs from, as
// a nats-server array value (`["nats-route://route:PASSWORD@nats-2:6222", …]`). nats-server
// presents the credentials of a configured route's URL and substitutes variables only for whole
// values, so the URLs with the password in them are built outside the file (compose.cluster.yaml
// interpolates RoutePasswordVar into them).
const RoutesVar = "NATS_ROUTES"

// NATSClusterConf renders the `cluster` block of deploy/compose/nats-cluster.conf: cluster name,
// route listener on port 6222, route authorization (RouteUser with the password from
// RoutePasswordVar) and the routes from RoutesVar. A node missing either variable refuses to start.
func NATSClusterConf(name string) string {
	var b strings.Builder
	b.WriteString("# Generated from internal/broker/permissions.go (go test ./internal/broker -run TestGenerated -update).\n")
	fmt.Fprintf(&b, "cluster {\n  name: %q\n  listen: \"0.0.0.0:6222\"\n", name)
	b.WriteString("  # Routes authenticate: a node (or anything else) connecting to 6222 must present this user.\n")
	fmt.Fprintf(&b, "  authorization {\n    user: %q\n    password: $%s\n  }\n", RouteUser, RoutePasswordVar)
	b.WriteString("  # The URLs carry the same credentials (a node ignores the route to itself).\n")
	fmt.Fprintf(&b, "  routes: $%s\n}\n", RoutesVar)
	return b.String()
}
