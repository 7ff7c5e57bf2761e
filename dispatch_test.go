package webhook

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRetriesUntilSuccess(t *testing.T) {
	d := openTest(t, testConfig())
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n < 3 {
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte("try later"))
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	w := register(t, d, rc.url())
	pub, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	got := rc.waitFor(3)

	dl := waitStatus(t, d, onlyDelivery(t, d, w.ID).ID, StatusDelivered)
	require.Equal(t, 3, dl.Attempts)
	// The event id and body stay the same across retries; each attempt is
	// signed afresh and verifies.
	for _, g := range got {
		require.Equal(t, pub.EventID, g.Header.Get("webhook-id"))
		require.Equal(t, got[0].Body, g.Body)
		verifyStandard(t, string(w.Secret), g.Header, g.Body)
	}
	attempts, err := d.Attempts(t.Context(), dl.ID)
	require.NoError(t, err)
	require.Len(t, attempts, 3)
	for i, a := range attempts {
		require.Equal(t, i+1, a.Number)
		require.Equal(t, TriggerScheduled, a.Trigger)
	}
	require.Equal(t, 500, attempts[0].StatusCode)
	require.Equal(t, ClassHTTP, attempts[0].ErrorClass)
	require.Equal(t, "try later", string(attempts[0].ResponseBody))
	require.Equal(t, 200, attempts[2].StatusCode)

	hook, err := d.Get(t.Context(), w.ID)
	require.NoError(t, err)
	require.Zero(t, hook.FailureStreak, "a success resets the streak")
	require.False(t, hook.LastSuccessAt.IsZero())
	require.False(t, hook.LastFailureAt.IsZero())
}

func TestRetriesExhausted(t *testing.T) {
	d := openTest(t, testConfig())
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusForbidden) })
	w := register(t, d, rc.url())
	_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	dl := waitStatus(t, d, onlyDelivery(t, d, w.ID).ID, StatusFailed)
	require.Equal(t, 4, dl.Attempts, "one attempt and three retries")
	require.Equal(t, 403, dl.LastStatusCode)
	require.Len(t, rc.requests(), 4)
	hook, err := d.Get(t.Context(), w.ID)
	require.NoError(t, err)
	require.Equal(t, 4, hook.FailureStreak)
	require.True(t, hook.Enabled, "4 failures are below the disable rule")
}

func TestGoneDisablesWebhook(t *testing.T) {
	var disabled []WebhookDisabled
	var mu sync.Mutex
	cfg := testConfig()
	cfg.OnDisable = func(ev WebhookDisabled) {
		mu.Lock()
		defer mu.Unlock()
		disabled = append(disabled, ev)
	}
	d := openTest(t, cfg)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) })
	w := register(t, d, rc.url())
	_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	dl := waitStatus(t, d, onlyDelivery(t, d, w.ID).ID, StatusFailed)
	require.Equal(t, 1, dl.Attempts, "410 is not retried")

	hook, err := d.Get(t.Context(), w.ID)
	require.NoError(t, err)
	require.False(t, hook.Enabled)
	require.Contains(t, hook.DisabledReason, "410")
	eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(disabled) == 1 }, "OnDisable not called")
	mu.Lock()
	require.Equal(t, w.ID, disabled[0].WebhookID)
	mu.Unlock()

	pub, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	require.Zero(t, pub.Deliveries, "a disabled webhook receives nothing further")
	require.Len(t, rc.requests(), 1)
}

