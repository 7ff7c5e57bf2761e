package webhook_test

// The acceptance tests of the original request, one per requirement:
// the host registers webhook URLs, and whenever a job completes, fails, or
// a score changes significantly, every subscribed URL receives a signed
// JSON POST.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"github.com/stretchr/testify/require"

	"github.com/sparc-webhooks/webhook"
)

// hit is one POST a receiver got.
type hit struct {
	header http.Header
	body   []byte
}

// endpoint is a loopback receiver answering status.
type endpoint struct {
	srv  *httptest.Server
	mu   sync.Mutex
	hits []hit
	got  chan struct{}
}

func newEndpoint(t *testing.T, status int) *endpoint {
	e := &endpoint{got: make(chan struct{}, 100)}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		e.mu.Lock()
		e.hits = append(e.hits, hit{r.Header.Clone(), body})
		e.mu.Unlock()
		w.WriteHeader(status)
		e.got <- struct{}{}
	}))
	t.Cleanup(e.srv.Close)
	return e
}

// wait returns the first n POSTs, failing the test after 10 s.
func (e *endpoint) wait(t *testing.T, n int) []hit {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		e.mu.Lock()
		if len(e.hits) >= n {
			out := append([]hit(nil), e.hits[:n]...)
			e.mu.Unlock()
			return out
		}
		e.mu.Unlock()
		select {
		case <-e.got:
		case <-deadline:
			t.Fatalf("%d POSTs arrived, want %d", len(e.hits), n)
		}
	}
}

func (e *endpoint) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.hits)
}

// host opens a dispatcher on a fresh SQLite file, allowed to deliver to
// loopback receivers, with quick retries.
func host(t *testing.T, logs io.Writer) (*webhook.Dispatcher, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sparc.db")
	cfg := webhook.Config{
		AllowNetworks: []string{"127.0.0.0/8", "::1/128"},
		RetryPolicy:   &webhook.ScheduleRetryPolicy{Schedule: []time.Duration{10 * time.Millisecond}},
		PollInterval:  20 * time.Millisecond,
	}
	if logs != nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	}
	d, err := webhook.Open(t.Context(), path, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.Close(context.Background())) })
	return d, path
}

// verifySPARC checks X-SPARC-Signature by hand: t=<unix>,v1=<hex
// HMAC-SHA256 of "<t>.<body>" keyed with the secret string>.
func verifySPARC(t *testing.T, secret string, h hit) {
	t.Helper()
	sig := h.header.Get("X-SPARC-Signature")
	require.NotEmpty(t, sig, "X-SPARC-Signature is missing")
	var ts string
	var v1 []string
	for part := range strings.SplitSeq(sig, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			v1 = append(v1, v)
		}
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "."))
	m.Write(h.body)
	want := hex.EncodeToString(m.Sum(nil))
	require.Contains(t, v1, want, "the HMAC-SHA256 of the payload with the registered secret")
	require.True(t, json.Valid(h.body), "the payload is JSON")
}

func register(t *testing.T, d *webhook.Dispatcher, url string, events ...string) webhook.Webhook {
	t.Helper()
	w, err := d.Register(t.Context(), webhook.Registration{URL: url, Events: events})
	require.NoError(t, err)
	return w
}

func TestSpecWebhooksTable(t *testing.T) {
	_, path := host(t, nil)
	db, err := sql.Open("sqlite3", path)
	require.NoError(t, err)
	defer db.Close()
	rows, err := db.Query(`SELECT name FROM pragma_table_info('webhooks')`)
	require.NoError(t, err)
	defer rows.Close()
	cols := map[string]bool{}
	for rows.Next() {
		var name string
		require.NoError(t, rows.Scan(&name))
		cols[name] = true
	}
	for _, c := range []string{"url", "events", "secret", "enabled"} {
		require.True(t, cols[c], "webhooks has a %s column", c)
	}
}

func TestSpecRoutes(t *testing.T) {
	d, _ := host(t, nil)
	api := httptest.NewServer(d.Handler())
	defer api.Close()
	rc := newEndpoint(t, http.StatusOK)

	// POST /webhooks registers.
	resp, err := http.Post(api.URL+"/webhooks", "application/json",
		strings.NewReader(`{"url":"`+rc.srv.URL+`/hook","events":["job.complete"]}`))
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	var created struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&created))
	resp.Body.Close()
	require.NotEmpty(t, created.ID)
	require.True(t, strings.HasPrefix(created.Secret, "whsec_"))

	// POST /webhooks/{id}/test sends a sample, signed.
	resp, err = http.Post(api.URL+"/webhooks/"+created.ID+"/test", "application/json", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	got := rc.wait(t, 1)
	require.Equal(t, "webhook.test", got[0].header.Get("X-SPARC-Event"))
	verifySPARC(t, created.Secret, got[0])

	// DELETE /webhooks/{id} removes it: then it is not found, and a job
	// sends it nothing.
	req, _ := http.NewRequest(http.MethodDelete, api.URL+"/webhooks/"+created.ID, nil)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	resp, err = http.Get(api.URL + "/webhooks/" + created.ID)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	_, err = d.Publish(t.Context(), webhook.NewJobComplete(webhook.JobComplete{JobID: "after-delete", FinishedAt: time.Now()}))
	require.NoError(t, err)
	time.Sleep(200 * time.Millisecond) // a delivery would have arrived by now
	require.Equal(t, 1, rc.count(), "a deleted webhook receives nothing")
}

