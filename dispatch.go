package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sparc-webhooks/webhook/internal/store"
)

// RetryPolicy decides when a failed delivery is attempted again. A
// RetryPolicy must be safe for simultaneous use by multiple goroutines.
type RetryPolicy interface {
	// NextRetry is called after the given attempt of a delivery failed
	// (1 for the first attempt). It returns how long to wait before the
	// next attempt, and false when attempt was the last one.
	NextRetry(attempt int) (time.Duration, bool)
}

// ScheduleRetryPolicy retries on a fixed schedule with random jitter.
type ScheduleRetryPolicy struct {
	// Schedule lists the waits before each retry: Schedule[0] follows the
	// first failed attempt. A delivery gets len(Schedule)+1 attempts.
	Schedule []time.Duration
	// Jitter spreads each wait randomly by up to this fraction in either
	// direction (0.2 means ±20 %), so that retries of many deliveries do
	// not arrive together. Between 0 and 1.
	Jitter float64
}

// DefaultRetryPolicy returns the default policy: the example schedule of
// the Standard Webhooks specification (an attempt at once, then after
// 5 seconds, 5 minutes, 30 minutes, 2, 5, 10, 14, 20 and 24 hours: ten
// attempts over about three days) with ±20 % jitter.
func DefaultRetryPolicy() *ScheduleRetryPolicy {
	return &ScheduleRetryPolicy{
		Schedule: []time.Duration{
			5 * time.Second, 5 * time.Minute, 30 * time.Minute,
			2 * time.Hour, 5 * time.Hour, 10 * time.Hour,
			14 * time.Hour, 20 * time.Hour, 24 * time.Hour,
		},
		Jitter: 0.2,
	}
}

// NextRetry implements RetryPolicy.
func (p *ScheduleRetryPolicy) NextRetry(attempt int) (time.Duration, bool) {
	if attempt < 1 || attempt > len(p.Schedule) {
		return 0, false
	}
	w := p.Schedule[attempt-1]
	if p.Jitter > 0 && w > 0 {
		f := 1 + p.Jitter*(2*rand.Float64()-1)
		w = time.Duration(float64(w) * f)
	}
	return w, true
}

func (p *ScheduleRetryPolicy) validate() error {
	if p.Jitter < 0 || p.Jitter > 1 || p.Jitter != p.Jitter {
		return invalid("RetryPolicy.Jitter", "must be between 0 and 1")
	}
	for i, w := range p.Schedule {
		if w < 0 {
			return invalid(fmt.Sprintf("RetryPolicy.Schedule[%d]", i), "must not be negative")
		}
	}
	return nil
}

// Trigger says what started an attempt.
type Trigger string

// Triggers of attempts.
const (
	// TriggerScheduled marks attempts made by the workers.
	TriggerScheduled Trigger = "scheduled"
	// TriggerManual marks attempts made by Retry.
	TriggerManual Trigger = "manual"
	// TriggerTest marks attempts made by SendTest.
	TriggerTest Trigger = "test"
)

// triggerFromStore names a stored trigger.
func triggerFromStore(t store.Trigger) Trigger {
	switch t {
	case store.Manual:
		return TriggerManual
	case store.Test:
		return TriggerTest
	}
	return TriggerScheduled
}

// Error classes of attempts.
const (
	ClassNone       = ""           // the attempt succeeded
	ClassHTTP       = "http"       // the receiver answered with a status other than 2xx
	ClassRedirect   = "redirect"   // the receiver answered 3xx; redirects are not followed
	ClassTimeout    = "timeout"    // no answer within the attempt timeout
	ClassConnection = "connection" // the connection failed or was reset
	ClassDNS        = "dns"        // the host name did not resolve
	ClassTLS        = "tls"        // the TLS handshake or certificate failed
	ClassBlocked    = "blocked"    // the destination address is not allowed
)

// sender makes attempts over one tuned HTTP client, or by email.
type sender struct {
	client    *http.Client
	transport *http.Transport
	timeout   time.Duration
	maxBody   int
	render    *renderer
	smtp      *SMTPConfig
	smtpDial  func(ctx context.Context, network, addr string) (net.Conn, error)
}

