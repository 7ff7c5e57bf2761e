package sparc

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sparc-webhooks/webhook"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakePublisher records what the handlers publish. observe, when set,
// answers ObserveScore.
type fakePublisher struct {
	mu      sync.Mutex
	events  []webhook.Event
	observe func(ctx context.Context, subject string, score float64) (webhook.ScoreObservation, error)
}

func (f *fakePublisher) Publish(_ context.Context, ev webhook.Event) (webhook.Published, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, ev)
	return webhook.Published{EventID: "evt_fake", Deliveries: 1}, nil
}

func (f *fakePublisher) ObserveScore(ctx context.Context, subject string, score float64) (webhook.ScoreObservation, error) {
	if f.observe != nil {
		return f.observe(ctx, subject, score)
	}
	return webhook.ScoreObservation{Baseline: true}, nil
}

func (f *fakePublisher) published() []webhook.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]webhook.Event(nil), f.events...)
}

// newServer returns a Server on pub and its routes; the server is closed
// when the test ends.
func newServer(t *testing.T, pub Publisher, cfg Config) (*Server, http.Handler) {
	t.Helper()
	s := New(pub, cfg)
	t.Cleanup(s.Close)
	mux := http.NewServeMux()
	s.Register(mux)
	return s, mux
}

// call serves one request; a non-empty body is sent as JSON.
func call(h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

type errorAnswer struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Field   string `json:"field"`
	} `json:"error"`
}

func decodeAnswer[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	require.Equal(t, "application/json", w.Header().Get("Content-Type"))
	var v T
	dec := json.NewDecoder(w.Body)
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&v), w.Body.String())
	return v
}

func startJob(t *testing.T, h http.Handler, body string) string {
	t.Helper()
	w := call(h, http.MethodPost, "/jobs", body)
	require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
	ans := decodeAnswer[struct {
		JobID string `json:"job_id"`
	}](t, w)
	require.Regexp(t, `^job_[a-z2-7]{16}$`, ans.JobID)
	return ans.JobID
}

func TestJobCompletes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pub := &fakePublisher{}
		s, h := newServer(t, pub, Config{})
		start := time.Now()
		id := startJob(t, h, `{"name":"nightly","items":5}`)
		s.Wait()
		require.Equal(t, 500*time.Millisecond, time.Since(start), "five items at ten a second")

		events := pub.published()
		require.Len(t, events, 1)
		require.Equal(t, webhook.EventJobComplete, events[0].Type)
		data := events[0].Data.(webhook.JobComplete)
		require.Equal(t, id, data.JobID)
		require.Equal(t, "nightly", data.Name)
		require.Equal(t, int64(500), data.DurationMS)
		require.Equal(t, completeResult{Items: 5, Score: score("nightly")}, data.Result)
	})
}

func TestJobDefaultItems(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pub := &fakePublisher{}
		s, h := newServer(t, pub, Config{})
		start := time.Now()
		startJob(t, h, `{"name":"nightly"}`)
		s.Wait()
		require.Equal(t, DefaultItems*DefaultItemInterval, time.Since(start))
		events := pub.published()
		require.Len(t, events, 1)
		require.Equal(t, DefaultItems, events[0].Data.(webhook.JobComplete).Result.(completeResult).Items)
	})
}

func TestJobZeroItemsFinishesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pub := &fakePublisher{}
		s, h := newServer(t, pub, Config{})
		start := time.Now()
		startJob(t, h, `{"name":"empty","items":0}`)
		s.Wait()
		require.Zero(t, time.Since(start))
		events := pub.published()
		require.Len(t, events, 1)
		require.Equal(t, webhook.EventJobComplete, events[0].Type)
		require.Equal(t, 0, events[0].Data.(webhook.JobComplete).Result.(completeResult).Items)
	})
}

