package webhook

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"sync"
	"time"

	_ "github.com/mattn/go-sqlite3" // the SQLite driver behind Open
	"github.com/sparc-webhooks/webhook/internal/store"
	"go.opentelemetry.io/otel/metric"
)

// Version is the library's version, sent in the User-Agent header of every
// delivery.
const Version = "0.1.0"

// userAgent names the library in every outbound request.
const userAgent = "sparc-webhook/" + Version + " (+https://github.com/sparc-webhooks/webhook)"

// Synchronous selects SQLite's synchronous setting, which decides what a
// power failure can lose. See the package documentation, section
// Durability.
type Synchronous int

const (
	// SyncFull is the default: every commit is on disk before Publish
	// returns, so a power failure loses nothing that Publish reported.
	SyncFull Synchronous = iota
	// SyncNormal is an explicit opt-in for speed. In WAL mode a commit is
	// durable against a crash of the process, but a power failure or an
	// operating system crash can lose the most recent commits, including
	// events whose Publish returned nil. The database is never corrupted.
	SyncNormal
)

func (s Synchronous) pragma() string {
	if s == SyncNormal {
		return "NORMAL"
	}
	return "FULL"
}

// Config configures a Dispatcher. The zero value is usable: every field
// documents its default, which applies when the field is left zero.
type Config struct {
	// Logger receives the dispatcher's logs, among them a warning for every
	// failed delivery attempt. Default: nothing is logged.
	Logger *slog.Logger

	// Workers is the number of deliveries attempted at once.
	// Default: 32.
	Workers int

	// MaxInFlightPerWebhook caps the attempts in flight to any one webhook
	// (claimed deliveries waiting for a worker count too), so that a slow
	// endpoint cannot take every worker. Within the cap, each webhook's
	// limit adapts: it halves with every timeout, connection error, 429 or
	// 503, and grows back by one with every successful attempt, so that an
	// endpoint that struggles is given fewer workers. Default: a quarter of
	// Workers, at least 1.
	MaxInFlightPerWebhook int

	// BreakerThreshold is how many consecutive attempts to a webhook that
	// end in a timeout, a connection error, a 429 or a 503 open its
	// circuit breaker: its deliveries are then held for a cool-down, after
	// which a single probe is attempted. Negative disables the breaker.
	// Default: 5.
	BreakerThreshold int

	// BreakerCooldown is the first cool-down of an opened breaker; each
	// failed probe doubles it, up to BreakerMaxCooldown. Defaults: 10
	// seconds and 10 minutes.
	BreakerCooldown    time.Duration
	BreakerMaxCooldown time.Duration

	// AttemptTimeout bounds one delivery attempt: connecting, sending and
	// reading the response. Default: 15 seconds.
	AttemptTimeout time.Duration

	// LeaseDuration is how long a claimed delivery stays reserved for the
	// worker attempting it. If the process dies mid-attempt, the delivery
	// is attempted again once its lease has run out. It must exceed
	// AttemptTimeout, and should by a margin: workers claim a few
	// deliveries ahead, and one that waits for a worker longer than
	// LeaseDuration-AttemptTimeout is given back unattempted, so that no
	// attempt outlives its lease. Default: twice AttemptTimeout plus 30
	// seconds.
	LeaseDuration time.Duration

	// MaxResponseBody is how many bytes of a receiver's response body are
	// kept in the attempt log. Default: 16 KiB. The rest is discarded.
	MaxResponseBody int

	// MaxPayloadBytes bounds the encoded envelope of one event.
	// Default: 256 KiB.
	MaxPayloadBytes int

	// RetryPolicy decides when a failed delivery is tried again and when it
	// gives up. Default: DefaultRetryPolicy(), the Standard Webhooks
	// schedule with ±20 % jitter.
	RetryPolicy RetryPolicy

	// MaxRetryAfter bounds how long a Retry-After header on a 429 or 503
	// answer can delay the next attempt. Default: 1 hour.
	MaxRetryAfter time.Duration

	// DisableAfterFailures and DisableAfterPeriod form the rule that
	// disables a webhook that keeps failing: it is disabled once it has at
	// least DisableAfterFailures consecutive failed attempts and no success
	// for at least DisableAfterPeriod. Defaults: 20 and 5 days.
	DisableAfterFailures int
	DisableAfterPeriod   time.Duration

	// OnDisable, when set, is called after a webhook has been disabled
	// automatically (by the rule above or by a 410 Gone answer). It runs on
	// the dispatcher's own goroutine after the change is committed, so it
	// should return quickly; a panic in it is recovered and logged.
	OnDisable func(WebhookDisabled)

	// EventTypes declares the event types that the host publishes beside
	// the built-in ones (job.complete, job.failed, score.changed).
	// Subscriptions may name them, and Publish accepts them.
	EventTypes []EventType

	// ScoreThreshold is the absolute change of a subject's score, since the
	// last announced score, at which ObserveScore publishes score.changed.
	// Default: 5. Set it to math.Inf(1) to rely on the relative threshold
	// alone.
	ScoreThreshold float64

	// ScoreRelativeThreshold, when positive, also makes a change
	// significant when its size reaches this fraction of the last announced
	// score (0.1 means 10 %). Default: 0, off.
	ScoreRelativeThreshold float64

	// Messages configures the messages that people read: the Slack,
	// Discord and email formats. Its templates are checked by Open and New,
	// so that a template that cannot render fails there, never at
	// delivery. Default: the built-in messages, without links.
	Messages MessageOptions

	// SMTP, when set, lets webhooks have "mailto:<address>" URLs: each
	// event is then sent as an email through this server, with the same
	// retries, attempt log and disable rules as any delivery (the SMTP
	// reply code stands in for the HTTP status). Default: none; mailto:
	// URLs are refused.
	SMTP *SMTPConfig

	// AllowNetworks lists CIDR ranges that deliveries may reach although
	// they are not public, such as "127.0.0.0/8" for local development and
	// tests. Cloud metadata addresses stay blocked whatever it says.
	// Default: none; only public addresses are reached.
	AllowNetworks []string

	// SecretKey, when set, encrypts the webhooks' signing secrets at rest
	// with AES-256-GCM: 32 bytes that the host keeps outside the database
	// (an environment variable, a secrets manager). Once the secrets are
	// encrypted, opening the database needs the same key: a wrong or
	// missing key fails Open with ErrWrongSecretKey or
	// ErrSecretKeyRequired, never with wrong signatures. Setting it on a
	// database whose secrets are in clear encrypts them. Default: none;
	// secrets are stored in clear, protected only by the file's
	// permissions.
	SecretKey []byte

	// Synchronous is SQLite's synchronous setting. Default: SyncFull.
	Synchronous Synchronous

	// BusyTimeout is how long a write waits for another writer to release
	// the database before failing. Default: 5 seconds.
	BusyTimeout time.Duration

	// PollInterval is how often idle workers look for work that no publish
	// in this process announced: deliveries published with PublishTx
	// (unless Notify is called) or by another process. Default: 1 second.
	PollInterval time.Duration

	// Retention is how long settled deliveries (delivered, failed or
	// cancelled) and their attempts are kept after they settled; events
	// are deleted with their last delivery. Pending deliveries are kept
	// however old, and so is the newest delivery, so that delivery IDs are
	// never reused. Retention runs in small steps in the background, so
	// delivery never waits long for it. Negative keeps everything.
	// Default: 30 days.
	Retention time.Duration

	// MeterProvider, when set, receives OpenTelemetry metrics: deliveries
	// and attempts by outcome, attempt durations, queue depth and the age
	// of the oldest pending delivery (see the README for names). Default:
	// none; nothing is recorded.
	MeterProvider metric.MeterProvider

	// DisableDelivery, when true, makes the Dispatcher only record: it
	// registers webhooks and publishes events, but starts no workers and
	// never sends. Another Dispatcher on the same database delivers.
	DisableDelivery bool
}

