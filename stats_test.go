package webhook

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStats(t *testing.T) {
	cfg := testConfig()
	cfg.RetryPolicy = &ScheduleRetryPolicy{} // one attempt
	d := openTest(t, cfg)
	ok := newReceiver(t, nil)
	bad := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) })
	register(t, d, ok.url())
	wb := register(t, d, bad.url())
	off := false
	wOff, err := d.Register(t.Context(), Registration{URL: ok.url() + "?off", Events: []string{"*"}, Enabled: &off})
	require.NoError(t, err)
	_ = wOff

	for range 3 {
		_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
		require.NoError(t, err)
	}
	eventually(t, func() bool { return pendingCount(t, d) == 0 }, "pending")
	s, err := d.Stats(t.Context())
	require.NoError(t, err)
	require.Zero(t, s.Pending)
	require.Zero(t, s.OldestPendingAge)
	require.EqualValues(t, 3, s.Delivered)
	require.EqualValues(t, 3, s.Failed)
	require.EqualValues(t, 3, s.AttemptsSucceeded)
	require.EqualValues(t, 3, s.AttemptsFailed)
	require.Equal(t, 3, s.Webhooks)
	require.Equal(t, 1, s.DisabledWebhooks)

	// A manual retry that succeeds moves a delivery from failed to
	// delivered; disabling cancels what is pending.
	bad.answer = nil
	page, err := d.Deliveries(t.Context(), wb.ID, DeliveryQuery{})
	require.NoError(t, err)
	_, err = d.Retry(t.Context(), page.Deliveries[0].ID)
	require.NoError(t, err)
	s, err = d.Stats(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, 4, s.Delivered)
	require.EqualValues(t, 2, s.Failed)
	require.EqualValues(t, 4, s.AttemptsSucceeded)
}