func TestJobFailPublishesJobFailed(t *testing.T) {
	for _, tc := range []struct {
		name, body, err string
		done            int
	}{
		{"halfway", `{"name":"export","items":4,"fail":true}`, "simulated failure at item 3 of 4", 2},
		{"one item", `{"name":"export","items":1,"fail":true}`, "simulated failure at item 1 of 1", 0},
		{"no items", `{"name":"export","items":0,"fail":true}`, "simulated failure before the first item", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				pub := &fakePublisher{}
				s, h := newServer(t, pub, Config{})
				id := startJob(t, h, tc.body)
				s.Wait()
				events := pub.published()
				require.Len(t, events, 1)
				require.Equal(t, webhook.EventJobFailed, events[0].Type)
				data := events[0].Data.(webhook.JobFailed)
				require.Equal(t, id, data.JobID)
				require.Equal(t, tc.err, data.Error)
				require.Equal(t, partialResult{Items: tc.done}, data.Result)
			})
		})
	}
}

func TestCloseInterruptsJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pub := &fakePublisher{}
		s, h := newServer(t, pub, Config{})
		startJob(t, h, `{"name":"long","items":1000}`)
		time.Sleep(350 * time.Millisecond)
		s.Close()

		events := pub.published()
		require.Len(t, events, 1)
		require.Equal(t, webhook.EventJobFailed, events[0].Type)
		require.Equal(t, "interrupted by the host shutting down after 3 of 1000 items", events[0].Data.(webhook.JobFailed).Error)

		w := call(h, http.MethodPost, "/jobs", `{"name":"late"}`)
		require.Equal(t, http.StatusServiceUnavailable, w.Code)
		require.Equal(t, "unavailable", decodeAnswer[errorAnswer](t, w).Error.Code)
		require.Equal(t, http.StatusServiceUnavailable, call(h, http.MethodGet, "/healthz", "").Code)
		s.Close() // a second Close is harmless
	})
}

func TestMaxJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, h := newServer(t, &fakePublisher{}, Config{MaxJobs: 1})
		startJob(t, h, `{"name":"one","items":2}`)
		w := call(h, http.MethodPost, "/jobs", `{"name":"two"}`)
		require.Equal(t, http.StatusTooManyRequests, w.Code)
		require.Equal(t, "too_many_requests", decodeAnswer[errorAnswer](t, w).Error.Code)
		s.Wait()
		startJob(t, h, `{"name":"three","items":0}`)
	})
}

func TestHealthz(t *testing.T) {
	_, h := newServer(t, &fakePublisher{}, Config{})
	w := call(h, http.MethodGet, "/healthz", "")
	require.Equal(t, http.StatusOK, w.Code)
	require.Equal(t, map[string]string{"status": "ok"}, decodeAnswer[map[string]string](t, w))
}

