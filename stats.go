package webhook

import (
	"context"
	"time"

	"github.com/sparc-webhooks/webhook/internal/store"
)

// Stats is a snapshot of the dispatcher's work.
type Stats struct {
	// Pending is the queue depth: deliveries waiting for an attempt or in
	// flight.
	Pending int64 `json:"pending"`
	// OldestPendingAge is how long the oldest pending delivery has waited
	// since it was published; zero when none is pending.
	OldestPendingAge time.Duration `json:"-"`
	// Delivered, Failed and Cancelled count deliveries by outcome since the
	// database was created.
	Delivered int64 `json:"delivered"`
	Failed    int64 `json:"failed"`
	Cancelled int64 `json:"cancelled"`
	// Superseded counts score changes replaced by a newer one before they
	// were sent.
	Superseded int64 `json:"superseded"`
	// AttemptsSucceeded and AttemptsFailed count attempts by outcome.
	AttemptsSucceeded int64 `json:"attempts_succeeded"`
	AttemptsFailed    int64 `json:"attempts_failed"`
	// Webhooks counts registered webhooks; DisabledWebhooks those of them
	// that are disabled.
	Webhooks         int `json:"webhooks"`
	DisabledWebhooks int `json:"disabled_webhooks"`
}

// Stats reads a snapshot of the queue and of the outcome counters. Its
// cost grows with the number of pending deliveries (it counts them), not
// with the history.
func (d *Dispatcher) Stats(ctx context.Context) (Stats, error) {
	if err := d.enter(); err != nil {
		return Stats{}, err
	}
	defer d.calls.Done()
	st, err := d.st.Stats(ctx)
	if err != nil {
		return Stats{}, err
	}
	s := Stats{
		Pending:           int64(st.Pending),
		Delivered:         st.Counters[store.CounterDelivered],
		Failed:            st.Counters[store.CounterFailed],
		Cancelled:         st.Counters[store.CounterCancelled],
		Superseded:        st.Counters[store.CounterSuperseded],
		AttemptsSucceeded: st.Counters[store.CounterAttemptsOK],
		AttemptsFailed:    st.Counters[store.CounterAttemptsFailed],
		Webhooks:          st.Webhooks,
		DisabledWebhooks:  st.DisabledWebhooks,
	}
	if !st.OldestPending.IsZero() {
		s.OldestPendingAge = max(d.now().Sub(st.OldestPending), 0)
	}
	return s, nil
}
