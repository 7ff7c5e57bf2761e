package webhook

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/sparc-webhooks/webhook/internal/store"
)

func TestMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	cfg := testConfig()
	cfg.MeterProvider = mp
	cfg.RetryPolicy = &ScheduleRetryPolicy{} // one attempt
	d := openTest(t, cfg)
	ok := newReceiver(t, nil)
	bad := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(502) })
	register(t, d, ok.url())
	register(t, d, bad.url())
	for range 3 {
		_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
		require.NoError(t, err)
	}
	eventually(t, func() bool { return pendingCount(t, d) == 0 }, "pending")

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(t.Context(), &rm))
	got := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		require.Equal(t, meterName, sm.Scope.Name)
		for _, m := range sm.Metrics {
			got[m.Name] = m.Data
		}
	}
	sumBy := func(name, key, value string) int64 {
		var n int64
		for _, dp := range got[name].(metricdata.Sum[int64]).DataPoints {
			if v, ok := dp.Attributes.Value(attrKey(key)); ok && v.AsString() == value {
				n += dp.Value
			}
		}
		return n
	}
	require.EqualValues(t, 3, sumBy("webhook.deliveries", "outcome", "delivered"))
	require.EqualValues(t, 3, sumBy("webhook.deliveries", "outcome", "failed"))
	require.EqualValues(t, 3, sumBy("webhook.attempts", "outcome", "success"))
	require.EqualValues(t, 3, sumBy("webhook.attempts", "error_class", ClassHTTP))
	hist := got["webhook.attempt.duration"].(metricdata.Histogram[float64])
	var count uint64
	for _, dp := range hist.DataPoints {
		count += dp.Count
	}
	require.EqualValues(t, 6, count)
	depth := got["webhook.queue.depth"].(metricdata.Gauge[int64])
	require.Len(t, depth.DataPoints, 1)
	require.Zero(t, depth.DataPoints[0].Value)
	require.Contains(t, got, "webhook.queue.oldest_age")
}

// Without a MeterProvider nothing is recorded and nothing breaks.
func TestNoMetrics(t *testing.T) {
	var m *metrics
	m.attempt(TriggerScheduled, "", 0)
	m.settled(map[string]int64{store.CounterDelivered: 1})
	m.close()
}

func attrKey(k string) attribute.Key { return attribute.Key(k) }
