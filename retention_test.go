package webhook

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func countRows(t testing.TB, d *Dispatcher, table string) int {
	t.Helper()
	var n int
	require.NoError(t, d.st.Reader().QueryRow(`SELECT COUNT(*) FROM `+table).Scan(&n))
	return n
}

func TestPrune(t *testing.T) {
	cfg := testConfig()
	cfg.Retention = -1 // pruned by hand below
	cfg.RetryPolicy = &ScheduleRetryPolicy{Schedule: []time.Duration{time.Hour}}
	d := openTest(t, cfg)
	ok := newReceiver(t, nil)
	down := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) })
	register(t, d, ok.url())
	slow := register(t, d, down.url(), EventJobFailed) // its deliveries stay pending (retry in an hour)

	const n = 1200 // more than two retention steps
	for i := range n {
		typ := EventJobComplete
		if i%100 == 0 {
			typ = EventJobFailed
		}
		_, err := d.Publish(t.Context(), Event{Type: typ})
		require.NoError(t, err)
	}
	_, err := d.Publish(t.Context(), Event{Type: EventScoreChanged, Data: map[string]int{"x": 1}}) // to the first webhook only
	require.NoError(t, err)
	eventually(t, func() bool {
		p, err := d.Deliveries(t.Context(), slow.ID, DeliveryQuery{Limit: 500})
		require.NoError(t, err)
		for _, dl := range p.Deliveries {
			if dl.Attempts == 0 {
				return false
			}
		}
		return pendingCount(t, d) == len(p.Deliveries)
	}, "deliveries not settled")
	pending := pendingCount(t, d)
	require.Equal(t, 12, pending)

	// Nothing is older than a cutoff in the past.
	deleted, err := d.prune(t.Context(), time.Now().Add(-time.Hour))
	require.NoError(t, err)
	require.Zero(t, deleted)

	var maxID int64
	require.NoError(t, d.st.Reader().QueryRow(`SELECT MAX(id) FROM webhook_deliveries`).Scan(&maxID))
	deleted, err = d.prune(t.Context(), time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, n, deleted, "every settled delivery goes but the newest")
	require.Equal(t, pending+1, countRows(t, d, "webhook_deliveries"), "pending deliveries stay")
	require.Equal(t, pending+1, countRows(t, d, "webhook_events"), "only the events that kept deliveries need stay")

	// Delivery IDs are never reused.
	_, err = d.Publish(t.Context(), Event{Type: EventScoreChanged})
	require.NoError(t, err)
	var newest int64
	require.NoError(t, d.st.Reader().QueryRow(`SELECT MAX(id) FROM webhook_deliveries`).Scan(&newest))
	require.Greater(t, newest, maxID)
	var orphans int
	require.NoError(t, d.st.Reader().QueryRow(`SELECT COUNT(*) FROM webhook_attempts WHERE delivery_id NOT IN (SELECT id FROM webhook_deliveries)`).Scan(&orphans))
	require.Zero(t, orphans, "no attempt outlives its delivery")
	require.Positive(t, countRows(t, d, "webhook_attempts"), "the kept deliveries' attempts stay")

	// The stats still count what was delivered, the new event included.
	eventually(t, func() bool { return pendingCount(t, d) == pending }, "the new event not delivered")
	s, err := d.Stats(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, n+2, s.Delivered)
}

func TestRetentionRunsInTheBackground(t *testing.T) {
	cfg := testConfig()
	cfg.Retention = 100 * time.Millisecond
	d := openTest(t, cfg)
	rc := newReceiver(t, nil)
	register(t, d, rc.url())
	for range 10 {
		_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
		require.NoError(t, err)
	}
	rc.waitFor(10)
	eventually(t, func() bool {
		return countRows(t, d, "webhook_deliveries") == 1 && countRows(t, d, "webhook_events") == 1
	}, "retention did not delete settled history")
	require.Equal(t, 1, countRows(t, d, "webhook_attempts"), "the newest delivery stays, so that its ID is never reused")
}
