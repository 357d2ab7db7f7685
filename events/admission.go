package events

import "time"

// AdmissionState is the value each running scim-ingest keeps under its instance id in the
// admission KV bucket (broker.KVAdmission): whether its admission control is refusing bulk writes,
// since when, and the figures it decided on. identity-store cannot see scim-ingest's outbox or its
// measurements, so this is how its console shows admission control (docs/console.md, "Overview").
//
// An instance rewrites its entry when the state changes and at least every AdmissionHeartbeat; the
// bucket's TTL (AdmissionTTL) removes the entry of an instance that died without deleting it, so a
// stale "on" never outlives its instance by more than the TTL.
type AdmissionState struct {
	Instance string `json:"instance"` // the KV key: host name and a random suffix per process start
	Host     string `json:"host"`
	PID      int    `json:"pid"`
	// Active is true while bulk writes get 429 (security facts are always admitted).
	Active bool `json:"active"`
	// Since is when the instance last saw the state change (its start, for the first entry).
	Since time.Time `json:"since"`
	// UpdatedAt is when this entry was written (the instance's clock).
	UpdatedAt time.Time `json:"updated_at"`
	// The figures of the last check: the pipeline lag it compares with MaxLag — the largest of the
	// outbox's oldest unpublished record (OutboxAge), identity-store's oldest unapplied SCIM event
	// (DownstreamLag) and the oldest IDENTITY message a live auth replica has not applied (AuthLag,
	// of replica AuthReplica, the one furthest behind) — and the outbox depth it compares with
	// MaxDepth. Hop names the hop Lag comes from: "scim_outbox", "identity_store" or
	// "auth_replica:<replica_id>" ("" when nothing lags).
	LagMS           int64  `json:"lag_ms"`
	Hop             string `json:"hop,omitempty"`
	OutboxAgeMS     int64  `json:"outbox_age_ms"`
	DownstreamLagMS int64  `json:"downstream_lag_ms"`
	AuthLagMS       int64  `json:"auth_lag_ms"`
	AuthReplica     string `json:"auth_replica,omitempty"`
	MaxLagMS        int64  `json:"max_lag_ms"`
	OutboxDepth     int64  `json:"outbox_depth"`
	MaxDepth        int64  `json:"max_depth"`
	// Rejected and SecurityAdmitted count, since the instance started, the bulk writes answered 429
	// and the security facts admitted while it was refusing bulk writes.
	Rejected         uint64 `json:"rejected"`
	SecurityAdmitted uint64 `json:"security_admitted"`
}

// Timing of the admission bucket: an instance rewrites its entry at least every AdmissionHeartbeat,
// and the bucket forgets an entry AdmissionTTL after its last write.
const (
	AdmissionHeartbeat = 5 * time.Second
	AdmissionTTL       = 15 * time.Second
)
