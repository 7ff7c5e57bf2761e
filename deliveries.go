package webhook

import (
	"context"
	"strconv"
	"time"

	"github.com/sparc-webhooks/webhook/internal/store"
)

// DeliveryStatus is the state of a delivery.
type DeliveryStatus string

// Delivery states.
const (
	// StatusPending: waiting for its next attempt, or in flight.
	StatusPending DeliveryStatus = "pending"
	// StatusDelivered: an attempt got a 2xx answer.
	StatusDelivered DeliveryStatus = "delivered"
	// StatusFailed: every attempt failed, or the endpoint answered 410.
	StatusFailed DeliveryStatus = "failed"
	// StatusCancelled: its webhook was disabled or deleted first.
	StatusCancelled DeliveryStatus = "cancelled"
	// StatusSuperseded: a newer score.changed for the same subject was
	// published before it was sent; the newer one carries the whole change.
	StatusSuperseded DeliveryStatus = "superseded"
)

var statusNames = [...]DeliveryStatus{store.Pending: StatusPending, store.Delivered: StatusDelivered, store.Failed: StatusFailed, store.Cancelled: StatusCancelled, store.Superseded: StatusSuperseded}

func statusFromStore(c store.Status) DeliveryStatus {
	if c >= 0 && int(c) < len(statusNames) {
		return statusNames[c]
	}
	return DeliveryStatus("unknown")
}

func (s DeliveryStatus) stored() (store.Status, bool) {
	for i, n := range statusNames {
		if n == s {
			return store.Status(i), true
		}
	}
	return 0, false
}

