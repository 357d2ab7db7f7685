package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// samples has one event per registered type; the golden files pin their wire form.
func samples() []Event {
	revoked := t0.Add(-time.Second)
	parent := Event{ID: "01JBZ0Q8X0000000000000000A", IdPID: "idp1", OccurredAt: t0, CorrelationID: "req-1"}
	mk := func(p Payload) Event {
		e := New("idp1", t0, "req-1", "", p)
		e.ID = DeriveID(parent.ID, len(p.EventType()))
		return e
	}
	return []Event{
		mk(SCIMUserUpserted{UserID: "u1", UserName: "Ada@Example.com", ExternalID: "ext-1", Email: "ada@example.com", DisplayName: "Ada",
			Name: Name{GivenName: "Ada", FamilyName: "Lovelace"}, Active: true,
			Attributes: map[string]any{"userName": "Ada@Example.com", "active": true}, Changed: []string{"active", "userName"}, Created: true, ResourceVersion: 1, Policy: Policy{IdentityUpdateBehavior: UpdateReauth, UserDeprovision: true, SeatDeprovision: true}}),
		mk(SCIMUserDeleted{UserID: "u1", UserName: "Ada@Example.com", Email: "ada@example.com", Groups: []string{"g1"}, ResourceVersion: 3, Policy: Policy{IdentityUpdateBehavior: UpdateAutomatic, UserDeprovision: true}}),
		mk(SCIMGroupUpserted{GroupID: "g1", DisplayName: "Engineering", ExternalID: "ext-g", Changed: []string{"displayName"}, Created: true, ResourceVersion: 1}),
		mk(SCIMGroupMembers{GroupID: "g1", DisplayName: "Engineering", Replace: true, Added: []string{"u1"}, Removed: []string{}, Chunk: 0, Chunks: 1, ResourceVersion: 2, Policy: Policy{IdentityUpdateBehavior: UpdateNoAction}}),
		mk(SCIMGroupDeleted{GroupID: "g1", DisplayName: "Engineering", ResourceVersion: 4}),
		mk(SCIMLog{RequestID: "req-1", Method: "POST", Path: "/populations/idp1/scim/v2/Users", ResourceType: "USER", ResourceID: "u1",
			ResourceIdPID: "ext-1", ResourceUserEmail: "ada@example.com", Status: LogSuccess, HTTPStatus: 201, RequestBody: json.RawMessage(`{"userName":"Ada@Example.com"}`)}),
		mk(IdentityChanged{Identity: Identity{UserID: UserID("idp1", "ada@example.com"), Email: "ada@example.com", Name: "Ada Lovelace",
			Groups: []Group{{ID: "g1", Name: "Engineering"}}, Status: StatusActive, SeatHeld: true, RevokedBefore: &revoked, SCIMUserID: "u1",
			SCIMGroups: []Group{{ID: "g1", Name: "Engineering"}, {ID: "g2", Name: "Ops"}}}, Changed: []string{"groups"}}),
		mk(SessionsRevoked{UserID: "uid1", Email: "ada@example.com", RevokedBefore: revoked, Reason: ReasonDeprovisioned, Cause: "PATCH /Users/u1"}),
		mk(SeatRemoved{UserID: "uid1", Email: "ada@example.com", Reason: ReasonDeprovisioned}),
		mk(UserLocked{UserID: "uid1", Email: "ada@example.com", Reason: ReasonDeprovisioned}),
		mk(UserUnlocked{UserID: "uid1", Email: "ada@example.com", Reason: "reactivated"}),
		mk(LoggedIn{UserID: "uid1", Email: "ada@example.com", Sub: "sub-1", OIDCFields: map[string]any{"dept": "R&D"}, SessionIDHash: "ab12", SCIMEnabled: true,
			IssuedAt: t0, ExpiresAt: t0.Add(24 * time.Hour)}),
		mk(LoggedOut{UserID: "uid1", Email: "ada@example.com", SessionIDHash: "ab12", ExpiresAt: t0.Add(24 * time.Hour)}),
		mk(LoginDenied{UserID: "uid1", Email: "ada@example.com", Sub: "sub-1", Reason: "locked"}),
		mk(SubBound{UserID: "uid1", Email: "ada@example.com", Sub: "sub-1"}),
		mk(SubReset{UserID: "uid1", Email: "ada@example.com", Reason: ReasonAdmin}),
		mk(SessionRevoked{UserID: "uid1", Email: "ada@example.com", SessionIDHash: "cd34", ExpiresAt: t0.Add(24 * time.Hour), Reason: ReasonSubMismatch}),
		mk(IdPSessionsRevoked{RevokedBefore: t0, Reason: ReasonIdPDeleted, Cause: "admin API request r1"}),
		mk(IdPSubBindingsReset{Reason: ReasonAdmin, Cause: "admin API request r2"}),
		mk(AccessAppChanged{AppID: "app1", App: json.RawMessage(`{"id":"app1","name":"Grafana","domain":"grafana.example","policies":[]}`), Cause: "admin API request r1"}),
		mk(AccessDecided{AppID: "app1", AppName: "Grafana", Host: "grafana.example", Path: "/d", Decision: "deny", Reason: "no_policy",
			UserID: "uid1", Email: "ada@example.com", UserIdP: "idp1", ClientIP: "192.0.2.1", Replica: "auth-1", Repeats: 2}),
	}
}

