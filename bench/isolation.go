package main

// The isolation mode: can one endpoint that never answers slow down the
// others? 50 webhooks share a backlog of events × 50 deliveries. In the
// run "with", one of them points at a path where the receiver holds every
// request until the client gives up; in the run "without", all 50 are
// healthy. Both runs use a 2-second AttemptTimeout and otherwise the
// library's defaults for the per-webhook cap (MaxInFlightPerWebhook =
// Workers/4), which is the protection the library offers against a slow
// endpoint. The figure is the healthy throughput: deliveries to healthy
// webhooks per second, timed from Open until the receiver has answered all
// of them and Stats counts them as delivered.

import (
	"context"
	"time"

	"github.com/sparc-webhooks/webhook"
)

// isolationHooks is the number of webhooks in the isolation runs.
const isolationHooks = 50

// isolationTimeout is the AttemptTimeout of both isolation runs.
const isolationTimeout = 2 * time.Second

// isolationConfig is the library's configuration in the isolation runs.
func isolationConfig(workers int) webhook.Config {
	return webhook.Config{
		Workers:        workers,
		AttemptTimeout: isolationTimeout,
		AllowNetworks:  []string{"127.0.0.0/8"},
	}
}

// runIsolation drains a fresh backlog of events × 50 deliveries, one of
// whose webhooks never answers when hang is true, and returns the healthy
// deliveries per second.
func runIsolation(ctx context.Context, rc *receiver, events, workers int, hang bool) (float64, error) {
	hooks, err := makeHooks(rc, isolationHooks, hang)
	if err != nil {
		return 0, err
	}
	healthy := isolationHooks
	if hang {
		healthy--
	}
	path, cleanup, err := tempDB("isolation.db")
	if err != nil {
		return 0, err
	}
	defer cleanup()
	cfg := isolationConfig(workers)
	if err := buildBacklog(ctx, path, cfg, hooks, events); err != nil {
		return 0, err
	}
	want := int64(events * healthy)
	elapsed, err := drainWebhook(ctx, rc, path, cfg, drainOpts{want: want})
	if err != nil {
		return 0, err
	}
	return rate(want, elapsed), nil
}