func TestSpecJobCompleteArrives(t *testing.T) {
	d, _ := host(t, nil)
	rc := newEndpoint(t, http.StatusOK)
	w := register(t, d, rc.srv.URL, webhook.EventJobComplete)
	_, err := d.Publish(t.Context(), webhook.NewJobComplete(webhook.JobComplete{JobID: "job-42", Name: "nightly", StartedAt: time.Now().Add(-time.Minute), FinishedAt: time.Now()}))
	require.NoError(t, err)
	got := rc.wait(t, 1)
	verifySPARC(t, string(w.Secret), got[0])
	var env struct {
		Type string `json:"type"`
		Data struct {
			JobID string `json:"job_id"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(got[0].body, &env))
	require.Equal(t, "job.complete", env.Type)
	require.Equal(t, "job-42", env.Data.JobID)
}

func TestSpecJobFailedAndScoreChangedArrive(t *testing.T) {
	d, _ := host(t, nil)
	rc := newEndpoint(t, http.StatusOK)
	w := register(t, d, rc.srv.URL, webhook.EventJobFailed, webhook.EventScoreChanged)
	_, err := d.Publish(t.Context(), webhook.NewJobFailed(webhook.JobFailed{JobID: "job-7", Error: "out of memory", FinishedAt: time.Now()}))
	require.NoError(t, err)
	got := rc.wait(t, 1)
	require.Equal(t, "job.failed", got[0].header.Get("X-SPARC-Event"))
	verifySPARC(t, string(w.Secret), got[0])

	ctx := t.Context()
	obs, err := d.ObserveScore(ctx, "acme", 50)
	require.NoError(t, err)
	require.True(t, obs.Baseline, "the first score is the baseline")
	obs, err = d.ObserveScore(ctx, "acme", 51) // below the default threshold of 5
	require.NoError(t, err)
	require.False(t, obs.Published, "an insignificant change is not announced")
	obs, err = d.ObserveScore(ctx, "acme", 70)
	require.NoError(t, err)
	require.True(t, obs.Published)
	got = rc.wait(t, 2)
	require.Equal(t, "score.changed", got[1].header.Get("X-SPARC-Event"))
	verifySPARC(t, string(w.Secret), got[1])
	require.True(t, bytes.Contains(got[1].body, []byte(`"current":70`)), "%s", got[1].body)
	time.Sleep(100 * time.Millisecond)
	require.Equal(t, 2, rc.count(), "nothing for the insignificant change")
}

func TestSpecFailedDeliveryLoggedWithStatusCode(t *testing.T) {
	var logs syncBuffer
	d, _ := host(t, &logs)
	rc := newEndpoint(t, http.StatusServiceUnavailable)
	w := register(t, d, rc.srv.URL, webhook.EventJobComplete)
	_, err := d.Publish(t.Context(), webhook.NewJobComplete(webhook.JobComplete{JobID: "job-9", FinishedAt: time.Now()}))
	require.NoError(t, err)
	rc.wait(t, 2) // the attempt and its one retry
	require.Eventually(t, func() bool {
		for line := range strings.SplitSeq(logs.String(), "\n") {
			if strings.Contains(line, `"msg":"webhook delivery attempt failed"`) && strings.Contains(line, `"status_code":503`) {
				return true
			}
		}
		return false
	}, 5*time.Second, 10*time.Millisecond, "no log record of the failure with its status code:\n%s", logs.String())
	var dl webhook.Delivery
	require.Eventually(t, func() bool {
		page, err := d.Deliveries(t.Context(), w.ID, webhook.DeliveryQuery{})
		require.NoError(t, err)
		if len(page.Deliveries) == 1 && page.Deliveries[0].Status == webhook.StatusFailed {
			dl = page.Deliveries[0]
			return true
		}
		return false
	}, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, 503, dl.LastStatusCode)
	attempts, err := d.Attempts(t.Context(), dl.ID)
	require.NoError(t, err)
	require.Len(t, attempts, 2)
	for _, a := range attempts {
		require.Equal(t, 503, a.StatusCode)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
