package broker_test

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
)

var update = flag.Bool("update", false, "rewrite the generated blocks of deploy/compose/nats.conf and nats-cluster.conf and docs/security.md's permission table")

// authServer is an embedded server that accepts only the role credentials, with the permission
// table enforced, and one connection per role.
type authServer struct {
	emb   *broker.Embedded
	creds map[broker.Role]broker.Credential
	js    map[broker.Role]jetstream.JetStream
	nc    map[broker.Role]*nats.Conn

	mu    sync.Mutex // guards async
	async map[broker.Role][]error
}

func startAuthServer(t *testing.T) *authServer {
	t.Helper()
	dir := t.TempDir()
	creds, created, err := broker.RoleSeeds(filepath.Join(dir, "creds"))
	if err != nil {
		t.Fatalf("RoleSeeds = %v", err)
	}
	if len(created) != len(broker.Roles) {
		t.Fatalf("RoleSeeds created %q, want one file per role", created)
	}
	for _, p := range created {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("credential file %s: mode %v, %v; want 0600", p, fi.Mode().Perm(), err)
		}
	}
	emb, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: filepath.Join(dir, "nats"), Listen: "127.0.0.1:0", Users: creds}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	s := &authServer{emb: emb, creds: creds, js: map[broker.Role]jetstream.JetStream{}, nc: map[broker.Role]*nats.Conn{}, async: map[broker.Role][]error{}}
	for _, r := range broker.Roles {
		opts, err := creds[r].ClientOptions(r)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			s.mu.Lock()
			s.async[r] = append(s.async[r], err)
			s.mu.Unlock()
		}))
		nc, err := emb.Connect("test-"+string(r), opts...)
		if err != nil {
			t.Fatalf("Connect as %s = %v", r, err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		s.nc[r], s.js[r] = nc, js
	}
	return s
}

