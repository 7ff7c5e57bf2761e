// Package sparc is the example host's own HTTP API: a batch-job runner
// and a score feed that publish webhook events through a
// webhook.Dispatcher. It stands for the application that embeds the
// webhook library; the examples host and demo serve it beside the
// library's management API.
//
// Routes:
//
//	POST /jobs     {"name": "nightly", "items": 20, "fail": false}  → 202 {"job_id": "job_…"}
//	POST /scores   {"subject": "acme", "score": 81.5}               → 200 {"published": true, "event_id": "evt_…"}
//	GET  /healthz                                                   → 200 {"status": "ok"}
//
// A job processes its items in the background, about ten a second, and
// then publishes job.complete, or job.failed when "fail" is true. A score
// is handed to Dispatcher.ObserveScore, and the answer comes only after the
// library has committed it. Request bodies are decoded strictly, and
// errors have the library API's shape: {"error":{"code","message","field"}}.
package sparc

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sparc-webhooks/webhook"
)

// Publisher is the part of *webhook.Dispatcher that the host's handlers
// use.
type Publisher interface {
	Publish(ctx context.Context, ev webhook.Event) (webhook.Published, error)
	ObserveScore(ctx context.Context, subject string, score float64) (webhook.ScoreObservation, error)
}

// Config configures a Server. The zero value is usable.
type Config struct {
	// Logger receives job progress and failures. Default: nothing is
	// logged.
	Logger *slog.Logger

	// ItemInterval is how long a job spends on one item. Default: 100ms,
	// about ten items a second.
	ItemInterval time.Duration

	// MaxJobs bounds the jobs running at once; POST /jobs answers 429
	// beyond it. Default: 64.
	MaxJobs int
}

// Defaults of Config.
const (
	DefaultItemInterval = 100 * time.Millisecond
	DefaultMaxJobs      = 64
	// DefaultItems is the number of items of a job whose request leaves
	// "items" out.
	DefaultItems = 20
	// MaxItems bounds the items of one job.
	MaxItems = 10000
)

// publishTimeout bounds the publication of a job's outcome. It runs
// without the job's context, so that a job interrupted by Close is still
// reported.
const publishTimeout = 10 * time.Second

// Server serves the host's routes and runs its jobs. Create one with New,
// mount it with Register and stop it with Close. It is safe for
// simultaneous use by multiple goroutines.
type Server struct {
	pub          Publisher
	log          *slog.Logger
	itemInterval time.Duration
	maxJobs      int

	// ctx is the parent of every job; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	running int
	jobs    sync.WaitGroup
}

// New returns a Server that publishes through pub.
func New(pub Publisher, cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.ItemInterval <= 0 {
		cfg.ItemInterval = DefaultItemInterval
	}
	if cfg.MaxJobs <= 0 {
		cfg.MaxJobs = DefaultMaxJobs
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		pub:          pub,
		log:          cfg.Logger,
		itemInterval: cfg.ItemInterval,
		maxJobs:      cfg.MaxJobs,
		ctx:          ctx,
		cancel:       cancel,
	}
}

// Register mounts the routes /jobs, /scores and /healthz on mux. Each
// answers 405, with an Allow header, to other methods.
func (s *Server) Register(mux *http.ServeMux) {
	mux.Handle("/jobs", only(http.MethodPost, s.createJob))
	mux.Handle("/scores", only(http.MethodPost, s.observeScore))
	mux.Handle("/healthz", only(http.MethodGet, s.healthz))
}

// Wait blocks until every job started so far has finished and published
// its outcome.
func (s *Server) Wait() {
	s.jobs.Wait()
}

// Close stops accepting jobs, cancels the running ones and waits for them.
// A cancelled job publishes job.failed, saying it was interrupted, so the
// Publisher must stay open until Close returns. Close is safe to call more
// than once.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.jobs.Wait()
}

// healthz serves GET /healthz: 200 while the server accepts work, 503
// once it is closing.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		writeError(w, errShuttingDown)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// newJobID returns a fresh job ID: "job_" and 16 random base32 characters.
func newJobID() string {
	return "job_" + strings.ToLower(rand.Text()[:16])
}