func TestAutoDisableRule(t *testing.T) {
	called := make(chan WebhookDisabled, 1)
	cfg := testConfig()
	cfg.DisableAfterFailures = 3
	cfg.DisableAfterPeriod = time.Nanosecond
	cfg.RetryPolicy = &ScheduleRetryPolicy{Schedule: []time.Duration{5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond}}
	cfg.OnDisable = func(ev WebhookDisabled) {
		called <- ev
		panic("a panicking callback must not hurt the dispatcher")
	}
	d := openTest(t, cfg)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	w := register(t, d, rc.url())
	_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)

	ev := <-called
	require.Equal(t, w.ID, ev.WebhookID)
	require.Contains(t, ev.Reason, "3 consecutive failed attempts")
	dl := waitStatus(t, d, onlyDelivery(t, d, w.ID).ID, StatusCancelled)
	require.Equal(t, 3, dl.Attempts)
	hook, err := d.Get(t.Context(), w.ID)
	require.NoError(t, err)
	require.False(t, hook.Enabled)
	require.Equal(t, 3, hook.FailureStreak)
	require.Len(t, rc.requests(), 3, "nothing is sent after the webhook is disabled")

	// The rule needs the period too: with a long one, failures alone do
	// not disable.
	cfg2 := testConfig()
	cfg2.DisableAfterFailures = 1
	d2 := openTest(t, cfg2)
	w2 := register(t, d2, rc.url())
	_, err = d2.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	waitStatus(t, d2, onlyDelivery(t, d2, w2.ID).ID, StatusFailed)
	hook, err = d2.Get(t.Context(), w2.ID)
	require.NoError(t, err)
	require.True(t, hook.Enabled)
	require.Equal(t, 4, hook.FailureStreak)
}

func TestRetryAfter(t *testing.T) {
	cfg := testConfig()
	cfg.MaxRetryAfter = 90 * time.Second
	d := openTest(t, cfg)
	tests := []struct {
		name    string
		status  int
		header  string
		minWait time.Duration
		maxWait time.Duration
	}{
		{"seconds on 429", 429, "30", 29 * time.Second, 31 * time.Second},
		{"seconds on 503", 503, "45", 44 * time.Second, 46 * time.Second},
		{"http date", 429, "DATE+60", 55 * time.Second, 62 * time.Second},
		{"capped", 429, "999999999", 89 * time.Second, 91 * time.Second},
		{"negative ignored", 429, "-5", 0, 2 * time.Second},
		{"garbage ignored", 503, "soon", 0, 2 * time.Second},
		{"ignored on 500", 500, "30", 0, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sent atomic.Int64
			rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
				if n > 1 {
					w.WriteHeader(200)
					return
				}
				v := tt.header
				if strings.HasPrefix(v, "DATE+") {
					s, _ := strconv.Atoi(strings.TrimPrefix(v, "DATE+"))
					v = time.Now().Add(time.Duration(s) * time.Second).UTC().Format(http.TimeFormat)
				}
				sent.Store(time.Now().UnixMilli())
				w.Header().Set("Retry-After", v)
				w.WriteHeader(tt.status)
			})
			w := register(t, d, rc.url())
			_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
			require.NoError(t, err)
			rc.waitFor(1)
			id := onlyDelivery(t, d, w.ID).ID
			var dl Delivery
			eventually(t, func() bool {
				dl, err = d.Delivery(t.Context(), id)
				require.NoError(t, err)
				return dl.Attempts == 1 && dl.LastStatusCode == tt.status || dl.Status == StatusDelivered
			}, "attempt not recorded")
			if tt.maxWait <= 2*time.Second {
				waitStatus(t, d, id, StatusDelivered)
				return
			}
			wait := dl.NextAttemptAt.Sub(time.UnixMilli(sent.Load()))
			require.GreaterOrEqual(t, wait, tt.minWait)
			require.LessOrEqual(t, wait, tt.maxWait)
			require.NoError(t, d.Delete(t.Context(), w.ID))
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", -1},
		{"0", 0},
		{"120", 2 * time.Minute},
		{"-1", -1},
		{"1.5", -1},
		{"soon", -1},
		{"99999999999999999999", 365 * 24 * time.Hour},
		{"-99999999999999999999", -1},
		{"99999999999", 365 * 24 * time.Hour},
		{"Sun, 29 Nov 2026 12:01:00 GMT", time.Minute},
		{"Sun, 29 Nov 2026 11:00:00 GMT", 0},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			require.Equal(t, tt.want, parseRetryAfter(tt.in, now))
		})
	}
}

