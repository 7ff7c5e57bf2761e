package main

// The library under test: building a backlog with a publish-only
// dispatcher, and timing a delivering dispatcher while it drains it.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sparc-webhooks/webhook"
)

// libConfig is the library's configuration in the webhook, scale and
// publish modes: `workers` workers, each of which may serve any webhook,
// and loopback allowed. Everything else, synchronous=FULL among it, is the
// default.
func libConfig(workers int) webhook.Config {
	return webhook.Config{
		Workers:               workers,
		MaxInFlightPerWebhook: workers,
		AllowNetworks:         []string{"127.0.0.0/8"},
	}
}

// registerHooks registers hooks, each subscribed to eventType, and returns
// their IDs.
func registerHooks(ctx context.Context, d *webhook.Dispatcher, hooks []hook) error {
	for _, h := range hooks {
		if _, err := d.Register(ctx, webhook.Registration{URL: h.url, Events: []string{eventType}, Secret: h.secret}); err != nil {
			return fmt.Errorf("register: %w", err)
		}
	}
	return nil
}

// benchEvent is the i-th event of a run: the same ID, timestamp and data,
// so the same body, as the peers send.
func benchEvent(i int) webhook.Event {
	return webhook.Event{ID: eventID(i), Type: eventType, Timestamp: eventTime, Data: padData}
}

// publishEvents publishes events first..first+n-1 from `publishers`
// goroutines and checks that each fans out to `fanout` deliveries.
func publishEvents(ctx context.Context, d *webhook.Dispatcher, first, n, publishers, fanout int) error {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				res, err := d.Publish(ctx, benchEvent(first+i))
				if err == nil && res.Deliveries != fanout {
					err = fmt.Errorf("event fanned out to %d webhooks, want %d", res.Deliveries, fanout)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("publish: %w", firstErr)
	}
	return ctx.Err()
}

// buildBacklog creates the database at path with hooks registered and
// events × len(hooks) pending deliveries, using a publish-only dispatcher
// (DisableDelivery), which it closes again.
func buildBacklog(ctx context.Context, path string, cfg webhook.Config, hooks []hook, events int) error {
	cfg.DisableDelivery = true
	d, err := webhook.Open(ctx, path, cfg)
	if err != nil {
		return fmt.Errorf("open publish-only dispatcher: %w", err)
	}
	err = registerHooks(ctx, d, hooks)
	if err == nil {
		err = publishEvents(ctx, d, 0, events, 64, len(hooks))
	}
	if cerr := d.Close(context.Background()); err == nil {
		err = cerr
	}
	return err
}

// drainOpts says what a drain waits for.
type drainOpts struct {
	// want is the number of deliveries the receiver must have answered
	// and Stats must count as delivered.
	want int64
	// exact also requires Stats().Pending == 0 and the receiver to have
	// got exactly want signed requests. The isolation run leaves it false:
	// the deliveries to the endpoint that never answers stay pending.
	exact bool
	// cpuProfile, when set, is a file that receives a CPU profile of the
	// drain.
	cpuProfile string
}

// drainWebhook opens a delivering dispatcher on the backlog at path and
// returns the time from Open until the receiver has answered o.want
// deliveries and Stats agrees that they are delivered (and, when o.exact,
// that none is pending). Stats is polled every 20 ms only once the
// receiver has counted them all, so the poll does not slow the drain.
func drainWebhook(ctx context.Context, rc *receiver, path string, cfg webhook.Config, o drainOpts) (time.Duration, error) {
	if err := rc.reset(); err != nil {
		return 0, err
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return 0, err
		}
		defer pprof.StopCPUProfile()
	}

	start := time.Now()
	d, err := webhook.Open(ctx, path, cfg)
	if err != nil {
		return 0, fmt.Errorf("open delivering dispatcher: %w", err)
	}
	elapsed, err := func() (time.Duration, error) {
		if _, err := rc.waitFor(ctx, o.want, drainTimeout(o.want)); err != nil {
			return 0, err
		}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			s, err := d.Stats(ctx)
			if err != nil {
				return 0, err
			}
			if s.Delivered >= o.want && (!o.exact || s.Pending == 0) {
				if o.exact && (s.Delivered != o.want || s.AttemptsFailed != 0) {
					return 0, fmt.Errorf("stats: %d delivered with %d failed attempts, want %d and 0", s.Delivered, s.AttemptsFailed, o.want)
				}
				return time.Since(start), nil
			}
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-tick.C:
			}
		}
	}()
	// Close gives attempts in flight (only the never-answered ones, in the
	// isolation run) a moment, then cancels them.
	closeCtx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if cerr := d.Close(closeCtx); cerr != nil && !errors.Is(cerr, context.DeadlineExceeded) && err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("webhook: %w", err)
	}
	if o.exact {
		if err := checkReceived(rc, o.want); err != nil {
			return 0, fmt.Errorf("webhook: %w", err)
		}
	}
	return elapsed, nil
}

// runWebhook is the webhook mode's round: a fresh database with a backlog
// of events × len(hooks) deliveries, drained by `workers` workers.
func runWebhook(ctx context.Context, rc *receiver, hooks []hook, events, workers int, cpuProfile string) (time.Duration, error) {
	path, cleanup, err := tempDB("webhook.db")
	if err != nil {
		return 0, err
	}
	defer cleanup()
	cfg := libConfig(workers)
	if err := buildBacklog(ctx, path, cfg, hooks, events); err != nil {
		return 0, fmt.Errorf("webhook: %w", err)
	}
	return drainWebhook(ctx, rc, path, cfg, drainOpts{want: int64(events * len(hooks)), exact: true, cpuProfile: cpuProfile})
}
