package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	goleak.VerifyTestMain(m)
}

// loopback lets tests deliver to httptest servers.
var loopback = []string{"127.0.0.0/8", "::1/128"}

// fastRetries retries quickly, four attempts in all.
func fastRetries() *ScheduleRetryPolicy {
	return &ScheduleRetryPolicy{Schedule: []time.Duration{10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond}}
}

// testConfig is a Config for tests: loopback allowed, quick retries.
func testConfig() Config {
	return Config{
		AllowNetworks:  loopback,
		RetryPolicy:    fastRetries(),
		AttemptTimeout: 5 * time.Second,
		PollInterval:   50 * time.Millisecond,
		Workers:        8,
	}
}

// openTest opens a dispatcher on a fresh file and closes it when the test
// ends.
func openTest(t testing.TB, cfg Config) *Dispatcher {
	t.Helper()
	d, err := Open(context.Background(), testDB(t), cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, d.Close(ctx))
	})
	return d
}

// received is a request a test receiver got.
type received struct {
	Header http.Header
	Body   []byte
	At     time.Time
}

// receiver is a loopback HTTP endpoint that records what it gets and
// answers as answer says (200 when nil).
type receiver struct {
	t      testing.TB
	srv    *httptest.Server
	mu     sync.Mutex
	got    []received
	notify chan struct{}
	answer func(n int, w http.ResponseWriter, r *http.Request) // n counts from 1
}

func newReceiver(t testing.TB, answer func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{t: t, notify: make(chan struct{}, 1<<16), answer: answer}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, received{Header: r.Header.Clone(), Body: body, At: time.Now()})
		n := len(rc.got)
		rc.mu.Unlock()
		select {
		case rc.notify <- struct{}{}:
		default:
		}
		if rc.answer != nil {
			rc.answer(n, w, r)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) url() string { return rc.srv.URL + "/hook" }

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

// waitFor waits until the receiver has at least n requests.
func (rc *receiver) waitFor(n int) []received {
	rc.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		if got := rc.requests(); len(got) >= n {
			return got
		}
		select {
		case <-rc.notify:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			rc.t.Fatalf("receiver got %d requests, want %d", len(rc.requests()), n)
		}
	}
}

// eventually polls cond until it holds or 20 seconds pass.
func eventually(t testing.TB, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(msg, args...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// register registers a webhook for events at url.
func register(t testing.TB, d *Dispatcher, url string, events ...string) Webhook {
	t.Helper()
	if len(events) == 0 {
		events = []string{"*"}
	}
	w, err := d.Register(context.Background(), Registration{URL: url, Events: events})
	require.NoError(t, err)
	return w
}

// verifyStandard checks a Standard Webhooks signature with code written
// here from the specification, independent of sign.go.
func verifyStandard(t testing.TB, secret string, h http.Header, body []byte) {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	require.NoError(t, err)
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	require.NotEmpty(t, id)
	require.NotEmpty(t, ts)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	require.Contains(t, strings.Fields(h.Get("webhook-signature")), want)
}

// verifySPARC checks the X-SPARC-Signature header by hand.
func verifySPARC(t testing.TB, secret string, h http.Header, body []byte) {
	t.Helper()
	v := h.Get("X-SPARC-Signature")
	require.True(t, strings.HasPrefix(v, "t="), v)
	parts := strings.Split(v, ",")
	ts := strings.TrimPrefix(parts[0], "t=")
	_, err := strconv.ParseInt(ts, 10, 64)
	require.NoError(t, err)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	want := "v1=" + hex.EncodeToString(mac.Sum(nil))
	require.Contains(t, parts[1:], want)
}

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// waitStatus waits until a delivery reaches status.
func waitStatus(t testing.TB, d *Dispatcher, id int64, status DeliveryStatus) Delivery {
	t.Helper()
	var dl Delivery
	eventually(t, func() bool {
		var err error
		dl, err = d.Delivery(context.Background(), id)
		require.NoError(t, err)
		return dl.Status == status
	}, "delivery %d never became %s (now %+v)", id, status, dl)
	return dl
}

// onlyDelivery returns the single delivery of a webhook.
func onlyDelivery(t testing.TB, d *Dispatcher, webhookID string) Delivery {
	t.Helper()
	page, err := d.Deliveries(context.Background(), webhookID, DeliveryQuery{})
	require.NoError(t, err)
	require.Len(t, page.Deliveries, 1)
	return page.Deliveries[0]
}