func TestScheduleRetryPolicy(t *testing.T) {
	p := DefaultRetryPolicy()
	want := []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 14 * time.Hour, 20 * time.Hour, 24 * time.Hour}
	for i, w := range want {
		for range 50 {
			got, ok := p.NextRetry(i + 1)
			require.True(t, ok)
			require.GreaterOrEqual(t, got, time.Duration(float64(w)*0.8))
			require.LessOrEqual(t, got, time.Duration(float64(w)*1.2))
		}
	}
	_, ok := p.NextRetry(len(want) + 1)
	require.False(t, ok, "ten attempts in all")
	_, ok = p.NextRetry(0)
	require.False(t, ok)
	exact := &ScheduleRetryPolicy{Schedule: []time.Duration{time.Second}}
	got, ok := exact.NextRetry(1)
	require.True(t, ok)
	require.Equal(t, time.Second, got)
}

func TestFailedAttemptIsLogged(t *testing.T) {
	logs := &logBuffer{}
	cfg := testConfig()
	cfg.Logger = logs.logger()
	d := openTest(t, cfg)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(200)
	})
	w := register(t, d, rc.url()+"?token=hunter2")
	_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	waitStatus(t, d, onlyDelivery(t, d, w.ID).ID, StatusDelivered)

	var line map[string]any
	for l := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(l, "webhook delivery attempt failed") {
			require.NoError(t, json.Unmarshal([]byte(l), &line))
		}
	}
	require.NotNil(t, line, "no warning logged: %s", logs.String())
	require.Equal(t, "WARN", line["level"])
	require.Equal(t, w.ID, line["webhook_id"])
	require.EqualValues(t, 503, line["status_code"])
	require.EqualValues(t, 1, line["attempt"])
	require.Equal(t, rc.url(), line["url"], "the URL is logged without its query")
	require.NotEmpty(t, line["next_attempt_at"])
	require.NotContains(t, logs.String(), "hunter2")
}

func TestAttemptFaults(t *testing.T) {
	cfg := testConfig()
	cfg.AttemptTimeout = 300 * time.Millisecond
	cfg.MaxResponseBody = 100
	cfg.RetryPolicy = &ScheduleRetryPolicy{} // one attempt
	d := openTest(t, cfg)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })

	var redirected atomic.Int32
	target := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { redirected.Add(1) })
	tests := []struct {
		name   string
		answer func(n int, w http.ResponseWriter, r *http.Request)
		status DeliveryStatus
		code   int
		class  string
		body   string
	}{
		{"big body is cut", func(_ int, w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(200)
			w.Write([]byte(strings.Repeat("x", 1<<20)))
		}, StatusDelivered, 200, "", strings.Repeat("x", 100)},
		{"redirect is not followed", func(_ int, w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.url(), http.StatusFound)
		}, StatusFailed, 302, ClassRedirect, ""},
		{"timeout", func(_ int, w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}, StatusFailed, 0, ClassTimeout, ""},
		{"connection dropped", func(_ int, w http.ResponseWriter, _ *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		}, StatusFailed, 0, ClassConnection, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, tt.answer)
			w := register(t, d, rc.url())
			_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
			require.NoError(t, err)
			dl := waitStatus(t, d, onlyDelivery(t, d, w.ID).ID, tt.status)
			attempts, err := d.Attempts(t.Context(), dl.ID)
			require.NoError(t, err)
			require.Len(t, attempts, 1)
			require.Equal(t, tt.code, attempts[0].StatusCode)
			require.Equal(t, tt.class, attempts[0].ErrorClass)
			require.Equal(t, tt.body, string(attempts[0].ResponseBody))
			require.NotContains(t, attempts[0].Error, "127.0.0.1", "errors name no address")
			require.NoError(t, d.Delete(t.Context(), w.ID))
		})
	}
	require.Zero(t, redirected.Load(), "the redirect target got nothing")
}

