package webhook

import (
	"context"
	"time"

	"github.com/sparc-webhooks/webhook/internal/store"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// meterName is the instrumentation scope of the dispatcher's metrics.
const meterName = "github.com/sparc-webhooks/webhook"

// metrics records OpenTelemetry metrics. A nil *metrics records nothing:
// that is the dispatcher without Config.MeterProvider.
//
// Instruments:
//   - webhook.deliveries (counter): deliveries settled, by outcome
//     (delivered, failed, cancelled);
//   - webhook.attempts (counter): attempts, by outcome (success, failure),
//     error class and trigger;
//   - webhook.attempt.duration (histogram, seconds): attempt durations, by
//     outcome;
//   - webhook.queue.depth (gauge): pending deliveries;
//   - webhook.queue.oldest_age (gauge, seconds): how long the oldest
//     pending delivery has waited.
type metrics struct {
	deliveries metric.Int64Counter
	attempts   metric.Int64Counter
	duration   metric.Float64Histogram
	reg        metric.Registration
}

func newMetrics(d *Dispatcher, mp metric.MeterProvider) (*metrics, error) {
	if mp == nil {
		return nil, nil
	}
	m := mp.Meter(meterName, metric.WithInstrumentationVersion(Version))
	var mt metrics
	var err error
	if mt.deliveries, err = m.Int64Counter("webhook.deliveries", metric.WithDescription("Deliveries settled, by outcome."), metric.WithUnit("{delivery}")); err != nil {
		return nil, err
	}
	if mt.attempts, err = m.Int64Counter("webhook.attempts", metric.WithDescription("Delivery attempts, by outcome and error class."), metric.WithUnit("{attempt}")); err != nil {
		return nil, err
	}
	if mt.duration, err = m.Float64Histogram("webhook.attempt.duration", metric.WithDescription("How long delivery attempts took."), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30)); err != nil {
		return nil, err
	}
	depth, err := m.Int64ObservableGauge("webhook.queue.depth", metric.WithDescription("Pending deliveries."), metric.WithUnit("{delivery}"))
	if err != nil {
		return nil, err
	}
	age, err := m.Float64ObservableGauge("webhook.queue.oldest_age", metric.WithDescription("How long the oldest pending delivery has waited."), metric.WithUnit("s"))
	if err != nil {
		return nil, err
	}
	mt.reg, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		s, err := d.Stats(ctx)
		if err != nil {
			return err
		}
		o.ObserveInt64(depth, s.Pending)
		o.ObserveFloat64(age, s.OldestPendingAge.Seconds())
		return nil
	}, depth, age)
	if err != nil {
		return nil, err
	}
	return &mt, nil
}

// attempt records one attempt.
func (m *metrics) attempt(trigger Trigger, class string, d time.Duration) {
	if m == nil {
		return
	}
	outcome := "success"
	if class != ClassNone {
		outcome = "failure"
	}
	ctx := context.Background()
	m.attempts.Add(ctx, 1, metric.WithAttributes(
		attribute.String("outcome", outcome),
		attribute.String("error_class", class),
		attribute.String("trigger", string(trigger))))
	m.duration.Record(ctx, d.Seconds(), metric.WithAttributes(attribute.String("outcome", outcome)))
}

// settled records committed changes of the delivery counters.
func (m *metrics) settled(counts map[string]int64) {
	if m == nil {
		return
	}
	ctx := context.Background()
	for name, outcome := range map[string]string{store.CounterDelivered: "delivered", store.CounterFailed: "failed", store.CounterCancelled: "cancelled"} {
		// A delivery that moves from failed to delivered (a manual retry)
		// lowers the failed counter; a counter only goes up.
		if n := counts[name]; n > 0 {
			m.deliveries.Add(ctx, n, metric.WithAttributes(attribute.String("outcome", outcome)))
		}
	}
}

// close unregisters the gauges' callback.
func (m *metrics) close() {
	if m != nil && m.reg != nil {
		m.reg.Unregister()
	}
}