// drainLimit is how much of a response body beyond MaxResponseBody is read
// and discarded so that the connection can be reused.
const drainLimit = 64 << 10

func newSender(cfg Config, guard *netGuard, render *renderer) *sender {
	tr := &http.Transport{
		Proxy:                  nil, // proxies from the environment are ignored
		DialContext:            guard.dialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           4 * cfg.Workers,
		MaxIdleConnsPerHost:    cfg.Workers,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  0,
		DisableCompression:     true, // bodies are kept as sent, never inflated
		MaxResponseHeaderBytes: 64 << 10,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
	}
	return &sender{
		client: &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		transport: tr,
		timeout:   cfg.AttemptTimeout,
		maxBody:   cfg.MaxResponseBody,
		render:    render,
		smtp:      cfg.SMTP,
		smtpDial:  (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}
}

func (s *sender) close() { s.transport.CloseIdleConnections() }

// attemptResult is what one HTTP attempt came to.
type attemptResult struct {
	started    time.Time
	duration   time.Duration
	status     int
	class      string
	errMsg     string
	body       []byte
	retryAfter time.Duration // from Retry-After on 429 and 503; -1 when absent
	cancelled  bool          // ctx was cancelled (not timed out): not an attempt
}

func (r attemptResult) ok() bool { return r.class == ClassNone }

// send makes one attempt of j, signed afresh.
func (s *sender) send(ctx context.Context, j store.Job, now time.Time) attemptResult {
	res := attemptResult{started: now, retryAfter: -1}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if Format(j.Hook.Format) == FormatEmail {
		return s.sendEmail(ctx, j, res)
	}
	body := j.Payload
	if Format(j.Hook.Format) != FormatJSON && Format(j.Hook.Format) != "" {
		var err error
		if body, err = s.render.render(Format(j.Hook.Format), j.Payload); err != nil {
			res.class, res.errMsg = ClassConnection, "the message could not be rendered"
			return res
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.Hook.URL, bytes.NewReader(body))
	if err != nil {
		res.class, res.errMsg = ClassConnection, "the URL cannot be requested"
		return res
	}
	h := req.Header
	h["Content-Type"] = []string{"application/json"}
	h["User-Agent"] = []string{userAgent}
	h[http.CanonicalHeaderKey(HeaderSPARCEvent)] = []string{j.EventType}
	h[http.CanonicalHeaderKey(HeaderSPARCDelivery)] = []string{strconv.FormatInt(j.DeliveryID, 10)}
	j.Hook.Signer(now).SetHeaders(h, j.EventID, now.Unix(), body)
	req.ContentLength = int64(len(body))

	resp, err := s.client.Do(req)
	if err != nil {
		res.duration = time.Since(now)
		if ctx.Err() == context.Canceled || (errors.Is(err, context.Canceled) && ctx.Err() != context.DeadlineExceeded) {
			res.cancelled = true
		}
		res.class, res.errMsg = classify(err, s.timeout)
		return res
	}
	res.status = resp.StatusCode
	res.body = readBounded(resp.Body, s.maxBody)
	resp.Body.Close()
	res.duration = time.Since(now)
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		res.class, res.errMsg = ClassRedirect, fmt.Sprintf("the receiver answered %d; redirects are not followed", resp.StatusCode)
	default:
		res.class, res.errMsg = ClassHTTP, fmt.Sprintf("the receiver answered %d", resp.StatusCode)
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
	}
	return res
}

// sendEmail makes one attempt of an email delivery. The SMTP reply code
// stands in for the HTTP status.
func (s *sender) sendEmail(ctx context.Context, j store.Job, res attemptResult) attemptResult {
	if s.smtp == nil {
		res.class, res.errMsg = ClassSMTP, "email deliveries need Config.SMTP"
		res.duration = time.Since(res.started)
		return res
	}
	subject, text, html, err := s.render.renderEmail(j.Payload)
	if err != nil {
		res.class, res.errMsg = ClassSMTP, "the email could not be rendered"
		res.duration = time.Since(res.started)
		return res
	}
	code, err := sendEmail(ctx, *s.smtp, s.smtpDial, j.Hook.MailTo, emailMessage{
		subject: subject, text: text, html: html,
		eventID: j.EventID, eventType: j.EventType, deliveryID: j.DeliveryID, date: res.started,
	})
	res.duration = time.Since(res.started)
	res.status = code
	if err == nil {
		return res
	}
	if ctx.Err() == context.Canceled {
		res.cancelled = true
	}
	var ee *emailError
	if errors.As(err, &ee) {
		res.class, res.errMsg = ee.class, ee.msg
	} else {
		res.class, res.errMsg = ClassSMTP, "the email could not be sent"
	}
	return res
}

// readBounded keeps up to max bytes of body and discards up to drainLimit
// more, so that the connection can be reused; a longer body is cut off and
// its connection closed.
func readBounded(body io.Reader, max int) []byte {
	buf := make([]byte, 0, min(max, 512))
	lr := &io.LimitedReader{R: body, N: int64(max)}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			break
		}
	}
	io.CopyN(io.Discard, body, drainLimit)
	if len(buf) == 0 {
		return nil
	}
	return buf
}

