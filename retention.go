package webhook

import (
	"context"
	"time"
)

// retention deletes settled history older than Config.Retention.
type retention struct {
	d      *Dispatcher
	ctx    context.Context // cancelled by stop
	cancel context.CancelFunc
	done   chan struct{}
}

func newRetention(d *Dispatcher) *retention {
	ctx, cancel := context.WithCancel(d.base)
	return &retention{d: d, ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

// every is how often retention runs.
func (r *retention) every() time.Duration {
	return min(max(r.d.cfg.Retention/4, 10*time.Millisecond), time.Minute)
}

func (r *retention) start() { go r.run() }

// stop ends retention, abandoning a run in progress between two steps.
func (r *retention) stop() {
	r.cancel()
	<-r.done
}

func (r *retention) run() {
	defer close(r.done)
	t := time.NewTimer(r.every())
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		if _, err := r.d.prune(r.ctx, r.d.now().Add(-r.d.cfg.Retention)); err != nil && r.ctx.Err() == nil {
			r.d.log.Error("webhook: retention failed; it will run again", "error", err)
		}
		t.Reset(r.every())
	}
}

// prune deletes settled history last changed before cutoff (see
// store.Prune).
func (d *Dispatcher) prune(ctx context.Context, cutoff time.Time) (int, error) {
	return d.st.Prune(ctx, cutoff)
}
