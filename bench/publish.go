package main

// The publish mode: how fast the library records events. A publish-only
// dispatcher (DisableDelivery) with 10 webhooks subscribed to the event
// type takes Publish calls, each one event fanned out to 10 deliveries,
// synchronous=FULL, from 1 or from 64 goroutines for a fixed time.

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sparc-webhooks/webhook"
)

// publishResult is one publish run.
type publishResult struct {
	EventsPerS float64 `json:"events_per_s"`
	P50MS      float64 `json:"p50_ms"`
	P99MS      float64 `json:"p99_ms"`
	Events     int     `json:"events"`
}

// runPublish publishes for dur from `publishers` goroutines into a fresh
// database and reports the rate and the latency of Publish.
func runPublish(ctx context.Context, hooks []hook, publishers int, dur time.Duration) (publishResult, error) {
	path, cleanup, err := tempDB("publish.db")
	if err != nil {
		return publishResult{}, err
	}
	defer cleanup()
	cfg := libConfig(32)
	cfg.DisableDelivery = true
	d, err := webhook.Open(ctx, path, cfg)
	if err != nil {
		return publishResult{}, err
	}
	defer d.Close(context.Background())
	if err := registerHooks(ctx, d, hooks); err != nil {
		return publishResult{}, err
	}

	var next atomic.Int64
	lat := make([][]time.Duration, publishers) // one slice per goroutine: no lock
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(dur)
	for g := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				t0 := time.Now()
				res, err := d.Publish(ctx, benchEvent(i))
				if err == nil && res.Deliveries != len(hooks) {
					err = fmt.Errorf("event fanned out to %d webhooks, want %d", res.Deliveries, len(hooks))
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				lat[g] = append(lat[g], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return publishResult{}, fmt.Errorf("publish: %w", firstErr)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	return publishResult{
		EventsPerS: rate(int64(len(all)), elapsed),
		P50MS:      ms(percentile(all, 50)),
		P99MS:      ms(percentile(all, 99)),
		Events:     len(all),
	}, nil
}
