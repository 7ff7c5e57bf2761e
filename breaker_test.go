package webhook

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// gauge tracks how many requests a receiver is serving at once.
type gauge struct {
	mu       sync.Mutex
	now, max int
	total    int
}

func (g *gauge) enter() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.now++
	g.total++
	g.max = max(g.max, g.now)
}

func (g *gauge) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.now--
}

func (g *gauge) read() (now, most, total int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.now, g.max, g.total
}

// One endpoint that never answers cannot hold up the others: it gets at
// most MaxInFlightPerWebhook workers, and the healthy endpoints' deliveries
// all arrive while it hangs.
func TestHangingEndpointDoesNotStallOthers(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 8
	cfg.MaxInFlightPerWebhook = 2
	cfg.AttemptTimeout = time.Minute // nothing times out during the test
	cfg.LeaseDuration = 2 * time.Minute
	d := openTest(t, cfg)
	release := make(chan struct{})
	var hung gauge
	hang := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		hung.enter()
		defer hung.leave()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) })
	register(t, d, hang.url())
	healthy := newReceiver(t, nil)
	for i := range 5 {
		register(t, d, fmt.Sprintf("%s?n=%d", healthy.url(), i))
	}
	const events = 100
	for range events {
		_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
		require.NoError(t, err)
	}
	healthy.waitFor(5 * events)
	now, most, _ := hung.read()
	require.Equal(t, 2, now, "the hanging endpoint holds its two workers")
	require.Equal(t, 2, most, "and never more")
}

// After consecutive 503s the breaker opens: the webhook's deliveries are
// held for the cool-down, then one probe goes out at a time.
func TestCircuitBreaker(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 8
	cfg.MaxInFlightPerWebhook = 8
	cfg.BreakerThreshold = 3
	cfg.BreakerCooldown = 300 * time.Millisecond
	cfg.BreakerMaxCooldown = 300 * time.Millisecond
	cfg.RetryPolicy = &ScheduleRetryPolicy{Schedule: []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond, time.Millisecond, time.Millisecond}}
	logs := &logBuffer{}
	cfg.Logger = logs.logger()
	d := openTest(t, cfg)
	var healthy atomic.Bool
	var g gauge
	var afterOpen gauge // concurrency once the breaker has opened
	var opened atomic.Bool
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		g.enter()
		defer g.leave()
		if opened.Load() {
			afterOpen.enter()
			defer afterOpen.leave()
			time.Sleep(20 * time.Millisecond) // let a second probe overlap, if one were sent
		}
		if healthy.Load() {
			w.WriteHeader(200)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	w := register(t, d, rc.url())
	for range 20 {
		_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
		require.NoError(t, err)
	}
	eventually(t, func() bool { return containsLine(logs.String(), "circuit breaker open") }, "the breaker never opened")
	opened.Store(true)
	_, _, before := g.read()
	// Held: the pending deliveries wait for the cool-down.
	page, err := d.Deliveries(t.Context(), w.ID, DeliveryQuery{Status: StatusPending, Limit: 500})
	require.NoError(t, err)
	require.NotEmpty(t, page.Deliveries)
	healthy.Store(true)
	// The probe succeeds and the rest flow.
	eventually(t, func() bool { return pendingCount(t, d) == 0 }, "deliveries still pending")
	_, _, after := g.read()
	require.Less(t, before, 20+1, "the breaker stopped the flood before every delivery was tried")
	require.Greater(t, after, before)
	_, mostAfterOpen, _ := afterOpen.read()
	require.GreaterOrEqual(t, mostAfterOpen, 1)
	failed, err := d.Deliveries(t.Context(), w.ID, DeliveryQuery{Status: StatusFailed})
	require.NoError(t, err)
	require.Empty(t, failed.Deliveries, "held deliveries kept their attempts")
}

func containsLine(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// A webhook's limit of attempts in flight halves when the endpoint
// struggles and grows back with successes, up to the cap.
func TestAdaptiveLimit(t *testing.T) {
	d := &Dispatcher{cfg: Config{MaxInFlightPerWebhook: 8}}
	l := &deliveryLoop{d: d, limits: map[int64]int{}}
	require.Equal(t, 8, l.limit(1), "the cap, to begin with")
	l.adapt(1, true, false)
	require.Equal(t, 8, l.limit(1), "never above the cap")
	l.adapt(1, false, true)
	require.Equal(t, 4, l.limit(1), "a timeout halves it")
	l.adapt(1, false, false)
	require.Equal(t, 4, l.limit(1), "a failure that says nothing of load leaves it")
	for range 5 {
		l.adapt(1, false, true)
	}
	require.Equal(t, 1, l.limit(1), "never below one")
	require.Equal(t, 8, l.limit(2), "each webhook has its own")
	for range 7 {
		l.adapt(1, true, false)
	}
	require.Equal(t, 8, l.limit(1), "successes bring it back to the cap")
	require.Empty(t, l.limits, "only struggling webhooks are remembered")
}