func TestGolden(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, e := range samples() {
		seen[e.Type] = true
		b, err := Marshal(e)
		if err != nil {
			t.Fatalf("Marshal(%s) = %v", e.Type, err)
		}
		var pretty bytes.Buffer
		json.Indent(&pretty, b, "", "  ")
		pretty.WriteByte('\n')
		path := filepath.Join("testdata", e.Type+".json")
		if *update {
			if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read golden (run with -update): %v", err)
		}
		if diff := cmp.Diff(string(want), pretty.String()); diff != "" {
			t.Errorf("%s wire form changed (-golden +got):\n%s", e.Type, diff)
		}
		if _, err := Decode(e.Subject, want); err != nil {
			t.Fatalf("Decode(golden %s) = %v", e.Type, err)
		}
		got, err := Decode(e.Subject, b)
		if err != nil {
			t.Fatalf("Decode(Marshal(%s)) = %v", e.Type, err)
		}
		if diff := cmp.Diff(e, got); diff != "" {
			t.Errorf("round trip of %s (-want +got):\n%s", e.Type, diff)
		}
	}
	for k := range registry {
		if !seen[k.typ] {
			t.Errorf("registered type %s v%d has no golden sample", k.typ, k.version)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	good, err := Marshal(samples()[0])
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(good, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	cases := []struct {
		name    string
		subject string
		body    []byte
		want    string
	}{
		{"not json", "", []byte("{"), "decode envelope"},
		{"unknown type", "", edit(func(m map[string]any) { m["type"] = "scim.user.exploded" }), "unknown event type"},
		{"unknown version", "", edit(func(m map[string]any) { m["version"] = 2 }), "unknown event type"},
		{"missing id", "", edit(func(m map[string]any) { delete(m, "id") }), "missing id"},
		{"bad id", "", edit(func(m map[string]any) { m["id"] = "x" }), "not a ULID"},
		{"missing data", "", edit(func(m map[string]any) { delete(m, "data") }), "missing data"},
		{"envelope subject mismatch", "", edit(func(m map[string]any) { m["subject"] = "scim.idp1.user.u2.upserted" }), "does not match payload"},
		{"idp mismatch", "", edit(func(m map[string]any) { m["idp_id"] = "idp2" }), "does not match payload"},
		{"transport subject mismatch", "scim.idp1.user.u9.upserted", good, "received on"},
		{"payload id changed", "", edit(func(m map[string]any) { m["data"].(map[string]any)["user_id"] = "u7" }), "does not match payload"},
		{"missing time", "", edit(func(m map[string]any) { delete(m, "occurred_at") }), "missing occurred_at"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.subject, c.body)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Decode(%s) = %v, want error containing %q", c.name, err, c.want)
			}
		})
	}
	_, err = Decode("", edit(func(m map[string]any) { m["type"] = "nope" }))
	if !errors.Is(err, ErrUnknownType) {
		t.Errorf("Decode(unknown) = %v, want ErrUnknownType", err)
	}
}

func TestSubjects(t *testing.T) {
	t.Parallel()
	for _, e := range samples() {
		p, err := ParseSubject(e.Subject)
		if err != nil {
			t.Fatalf("ParseSubject(%q) = %v", e.Subject, err)
		}
		if p.IdPID != "idp1" {
			t.Errorf("ParseSubject(%q).IdPID = %q, want idp1", e.Subject, p.IdPID)
		}
		if p.Prefix != strings.SplitN(e.Type, ".", 2)[0] {
			t.Errorf("ParseSubject(%q).Prefix = %q, want prefix of type %s", e.Subject, p.Prefix, e.Type)
		}
	}
	for _, bad := range []string{"", "scim", "scim.idp.user", "scim.idp.widget.x.upserted", "identity.idp.group.g.changed", "scim.idp.app.a.upserted", "scim..user.u.upserted", "other.a.user.b.c"} {
		if _, err := ParseSubject(bad); err == nil {
			t.Errorf("ParseSubject(%q) = nil error, want error", bad)
		}
	}
	for _, bad := range []string{"", "a.b", "a*", "a>", "a b", strings.Repeat("x", 257)} {
		if ValidToken(bad) {
			t.Errorf("ValidToken(%q) = true, want false", bad)
		}
	}
	if _, err := Marshal(New("idp.x", t0, "", "", SeatRemoved{UserID: "u"})); err == nil {
		t.Error("Marshal with a dotted idp id succeeded, want error")
	}
}