func TestStrictDecoding(t *testing.T) {
	for _, tc := range []struct {
		name, method, path, body, contentType string
		status                                int
		code, field, message                  string
	}{
		{name: "no content type", path: "/jobs", body: `{"name":"a"}`, contentType: "-", status: 415, code: "unsupported_media_type"},
		{name: "text content type", path: "/jobs", body: `{"name":"a"}`, contentType: "text/plain", status: 415, code: "unsupported_media_type"},
		{name: "latin-1", path: "/jobs", body: `{"name":"a"}`, contentType: "application/json; charset=iso-8859-1", status: 415, code: "unsupported_media_type"},
		{name: "empty body", path: "/jobs", body: "", contentType: "application/json", status: 400, code: "invalid_json", message: "empty"},
		{name: "not json", path: "/jobs", body: `{"name":`, status: 400, code: "invalid_json"},
		{name: "null", path: "/jobs", body: `null`, status: 400, code: "invalid_json", message: "JSON object"},
		{name: "array", path: "/jobs", body: `[]`, status: 400, code: "invalid_json", message: "JSON object"},
		{name: "trailing data", path: "/jobs", body: `{"name":"a"} {}`, status: 400, code: "invalid_json", message: "more than one"},
		{name: "invalid utf-8", path: "/jobs", body: "{\"name\":\"\xff\"}", status: 400, code: "invalid_json", message: "UTF-8"},
		{name: "unknown field", path: "/jobs", body: `{"name":"a","colour":"red"}`, status: 400, code: "invalid_request", field: "colour", message: "not a known field"},
		{name: "field in another case", path: "/jobs", body: `{"Name":"a"}`, status: 400, code: "invalid_request", field: "Name", message: `did you mean "name"`},
		{name: "repeated field", path: "/jobs", body: `{"name":"a","name":"b"}`, status: 400, code: "invalid_request", field: "name", message: "more than once"},
		{name: "name missing", path: "/jobs", body: `{"items":3}`, status: 400, code: "invalid_request", field: "name", message: "required"},
		{name: "name null", path: "/jobs", body: `{"name":null}`, status: 400, code: "invalid_request", field: "name", message: "null"},
		{name: "name blank", path: "/jobs", body: `{"name":"  "}`, status: 400, code: "invalid_request", field: "name"},
		{name: "name a number", path: "/jobs", body: `{"name":7}`, status: 400, code: "invalid_request", field: "name", message: "a string"},
		{name: "items a string", path: "/jobs", body: `{"name":"a","items":"3"}`, status: 400, code: "invalid_request", field: "items", message: "whole number"},
		{name: "items a fraction", path: "/jobs", body: `{"name":"a","items":2.5}`, status: 400, code: "invalid_request", field: "items", message: "whole number"},
		{name: "items negative", path: "/jobs", body: `{"name":"a","items":-1}`, status: 400, code: "invalid_request", field: "items", message: "between 0 and 10000"},
		{name: "items too many", path: "/jobs", body: `{"name":"a","items":10001}`, status: 400, code: "invalid_request", field: "items"},
		{name: "fail a string", path: "/jobs", body: `{"name":"a","fail":"yes"}`, status: 400, code: "invalid_request", field: "fail", message: "true or false"},
		{name: "body too large", path: "/jobs", body: `{"name":"` + strings.Repeat("a", maxRequestBody) + `"}`, status: 413, code: "payload_too_large"},
		{name: "jobs by GET", method: http.MethodGet, path: "/jobs", status: 405, code: "method_not_allowed"},
		{name: "subject missing", path: "/scores", body: `{"score":1}`, status: 400, code: "invalid_request", field: "subject", message: "required"},
		{name: "score missing", path: "/scores", body: `{"subject":"acme"}`, status: 400, code: "invalid_request", field: "score", message: "required"},
		{name: "score a string", path: "/scores", body: `{"subject":"acme","score":"high"}`, status: 400, code: "invalid_request", field: "score", message: "finite number"},
		{name: "score out of range", path: "/scores", body: `{"subject":"acme","score":1e400}`, status: 400, code: "invalid_request", field: "score", message: "finite number"},
		{name: "score unknown field", path: "/scores", body: `{"subject":"acme","score":1,"at":"now"}`, status: 400, code: "invalid_request", field: "at"},
		{name: "healthz by POST", path: "/healthz", body: `{}`, status: 405, code: "method_not_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := &fakePublisher{}
			_, h := newServer(t, pub, Config{})
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			r := httptest.NewRequest(method, tc.path, strings.NewReader(tc.body))
			switch tc.contentType {
			case "":
				r.Header.Set("Content-Type", "application/json")
			case "-":
			default:
				r.Header.Set("Content-Type", tc.contentType)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			require.Equal(t, tc.status, w.Code, w.Body.String())
			if tc.status == http.StatusMethodNotAllowed {
				require.NotEmpty(t, w.Header().Get("Allow"))
			}
			ans := decodeAnswer[errorAnswer](t, w)
			require.Equal(t, tc.code, ans.Error.Code)
			require.Equal(t, tc.field, ans.Error.Field)
			require.Contains(t, ans.Error.Message, tc.message)
			require.Empty(t, pub.published(), "a rejected request starts nothing")
		})
	}
}