// Defaults of Config.
const (
	DefaultWorkers              = 32
	DefaultAttemptTimeout       = 15 * time.Second
	DefaultBreakerThreshold     = 5
	DefaultBreakerCooldown      = 10 * time.Second
	DefaultBreakerMaxCooldown   = 10 * time.Minute
	DefaultMaxResponseBody      = 16 << 10
	DefaultMaxPayloadBytes      = 256 << 10
	DefaultMaxRetryAfter        = time.Hour
	DefaultDisableAfterFailures = 20
	DefaultDisableAfterPeriod   = 5 * 24 * time.Hour
	DefaultScoreThreshold       = 5.0
	DefaultBusyTimeout          = 5 * time.Second
	DefaultPollInterval         = time.Second
	DefaultRetention            = 30 * 24 * time.Hour
)

// withDefaults returns a copy of c with every zero field set to its
// default.
func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.MaxInFlightPerWebhook == 0 {
		c.MaxInFlightPerWebhook = max(1, c.Workers/4)
	}
	if c.BreakerThreshold == 0 {
		c.BreakerThreshold = DefaultBreakerThreshold
	}
	if c.BreakerCooldown == 0 {
		c.BreakerCooldown = DefaultBreakerCooldown
	}
	if c.BreakerMaxCooldown == 0 {
		c.BreakerMaxCooldown = max(DefaultBreakerMaxCooldown, c.BreakerCooldown)
	}
	if c.AttemptTimeout == 0 {
		c.AttemptTimeout = DefaultAttemptTimeout
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = 2*c.AttemptTimeout + 30*time.Second
	}
	if c.MaxResponseBody == 0 {
		c.MaxResponseBody = DefaultMaxResponseBody
	}
	if c.MaxPayloadBytes == 0 {
		c.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if c.RetryPolicy == nil {
		c.RetryPolicy = DefaultRetryPolicy()
	}
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if c.DisableAfterFailures == 0 {
		c.DisableAfterFailures = DefaultDisableAfterFailures
	}
	if c.DisableAfterPeriod == 0 {
		c.DisableAfterPeriod = DefaultDisableAfterPeriod
	}
	if c.ScoreThreshold == 0 {
		c.ScoreThreshold = DefaultScoreThreshold
	}
	if c.BusyTimeout == 0 {
		c.BusyTimeout = DefaultBusyTimeout
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	return c
}

// validate reports the first field of a defaulted Config that is out of
// range.
func (c Config) validate() error {
	switch {
	case c.Workers < 1:
		return invalid("Workers", "must be at least 1")
	case c.MaxInFlightPerWebhook < 1:
		return invalid("MaxInFlightPerWebhook", "must be at least 1")
	case c.BreakerCooldown < 0:
		return invalid("BreakerCooldown", "must not be negative")
	case c.BreakerMaxCooldown < c.BreakerCooldown:
		return invalid("BreakerMaxCooldown", "must be at least BreakerCooldown")
	case c.AttemptTimeout < time.Millisecond:
		return invalid("AttemptTimeout", "must be at least 1ms")
	case c.LeaseDuration <= c.AttemptTimeout:
		return invalid("LeaseDuration", "must exceed AttemptTimeout")
	case c.MaxResponseBody < 0:
		return invalid("MaxResponseBody", "must not be negative")
	case c.MaxPayloadBytes < 64:
		return invalid("MaxPayloadBytes", "must be at least 64")
	case c.MaxRetryAfter < 0:
		return invalid("MaxRetryAfter", "must not be negative")
	case c.DisableAfterFailures < 1:
		return invalid("DisableAfterFailures", "must be at least 1")
	case c.DisableAfterPeriod < 0:
		return invalid("DisableAfterPeriod", "must not be negative")
	case math.IsNaN(c.ScoreThreshold) || c.ScoreThreshold < 0:
		return invalid("ScoreThreshold", "must be a positive number")
	case math.IsNaN(c.ScoreRelativeThreshold) || math.IsInf(c.ScoreRelativeThreshold, 0) || c.ScoreRelativeThreshold < 0:
		return invalid("ScoreRelativeThreshold", "must be zero or a positive number")
	case c.Synchronous != SyncFull && c.Synchronous != SyncNormal:
		return invalid("Synchronous", "must be SyncFull or SyncNormal")
	case c.BusyTimeout < 0:
		return invalid("BusyTimeout", "must not be negative")
	case c.PollInterval < time.Millisecond:
		return invalid("PollInterval", "must be at least 1ms")
	}
	if c.SecretKey != nil && len(c.SecretKey) != 32 {
		return invalid("SecretKey", "must be 32 bytes (AES-256), not %d", len(c.SecretKey))
	}
	if p, ok := c.RetryPolicy.(*ScheduleRetryPolicy); ok {
		if err := p.validate(); err != nil {
			return err
		}
	}
	return nil
}

// Dispatcher records webhooks and events in SQLite and delivers every
// event to the webhooks subscribed to it. Create one with Open or New and
// stop it with Close. A Dispatcher is safe for simultaneous use by multiple
// goroutines.
type Dispatcher struct {
	cfg    Config
	log    *slog.Logger
	st     *store.Store
	guard  *netGuard
	types  map[string]EventType
	sender *sender
	disp   *deliveryLoop // nil when delivery is disabled
	ret    *retention    // nil when delivery is disabled or Retention < 0
	met    *metrics      // nil without Config.MeterProvider
	now    func() time.Time

	// base is cancelled when Close gives up waiting: every attempt and
	// every blocked call derives from it.
	base       context.Context
	cancelBase context.CancelFunc

	mu     sync.Mutex
	closed bool
	calls  sync.WaitGroup // calls in progress, waited for by Close

	closeOnce sync.Once
	closeErr  error
	closeDone chan struct{}
}

// Open opens the SQLite database at path, creating it when it does not
// exist, brings its schema up to date and starts delivering. The database
// runs in WAL mode with the synchronous setting of cfg.Synchronous.
//
// When path is a PostgreSQL URL (postgres:// or postgresql://, as pgx
// reads it), Open connects to that database instead and keeps its tables
// in the schema that the URL's search_path names (by default, the
// server's). Any number of processes may open the same database: they
// share the webhooks and the work as one dispatcher (see the README).
//
// Open owns the database: Close closes it.
func Open(ctx context.Context, path string, cfg Config) (*Dispatcher, error) {
	if path == "" {
		return nil, invalid("path", "must not be empty")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return newDispatcher(ctx, path, nil, cfg)
}

// New is like Open, but works on a database that the host already owns, so
// that the host's tables and the dispatcher's share one database and
// PublishTx can join the host's transactions.
//
// With SQLite, db must use the driver github.com/mattn/go-sqlite3 and allow
// at least two open connections: the dispatcher keeps one for its writes
// while it is open. New sets the database's journal mode to WAL. The host
// should open db with "_txlock=immediate" and a busy timeout, so that its
// writers wait for ours instead of failing; see the README.
//
// With PostgreSQL, db must use the pgx driver (github.com/jackc/pgx/v5/stdlib:
// sql.Open("pgx", url), or stdlib.OpenDBFromPool for a *pgxpool.Pool) and
// allow at least three open connections: the dispatcher keeps one for its
// writes and one to LISTEN while it is open.
//
// Close does not close db.
func New(ctx context.Context, db *sql.DB, cfg Config) (*Dispatcher, error) {
	if db == nil {
		return nil, invalid("db", "must not be nil")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if n := db.Stats().MaxOpenConnections; n == 1 {
		return nil, invalid("db", "must allow at least 2 open connections (SetMaxOpenConns)")
	} else if n > 0 && n < 3 && store.IsPostgresDB(db) {
		// The writer and the LISTEN connection are held for good.
		return nil, invalid("db", "must allow at least 3 open connections with PostgreSQL (SetMaxOpenConns)")
	}
	return newDispatcher(ctx, "", db, cfg)
}

// newDispatcher opens the store (path, or db when not nil) and starts
// delivering; cfg has its defaults and is valid.
func newDispatcher(ctx context.Context, path string, db *sql.DB, cfg Config) (*Dispatcher, error) {
	guard, err := newGuard(cfg.AllowNetworks)
	if err != nil {
		return nil, err
	}
	types, err := eventTypeSet(cfg.EventTypes)
	if err != nil {
		return nil, err
	}
	rend, err := newRenderer(cfg.Messages)
	if err != nil {
		return nil, err
	}
	for typ := range cfg.Messages.Templates {
		if _, ok := types[typ]; !ok && typ != EventTest {
			return nil, invalid("Templates["+typ+"]", "%q is not a known event type (declare it in Config.EventTypes)", typ)
		}
	}
	if cfg.SMTP != nil {
		if err := cfg.SMTP.validate(); err != nil {
			return nil, err
		}
	}
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d := &Dispatcher{
		cfg:        cfg,
		log:        cfg.Logger,
		guard:      guard,
		types:      types,
		now:        time.Now,
		base:       base,
		cancelBase: cancel,
		closeDone:  make(chan struct{}),
	}
	if d.met, err = newMetrics(d, cfg.MeterProvider); err != nil {
		cancel()
		return nil, fmt.Errorf("webhook: metrics: %w", err)
	}
	sc := storeConfig(cfg)
	sc.OnDisable = func(ev store.Disabled) { d.notifyDisabled(toDisabled(ev)) }
	sc.OnSettled = d.met.settled
	if d.st, err = openStore(ctx, path, db, sc); err != nil {
		d.met.close()
		cancel()
		return nil, err
	}
	d.sender = newSender(cfg, guard, rend)
	d.st.Start()
	if !cfg.DisableDelivery {
		d.disp = newDeliveryLoop(d)
		d.disp.start()
		if cfg.Retention > 0 {
			d.ret = newRetention(d)
			d.ret.start()
		}
	}
	return d, nil
}

// enter registers a call in progress; it fails with ErrClosed once Close
// has begun. Every successful enter must be paired with d.calls.Done.
func (d *Dispatcher) enter() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	d.calls.Add(1)
	return nil
}

// Close stops the dispatcher. It stops claiming new deliveries at once,
// lets the attempts in flight finish until ctx ends, and then cancels the
// rest: a cancelled attempt is not counted as a failure, and its delivery
// is attempted again after the next start. Close waits for calls in
// progress, commits what they recorded, stops every goroutine the
// dispatcher started and, when the database was opened by Open, closes
// it. It returns ctx.Err() when ctx ended before the attempts in flight
// finished, and nil otherwise.
//
// Close is safe to call more than once and from several goroutines; later
// calls wait for the first to finish and return its result. Every other
// method returns ErrClosed once Close has begun.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()

		var err error
		if d.ret != nil {
			d.ret.stop()
		}
		if d.disp != nil {
			err = d.disp.stop(ctx)
		}
		// Calls in progress (Publish, SendTest, ...) end on their own; a
		// test send still in progress when ctx ends is cancelled.
		stop := context.AfterFunc(ctx, d.cancelBase)
		d.calls.Wait()
		stop()
		d.cancelBase()
		d.met.close()
		d.sender.close()
		if cerr := d.st.Close(); cerr != nil && err == nil {
			err = cerr
		}
		d.closeErr = err
		close(d.closeDone)
	})
	<-d.closeDone
	return d.closeErr
}

// notifyDisabled calls Config.OnDisable, recovering from a panic in it.
func (d *Dispatcher) notifyDisabled(ev WebhookDisabled) {
	d.log.Warn("webhook disabled", "webhook_id", ev.WebhookID, "url", redactURL(ev.URL), "reason", ev.Reason)
	if d.cfg.OnDisable == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			d.log.Error("webhook: OnDisable panicked", "webhook_id", ev.WebhookID, "panic", fmt.Sprint(r))
		}
	}()
	d.cfg.OnDisable(ev)
}

// redactURL returns u without user info, query or fragment, for logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "[unparseable url]"
	}
	u.User = nil
	u.RawQuery = ""
	u.ForceQuery = false
	u.Fragment = ""
	u.RawFragment = ""
	return u.String()
}

// errorsIsAny reports whether err matches any of targets.
func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
