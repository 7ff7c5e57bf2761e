package webhook

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"
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

var statusNames = [...]DeliveryStatus{stPending: StatusPending, stDelivered: StatusDelivered, stFailed: StatusFailed, stCancelled: StatusCancelled, stSuperseded: StatusSuperseded}

func statusFromCode(c int) DeliveryStatus {
	if c >= 0 && c < len(statusNames) {
		return statusNames[c]
	}
	return DeliveryStatus("unknown")
}

func (s DeliveryStatus) code() (int, bool) {
	for i, n := range statusNames {
		if n == s {
			return i, true
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
	Duration  time.Duration `json:"duration_ns"`
	// StatusCode is the HTTP status of the answer, 0 when none came.
	StatusCode int `json:"status_code"`
	// ErrorClass is one of the Class constants: empty on success.
	ErrorClass string `json:"error_class,omitempty"`
	// Error describes the failure; it never names an address or port.
	Error string `json:"error,omitempty"`
	// ResponseBody is the start of the receiver's answer, up to
	// Config.MaxResponseBody bytes.
	ResponseBody []byte `json:"response_body,omitempty"`
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

const deliveryColumns = `d.id, COALESCE(w.id, ''), e.id, e.type, d.status, d.attempts, d.next_at, d.last_status, d.last_error, d.created_at, d.updated_at`
const deliveryFrom = ` FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq LEFT JOIN webhooks w ON w.seq = d.webhook_seq`

func scanDelivery(sc interface{ Scan(...any) error }) (Delivery, error) {
	var dl Delivery
	var status int
	var next, created, updated int64
	if err := sc.Scan(&dl.ID, &dl.WebhookID, &dl.EventID, &dl.EventType, &status, &dl.Attempts, &next, &dl.LastStatusCode, &dl.LastError, &created, &updated); err != nil {
		return Delivery{}, err
	}
	dl.Status = statusFromCode(status)
	if status == stPending {
		dl.NextAttemptAt = fromMS(next)
	}
	dl.CreatedAt, dl.UpdatedAt = fromMS(created), fromMS(updated)
	return dl, nil
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
	before := int64(1<<63 - 1)
	if q.Cursor != "" {
		c, err := strconv.ParseInt(q.Cursor, 10, 64)
		if err != nil || c <= 0 {
			return DeliveryPage{}, invalid("cursor", "is not a cursor from a previous page")
		}
		before = c
	}
	statusFilter := -1
	if q.Status != "" {
		c, ok := q.Status.code()
		if !ok {
			return DeliveryPage{}, invalid("status", "must be pending, delivered, failed, cancelled or superseded")
		}
		statusFilter = c
	}
	var seq int64
	err := d.st.rdb.QueryRowContext(ctx, d.st.q(`SELECT seq FROM webhooks WHERE id = ?`), webhookID).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return DeliveryPage{}, ErrNotFound
	}
	if err != nil {
		return DeliveryPage{}, fmt.Errorf("webhook: list deliveries: %w", err)
	}
	rows, err := d.st.rdb.QueryContext(ctx, d.st.q(`SELECT `+deliveryColumns+deliveryFrom+`
		WHERE d.webhook_seq = ? AND d.id < ? AND (? < 0 OR d.status = ?)
		ORDER BY d.id DESC LIMIT ?`), seq, before, statusFilter, statusFilter, limit+1)
	if err != nil {
		return DeliveryPage{}, fmt.Errorf("webhook: list deliveries: %w", err)
	}
	defer rows.Close()
	page := DeliveryPage{Deliveries: []Delivery{}}
	for rows.Next() {
		dl, err := scanDelivery(rows)
		if err != nil {
			return DeliveryPage{}, fmt.Errorf("webhook: list deliveries: %w", err)
		}
		page.Deliveries = append(page.Deliveries, dl)
	}
	if err := rows.Err(); err != nil {
		return DeliveryPage{}, fmt.Errorf("webhook: list deliveries: %w", err)
	}
	if len(page.Deliveries) > limit {
		page.Deliveries = page.Deliveries[:limit]
		page.NextCursor = strconv.FormatInt(page.Deliveries[limit-1].ID, 10)
	}
	return page, nil
}

// Delivery returns one delivery. It returns ErrNotFound for an unknown ID.
func (d *Dispatcher) Delivery(ctx context.Context, id int64) (Delivery, error) {
	if err := d.enter(); err != nil {
		return Delivery{}, err
	}
	defer d.calls.Done()
	dl, err := scanDelivery(d.st.rdb.QueryRowContext(ctx, d.st.q(`SELECT `+deliveryColumns+deliveryFrom+` WHERE d.id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Delivery{}, ErrNotFound
	}
	if err != nil {
		return Delivery{}, fmt.Errorf("webhook: get delivery: %w", err)
	}
	return dl, nil
}

// Attempts lists a delivery's attempts, oldest first. It returns
// ErrNotFound for an unknown delivery.
func (d *Dispatcher) Attempts(ctx context.Context, deliveryID int64) ([]Attempt, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer d.calls.Done()
	var one int
	err := d.st.rdb.QueryRowContext(ctx, d.st.q(`SELECT 1 FROM webhook_deliveries WHERE id = ?`), deliveryID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("webhook: list attempts: %w", err)
	}
	rows, err := d.st.rdb.QueryContext(ctx, d.st.q(`SELECT id, delivery_id, number, trigger, started_at, duration_us, status_code, error_class, error, response
		FROM webhook_attempts WHERE delivery_id = ? ORDER BY id`), deliveryID)
	if err != nil {
		return nil, fmt.Errorf("webhook: list attempts: %w", err)
	}
	defer rows.Close()
	out := []Attempt{}
	for rows.Next() {
		var a Attempt
		var trig int
		var started, durUS int64
		if err := rows.Scan(&a.ID, &a.DeliveryID, &a.Number, &trig, &started, &durUS, &a.StatusCode, &a.ErrorClass, &a.Error, &a.ResponseBody); err != nil {
			return nil, fmt.Errorf("webhook: list attempts: %w", err)
		}
		a.Trigger = triggerFromCode(trig)
		a.StartedAt = fromMS(started)
		a.Duration = time.Duration(durUS) * time.Microsecond
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("webhook: list attempts: %w", err)
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

// loadJob reads what an attempt of a delivery needs.
func (d *Dispatcher) loadJob(ctx context.Context, deliveryID int64) (job, int, error) {
	var j job
	var status int
	h, err := d.st.scanHook(d.st.rdb.QueryRowContext(ctx, d.st.q(`SELECT `+hookColumns+`, d.id, d.status, e.id, e.type, COALESCE(d.payload, e.payload)
		FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq JOIN webhooks w ON w.seq = d.webhook_seq
		WHERE d.id = ?`), deliveryID), &j.deliveryID, &status, &j.eventID, &j.eventType, &j.payload)
	if errors.Is(err, sql.ErrNoRows) {
		return job{}, 0, ErrNotFound
	}
	if err != nil {
		return job{}, 0, fmt.Errorf("webhook: load delivery: %w", err)
	}
	j.hook = h
	return j, status, nil
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
	j, _, err := d.loadJob(ctx, deliveryID)
	if err != nil {
		return AttemptResult{}, err
	}
	j.trigger = TriggerManual
	return d.attemptNow(ctx, j, func(t *wtx, o outcome) error { return t.complete(o) })
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
	h, err := d.st.scanHook(d.st.rdb.QueryRowContext(ctx, d.st.q(`SELECT `+hookColumns+` FROM webhooks w WHERE w.id = ?`), webhookID))
	if errors.Is(err, sql.ErrNoRows) {
		return AttemptResult{}, ErrNotFound
	}
	if err != nil {
		return AttemptResult{}, fmt.Errorf("webhook: send test: %w", err)
	}
	p, err := encodeEvent(Event{ID: newEventID(), Type: EventTest, Timestamp: d.now(), Data: testData{
		WebhookID: webhookID,
		Message:   "This is a test delivery from the SPARC webhook dispatcher.",
	}}, d.cfg.MaxPayloadBytes)
	if err != nil {
		return AttemptResult{}, err
	}
	// The delivery is recorded first, so that its ID can be sent.
	var deliveryID int64
	err = d.st.do(ctx, func(t *wtx) error {
		now := ms(t.now)
		var evSeq int64
		if err := t.queryRow(`INSERT INTO webhook_events (id, type, payload, created_at) VALUES (?, ?, ?, ?) RETURNING seq`, p.id, p.typ, p.payload, now).Scan(&evSeq); err != nil {
			return fmt.Errorf("webhook: record test event: %w", err)
		}
		if err := t.queryRow(`INSERT INTO webhook_deliveries (event_seq, webhook_seq, status, attempts, next_at, created_at, updated_at) VALUES (?, ?, 2, 1, ?, ?, ?) RETURNING id`,
			evSeq, h.seq, now, now, now).Scan(&deliveryID); err != nil {
			return fmt.Errorf("webhook: record test delivery: %w", err)
		}
		t.count(cFailed, 1) // until its attempt succeeds
		return nil
	})
	if err != nil {
		return AttemptResult{}, err
	}
	j := job{deliveryID: deliveryID, attempt: 1, trigger: TriggerTest, hook: h, eventID: p.id, eventType: p.typ, payload: p.payload}
	return d.attemptNow(ctx, j, func(t *wtx, o outcome) error {
		if o.result != resultDelivered {
			o.result = resultManualFail
		}
		return t.complete(o)
	})
}

// testData is the data of a webhook.test event.
type testData struct {
	WebhookID string `json:"webhook_id"`
	Message   string `json:"message"`
}

// attemptNow makes one attempt on behalf of a caller and records it with
// record.
func (d *Dispatcher) attemptNow(ctx context.Context, j job, record func(*wtx, outcome) error) (AttemptResult, error) {
	actx, stop := mergeCancel(ctx, d.base)
	defer stop()
	r := d.sender.send(actx, j, d.now())
	if r.cancelled {
		return AttemptResult{}, context.Cause(actx)
	}
	o := d.decide(j, r, d.now())
	if j.trigger == TriggerManual && (o.result == resultFailed || o.result == resultRetry) {
		o.result = resultManualFail // the schedule stays as it was
	}
	d.met.attempt(j.trigger, r.class, r.duration)
	if !r.ok() {
		d.logFailure(j, o)
	}
	if err := d.st.do(context.WithoutCancel(ctx), func(t *wtx) error { return record(t, o) }); err != nil {
		return AttemptResult{}, err
	}
	return AttemptResult{
		Delivered:  r.ok(),
		StatusCode: r.status,
		Duration:   r.duration,
		ErrorClass: r.class,
		Error:      r.errMsg,
		DeliveryID: j.deliveryID,
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
	var n int64
	err := d.st.do(ctx, func(t *wtx) error {
		var seq int64
		var enabled bool
		err := t.queryRow(`SELECT seq, enabled FROM webhooks WHERE id = ?`, webhookID).Scan(&seq, &enabled)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("webhook: recover: %w", err)
		}
		if !enabled {
			return ErrWebhookDisabled
		}
		now := ms(t.now)
		res, err := t.exec(`UPDATE webhook_deliveries SET status = 0, attempts = 0, leased = 0, next_at = ?, updated_at = ?, last_error = ''
			WHERE webhook_seq = ? AND status = 2 AND created_at >= ? AND created_at < ?
			AND NOT EXISTS (SELECT 1 FROM webhook_events e WHERE e.seq = event_seq AND e.type = 'webhook.test')`,
			now, now, seq, ms(since), ms(until))
		if err != nil {
			return fmt.Errorf("webhook: recover: %w", err)
		}
		n, err = res.RowsAffected()
		t.count(cFailed, -n)
		t.notify = n > 0
		return err
	})
	if err != nil {
		return 0, err
	}
	if n > 0 {
		d.Notify()
	}
	return int(n), nil
}