// parseRetryAfter reads a Retry-After value in seconds or as an HTTP
// date. It returns -1 when the value is absent or unusable; a date in the
// past is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return -1
	}
	// A number too large for int64 is still a number of seconds: a very
	// long wait, capped like any other.
	if n, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) && v[0] != '-' {
		if err != nil {
			n = math.MaxInt64
		}
		if n < 0 {
			return -1
		}
		if n > int64(365*24*time.Hour/time.Second) {
			n = int64(365 * 24 * time.Hour / time.Second)
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return -1
}

// classify turns a transport error into an error class and a message that
// names no address or port.
func classify(err error, timeout time.Duration) (class, msg string) {
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recErr tls.RecordHeaderError
	var alert tls.AlertError
	switch {
	case errors.Is(err, ErrBlockedDestination):
		return ClassBlocked, "the destination address is not allowed"
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return ClassTimeout, fmt.Sprintf("no answer within %s", timeout)
	case errors.Is(err, context.Canceled):
		return ClassConnection, "the attempt was cancelled"
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return ClassDNS, "the host name does not resolve"
		}
		return ClassDNS, "the host name could not be resolved"
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr):
		return ClassTLS, "the server's certificate is not valid for it"
	case errors.As(err, &recErr), errors.As(err, &alert):
		return ClassTLS, "the TLS handshake failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return ClassConnection, "the connection was refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.EPIPE):
		return ClassConnection, "the connection was closed before an answer came"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return ClassConnection, "the host is unreachable"
	case strings.Contains(err.Error(), "response headers exceeded"):
		return ClassConnection, "the answer's headers were too large"
	}
	return ClassConnection, "the request failed before an answer came"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// breakerClass reports whether an attempt's failure counts towards
// opening the circuit breaker of its webhook.
func breakerClass(r attemptResult) bool {
	switch r.class {
	case ClassTimeout, ClassConnection:
		return true
	case ClassHTTP:
		return r.status == http.StatusTooManyRequests || r.status == http.StatusServiceUnavailable
	}
	return false
}

// decide turns an attempt's result into what is recorded: delivered, a
// retry at a time, failed, or gone.
func (d *Dispatcher) decide(j store.Job, r attemptResult, now time.Time) store.Outcome {
	o := store.Outcome{
		DeliveryID: j.DeliveryID,
		HookSeq:    j.Hook.Seq,
		Breaker:    breakerClass(r),
		Attempt:    j.Attempt,
		Trigger:    j.Trigger,
		Started:    r.started,
		Duration:   r.duration,
		Status:     r.status,
		Class:      r.class,
		Err:        r.errMsg,
		Body:       r.body,
	}
	switch {
	case r.cancelled:
		o.Result = store.ResultReleased
	case r.ok():
		o.Result = store.ResultDelivered
	case r.status == http.StatusGone:
		o.Result = store.ResultGone
	default:
		wait, ok := d.cfg.RetryPolicy.NextRetry(j.Attempt)
		if !ok {
			o.Result = store.ResultFailed
			break
		}
		if r.retryAfter >= 0 {
			wait = max(wait, min(r.retryAfter, d.cfg.MaxRetryAfter))
		}
		o.Result, o.NextAt = store.ResultRetry, now.Add(wait)
	}
	return o
}

