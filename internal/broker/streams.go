package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Drift is one setting in which a live stream differs from the configuration a process holds.
type Drift struct {
	Stream, Field string
	Live, Want    string
	// Shortens is true when applying the wanted value could delete history: a shorter (or newly
	// limited) max age, fewer messages or bytes kept. `scimflow streams apply` refuses such a change
	// without -force.
	Shortens bool
}

func (d Drift) String() string {
	s := fmt.Sprintf("%s.%s: live %s, configured %s", d.Stream, d.Field, d.Live, d.Want)
	if d.Shortens {
		s += " (shortens retention)"
	}
	return s
}

// EnsureStreams creates the streams and KV buckets that do not exist yet and reports how the existing
// ones differ from c. It never changes an existing stream's retention, replicas or limits: every
// service calls it at start, and one replica started with another nats.max_age (or none) must not
// rewrite — or delete — the history every other service depends on. The one change it makes to an
// existing stream is adding subjects a newer version of scimflow publishes on, which cannot lose
// anything. Concurrent calls agree.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, c StreamsConfig) ([]Drift, error) {
	var drift []Drift
	for _, want := range StreamConfigs(c) {
		st, err := js.Stream(ctx, want.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			if _, err := js.CreateStream(ctx, want); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				return nil, fmt.Errorf("create stream %s: %w", want.Name, err)
			}
			continue
		case err != nil:
			return nil, fmt.Errorf("stream %s: %w", want.Name, err)
		}
		live := st.CachedInfo().Config
		if missing := missingSubjects(live.Subjects, want.Subjects); len(missing) > 0 {
			upd := live
			upd.Subjects = append(slices.Clone(live.Subjects), missing...)
			if _, err := js.UpdateStream(ctx, upd); err != nil {
				return nil, fmt.Errorf("add subjects %v to stream %s: %w", missing, want.Name, err)
			}
		}
		drift = append(drift, StreamDrift(live, want)...)
	}
	for _, kc := range KVConfigs(c) {
		if _, err := js.KeyValue(ctx, kc.Bucket); err == nil {
			continue
		} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("kv %s: %w", kc.Bucket, err)
		}
		if _, err := js.CreateKeyValue(ctx, kc); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return nil, fmt.Errorf("create kv %s: %w", kc.Bucket, err)
		}
	}
	return drift, nil
}

func missingSubjects(live, want []string) []string {
	var out []string
	for _, s := range want {
		if !slices.Contains(live, s) {
			out = append(out, s)
		}
	}
	return out
}

// StreamDrift lists the settings scimflow owns in which live differs from want.
func StreamDrift(live, want jetstream.StreamConfig) []Drift {
	var out []Drift
	add := func(field string, l, w any, shortens bool) {
		out = append(out, Drift{Stream: want.Name, Field: field, Live: fmt.Sprint(l), Want: fmt.Sprint(w), Shortens: shortens})
	}
	if live.MaxAge != want.MaxAge {
		add("max_age", age(live.MaxAge), age(want.MaxAge), want.MaxAge != 0 && (live.MaxAge == 0 || want.MaxAge < live.MaxAge))
	}
	if live.Replicas != want.Replicas {
		add("replicas", live.Replicas, want.Replicas, false)
	}
	if live.MaxMsgs != want.MaxMsgs {
		add("max_msgs", live.MaxMsgs, want.MaxMsgs, want.MaxMsgs > 0 && (live.MaxMsgs <= 0 || want.MaxMsgs < live.MaxMsgs))
	}
	if live.MaxBytes != want.MaxBytes {
		add("max_bytes", live.MaxBytes, want.MaxBytes, want.MaxBytes > 0 && (live.MaxBytes <= 0 || want.MaxBytes < live.MaxBytes))
	}
	if live.Duplicates != want.Duplicates {
		add("duplicate_window", live.Duplicates, want.Duplicates, false)
	}
	if live.MaxMsgSize != want.MaxMsgSize {
		add("max_msg_size", live.MaxMsgSize, want.MaxMsgSize, false)
	}
	if live.Storage != want.Storage {
		add("storage", live.Storage, want.Storage, false)
	}
	if live.Discard != want.Discard {
		add("discard", live.Discard, want.Discard, false)
	}
	if live.DenyDelete != want.DenyDelete || live.DenyPurge != want.DenyPurge {
		add("deny_delete_purge", [2]bool{live.DenyDelete, live.DenyPurge}, [2]bool{want.DenyDelete, want.DenyPurge}, false)
	}
	return out
}

func age(d time.Duration) string {
	if d == 0 {
		return "unlimited"
	}
	return d.String()
}

// ApplyStreams makes the live streams match c: the operator command `scimflow streams apply`, the only
// place that changes an existing stream. It refuses a change that could delete history (a shorter or
// new max age, smaller limits) unless force is set, and returns what it changed (dryRun: what it
// would change). Storage type cannot change in place; such a drift is reported as an error.
func ApplyStreams(ctx context.Context, js jetstream.JetStream, c StreamsConfig, force, dryRun bool) ([]Drift, error) {
	var plan []Drift
	var updates []jetstream.StreamConfig
	for _, want := range StreamConfigs(c) {
		st, err := js.Stream(ctx, want.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			plan = append(plan, Drift{Stream: want.Name, Field: "stream", Live: "missing", Want: "created"})
			updates = append(updates, want)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", want.Name, err)
		}
		live := st.CachedInfo().Config
		d := StreamDrift(live, want)
		if missing := missingSubjects(live.Subjects, want.Subjects); len(missing) > 0 {
			d = append(d, Drift{Stream: want.Name, Field: "subjects", Live: fmt.Sprint(live.Subjects), Want: fmt.Sprint(want.Subjects)})
		}
		if len(d) == 0 {
			continue
		}
		for _, x := range d {
			if x.Field == "storage" {
				return nil, fmt.Errorf("stream %s: storage cannot change in place (%s)", want.Name, x)
			}
			if x.Shortens && !force {
				return nil, fmt.Errorf("refusing to shorten retention without -force: %s (JetStream would delete the messages beyond the new limit, and a projection can only be rebuilt from what the stream keeps)", x)
			}
		}
		if want.MaxAge != 0 && want.MaxAge < want.Duplicates {
			return nil, fmt.Errorf("stream %s: max_age %v is below the duplicate window %v", want.Name, want.MaxAge, want.Duplicates)
		}
		upd := want
		upd.Subjects = append(slices.Clone(live.Subjects), missingSubjects(live.Subjects, want.Subjects)...)
		plan = append(plan, d...)
		updates = append(updates, upd)
	}
	if dryRun {
		return plan, nil
	}
	for _, u := range updates {
		if _, err := js.CreateOrUpdateStream(ctx, u); err != nil {
			return nil, fmt.Errorf("apply stream %s: %w", u.Name, err)
		}
	}
	return plan, nil
}