func TestSendTest(t *testing.T) {
	d := openTest(t, testConfig())
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte("secret internal answer"))
	})
	w := register(t, d, rc.url(), EventJobComplete)
	res, err := d.SendTest(t.Context(), w.ID)
	require.NoError(t, err)
	require.True(t, res.Delivered)
	require.Equal(t, http.StatusAccepted, res.StatusCode)
	require.Empty(t, res.ErrorClass)
	require.Positive(t, res.Duration)

	got := rc.requests()
	require.Len(t, got, 1, "SendTest is synchronous")
	require.Equal(t, EventTest, got[0].Header.Get("X-SPARC-Event"))
	verifyStandard(t, string(w.Secret), got[0].Header, got[0].Body)
	verifySPARC(t, string(w.Secret), got[0].Header, got[0].Body)
	var env struct {
		Type string `json:"type"`
		Data struct {
			WebhookID string `json:"webhook_id"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(got[0].Body, &env))
	require.Equal(t, EventTest, env.Type)
	require.Equal(t, w.ID, env.Data.WebhookID)

	attempts, err := d.Attempts(t.Context(), res.DeliveryID)
	require.NoError(t, err)
	require.Len(t, attempts, 1)
	require.Equal(t, TriggerTest, attempts[0].Trigger)
	dl, err := d.Delivery(t.Context(), res.DeliveryID)
	require.NoError(t, err)
	require.Equal(t, StatusDelivered, dl.Status)

	// A failing test send is recorded but neither retried nor counted.
	rc2 := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) })
	w2 := register(t, d, rc2.url())
	res, err = d.SendTest(t.Context(), w2.ID)
	require.NoError(t, err)
	require.False(t, res.Delivered)
	require.Equal(t, 500, res.StatusCode)
	require.Equal(t, ClassHTTP, res.ErrorClass)
	dl, err = d.Delivery(t.Context(), res.DeliveryID)
	require.NoError(t, err)
	require.Equal(t, StatusFailed, dl.Status)
	hook, err := d.Get(t.Context(), w2.ID)
	require.NoError(t, err)
	require.Zero(t, hook.FailureStreak)
	time.Sleep(100 * time.Millisecond) // would a retry come? (it must not)
	require.Len(t, rc2.requests(), 1)

	_, err = d.SendTest(t.Context(), "00000000-0000-0000-0000-000000000000")
	require.ErrorIs(t, err, ErrNotFound)
}

func TestManualRetry(t *testing.T) {
	d := openTest(t, testConfig())
	var healthy atomic.Bool
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		if healthy.Load() {
			w.WriteHeader(200)
			return
		}
		w.WriteHeader(500)
	})
	w := register(t, d, rc.url())
	_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	dl := waitStatus(t, d, onlyDelivery(t, d, w.ID).ID, StatusFailed)

	// A failing manual attempt changes nothing but the log.
	res, err := d.Retry(t.Context(), dl.ID)
	require.NoError(t, err)
	require.False(t, res.Delivered)
	after, err := d.Delivery(t.Context(), dl.ID)
	require.NoError(t, err)
	require.Equal(t, StatusFailed, after.Status)
	require.Equal(t, dl.Attempts, after.Attempts)

	healthy.Store(true)
	res, err = d.Retry(t.Context(), dl.ID)
	require.NoError(t, err)
	require.True(t, res.Delivered)
	after, err = d.Delivery(t.Context(), dl.ID)
	require.NoError(t, err)
	require.Equal(t, StatusDelivered, after.Status)
	attempts, err := d.Attempts(t.Context(), dl.ID)
	require.NoError(t, err)
	require.Len(t, attempts, 6)
	require.Equal(t, TriggerManual, attempts[5].Trigger)
	require.Zero(t, attempts[5].Number)

	_, err = d.Retry(t.Context(), 987654)
	require.ErrorIs(t, err, ErrNotFound)
}

func TestDeliveriesPagingAndRecover(t *testing.T) {
	cfg := testConfig()
	cfg.RetryPolicy = &ScheduleRetryPolicy{}
	d := openTest(t, cfg)
	var healthy atomic.Bool
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if healthy.Load() || n%2 == 0 {
			w.WriteHeader(200)
			return
		}
		w.WriteHeader(500)
	})
	w := register(t, d, rc.url())
	start := time.Now()
	for range 10 {
		_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
		require.NoError(t, err)
		rc.waitFor(len(rc.requests()) + 1) // one at a time, so odd and even alternate
	}
	eventually(t, func() bool { return pendingCount(t, d) == 0 }, "deliveries still pending")

	var all []Delivery
	cursor := ""
	for {
		page, err := d.Deliveries(t.Context(), w.ID, DeliveryQuery{Limit: 3, Cursor: cursor})
		require.NoError(t, err)
		all = append(all, page.Deliveries...)
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	require.Len(t, all, 10)
	for i := 1; i < len(all); i++ {
		require.Greater(t, all[i-1].ID, all[i].ID, "newest first")
	}
	failed, err := d.Deliveries(t.Context(), w.ID, DeliveryQuery{Status: StatusFailed})
	require.NoError(t, err)
	require.Len(t, failed.Deliveries, 5)

	_, err = d.Deliveries(t.Context(), w.ID, DeliveryQuery{Status: "weird"})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = d.Deliveries(t.Context(), w.ID, DeliveryQuery{Cursor: "x"})
	require.ErrorIs(t, err, ErrInvalid)

	healthy.Store(true)
	n, err := d.Recover(t.Context(), w.ID, start.Add(-time.Minute), time.Time{})
	require.NoError(t, err)
	require.Equal(t, 5, n)
	eventually(t, func() bool {
		p, err := d.Deliveries(t.Context(), w.ID, DeliveryQuery{Status: StatusDelivered})
		require.NoError(t, err)
		return len(p.Deliveries) == 10
	}, "recovered deliveries not delivered")

	n, err = d.Recover(t.Context(), w.ID, start.Add(-2*time.Hour), start.Add(-time.Hour))
	require.NoError(t, err)
	require.Zero(t, n, "nothing failed in that window")
	off := false
	_, err = d.Update(t.Context(), w.ID, WebhookUpdate{Enabled: &off})
	require.NoError(t, err)
	_, err = d.Recover(t.Context(), w.ID, start, time.Time{})
	require.ErrorIs(t, err, ErrWebhookDisabled)
}

func TestCloseWaitsForAttemptsInFlight(t *testing.T) {
	cfg := testConfig()
	d, err := Open(t.Context(), testDB(t), cfg)
	require.NoError(t, err)
	entered := make(chan struct{})
	proceed := make(chan struct{})
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-proceed
		w.WriteHeader(200)
	})
	w := register(t, d, rc.url())
	_, err = d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	<-entered
	closed := make(chan error)
	go func() { closed <- d.Close(context.Background()) }()
	// Calls made once Close has begun fail with ErrClosed.
	eventually(t, func() bool {
		_, err := d.Get(context.Background(), w.ID)
		return err == ErrClosed
	}, "Get did not return ErrClosed")
	_, err = d.Publish(context.Background(), Event{Type: EventJobComplete})
	require.ErrorIs(t, err, ErrClosed)
	close(proceed)
	require.NoError(t, <-closed)
	require.NoError(t, d.Close(context.Background()), "a second Close is fine")

	d2 := openTestAt(t, d.st.Path(), cfg)
	dl := onlyDelivery(t, d2, w.ID)
	require.Equal(t, StatusDelivered, dl.Status, "the attempt in flight finished and was recorded")
	require.Equal(t, 1, dl.Attempts)
}

func TestCloseCancelsAttemptsWithoutCountingThem(t *testing.T) {
	cfg := testConfig()
	d, err := Open(t.Context(), testDB(t), cfg)
	require.NoError(t, err)
	entered := make(chan struct{}, 1)
	var hang atomic.Bool
	hang.Store(true)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			entered <- struct{}{}
			<-r.Context().Done()
			return
		}
		w.WriteHeader(200)
	})
	w := register(t, d, rc.url())
	_, err = d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, d.Close(ctx), context.DeadlineExceeded)

	hang.Store(false)
	d2 := openTestAt(t, d.st.Path(), cfg)
	dl := onlyDelivery(t, d2, w.ID)
	waitStatus(t, d2, dl.ID, StatusDelivered)
	attempts, err := d2.Attempts(t.Context(), dl.ID)
	require.NoError(t, err)
	require.Len(t, attempts, 1, "a cancelled attempt is not recorded as a failure")
	require.Equal(t, 200, attempts[0].StatusCode)
	dl, err = d2.Delivery(t.Context(), dl.ID)
	require.NoError(t, err)
	require.Equal(t, 1, dl.Attempts, "the cancelled attempt did not use up the schedule")
	hook, err := d2.Get(t.Context(), w.ID)
	require.NoError(t, err)
	require.Zero(t, hook.FailureStreak)
}

// openTestAt opens the file behind a closed dispatcher's store again.
func openTestAt(t testing.TB, path string, cfg Config) *Dispatcher {
	t.Helper()
	d, err := Open(context.Background(), path, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.Close(context.Background())) })
	return d
}

func TestMethodsAfterClose(t *testing.T) {
	d, err := Open(t.Context(), testDB(t), testConfig())
	require.NoError(t, err)
	require.NoError(t, d.Close(t.Context()))
	ctx := t.Context()
	id := "00000000-0000-0000-0000-000000000000"
	_, err = d.Publish(ctx, Event{Type: EventJobComplete})
	require.ErrorIs(t, err, ErrClosed)
	_, err = d.Register(ctx, Registration{URL: "https://example.com", Events: []string{"*"}})
	require.ErrorIs(t, err, ErrClosed)
	_, err = d.Get(ctx, id)
	require.ErrorIs(t, err, ErrClosed)
	_, err = d.List(ctx)
	require.ErrorIs(t, err, ErrClosed)
	_, err = d.SendTest(ctx, id)
	require.ErrorIs(t, err, ErrClosed)
	_, err = d.ObserveScore(ctx, "s", 1)
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, d.Delete(ctx, id), ErrClosed)
	_, err = d.Retry(ctx, 1)
	require.ErrorIs(t, err, ErrClosed)
	d.Notify() // harmless
}

// A claimed delivery that waited so long for a worker that its lease could
// end during the attempt is given back, not attempted: no attempt ever runs
// past its lease, where a second claim could attempt it beside it.
func TestStaleClaimIsReleasedNotAttempted(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 1
	cfg.AttemptTimeout = time.Second
	cfg.LeaseDuration = 1100 * time.Millisecond // a queued job may wait 100 ms
	cfg.MaxInFlightPerWebhook = 4
	d := openTest(t, cfg)
	// The only worker spends two attempt timeouts on two slow endpoints,
	// longer than the lease: meanwhile the queued claim's lease ends and
	// the loop claims the delivery again.
	slow := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n <= 2 {
			<-r.Context().Done()
		}
	})
	fast := newReceiver(t, nil)
	register(t, d, slow.url()+"?1")
	register(t, d, slow.url()+"?2")
	wf := register(t, d, fast.url())
	_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	dl := waitStatus(t, d, onlyDelivery(t, d, wf.ID).ID, StatusDelivered)
	require.Equal(t, 1, dl.Attempts, "the released claim did not count as an attempt")
	attempts, err := d.Attempts(t.Context(), dl.ID)
	require.NoError(t, err)
	require.Len(t, attempts, 1)
	time.Sleep(200 * time.Millisecond) // would a second attempt come? (it must not)
	require.Len(t, fast.requests(), 1, "one attempt, not one per claim")
}