// logFailure logs a failed attempt at warn level.
func (d *Dispatcher) logFailure(j store.Job, o store.Outcome) {
	attrs := []any{
		"webhook_id", j.Hook.ID,
		"url", redactURL(j.Hook.URL),
		"delivery_id", j.DeliveryID,
		"event_id", j.EventID,
		"event_type", j.EventType,
		"attempt", j.Attempt,
		"trigger", string(triggerFromStore(j.Trigger)),
		"status_code", o.Status,
		"error_class", o.Class,
		"error", o.Err,
	}
	switch o.Result {
	case store.ResultRetry:
		attrs = append(attrs, "next_attempt_at", o.NextAt.UTC().Format(time.RFC3339))
	case store.ResultFailed:
		attrs = append(attrs, "next_attempt_at", "none: retries exhausted")
	case store.ResultGone:
		attrs = append(attrs, "next_attempt_at", "none: webhook disabled (410 Gone)")
	case store.ResultManualFail:
		attrs = append(attrs, "next_attempt_at", "unchanged by a manual attempt")
	}
	d.log.Warn("webhook delivery attempt failed", attrs...)
}

// ---------------------------------------------------------------------------
// The delivery loop: one goroutine claims due deliveries and hands them to
// a fixed pool of workers. Workers report what they finished under a
// mutex, and wake the loop only when it has something to do: enough room
// for another claim, an empty queue, or a retry due sooner than it planned
// to look. Handing a message to the loop for every delivery would cost a
// goroutine wake-up each.
//
// The data path reads in one direction: the loop asks the store to claim
// (store.Claim, with a snapshot of what is in flight), a worker signs and
// sends each job (sender.send), decides what it came to (decide) and
// hands the outcome to the store (store.Record), which writes it with the
// batch's others and applies the circuit breaker and the disable rule.

type deliveryLoop struct {
	d     *Dispatcher
	jobs  chan store.Job
	wakec chan struct{}
	stopc chan struct{}

	// ctx is the parent of every scheduled attempt; cancelled when Close
	// gives up waiting.
	ctx    context.Context
	cancel context.CancelFunc

	loopDone  chan struct{}
	workersWG sync.WaitGroup

	// With PostgreSQL, a listener wakes the loop when any process commits
	// due deliveries.
	stopListen context.CancelFunc
	listenDone chan struct{}

	mu       sync.Mutex // guards the fields below
	inflight int        // claimed and not finished: queued or being attempted
	// suspects counts the attempts in flight of deliveries whose previous
	// attempt died with its process (see store.ClaimRequest).
	suspects int
	perHook  map[int64]int // inflight, by webhook
	limits   map[int64]int // each webhook's adaptive limit of inflight (absent: the cap)
	dueAt    time.Time     // the soonest retry the workers reported since the loop last looked
}

// prefetch is how many deliveries per worker the loop keeps claimed: the
// next claim's commit overlaps with the attempts in flight, so that
// workers do not wait for it.
const prefetch = 4

func newDeliveryLoop(d *Dispatcher) *deliveryLoop {
	ctx, cancel := context.WithCancel(d.base)
	return &deliveryLoop{
		d:        d,
		jobs:     make(chan store.Job, prefetch*d.cfg.Workers),
		wakec:    make(chan struct{}, 1),
		stopc:    make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
		loopDone: make(chan struct{}),
		perHook:  make(map[int64]int),
		limits:   make(map[int64]int),
	}
}

// limit returns the adaptive limit of a webhook's attempts in flight: the
// cap, lowered while the endpoint struggles. l.mu must be held.
func (l *deliveryLoop) limit(seq int64) int {
	cap := l.d.cfg.MaxInFlightPerWebhook
	if n, ok := l.limits[seq]; ok {
		return min(n, cap)
	}
	return cap
}

