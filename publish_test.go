package webhook

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sparc-webhooks/webhook/internal/match"
	"github.com/stretchr/testify/require"
)

// The promise the first users asked for: registering a URL makes a signed
// POST arrive there when a job completes.
func TestPublishDeliversSignedPost(t *testing.T) {
	d := openTest(t, testConfig())
	rc := newReceiver(t, nil)
	w := register(t, d, rc.url(), EventJobComplete)
	require.True(t, w.Enabled)

	start := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	pub, err := d.Publish(t.Context(), NewJobComplete(JobComplete{
		JobID: "job-42", Name: "nightly-batch", StartedAt: start, FinishedAt: start.Add(90 * time.Second),
		Result: map[string]any{"items": 20, "score": 71.5},
	}))
	require.NoError(t, err)
	require.Equal(t, 1, pub.Deliveries)
	require.False(t, pub.Duplicate)

	got := rc.waitFor(1)[0]
	h := got.Header
	require.Equal(t, "application/json", h.Get("Content-Type"))
	require.Equal(t, EventJobComplete, h.Get("X-SPARC-Event"))
	require.Equal(t, pub.EventID, h.Get("webhook-id"))
	require.Contains(t, h.Get("User-Agent"), "sparc-webhook/"+Version)
	require.NotEmpty(t, h.Get("X-SPARC-Delivery"))
	verifyStandard(t, string(w.Secret), h, got.Body)
	verifySPARC(t, string(w.Secret), h, got.Body)
	require.NoError(t, Verify(string(w.Secret), h, got.Body))
	require.NoError(t, VerifySPARC(string(w.Secret), h, got.Body))

	var env struct {
		ID        string          `json:"id"`
		Type      string          `json:"type"`
		Timestamp time.Time       `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}
	require.NoError(t, json.Unmarshal(got.Body, &env))
	require.Equal(t, pub.EventID, env.ID)
	require.Equal(t, EventJobComplete, env.Type)
	require.True(t, env.Timestamp.Equal(start.Add(90*time.Second)))
	require.JSONEq(t, `{"job_id":"job-42","name":"nightly-batch","started_at":"2026-11-29T10:00:00Z",
		"finished_at":"2026-11-29T10:01:30Z","duration_ms":90000,"result":{"items":20,"score":71.5}}`, string(env.Data))

	dl := onlyDelivery(t, d, w.ID)
	dl = waitStatus(t, d, dl.ID, StatusDelivered)
	require.Equal(t, 1, dl.Attempts)
	require.Equal(t, 200, dl.LastStatusCode)
	require.Equal(t, strconv.FormatInt(dl.ID, 10), h.Get("X-SPARC-Delivery"))
	attempts, err := d.Attempts(t.Context(), dl.ID)
	require.NoError(t, err)
	require.Len(t, attempts, 1)
	require.Equal(t, TriggerScheduled, attempts[0].Trigger)
	require.Equal(t, 1, attempts[0].Number)
	require.Equal(t, 200, attempts[0].StatusCode)
	require.Empty(t, attempts[0].ErrorClass)
}

func TestPublishJobFailedAndScoreData(t *testing.T) {
	d := openTest(t, testConfig())
	rc := newReceiver(t, nil)
	register(t, d, rc.url(), "*")
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	_, err := d.Publish(t.Context(), NewJobFailed(JobFailed{JobID: "j1", Name: "n", StartedAt: at, FinishedAt: at.Add(time.Second), Error: "out of memory"}))
	require.NoError(t, err)
	_, err = d.Publish(t.Context(), NewScoreChanged(ScoreChanged{Subject: "acme", Previous: 10, Current: 25.5}))
	require.NoError(t, err)
	got := rc.waitFor(2)
	bodies := map[string]json.RawMessage{}
	for _, g := range got {
		var env struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		require.NoError(t, json.Unmarshal(g.Body, &env))
		bodies[env.Type] = env.Data
	}
	require.JSONEq(t, `{"job_id":"j1","name":"n","started_at":"2026-01-02T03:04:05Z","finished_at":"2026-01-02T03:04:06Z","duration_ms":1000,"error":"out of memory"}`, string(bodies[EventJobFailed]))
	require.JSONEq(t, `{"subject":"acme","previous":10,"current":25.5,"delta":15.5}`, string(bodies[EventScoreChanged]))
}

func TestSubscriptionsMatch(t *testing.T) {
	cfg := testConfig()
	cfg.EventTypes = []EventType{{Name: "report.ready", Description: "A report is ready."}}
	d := openTest(t, cfg)
	all := newReceiver(t, nil)
	jobs := newReceiver(t, nil)
	exact := newReceiver(t, nil)
	reports := newReceiver(t, nil)
	register(t, d, all.url(), "*")
	register(t, d, jobs.url(), "job.*")
	register(t, d, exact.url(), EventJobFailed)
	register(t, d, reports.url(), "report.ready")

	for _, typ := range []string{EventJobComplete, EventJobFailed, EventScoreChanged, "report.ready"} {
		_, err := d.Publish(t.Context(), Event{Type: typ, Data: map[string]string{"k": "v"}})
		require.NoError(t, err)
	}
	types := func(rc *receiver, n int) []string {
		var out []string
		for _, g := range rc.waitFor(n) {
			out = append(out, g.Header.Get("X-SPARC-Event"))
		}
		return out
	}
	require.ElementsMatch(t, []string{EventJobComplete, EventJobFailed, EventScoreChanged, "report.ready"}, types(all, 4))
	require.ElementsMatch(t, []string{EventJobComplete, EventJobFailed}, types(jobs, 2))
	require.ElementsMatch(t, []string{EventJobFailed}, types(exact, 1))
	require.ElementsMatch(t, []string{"report.ready"}, types(reports, 1))
	// Nothing more arrives: every delivery is settled and counted.
	eventually(t, func() bool { return pendingCount(t, d) == 0 }, "deliveries still pending")
	require.Len(t, jobs.requests(), 2)
	require.Len(t, exact.requests(), 1)

	_, err := d.Publish(t.Context(), Event{Type: "report.unknown"})
	require.ErrorIs(t, err, ErrUnknownEventType)
	require.ErrorIs(t, err, ErrInvalid)
	_, err = d.Publish(t.Context(), Event{Type: EventTest})
	require.ErrorIs(t, err, ErrInvalid)
}

func TestMatchEvent(t *testing.T) {
	tests := []struct {
		pattern, typ string
		want         bool
	}{
		{"*", "job.complete", true},
		{"job.complete", "job.complete", true},
		{"job.*", "job.complete", true},
		{"job.*", "job.failed", true},
		{"job.*", "score.changed", false},
		{"job.*", "job", false},
		{"job.*", "job.step.done", false},
		{"*.complete", "job.complete", true},
		{"*.*", "job.complete", true},
		{"*.*", "job", false},
		{"job.complete", "job.completed", false},
		{"job", "job.complete", false},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.b.d", false},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+"~"+tt.typ, func(t *testing.T) {
			require.Equal(t, tt.want, match.Event(tt.pattern, tt.typ))
		})
	}
}

func TestPublishDuplicateIDSendsOnce(t *testing.T) {
	d := openTest(t, testConfig())
	rc := newReceiver(t, nil)
	w := register(t, d, rc.url())
	first, err := d.Publish(t.Context(), Event{ID: "evt-fixed-1", Type: EventJobComplete, Data: map[string]int{"v": 1}})
	require.NoError(t, err)
	require.False(t, first.Duplicate)
	second, err := d.Publish(t.Context(), Event{ID: "evt-fixed-1", Type: EventJobComplete, Data: map[string]int{"v": 2}})
	require.NoError(t, err)
	require.True(t, second.Duplicate)
	require.Zero(t, second.Deliveries)
	rc.waitFor(1)
	eventually(t, func() bool { return pendingCount(t, d) == 0 }, "deliveries still pending")
	page, err := d.Deliveries(t.Context(), w.ID, DeliveryQuery{})
	require.NoError(t, err)
	require.Len(t, page.Deliveries, 1)
	require.Len(t, rc.requests(), 1)
	require.Contains(t, string(rc.requests()[0].Body), `"v":1`, "the first payload is kept")
}

func TestPublishValidation(t *testing.T) {
	d := openTest(t, testConfig())
	tests := []struct {
		name  string
		ev    Event
		field string
	}{
		{"no type", Event{}, "type"},
		{"bad type", Event{Type: "Job.Complete"}, "type"},
		{"reserved type", Event{Type: EventTest}, "type"},
		{"bad id", Event{ID: "has space", Type: EventJobComplete}, "id"},
		{"long id", Event{ID: string(make([]byte, 129)), Type: EventJobComplete}, "id"},
		{"bad raw json", Event{Type: EventJobComplete, Data: json.RawMessage(`{"a":`)}, "data"},
		{"unencodable", Event{Type: EventJobComplete, Data: map[string]any{"f": func() {}}}, "data"},
		{"too big", Event{Type: EventJobComplete, Data: string(make([]byte, DefaultMaxPayloadBytes))}, "data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := d.Publish(t.Context(), tt.ev)
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			require.Equal(t, tt.field, ve.Field)
			require.ErrorIs(t, err, ErrInvalid)
		})
	}
}

func TestPublishTx(t *testing.T) {
	path := filepath.Join(t.TempDir(), "host.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_txlock=immediate&_busy_timeout=5000&_journal_mode=WAL")
	require.NoError(t, err)
	defer db.Close()
	d, err := New(t.Context(), db, testConfig())
	require.NoError(t, err)
	defer func() { require.NoError(t, d.Close(context.Background())) }()
	checkPublishTx(t, db, d, true)
}

// checkPublishTx publishes in the host's transactions on db, which d
// uses: a rolled-back event is never sent, a committed one is, once, with
// the host's own row. notify calls Notify after the commit.
func checkPublishTx(t *testing.T, db *sql.DB, d *Dispatcher, notify bool) {
	t.Helper()
	_, err := db.Exec(`CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT)`)
	require.NoError(t, err)
	rc := newReceiver(t, nil)
	register(t, d, rc.url(), EventJobComplete)

	// Rolled back: the host's row and the event vanish together.
	tx, err := db.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	_, err = tx.Exec(`INSERT INTO jobs VALUES ('rolled-back', 'done')`)
	require.NoError(t, err)
	_, err = d.PublishTx(t.Context(), tx, Event{ID: "evt-rollback", Type: EventJobComplete})
	require.NoError(t, err)
	require.NoError(t, tx.Rollback())

	// Committed: both land and the event is sent.
	tx, err = db.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	_, err = tx.Exec(`INSERT INTO jobs VALUES ('committed', 'done')`)
	require.NoError(t, err)
	pub, err := d.PublishTx(t.Context(), tx, Event{ID: "evt-commit", Type: EventJobComplete})
	require.NoError(t, err)
	require.Equal(t, 1, pub.Deliveries)
	require.NoError(t, tx.Commit())
	if notify {
		d.Notify()
	}

	got := rc.waitFor(1)
	require.Equal(t, "evt-commit", got[0].Header.Get("webhook-id"))
	eventually(t, func() bool { return pendingCount(t, d) == 0 }, "deliveries still pending")
	require.Len(t, rc.requests(), 1, "the rolled-back event is never sent")
	var n int
	require.NoError(t, db.QueryRow(`SELECT COUNT(*) FROM webhook_events WHERE id = 'evt-rollback'`).Scan(&n))
	require.Zero(t, n)
	require.NoError(t, db.QueryRow(`SELECT COUNT(*) FROM jobs`).Scan(&n))
	require.Equal(t, 1, n, "only the committed job")
}

func TestConcurrentPublishers(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 16
	d := openTest(t, cfg)
	var mu sync.Mutex
	seen := map[string]int{}
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("webhook-id")]++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	register(t, d, rc.url(), "job.*")
	register(t, d, rc.url()+"?second=1", EventJobComplete)

	const publishers, each = 32, 25
	var wg sync.WaitGroup
	ids := make(chan string, publishers*each)
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				pub, err := d.Publish(context.Background(), Event{ID: fmt.Sprintf("p%d-%d", p, i), Type: EventJobComplete})
				if err != nil {
					t.Errorf("publish: %v", err)
					return
				}
				if pub.Deliveries != 2 {
					t.Errorf("deliveries = %d, want 2", pub.Deliveries)
				}
				ids <- pub.EventID
			}
		})
	}
	wg.Wait()
	close(ids)
	rc.waitFor(2 * publishers * each)
	eventually(t, func() bool { return pendingCount(t, d) == 0 }, "deliveries still pending")
	mu.Lock()
	defer mu.Unlock()
	for id := range ids {
		require.Equal(t, 2, seen[id], "event %s", id)
	}
	require.Len(t, seen, publishers*each)
}

// pendingCount counts the deliveries not yet settled.
// unsettledCount counts the deliveries pending, and the cancelled ones a
// worker still holds (it drops them, uncounted).
func unsettledCount(t testing.TB, d *Dispatcher) int {
	t.Helper()
	var n int
	require.NoError(t, d.st.Reader().QueryRow(`SELECT COUNT(*) FROM webhook_deliveries WHERE status = 0 OR (status = 3 AND leased = 1)`).Scan(&n))
	return n
}

func pendingCount(t testing.TB, d *Dispatcher) int {
	t.Helper()
	var n int
	require.NoError(t, d.st.Reader().QueryRow(`SELECT COUNT(*) FROM webhook_deliveries WHERE status = 0`).Scan(&n))
	return n
}
