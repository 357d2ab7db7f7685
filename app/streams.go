package app

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/internal/broker"
)

// StreamsStatus reports how the live streams differ from the nats section of f, changing nothing.
func StreamsStatus(ctx context.Context, f File) ([]broker.Drift, error) {
	return streams(ctx, f, true, true) // force: report every drift, including those apply would refuse
}

// StreamsApply makes the live streams match the nats section of f (`scimflow streams apply`): the only
// place that changes an existing stream. It refuses to shorten retention unless force is set; with
// dryRun it returns the plan and changes nothing.
func StreamsApply(ctx context.Context, f File, force, dryRun bool) ([]broker.Drift, error) {
	return streams(ctx, f, force, dryRun)
}

func streams(ctx context.Context, f File, force, dryRun bool) ([]broker.Drift, error) {
	nc, cleanup, err := operatorConn(f)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return broker.ApplyStreams(ctx, js, f.Streams(), force, dryRun)
}