// adapt moves a webhook's limit after an attempt: halved after a failure
// that suggests the endpoint is struggling (a timeout, a connection error,
// a 429 or a 503), up by one after a success, back to the cap at most.
// l.mu must be held.
func (l *deliveryLoop) adapt(seq int64, ok, struggling bool) {
	n := l.limit(seq)
	switch {
	case ok:
		n++
	case struggling:
		n = max(n/2, 1)
	default:
		return
	}
	if n >= l.d.cfg.MaxInFlightPerWebhook {
		delete(l.limits, seq) // the map holds only the webhooks below the cap
		return
	}
	l.limits[seq] = n
}

func (l *deliveryLoop) start() {
	for range l.d.cfg.Workers {
		l.workersWG.Add(1)
		go l.worker()
	}
	go l.run()
	if l.d.st.IsPostgres() {
		ctx, cancel := context.WithCancel(l.ctx)
		l.stopListen = cancel
		l.listenDone = make(chan struct{})
		go func() {
			defer close(l.listenDone)
			l.d.st.Listen(ctx, l.wake)
		}()
	}
}

// wake asks the loop to look for due deliveries now.
func (l *deliveryLoop) wake() {
	select {
	case l.wakec <- struct{}{}:
	default:
	}
}

// stop stops claiming, waits for the attempts in flight until ctx ends,
// then cancels them; it returns once every worker has recorded its
// outcome.
func (l *deliveryLoop) stop(ctx context.Context) error {
	close(l.stopc)
	<-l.loopDone
	if l.stopListen != nil {
		l.stopListen()
		<-l.listenDone
	}
	// Claimed deliveries that no worker has started go back to the queue
	// as they were: they are not attempts.
	for {
		select {
		case j := <-l.jobs:
			l.d.st.Release(j.DeliveryID)
			continue
		default:
		}
		break
	}
	close(l.jobs)
	finished := make(chan struct{})
	go func() {
		l.workersWG.Wait()
		close(finished)
	}()
	var err error
	select {
	case <-finished:
	case <-ctx.Done():
		err = ctx.Err()
		l.cancel()
		<-finished
	}
	l.cancel()
	return err
}

// busyRetry is how soon a PostgreSQL claim looks again at deliveries left
// because another process was claiming for their webhook.
const busyRetry = 5 * time.Millisecond

func (l *deliveryLoop) run() {
	defer close(l.loopDone)
	d := l.d
	capacity := prefetch * d.cfg.Workers
	timer := time.NewTimer(d.cfg.PollInterval)
	defer timer.Stop()
	var timerAt time.Time // when the timer fires
	setTimer := func(wait time.Duration) {
		wait = max(wait, time.Millisecond)
		timerAt = time.Now().Add(wait)
		timer.Stop()
		timer.Reset(wait)
	}
	more := true // due deliveries may be waiting
	for {
		l.mu.Lock()
		room := capacity - l.inflight
		due := l.dueAt
		l.dueAt = time.Time{}
		l.mu.Unlock()
		if !due.IsZero() && (timerAt.IsZero() || due.Before(timerAt)) {
			setTimer(time.Until(due))
		}
		// Claim when enough room has opened for a batch worth a commit,
		// or at once when the workers would otherwise run dry.
		if more && room > 0 && (room >= d.cfg.Workers || len(l.jobs) == 0) {
			got, err := l.claim(room)
			if err != nil {
				if l.ctx.Err() == nil {
					d.log.Error("webhook: claiming deliveries failed", "error", err)
				}
				more = false
				setTimer(d.cfg.PollInterval)
			} else {
				if len(got.Jobs) > 0 && got.Full {
					continue // more may be due
				}
				// Held deliveries wait for a worker of their webhook to
				// finish; otherwise sleep until the next one is due.
				more = got.Held
				wait := d.cfg.PollInterval
				if !more && !got.Next.IsZero() {
					wait = min(wait, time.Until(got.Next))
				}
				if got.Busy {
					// Another process was claiming for some webhooks: look
					// again once its claim has committed.
					wait = min(wait, busyRetry)
				}
				setTimer(wait)
			}
		}
		select {
		case <-l.stopc:
			return
		case <-l.wakec:
			more = true
		case <-timer.C:
			timerAt = time.Time{}
			more = true
		}
	}
}