// TestScoreAnswersAfterObserveScore checks that POST /scores answers only
// once ObserveScore has returned.
func TestScoreAnswersAfterObserveScore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		pub := &fakePublisher{observe: func(ctx context.Context, subject string, score float64) (webhook.ScoreObservation, error) {
			<-release
			return webhook.ScoreObservation{Published: true, EventID: "evt_1"}, nil
		}}
		_, h := newServer(t, pub, Config{})
		var w *httptest.ResponseRecorder
		done := make(chan struct{})
		go func() {
			defer close(done)
			w = call(h, http.MethodPost, "/scores", `{"subject":"acme","score":80}`)
		}()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("POST /scores answered before ObserveScore returned")
		default:
		}
		close(release)
		<-done
		require.Equal(t, http.StatusOK, w.Code)
		require.Equal(t, scoreAnswer{Published: true, EventID: "evt_1"}, decodeAnswer[scoreAnswer](t, w))
	})
}

// TestScoresWithDispatcher runs the score route on a real dispatcher: an
// answer that reports an event means the event and its delivery are
// committed.
func TestScoresWithDispatcher(t *testing.T) {
	d, err := webhook.Open(t.Context(), filepath.Join(t.TempDir(), "webhooks.db"), webhook.Config{
		AllowNetworks:   []string{"127.0.0.0/8"},
		DisableDelivery: true, // record only: nothing is sent
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.Close(context.Background())) })
	wh, err := d.Register(t.Context(), webhook.Registration{URL: "http://127.0.0.1:9/hook", Events: []string{webhook.EventScoreChanged}})
	require.NoError(t, err)
	_, h := newServer(t, d, Config{})

	post := func(body string) scoreAnswer {
		t.Helper()
		w := call(h, http.MethodPost, "/scores", body)
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		return decodeAnswer[scoreAnswer](t, w)
	}
	require.Equal(t, scoreAnswer{}, post(`{"subject":"acme","score":70}`), "the baseline is not announced")
	require.Equal(t, scoreAnswer{}, post(`{"subject":"acme","score":72.5}`), "noise is not announced")
	ans := post(`{"subject":"acme","score":81}`)
	require.True(t, ans.Published)
	require.NotEmpty(t, ans.EventID)

	page, err := d.Deliveries(t.Context(), wh.ID, webhook.DeliveryQuery{})
	require.NoError(t, err)
	require.Len(t, page.Deliveries, 1)
	require.Equal(t, ans.EventID, page.Deliveries[0].EventID)
	require.Equal(t, webhook.EventScoreChanged, page.Deliveries[0].EventType)

	// The library's own validation is answered with its field.
	w := call(h, http.MethodPost, "/scores", `{"subject":"","score":1}`)
	require.Equal(t, http.StatusBadRequest, w.Code)
	ans2 := decodeAnswer[errorAnswer](t, w)
	require.Equal(t, "invalid_request", ans2.Error.Code)
	require.Equal(t, "subject", ans2.Error.Field)
}

// TestJobsWithDispatcher runs a job on a real dispatcher and finds its
// event among the webhook's deliveries.
func TestJobsWithDispatcher(t *testing.T) {
	d, err := webhook.Open(t.Context(), filepath.Join(t.TempDir(), "webhooks.db"), webhook.Config{
		AllowNetworks:   []string{"127.0.0.0/8"},
		DisableDelivery: true,
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.Close(context.Background())) })
	wh, err := d.Register(t.Context(), webhook.Registration{URL: "http://127.0.0.1:9/hook", Events: []string{"job.*"}})
	require.NoError(t, err)
	s, h := newServer(t, d, Config{ItemInterval: time.Millisecond})
	startJob(t, h, `{"name":"a","items":3}`)
	startJob(t, h, `{"name":"b","items":3,"fail":true}`)
	s.Wait()

	page, err := d.Deliveries(t.Context(), wh.ID, webhook.DeliveryQuery{})
	require.NoError(t, err)
	var types []string
	for _, dl := range page.Deliveries {
		types = append(types, dl.EventType)
	}
	require.ElementsMatch(t, []string{webhook.EventJobComplete, webhook.EventJobFailed}, types)
}