func (s *authServer) errs(r broker.Role) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.async[r]
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestRolesCanDoWhatTheyNeed runs, as each role, what its service does: create what it manages,
// publish its events, consume its streams with its durable names, read and write its buckets.
func TestRolesCanDoWhatTheyNeed(t *testing.T) {
	t.Parallel()
	s := startAuthServer(t)
	ctx := ctxT(t, 20*time.Second)
	for _, r := range broker.Roles {
		if _, err := broker.EnsureStreams(ctx, s.js[r], broker.StreamsConfig{Role: r}); err != nil {
			t.Fatalf("EnsureStreams as %s = %v (async %v)", r, err, s.errs(r))
		}
	}
	auth, ids, scim := s.js[broker.RoleAuth], s.js[broker.RoleIdentityStore], s.js[broker.RoleSCIMIngest]
	// The outbox relays read the last sequence of the streams they write at the start of every
	// publishing attempt (internal/outbox: each message claims its place).
	for _, c := range []struct {
		who    broker.Role
		js     jetstream.JetStream
		stream string
	}{{broker.RoleSCIMIngest, scim, events.StreamSCIM}, {broker.RoleSCIMIngest, scim, events.StreamSCIMPriority},
		{broker.RoleIdentityStore, ids, events.StreamIdentity}, {broker.RoleIdentityStore, ids, events.StreamIdentityPriority}} {
		st, err := c.js.Stream(ctx, c.stream)
		if err == nil {
			_, err = st.Info(ctx)
		}
		if err != nil {
			t.Fatalf("%s: stream %s info = %v", c.who, c.stream, err)
		}
	}
	for _, b := range []string{broker.BucketAuthKeys, broker.BucketAuthLoginTxn} {
		if _, err := auth.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b}); err != nil {
			t.Fatalf("auth: CreateOrUpdateKeyValue(%s) = %v", b, err)
		}
	}

	// auth publishes, lists, reads, replaces and deletes projection snapshots.
	obs, err := auth.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: broker.ObjectAuthSnapshots})
	if err != nil {
		t.Fatalf("auth: CreateOrUpdateObjectStore(%s) = %v", broker.ObjectAuthSnapshots, err)
	}
	big := strings.Repeat("snapshot ", 100_000) // several chunks
	for _, body := range []string{"first", big} {
		if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: "s1", Metadata: map[string]string{"format": "1"}}, strings.NewReader(body)); err != nil {
			t.Fatalf("auth: object Put = %v", err)
		}
	}
	if objs, err := obs.List(ctx); err != nil || len(objs) != 1 || objs[0].Metadata["format"] != "1" {
		t.Fatalf("auth: object List = %v, %v", objs, err)
	}
	if b, err := obs.GetBytes(ctx, "s1"); err != nil || string(b) != big {
		t.Fatalf("auth: object GetBytes = %d bytes, %v", len(b), err)
	}
	if err := obs.Delete(ctx, "s1"); err != nil {
		t.Fatalf("auth: object Delete = %v", err)
	}
	if obs, err = auth.ObjectStore(ctx, broker.ObjectAuthSnapshots); err != nil {
		t.Fatalf("auth: ObjectStore(%s) = %v", broker.ObjectAuthSnapshots, err)
	}

	publish := func(js jetstream.JetStream, who broker.Role, subject string) {
		t.Helper()
		if _, err := js.Publish(ctx, subject, []byte("{}")); err != nil {
			t.Fatalf("%s: Publish(%s) = %v", who, subject, err)
		}
	}
	publish(scim, broker.RoleSCIMIngest, "scim.idp1.user.u1.created")
	publish(scim, broker.RoleSCIMIngest, "scimlog.idp1")
	publish(ids, broker.RoleIdentityStore, "identity.idp1.user.u1.created")
	publish(auth, broker.RoleAuth, "auth.idp1.user.u1.logged_in")

	consume := func(js jetstream.JetStream, who broker.Role, stream, durable string, want int) {
		t.Helper()
		st, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatalf("%s: Stream(%s) = %v", who, stream, err)
		}
		if _, err := st.Info(ctx); err != nil {
			t.Fatalf("%s: Info(%s) = %v", who, stream, err)
		}
		if _, err := st.GetMsg(ctx, 1); err != nil {
			t.Fatalf("%s: GetMsg(%s, 1) = %v", who, stream, err)
		}
		if err := st.DeleteConsumer(ctx, durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Fatalf("%s: DeleteConsumer(%s, %s) = %v", who, stream, durable, err)
		}
		c, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: durable, AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			t.Fatalf("%s: CreateOrUpdateConsumer(%s, %s) = %v", who, stream, durable, err)
		}
		if _, err := c.Info(ctx); err != nil {
			t.Fatalf("%s: consumer Info(%s, %s) = %v", who, stream, durable, err)
		}
		batch, err := c.Fetch(want, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatalf("%s: Fetch(%s) = %v", who, durable, err)
		}
		n := 0
		for m := range batch.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("%s: ack on %s = %v", who, durable, err)
			}
			n++
		}
		if n != want {
			t.Fatalf("%s: fetched %d messages from %s, want %d (%v)", who, n, stream, want, batch.Error())
		}
	}
	consume(ids, broker.RoleIdentityStore, events.StreamSCIM, "identitystore-scim", 2)
	consume(ids, broker.RoleIdentityStore, events.StreamAuth, "identitystore-auth", 1)
	consume(ids, broker.RoleIdentityStore, events.StreamIdentity, "identitystore-identity", 1)
	consume(auth, broker.RoleAuth, events.StreamIdentity, "auth-replica-1", 1)
	consume(auth, broker.RoleAuth, events.StreamAuth, "auth-logout-replica-1", 1)

	// scim-ingest's admission control reads each live auth replica's lease, its IDENTITY consumer's
	// state and the message after its ack floor; it writes no lease.
	leases, err := auth.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: broker.BucketAuthReplicas, TTL: 15 * time.Second})
	if err != nil {
		t.Fatalf("auth: CreateOrUpdateKeyValue(%s) = %v", broker.BucketAuthReplicas, err)
	}
	if _, err := leases.Put(ctx, "replica-1", []byte(`{"token":"t"}`)); err != nil {
		t.Fatalf("auth: Put(%s) = %v", broker.BucketAuthReplicas, err)
	}
	scimLeases, err := scim.KeyValue(ctx, broker.BucketAuthReplicas)
	if err != nil {
		t.Fatalf("scim-ingest: KeyValue(%s) = %v", broker.BucketAuthReplicas, err)
	}
	lw, err := scimLeases.WatchAll(ctx)
	if err != nil {
		t.Fatalf("scim-ingest: WatchAll(%s) = %v", broker.BucketAuthReplicas, err)
	}
	if e := <-lw.Updates(); e == nil || e.Key() != "replica-1" {
		t.Fatalf("scim-ingest: first lease watched = %v, want replica-1", e)
	}
	_ = lw.Stop()
	scimIdent, err := scim.Stream(ctx, events.StreamIdentity)
	if err != nil {
		t.Fatalf("scim-ingest: Stream(IDENTITY) = %v", err)
	}
	if _, err := scimIdent.Consumer(ctx, "auth-replica-1"); err != nil {
		t.Fatalf("scim-ingest: Consumer(IDENTITY, auth-replica-1) = %v", err)
	}
	if _, err := scimIdent.GetMsg(ctx, 1); err != nil {
		t.Fatalf("scim-ingest: GetMsg(IDENTITY, 1) = %v", err)
	}

	// identity-store's console lists every consumer of IDENTITY, auth replicas' included.
	idst, err := ids.Stream(ctx, events.StreamIdentity)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	lister := idst.ListConsumers(ctx)
	for ci := range lister.Info() {
		names = append(names, ci.Name)
	}
	if err := lister.Err(); err != nil || !slices.Contains(names, "auth-replica-1") {
		t.Fatalf("identity-store: ListConsumers(IDENTITY) = %v, %v; want auth-replica-1 among them", names, err)
	}

	// identity-store writes IdP definitions; scim-ingest and auth read and watch them.
	kvW, err := ids.KeyValue(ctx, broker.KVIdPConfig)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kvW.Create(ctx, "idp1", []byte(`{"id":"idp1"}`))
	if err != nil {
		t.Fatalf("identity-store: Create(idp_config) = %v", err)
	}
	if _, err := kvW.Update(ctx, "idp1", []byte(`{"id":"idp1","v":2}`), rev); err != nil {
		t.Fatalf("identity-store: Update(idp_config) = %v", err)
	}
	for _, r := range []broker.Role{broker.RoleSCIMIngest, broker.RoleAuth} {
		kv, err := s.js[r].KeyValue(ctx, broker.KVIdPConfig)
		if err != nil {
			t.Fatalf("%s: KeyValue(idp_config) = %v", r, err)
		}
		if e, err := kv.Get(ctx, "idp1"); err != nil || !strings.Contains(string(e.Value()), `"v":2`) {
			t.Fatalf("%s: Get(idp_config/idp1) = %v", r, err)
		}
		w, err := kv.WatchAll(ctx)
		if err != nil {
			t.Fatalf("%s: WatchAll(idp_config) = %v", r, err)
		}
		if e := <-w.Updates(); e == nil || e.Key() != "idp1" {
			t.Fatalf("%s: first watch entry = %v, want idp1", r, e)
		}
		w.Stop()
	}
	// The read-your-writes barrier: auth asks, scim-ingest and identity-store answer once.
	for _, c := range []struct {
		server  broker.Role
		subject string
	}{{broker.RoleSCIMIngest, events.BarrierSCIMSubject("idp1")}, {broker.RoleIdentityStore, events.BarrierIdentitySubject("idp1")}} {
		sub, err := s.nc[c.server].Subscribe(c.subject, func(m *nats.Msg) { m.Respond([]byte(`{"seq":7}`)) })
		if err != nil {
			t.Fatal(err)
		}
		s.nc[c.server].Flush()
		if m, err := s.nc[broker.RoleAuth].Request(c.subject, nil, 5*time.Second); err != nil || string(m.Data) != `{"seq":7}` {
			t.Errorf("auth: request %s answered by %s = %v", c.subject, c.server, err)
		}
		sub.Unsubscribe()
	}
	// auth keeps its keys.
	keys, err := auth.KeyValue(ctx, broker.BucketAuthKeys)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Put(ctx, "keyset", []byte("sealed")); err != nil {
		t.Fatalf("auth: Put(auth_keys) = %v", err)
	}
	if e, err := keys.Get(ctx, "keyset"); err != nil || string(e.Value()) != "sealed" {
		t.Fatalf("auth: Get(auth_keys) = %v", err)
	}
	w, err := keys.Watch(ctx, "keyset", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatalf("auth: Watch(auth_keys) = %v", err)
	}
	w.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for r, errs := range s.async {
		if len(errs) > 0 {
			t.Errorf("%s: asynchronous errors %v, want none", r, errs)
		}
	}
}

