package main

// The raw mode: the ceiling. A tuned net/http client POSTs the same signed
// payloads to the same receiver with the same concurrency as the library's
// workers, and nothing is stored anywhere.

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// runRaw sends events × len(hooks) deliveries with `workers` concurrent
// senders and returns how long they took.
func runRaw(ctx context.Context, rc *receiver, hooks []hook, events, workers int) (time.Duration, error) {
	if err := rc.reset(); err != nil {
		return 0, err
	}
	total := int64(events * len(hooks))
	// Bodies are made before the clock starts: the library encodes its
	// payload once, at Publish, too.
	bodies := make([][]byte, events)
	for i := range bodies {
		bodies[i] = payload(i)
	}
	client := newTunedClient(workers, 15*time.Second)
	defer client.CloseIdleConnections()

	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := next.Add(1) - 1
				if k >= total || ctx.Err() != nil {
					return
				}
				// Event-major order, as a backlog is: every webhook's
				// delivery of event 0, then of event 1, ...
				ev, h := int(k)/len(hooks), int(k)%len(hooks)
				if err := post(ctx, client, hooks[h], eventID(ev), strconv.FormatInt(k, 10), bodies[ev]); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return 0, fmt.Errorf("raw: %w", firstErr)
	}
	if err := checkReceived(rc, total); err != nil {
		return 0, fmt.Errorf("raw: %w", err)
	}
	return elapsed, nil
}

// checkReceived checks that the receiver got exactly total signed requests
// of payloadSize bytes each since its last reset.
func checkReceived(rc *receiver, total int64) error {
	c, err := rc.counts()
	if err != nil {
		return err
	}
	switch {
	case c.OK != total:
		return fmt.Errorf("receiver answered %d requests, want %d", c.OK, total)
	case c.Unsigned != 0:
		return fmt.Errorf("receiver got %d requests without signature headers", c.Unsigned)
	case c.Bytes != total*payloadSize:
		return fmt.Errorf("receiver read %d body bytes, want %d", c.Bytes, total*payloadSize)
	}
	return nil
}