func TestDeriveIDDeterministic(t *testing.T) {
	t.Parallel()
	p := NewID(t0)
	a, b, c := DeriveID(p, 0), DeriveID(p, 0), DeriveID(p, 1)
	if a != b || a == c {
		t.Errorf("DeriveID: (%s,%s,%s), want first two equal and third different", a, b, c)
	}
	if a[:10] != p[:10] {
		t.Errorf("DeriveID(%s) = %s, want the parent's timestamp prefix", p, a)
	}
	if UserID("i", "Ada@x.com") != UserID("i", " ada@x.com") || UserID("i", "a@x") == UserID("j", "a@x") {
		t.Error("UserID is not case-insensitive per email and distinct per IdP")
	}
}

func TestJSONLRoundTrip(t *testing.T) {
	t.Parallel()
	var recs []Record
	for i, e := range samples() {
		recs = append(recs, Record{Seq: uint64(i + 1), Event: e})
	}
	var buf bytes.Buffer
	if err := WriteJSONL(&buf, recs); err != nil {
		t.Fatal(err)
	}
	got, err := ReadJSONL(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(recs, got); diff != "" {
		t.Errorf("JSONL round trip (-want +got):\n%s", diff)
	}
	err = Replay(strings.NewReader("\n{\"seq\":1,\"event\":{\"type\":\"nope\"}}\n"), func(Record) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("Replay(bad line) = %v, want error naming line 2", err)
	}
}

func TestChunk(t *testing.T) {
	t.Parallel()
	var added []string
	for i := 0; i < 2500; i++ {
		added = append(added, "u"+string(rune('a'+i%26)))
	}
	ch := Chunk("g", "G", true, added, []string{"x"}, 7)
	if len(ch) != 3 {
		t.Fatalf("Chunk(2501 ids) = %d events, want 3", len(ch))
	}
	total := 0
	for i, c := range ch {
		n := len(c.Added) + len(c.Removed)
		if n > MaxMembersPerEvent {
			t.Errorf("chunk %d has %d ids", i, n)
		}
		if c.Replace != (i == 0) || c.Chunk != i || c.Chunks != 3 {
			t.Errorf("chunk %d = replace %v, %d/%d", i, c.Replace, c.Chunk, c.Chunks)
		}
		total += n
	}
	if total != 2501 {
		t.Errorf("chunks hold %d ids, want 2501", total)
	}
	if empty := Chunk("g", "G", true, nil, nil, 1); len(empty) != 1 || !empty[0].Replace {
		t.Errorf("Chunk(replace with nothing) = %+v, want one replace event", empty)
	}
}

// TestDecodeMessage: a message holds one event or a batch; a batch decodes in order with its
// commit numbers, a priority-lane subject is accepted, and a batch smuggling an event of another
// stream, or whose subject is not its first event's, is refused.
func TestDecodeMessage(t *testing.T) {
	s := samples()
	up, del, changed := s[0], s[1], s[6]
	up.Commit, del.Commit = 7, 8
	body, err := MarshalBatch([]Event{up, del})
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMessage(up.Subject, body)
	if err != nil || len(got) != 2 || got[0].ID != up.ID || got[1].ID != del.ID || got[0].Commit != 7 || got[1].Commit != 8 {
		t.Fatalf("DecodeMessage(batch) = %v, %v", got, err)
	}
	if _, err := DecodeMessage(PriorityPrefix+up.Subject, body); err != nil {
		t.Errorf("DecodeMessage(priority batch) = %v, want nil", err)
	}
	single, _ := Marshal(up)
	if got, err := DecodeMessage(up.Subject, single); err != nil || len(got) != 1 {
		t.Errorf("DecodeMessage(single) = %v, %v", got, err)
	}
	mixed, _ := MarshalBatch([]Event{up, changed})
	if _, err := DecodeMessage(up.Subject, mixed); err == nil {
		t.Errorf("DecodeMessage(batch with an IDENTITY event on a SCIM subject) = nil, want error")
	}
	if _, err := DecodeMessage(del.Subject, body); err == nil {
		t.Errorf("DecodeMessage(batch on its second event's subject) = nil, want error")
	}
	if _, err := DecodeMessage(up.Subject, []byte("[]")); err == nil {
		t.Errorf("DecodeMessage(empty batch) = nil, want error")
	}
	if StreamOf(PriorityPrefix+up.Subject) != StreamSCIMPriority || StreamOf(up.Subject) != StreamSCIM || StreamOf("scimlog.idp1") != StreamSCIM {
		t.Errorf("StreamOf mismatch")
	}
}