// TestRolesAreRefusedWhatTheyMustNot tries, as each role and anonymously, what an attacker holding
// that credential would try: read the signing keys, read streams it has no use for, forge events
// of another service, rewrite IdP definitions, read another role's replies, delete data.
func TestRolesAreRefusedWhatTheyMustNot(t *testing.T) {
	t.Parallel()
	s := startAuthServer(t)
	ctx := ctxT(t, 20*time.Second)
	for _, r := range broker.Roles {
		if _, err := broker.EnsureStreams(ctx, s.js[r], broker.StreamsConfig{Role: r}); err != nil {
			t.Fatalf("EnsureStreams as %s = %v (async %v)", r, err, s.errs(r))
		}
	}
	auth := s.js[broker.RoleAuth]
	keys, err := auth.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: broker.BucketAuthKeys})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Put(ctx, "keyset", []byte("secret")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.js[broker.RoleSCIMIngest].Publish(ctx, "scim.idp1.user.u1.created", []byte("{}")); err != nil {
		t.Fatal(err)
	}

	// Anonymous clients, wrong passwords and unknown nkeys are refused.
	// (Over TCP: an in-process client only notices the closed pipe after a long timeout.)
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	stranger, _ := broker.Credential{Seed: seed}.ClientOptions(broker.RoleAuth)
	wrongPassword, _ := broker.Credential{User: string(broker.RoleAuth), Password: "guess"}.ClientOptions(broker.RoleAuth)
	for what, opts := range map[string][]nats.Option{"anonymous": nil, "unknown nkey": stranger, "user and password": wrongPassword} {
		nc, err := nats.Connect(s.emb.ClientURL(), opts...)
		if err == nil {
			nc.Close()
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("Connect(%s) = %v, want %v", what, err, nats.ErrAuthorization)
		}
	}

	// Each attempt is refused; a refused request only times out on the client, so they run
	// concurrently with a short deadline.
	type attempt struct {
		what string
		do   func(ctx context.Context) error
	}
	var attempts []attempt
	try := func(what string, do func(ctx context.Context) error) { attempts = append(attempts, attempt{what, do}) }
	request := func(r broker.Role, subj, body string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := s.nc[r].RequestWithContext(ctx, subj, []byte(body))
			return err
		}
	}
	publish := func(r broker.Role, subj string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := s.js[r].Publish(ctx, subj, []byte("{}"))
			return err
		}
	}
	// Nobody but auth reads or writes auth_keys, by any route.
	for _, r := range []broker.Role{broker.RoleSCIMIngest, broker.RoleIdentityStore} {
		js := s.js[r]
		try(string(r)+": KeyValue(auth_keys)", func(ctx context.Context) error { _, err := js.KeyValue(ctx, broker.BucketAuthKeys); return err })
		try(string(r)+": Stream(KV_auth_keys)", func(ctx context.Context) error { _, err := js.Stream(ctx, "KV_"+broker.BucketAuthKeys); return err })
		for _, subj := range []string{"$JS.API.DIRECT.GET.KV_auth_keys.$KV.auth_keys.keyset", "$JS.API.DIRECT.GET.KV_auth_keys",
			"$JS.API.STREAM.MSG.GET.KV_auth_keys", "$JS.API.CONSUMER.CREATE.KV_auth_keys"} {
			try(string(r)+": request "+subj, request(r, subj, `{"last_by_subj":"$KV.auth_keys.keyset"}`))
		}
		try(string(r)+": reconfigure auth_keys", func(ctx context.Context) error {
			_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: broker.BucketAuthKeys})
			return err
		})
		try(string(r)+": put auth_keys", publish(r, "$KV.auth_keys.keyset"))
	}
	// Nobody but auth reads or writes auth's projection snapshots.
	for _, r := range []broker.Role{broker.RoleSCIMIngest, broker.RoleIdentityStore} {
		js := s.js[r]
		try(string(r)+": ObjectStore(auth_snapshots)", func(ctx context.Context) error {
			_, err := js.ObjectStore(ctx, broker.ObjectAuthSnapshots)
			return err
		})
		try(string(r)+": get a snapshot chunk", request(r, "$JS.API.STREAM.MSG.GET.OBJ_auth_snapshots", `{"seq":1}`))
		try(string(r)+": create a consumer on OBJ_auth_snapshots", request(r, "$JS.API.CONSUMER.CREATE.OBJ_auth_snapshots", `{"stream_name":"OBJ_auth_snapshots","config":{}}`))
		try(string(r)+": write a snapshot chunk", publish(r, "$O.auth_snapshots.C.x"))
	}
	// auth cannot read the SCIM stream (it holds every SCIM body).
	try("auth: Stream(SCIM)", func(ctx context.Context) error { _, err := auth.Stream(ctx, events.StreamSCIM); return err })
	try("auth: create a consumer on SCIM", request(broker.RoleAuth, "$JS.API.CONSUMER.CREATE.SCIM.auth-x", `{"stream_name":"SCIM","config":{"durable_name":"auth-x"}}`))
	try("auth: get a SCIM message", request(broker.RoleAuth, "$JS.API.STREAM.MSG.GET.SCIM", `{"seq":1}`))
	// scim-ingest reads no other stream.
	try("scim-ingest: create a consumer on IDENTITY", request(broker.RoleSCIMIngest, "$JS.API.CONSUMER.CREATE.IDENTITY.x", `{"stream_name":"IDENTITY","config":{"durable_name":"x"}}`))
	// scim-ingest observes the auth replicas' leases and IDENTITY consumers, but changes neither.
	try("scim-ingest: write an auth replica lease", publish(broker.RoleSCIMIngest, "$KV.auth_replicas.replica-x"))
	try("scim-ingest: delete an auth replica's consumer", request(broker.RoleSCIMIngest, "$JS.API.CONSUMER.DELETE.IDENTITY.auth-replica-1", ""))
	// Events of another service cannot be forged.
	try("scim-ingest: publish an IDENTITY event", publish(broker.RoleSCIMIngest, "identity.idp1.user.u1.unlocked"))
	try("scim-ingest: publish an AUTH event", publish(broker.RoleSCIMIngest, "auth.idp1.user.u1.logged_in"))
	try("auth: publish an IDENTITY event", publish(broker.RoleAuth, "identity.idp1.user.u1.unlocked"))
	try("auth: publish a SCIM event", publish(broker.RoleAuth, "scim.idp1.user.u1.created"))
	try("identity-store: publish an AUTH event", publish(broker.RoleIdentityStore, "auth.idp1.user.u1.logged_in"))
	try("identity-store: publish a SCIM event", publish(broker.RoleIdentityStore, "scim.idp1.user.u1.created"))
	// Only identity-store writes IdP definitions (SCIM tokens, OIDC clients).
	for _, r := range []broker.Role{broker.RoleSCIMIngest, broker.RoleAuth} {
		try(string(r)+": put idp_config", publish(r, "$KV.idp_config.idp1"))
	}
	// No role deletes streams or messages.
	for _, r := range broker.Roles {
		try(string(r)+": DeleteStream(IDENTITY)", func(ctx context.Context) error { return s.js[r].DeleteStream(ctx, events.StreamIdentity) })
		try(string(r)+": delete an IDENTITY message", request(r, "$JS.API.STREAM.MSG.DELETE.IDENTITY", `{"seq":1}`))
		try(string(r)+": purge IDENTITY", request(r, "$JS.API.STREAM.PURGE.IDENTITY", `{}`))
	}
	// Only auth asks the read-your-writes barrier (both servers listen, so a refusal is not a
	// missing responder).
	for _, c := range []struct {
		server  broker.Role
		subject string
	}{{broker.RoleSCIMIngest, events.BarrierSCIMSubjects}, {broker.RoleIdentityStore, events.BarrierIdentitySubjects}} {
		if _, err := s.nc[c.server].Subscribe(c.subject, func(m *nats.Msg) { m.Respond([]byte("{}")) }); err != nil {
			t.Fatal(err)
		}
		s.nc[c.server].Flush()
	}
	if _, err := s.nc[broker.RoleAuth].Request(events.BarrierSCIMSubject("idp1"), nil, 5*time.Second); err != nil {
		t.Fatalf("auth: barrier request = %v, want an answer (the control)", err)
	}
	try("scim-ingest: request identity-store's barrier", request(broker.RoleSCIMIngest, events.BarrierIdentitySubject("idp1"), ""))
	try("identity-store: request scim-ingest's barrier", request(broker.RoleIdentityStore, events.BarrierSCIMSubject("idp1"), ""))
	// The control: the same raw request as auth does answer with the key, so the refusals above
	// are the permissions at work, not a malformed request.
	m, err := s.nc[broker.RoleAuth].Request("$JS.API.DIRECT.GET.KV_auth_keys.$KV.auth_keys.keyset", nil, 5*time.Second)
	if err != nil || string(m.Data) != "secret" {
		t.Fatalf("auth: direct get of auth_keys = %v, want the stored value", err)
	}
	var wg sync.WaitGroup
	for _, a := range attempts {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if err := a.do(ctx); err == nil {
				t.Errorf("%s = nil error, want refused", a.what)
			}
		})
	}
	wg.Wait()
	// No role reads another role's replies.
	sub, err := s.nc[broker.RoleSCIMIngest].SubscribeSync(broker.RoleAuth.InboxPrefix() + ".>")
	if err == nil {
		s.nc[broker.RoleSCIMIngest].Flush()
		sub.Unsubscribe()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		got := s.async[broker.RoleSCIMIngest]
		s.mu.Unlock()
		if slices := got; len(slices) > 0 && errors.Is(slices[len(slices)-1], nats.ErrPermissionViolation) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("scim-ingest: subscribe to auth's inbox: async errors %v, want a permissions violation", got)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGeneratedFilesMatchTable checks that deploy/compose/nats.conf, nats-cluster.conf (its
// authorization and cluster blocks) and docs/security.md hold what the permission table and the
// cluster generator produce (-update rewrites them).
func TestGeneratedFilesMatchTable(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	for _, f := range []struct {
		path, begin, end, want string
	}{
		{filepath.Join(root, "deploy", "compose", "nats.conf"), "# BEGIN generated authorization\n", "# END generated authorization\n", broker.NATSConf(broker.Permissions)},
		{filepath.Join(root, "deploy", "compose", "nats-cluster.conf"), "# BEGIN generated authorization\n", "# END generated authorization\n", broker.NATSConf(broker.Permissions)},
		{filepath.Join(root, "deploy", "compose", "nats-cluster.conf"), "# BEGIN generated cluster\n", "# END generated cluster\n", broker.NATSClusterConf("scimflow")},
		{filepath.Join(root, "docs", "security.md"), "<!-- BEGIN generated permissions -->\n", "<!-- END generated permissions -->\n", broker.PermissionsMarkdown(broker.Permissions)},
	} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		i, j := strings.Index(s, f.begin), strings.Index(s, f.end)
		if i < 0 || j < i {
			t.Fatalf("%s: no %q … %q section", f.path, strings.TrimSpace(f.begin), strings.TrimSpace(f.end))
		}
		got := s[i+len(f.begin) : j]
		if got == f.want {
			continue
		}
		if *update {
			if err := os.WriteFile(f.path, []byte(s[:i+len(f.begin)]+f.want+s[j:]), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("%s is out of date with internal/broker/permissions.go; run go test ./internal/broker -run TestGeneratedFilesMatchTable -update", f.path)
	}
}