// claim claims up to room deliveries and queues them for the workers.
func (l *deliveryLoop) claim(room int) (store.Claimed, error) {
	d := l.d
	l.mu.Lock()
	req := store.ClaimRequest{
		Room:     room,
		Window:   min(room+8, 512),
		Lease:    d.cfg.LeaseDuration,
		Cap:      d.cfg.MaxInFlightPerWebhook,
		InFlight: maps.Clone(l.perHook),
		Limits:   maps.Clone(l.limits),
		Suspects: l.suspects,
	}
	l.mu.Unlock()
	got, err := d.st.Claim(l.ctx, req)
	if err != nil {
		return got, err
	}
	l.mu.Lock()
	for _, j := range got.Jobs {
		l.inflight++
		l.perHook[j.Hook.Seq]++
		if j.Interrupted {
			l.suspects++
		}
	}
	l.mu.Unlock()
	for _, j := range got.Jobs {
		l.jobs <- j // never blocks: inflight stays within the channel's capacity
	}
	return got, nil
}

// finished is what a worker reports when it is done with a job.
type finished struct {
	seq     int64     // the job's webhook
	ok      bool      // the attempt succeeded
	tried   bool      // an attempt was made (not a job given back)
	breaker bool      // the attempt failed in a way that counts for the breaker
	retryAt time.Time // when the job's next attempt is due, if it failed
	suspect bool      // the job's previous attempt had died with its process
}

// finish records that a worker is done with a job, and wakes the loop if
// that gives it something to do.
func (l *deliveryLoop) finish(f finished) {
	capacity := prefetch * l.d.cfg.Workers
	l.mu.Lock()
	l.inflight--
	if f.suspect {
		l.suspects--
	}
	if n := l.perHook[f.seq] - 1; n > 0 {
		l.perHook[f.seq] = n
	} else {
		delete(l.perHook, f.seq)
	}
	wake := false
	if f.tried {
		l.adapt(f.seq, f.ok, f.breaker)
	}
	if !f.retryAt.IsZero() && (l.dueAt.IsZero() || f.retryAt.Before(l.dueAt)) {
		l.dueAt = f.retryAt
		wake = true
	}
	room := capacity - l.inflight
	l.mu.Unlock()
	// Wake the loop when room for a claim has just opened, when the
	// queue ran dry, or when an interrupted delivery may now run.
	if wake || room == l.d.cfg.Workers || len(l.jobs) == 0 || f.suspect {
		l.wake()
	}
}

func (l *deliveryLoop) worker() {
	defer l.workersWG.Done()
	d := l.d
	for j := range l.jobs {
		now := d.now()
		if now.Sub(j.ClaimedAt) > d.cfg.LeaseDuration-d.cfg.AttemptTimeout {
			// It waited so long that its lease could end during the
			// attempt: give it back rather than risk a second attempt
			// beside this one.
			d.st.Release(j.DeliveryID)
			l.finish(finished{seq: j.Hook.Seq, suspect: j.Interrupted})
			continue
		}
		if d.st.IsOff(j.Hook.Seq) {
			// Its webhook was disabled or deleted after the claim.
			d.st.Dropped(j.DeliveryID)
			l.finish(finished{seq: j.Hook.Seq, suspect: j.Interrupted})
			continue
		}
		r := d.sender.send(l.ctx, j, now)
		o := d.decide(j, r, d.now())
		if o.Result != store.ResultReleased {
			d.met.attempt(TriggerScheduled, r.class, r.duration)
			if !r.ok() {
				d.logFailure(j, o)
			}
		}
		if o.Result == store.ResultGone {
			// The webhook is disabled by this outcome: wait for the
			// commit, so that no delivery of it is claimed, or let
			// through, once this worker's slot is free.
			if err := d.st.RecordWait(o); err != nil {
				d.log.Error("webhook: recording an attempt failed", "webhook_id", j.Hook.ID, "delivery_id", j.DeliveryID, "error", err)
			}
		} else {
			d.st.Record(o)
		}
		f := finished{seq: j.Hook.Seq, ok: r.ok(), tried: !r.cancelled, breaker: o.Breaker, suspect: j.Interrupted}
		if o.Result == store.ResultRetry {
			f.retryAt = o.NextAt
		}
		l.finish(f)
	}
}
