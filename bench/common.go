package main

// What every mode shares: the payload, the webhooks (URL and secret), the
// tuned HTTP client that raw, goqite and river send with, and small
// helpers for temp dirs, medians and percentiles.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sparc-webhooks/webhook"
)

// payloadSize is the size of every request body, in bytes.
const payloadSize = 1024

// eventType is the type of every event published.
const eventType = webhook.EventJobComplete

// eventTime is every event's timestamp. Its milliseconds are not zero, so
// that the envelope, which drops trailing zeros, always has the same length.
var eventTime = time.Date(2026, 1, 2, 3, 4, 5, 123_000_000, time.UTC)

// eventID returns the ID of the i-th event of a run. The webhook mode gives
// these IDs to Publish, so every mode sends the same bytes.
func eventID(i int) string { return fmt.Sprintf("evt_%032x", i) }

// padData is the event's data: {"pad":"xxx..."} sized so that the whole
// envelope is payloadSize bytes.
var padData = func() json.RawMessage {
	empty := envelope(eventID(0), `{"pad":""}`)
	return json.RawMessage(`{"pad":"` + strings.Repeat("x", payloadSize-len(empty)) + `"}`)
}()

// envelope builds the body the library sends for an event: the Standard
// Webhooks envelope, byte for byte as the library encodes it.
func envelope(id string, data string) []byte {
	var b bytes.Buffer
	b.WriteString(`{"id":"`)
	b.WriteString(id)
	b.WriteString(`","type":"`)
	b.WriteString(eventType)
	b.WriteString(`","timestamp":"`)
	b.WriteString(eventTime.Format(time.RFC3339Nano))
	b.WriteString(`","data":`)
	b.WriteString(data)
	b.WriteString(`}`)
	return b.Bytes()
}

// payload returns the body of event i.
func payload(i int) []byte { return envelope(eventID(i), string(padData)) }

// hook is one webhook as every mode sees it: where it points and the
// secret it signs with.
type hook struct {
	url    string
	secret string
}

// makeHooks returns n webhooks on the receiver, each with its own path,
// query and secret. When hang is true the first one points at a path the
// receiver never answers.
func makeHooks(rc *receiver, n int, hang bool) ([]hook, error) {
	hooks := make([]hook, n)
	for i := range hooks {
		s, err := webhook.GenerateSecret()
		if err != nil {
			return nil, err
		}
		path := fmt.Sprintf("/hook/%d?n=%d", i, i)
		if hang && i == 0 {
			path = hangPrefix + "0"
		}
		hooks[i] = hook{url: rc.url(path), secret: string(s)}
	}
	return hooks, nil
}

// newTunedClient returns the HTTP client that raw, goqite and river send
// with: keep-alive, one idle connection per worker, no proxy, no
// compression, and a whole-request timeout like the library's
// AttemptTimeout.
func newTunedClient(concurrency int, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4 * concurrency,
		MaxIdleConnsPerHost: concurrency,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// userAgent is what the peers send; the library sends its own.
const userAgent = "sparc-webhook-bench"

// post sends one signed delivery the way the library does: the same body,
// the same Standard Webhooks and SPARC signature headers made afresh for
// the attempt, and the response body drained so the connection is reused.
// It fails unless the receiver answers 2xx.
func post(ctx context.Context, c *http.Client, h hook, evID, deliveryID string, body []byte) error {
	now := time.Now()
	std, err := webhook.Sign(h.secret, evID, now, body)
	if err != nil {
		return err
	}
	sparc, err := webhook.SignSPARC(h.secret, now, body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hd := req.Header
	hd["Content-Type"] = []string{"application/json"}
	hd["User-Agent"] = []string{userAgent}
	hd["X-Sparc-Event"] = []string{eventType}
	hd["X-Sparc-Delivery"] = []string{deliveryID}
	hd["Webhook-Id"] = []string{evID}
	hd["Webhook-Timestamp"] = []string{strconv.FormatInt(now.Unix(), 10)}
	hd["Webhook-Signature"] = []string{std}
	hd["X-Sparc-Signature"] = []string{sparc}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("receiver answered %d", resp.StatusCode)
	}
	return nil
}

// tempDB makes a fresh temp dir and returns the path of a database file in
// it and a function that removes the dir.
func tempDB(name string) (string, func(), error) {
	dir, err := os.MkdirTemp("", "webhook-bench-")
	if err != nil {
		return "", nil, err
	}
	return filepath.Join(dir, name), func() { os.RemoveAll(dir) }, nil
}

// sqliteDSN is the DSN a careful user gives github.com/mattn/go-sqlite3 for
// a queue: WAL, synchronous=FULL (the library's default, so durability is
// the same), a busy timeout, and BEGIN IMMEDIATE so that writers queue
// instead of failing on lock upgrades.
func sqliteDSN(path string) string {
	return "file:" + path + "?_journal_mode=WAL&_synchronous=FULL&_busy_timeout=10000&_txlock=immediate&_foreign_keys=1"
}

// median returns the median of xs (the mean of the middle two for an even
// count), or 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted ds by
// the nearest-rank method.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100+0.999999) - 1
	rank = min(max(rank, 0), len(sorted)-1)
	return sorted[rank]
}

// rate returns n per second over d.
func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// drainTimeout is how long any drain of n deliveries may take before the
// run gives up on it: a minute, plus n at 200 per second, far below any
// rate seen. It keeps a stalled drain from hanging the run (and CI).
func drainTimeout(n int64) time.Duration {
	return time.Minute + time.Duration(n)*time.Second/200
}

// ms converts a duration to float milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