// Delivery is one event on its way to one webhook.
type Delivery struct {
	ID        int64          `json:"id"`
	WebhookID string         `json:"webhook_id"`
	EventID   string         `json:"event_id"`
	EventType string         `json:"event_type"`
	Status    DeliveryStatus `json:"status"`
	// Attempts counts the scheduled attempts made so far.
	Attempts int `json:"attempts"`
	// NextAttemptAt is when the next scheduled attempt is due, while the
	// delivery is pending; zero otherwise.
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
	// LastStatusCode is the HTTP status of the last attempt, 0 when it got
	// no answer.
	LastStatusCode int `json:"last_status_code"`
	// LastError describes the last failure; empty after a success.
	LastError string    `json:"last_error,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Attempt records one try of a delivery.
type Attempt struct {
	ID         int64 `json:"id"`
	DeliveryID int64 `json:"delivery_id"`
	// Number is the attempt's place in the retry schedule, 1 for the
	// first; 0 for a manual attempt made by Retry, which stands outside the
	// schedule.
	Number    int           `json:"number"`
	Trigger   Trigger       `json:"trigger"`
	StartedAt time.Time     `json:"started_at"`
	Duration  time.Duration `json:"-"` // duration_ms on the wire
	// StatusCode is the HTTP status of the answer, 0 when none came.
	StatusCode int `json:"status_code"`
	// ErrorClass is one of the Class constants: empty on success.
	ErrorClass string `json:"error_class,omitempty"`
	// Error describes the failure; it never names an address or port.
	Error string `json:"error,omitempty"`
	// ResponseBody is the start of the receiver's answer, up to
	// Config.MaxResponseBody bytes.
	ResponseBody []byte `json:"-"` // a string on the wire (see MarshalJSON)
}

// DeliveryQuery selects a page of a webhook's deliveries.
type DeliveryQuery struct {
	// Status keeps only deliveries in this state; empty keeps all.
	Status DeliveryStatus
	// Cursor continues a listing from the NextCursor of a previous page.
	Cursor string
	// Limit is the page size: default 50, at most 500.
	Limit int
}

// DeliveryPage is a page of deliveries, newest first.
type DeliveryPage struct {
	Deliveries []Delivery `json:"deliveries"`
	// NextCursor, when not empty, fetches the next page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// Deliveries lists a webhook's deliveries, newest first. It returns
// ErrNotFound for an unknown webhook.
func (d *Dispatcher) Deliveries(ctx context.Context, webhookID string, q DeliveryQuery) (DeliveryPage, error) {
	if err := d.enter(); err != nil {
		return DeliveryPage{}, err
	}
	defer d.calls.Done()
	if err := checkWebhookID(webhookID); err != nil {
		return DeliveryPage{}, err
	}
	limit := q.Limit
	switch {
	case limit == 0:
		limit = 50
	case limit < 0 || limit > 500:
		return DeliveryPage{}, invalid("limit", "must be between 1 and 500")
	}
	var before int64
	if q.Cursor != "" {
		c, err := strconv.ParseInt(q.Cursor, 10, 64)
		if err != nil || c <= 0 {
			return DeliveryPage{}, invalid("cursor", "is not a cursor from a previous page")
		}
		before = c
	}
	f := store.DeliveryFilter{Before: before, Limit: limit}
	if q.Status != "" {
		c, ok := q.Status.stored()
		if !ok {
			return DeliveryPage{}, invalid("status", "must be pending, delivered, failed, cancelled or superseded")
		}
		f.Status = &c
	}
	rows, more, err := d.st.Deliveries(ctx, webhookID, f)
	if err != nil {
		return DeliveryPage{}, err
	}
	page := DeliveryPage{Deliveries: make([]Delivery, len(rows))}
	for i, dl := range rows {
		page.Deliveries[i] = toDelivery(dl)
	}
	if more {
		page.NextCursor = strconv.FormatInt(rows[len(rows)-1].ID, 10)
	}
	return page, nil
}

// Delivery returns one delivery. It returns ErrNotFound for an unknown ID.
func (d *Dispatcher) Delivery(ctx context.Context, id int64) (Delivery, error) {
	if err := d.enter(); err != nil {
		return Delivery{}, err
	}
	defer d.calls.Done()
	dl, err := d.st.Delivery(ctx, id)
	if err != nil {
		return Delivery{}, err
	}
	return toDelivery(dl), nil
}

// Attempts lists a delivery's attempts, oldest first. It returns
// ErrNotFound for an unknown delivery.
func (d *Dispatcher) Attempts(ctx context.Context, deliveryID int64) ([]Attempt, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer d.calls.Done()
	rows, err := d.st.Attempts(ctx, deliveryID)
	if err != nil {
		return nil, err
	}
	out := make([]Attempt, len(rows))
	for i, a := range rows {
		out[i] = toAttempt(a)
	}
	return out, nil
}

// AttemptResult is the outcome of an attempt made on request.
type AttemptResult struct {
	// Delivered is true when the receiver answered 2xx.
	Delivered bool `json:"delivered"`
	// StatusCode is the HTTP status of the answer, 0 when none came.
	StatusCode int `json:"status_code"`
	// Duration is how long the attempt took.
	Duration time.Duration `json:"-"`
	// ErrorClass is one of the Class constants; empty on success.
	ErrorClass string `json:"error_class"`
	// Error describes the failure; it never names an address or port.
	Error string `json:"error,omitempty"`
	// DeliveryID is the delivery the attempt belongs to.
	DeliveryID int64 `json:"delivery_id"`
}

// Retry attempts a delivery now, whatever its state, as a manual attempt
// that leaves its schedule alone: on success the delivery becomes
// delivered; on failure nothing changes but the attempt log. It returns
// ErrNotFound for an unknown delivery or one whose webhook was deleted.
func (d *Dispatcher) Retry(ctx context.Context, deliveryID int64) (AttemptResult, error) {
	if err := d.enter(); err != nil {
		return AttemptResult{}, err
	}
	defer d.calls.Done()
	j, _, err := d.st.LoadJob(ctx, deliveryID)
	if err != nil {
		return AttemptResult{}, err
	}
	j.Trigger = store.Manual
	return d.attemptNow(ctx, j)
}

// SendTest sends a sample webhook.test event to a webhook synchronously,
// through the same path as real deliveries (signing, address checks,
// timeout), and records it as a delivery with one attempt of trigger
// "test". It works on disabled webhooks too, so that an endpoint can be
// checked before it is enabled again. A failed test send is not retried
// and does not count towards disabling the webhook. It returns
// ErrNotFound for an unknown webhook.
func (d *Dispatcher) SendTest(ctx context.Context, webhookID string) (AttemptResult, error) {
	if err := d.enter(); err != nil {
		return AttemptResult{}, err
	}
	defer d.calls.Done()
	if err := checkWebhookID(webhookID); err != nil {
		return AttemptResult{}, err
	}
	h, err := d.st.HookByID(ctx, webhookID)
	if err != nil {
		return AttemptResult{}, err
	}
	p, err := encodeEvent(Event{ID: newEventID(), Type: EventTest, Timestamp: d.now(), Data: testData{
		WebhookID: webhookID,
		Message:   "This is a test delivery from the SPARC webhook dispatcher.",
	}}, d.cfg.MaxPayloadBytes)
	if err != nil {
		return AttemptResult{}, err
	}
	// The delivery is recorded first, so that its ID can be sent.
	deliveryID, err := d.st.InsertTestDelivery(ctx, h.Seq, p.stored())
	if err != nil {
		return AttemptResult{}, err
	}
	j := store.Job{DeliveryID: deliveryID, Attempt: 1, Trigger: store.Test, Hook: h, EventID: p.id, EventType: p.typ, Payload: p.payload}
	return d.attemptNow(ctx, j)
}

// testData is the data of a webhook.test event.
type testData struct {
	WebhookID string `json:"webhook_id"`
	Message   string `json:"message"`
}

// attemptNow makes one attempt on behalf of a caller (Retry, SendTest)
// and records it: a failure leaves the delivery's schedule as it was.
func (d *Dispatcher) attemptNow(ctx context.Context, j store.Job) (AttemptResult, error) {
	actx, stop := mergeCancel(ctx, d.base)
	defer stop()
	r := d.sender.send(actx, j, d.now())
	if r.cancelled {
		return AttemptResult{}, context.Cause(actx)
	}
	o := d.decide(j, r, d.now())
	if o.Result != store.ResultDelivered && o.Result != store.ResultGone {
		o.Result = store.ResultManualFail // the schedule stays as it was
	}
	if j.Trigger == store.Test && o.Result == store.ResultGone {
		o.Result = store.ResultManualFail // a test send disables nothing
	}
	d.met.attempt(triggerFromStore(j.Trigger), r.class, r.duration)
	if !r.ok() {
		d.logFailure(j, o)
	}
	if err := d.st.RecordNow(context.WithoutCancel(ctx), o); err != nil {
		return AttemptResult{}, err
	}
	return AttemptResult{
		Delivered:  r.ok(),
		StatusCode: r.status,
		Duration:   r.duration,
		ErrorClass: r.class,
		Error:      r.errMsg,
		DeliveryID: j.DeliveryID,
	}, nil
}

// mergeCancel returns a context that ends when either ctx or other ends.
func mergeCancel(ctx, other context.Context) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(other, func() { cancel(ErrClosed) })
	return c, func() {
		stop()
		cancel(context.Canceled)
	}
}

// Recover schedules again, for an attempt now, every failed delivery of a
// webhook created in [since, until); a zero until means now. Their
// retry schedules start over. Test sends are not recovered. It returns the
// number of deliveries scheduled, ErrNotFound for an unknown webhook and
// ErrWebhookDisabled when the webhook is disabled (enable it first).
func (d *Dispatcher) Recover(ctx context.Context, webhookID string, since, until time.Time) (int, error) {
	if err := d.enter(); err != nil {
		return 0, err
	}
	defer d.calls.Done()
	if err := checkWebhookID(webhookID); err != nil {
		return 0, err
	}
	if since.IsZero() {
		return 0, invalid("since", "is required")
	}
	if until.IsZero() {
		until = d.now()
	}
	if !until.After(since) {
		return 0, invalid("until", "must be after since")
	}
	n, err := d.st.RecoverFailed(ctx, webhookID, since, until, EventTest)
	if err != nil {
		return 0, err
	}
	if n > 0 {
		d.Notify()
	}
	return n, nil
}
