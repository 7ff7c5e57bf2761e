// Package store holds every SQL statement of the dispatcher: the schema
// and its migrations, the registry of webhooks, events and their
// deliveries, claims, outcomes, retention and statistics. One
// implementation speaks two dialects, SQLite and PostgreSQL (dialect.go):
// the statements are written once with "?" placeholders, and the few that
// cannot be written once for both give both forms.
//
// Reads go straight to a pool of connections. Every write goes through one
// writer goroutine that owns one connection and commits whatever is waiting
// in one transaction (group commit): concurrent callers share one fsync,
// and each returns only after its own commit. Each caller's work runs in a
// savepoint of that transaction, so that a caller's own error (a webhook
// that does not exist, bad input found under the lock) rolls back that
// caller's work alone and fails that caller alone.
//
// The package knows nothing of the public package: its types are the rows
// as stored, and the root package converts them.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Errors the store returns; the root package re-exports them.
var (
	// ErrClosed is returned by a write submitted after Close.
	ErrClosed = errors.New("webhook: dispatcher is closed")
	// ErrNotFound is returned when a webhook, event or delivery does not exist.
	ErrNotFound = errors.New("webhook: not found")
	// ErrWebhookDisabled is returned by calls that need an enabled webhook.
	ErrWebhookDisabled = errors.New("webhook: webhook is disabled")
	// ErrSecretKeyRequired is returned by Open when the stored secrets are
	// encrypted and no key is given.
	ErrSecretKeyRequired = errors.New("webhook: the stored secrets are encrypted: Config.SecretKey is required")
	// ErrWrongSecretKey is returned by Open when the key does not open the
	// stored secrets.
	ErrWrongSecretKey = errors.New("webhook: Config.SecretKey is not the key the stored secrets were encrypted with")
)

// RetryPolicy is what the store needs of the retry schedule: whether an
// attempt may follow attempt number n.
type RetryPolicy interface {
	NextRetry(attempt int) (time.Duration, bool)
}

// Config is what the store needs; the root package fills it from its own
// Config, whose defaults have already been applied.
type Config struct {
	// Synchronous is SQLite's synchronous pragma: "FULL" or "NORMAL".
	Synchronous string
	// BusyTimeout is how long SQLite waits for a lock.
	BusyTimeout time.Duration
	// Workers sizes the PostgreSQL pool that Open makes.
	Workers int
	// SecretKey encrypts secrets at rest (32 bytes); nil stores them in clear.
	SecretKey []byte
	// DisableAfterFailures and DisableAfterPeriod are the rule that
	// disables a failing webhook.
	DisableAfterFailures int
	DisableAfterPeriod   time.Duration
	// The circuit breaker (see breaker.go); a negative threshold turns it off.
	BreakerThreshold   int
	BreakerCooldown    time.Duration
	BreakerMaxCooldown time.Duration
	// RetryPolicy decides whether an interrupted attempt may be retried.
	RetryPolicy RetryPolicy
	// Logger receives the store's own warnings and errors.
	Logger *slog.Logger
	// ParseMailto reads the address of a "mailto:" URL (email webhooks).
	ParseMailto func(string) (string, error)
	// OnDisable is called, after the commit, in a goroutine of its own,
	// when the store disables a webhook automatically.
	OnDisable func(Disabled)
	// OnSettled is called after each commit with the counter deltas it
	// wrote.
	OnSettled func(map[string]int64)
}

// Disabled describes a webhook the store disabled automatically.
type Disabled struct {
	WebhookID, URL, Reason string
	At                     time.Time
}

// Store is the dispatcher's database. Its methods are safe for
// simultaneous use; writes are serialized by the writer goroutine that
// Start starts and Close stops.
type Store struct {
	cfg Config
	log *slog.Logger
	now func() time.Time
	d   dialect

	rdb  *sql.DB // reads
	wdb  *sql.DB // writes; the host's db when not own
	own  bool    // Open made the pools and Close closes them
	path string  // the file or URL, when Open made the pools
	conn *sql.Conn

	ops   chan *op
	stopc chan struct{}
	donec chan struct{}

	// Writer state, touched only by the writer goroutine.
	stmts    map[string]*sql.Stmt
	reg      *registry
	payloads *payloadCache

	callbacks sync.WaitGroup
	commits   atomic.Int64

	off      sync.Map // seqs of the webhooks this process disabled or deleted
	sealer   *sealer  // nil: secrets are stored in clear
	started  bool
	stopOnce sync.Once
}

// op is one caller's unit of work for the writer. fn runs inside the
// batch's transaction, in a savepoint of its own; it must be safe to run
// again, because when the batch as a whole fails (its commit, say), each op
// is run again alone.
type op struct {
	ctx  context.Context
	fn   func(*Tx) error
	done chan error // nil for fire-and-forget ops
	err  error      // the op's own error in the batch
}

// maxBatch bounds the ops committed together.
const maxBatch = 512

func sqliteDSN(path string, cfg Config, readOnly bool) string {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", cfg.Synchronous)
	q.Set("_busy_timeout", strconv.FormatInt(cfg.BusyTimeout.Milliseconds(), 10))
	q.Set("_txlock", "immediate")
	q.Set("_stmt_cache_size", "64")
	q.Set("_cache_size", "-16000")
	if readOnly {
		q.Set("_query_only", "1")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// IsPostgresURL reports whether Open's path is a PostgreSQL URL.
func IsPostgresURL(path string) bool {
	return strings.HasPrefix(path, "postgres://") || strings.HasPrefix(path, "postgresql://")
}

// Open opens the SQLite file at path, with a writer pool of one connection
// and a pool of readers, or the PostgreSQL database of a postgres:// URL,
// and migrates it.
func Open(ctx context.Context, path string, cfg Config) (*Store, error) {
	if IsPostgresURL(path) {
		return openPostgres(ctx, path, cfg)
	}
	if err := sqliteLinked(); err != nil {
		return nil, err
	}
	wdb, err := sql.Open("sqlite3", sqliteDSN(path, cfg, false))
	if err != nil {
		return nil, fmt.Errorf("webhook: open database: %w", err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)
	rdb, err := sql.Open("sqlite3", sqliteDSN(path, cfg, true))
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("webhook: open database: %w", err)
	}
	rdb.SetMaxOpenConns(8)
	rdb.SetMaxIdleConns(8)
	s := &Store{cfg: cfg, rdb: rdb, wdb: wdb, own: true, path: path}
	if err := s.init(ctx); err != nil {
		s.closeDBs()
		return nil, err
	}
	return s, nil
}

// New uses a database that the host owns; Close does not close it.
func New(ctx context.Context, db *sql.DB, cfg Config) (*Store, error) {
	s := &Store{cfg: cfg, rdb: db, wdb: db, d: dialect{pg: IsPostgresDB(db)}}
	if err := s.init(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) init(ctx context.Context) error {
	s.now = time.Now
	s.log = s.cfg.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	conn, err := s.wdb.Conn(ctx)
	if err != nil {
		return fmt.Errorf("webhook: open database: %w", err)
	}
	s.conn = conn
	fail := func(err error) error {
		conn.Close()
		s.conn = nil
		return err
	}
	if s.d.pg {
		var schema string
		if err := conn.QueryRowContext(ctx, `SELECT COALESCE(current_schema(), '')`).Scan(&schema); err != nil {
			return fail(fmt.Errorf("webhook: open database: %w", err))
		}
		s.d.locks = newPGLocks(schema)
		s.d.shard = rand.IntN(counterShards)
	} else {
		var mode string
		if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode); err != nil {
			return fail(fmt.Errorf("webhook: open database: %w", err))
		}
		if !strings.EqualFold(mode, "wal") {
			return fail(fmt.Errorf("webhook: open database: journal mode is %q, WAL is required (an in-memory database cannot be used)", mode))
		}
		pragmas := []string{"PRAGMA temp_store=MEMORY", "PRAGMA wal_autocheckpoint=10000"}
		if !s.own {
			// The host's DSN is not ours: set what our writes rely on, on
			// the connection that makes them.
			pragmas = append(pragmas,
				"PRAGMA synchronous="+s.cfg.Synchronous,
				"PRAGMA busy_timeout="+strconv.FormatInt(s.cfg.BusyTimeout.Milliseconds(), 10))
		}
		for _, p := range pragmas {
			if _, err := conn.ExecContext(ctx, p); err != nil {
				return fail(fmt.Errorf("webhook: open database: %w", err))
			}
		}
	}
	if err := s.migrate(ctx); err != nil {
		return fail(err)
	}
	if err := s.setupSealing(ctx, s.cfg.SecretKey); err != nil {
		return fail(err)
	}
	s.ops = make(chan *op, maxBatch)
	s.stopc = make(chan struct{})
	s.donec = make(chan struct{})
	s.stmts = make(map[string]*sql.Stmt)
	s.payloads = newPayloadCache(8 << 20)
	return nil
}

// migrate applies the migrations that the database does not have yet.
func (s *Store) migrate(ctx context.Context) error {
	c := s.conn
	list := sqliteMigrations
	if s.d.pg {
		list = pgMigrations
	}
	if _, err := c.ExecContext(ctx, s.d.q("BEGIN IMMEDIATE")); err != nil {
		return fmt.Errorf("webhook: migrate: %w", err)
	}
	err := func() error {
		if s.d.pg {
			// Processes that start together migrate one after another.
			if _, err := c.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1, 0)`, s.d.locks.migrate); err != nil {
				return err
			}
		}
		if _, err := c.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS webhook_schema_migrations (
			version    INTEGER PRIMARY KEY,
			applied_at BIGINT NOT NULL
		)`); err != nil {
			return err
		}
		var have int
		if err := c.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM webhook_schema_migrations").Scan(&have); err != nil {
			return err
		}
		if have > len(list) {
			return fmt.Errorf("database schema version %d is newer than this library knows (%d)", have, len(list))
		}
		for v := have + 1; v <= len(list); v++ {
			if _, err := c.ExecContext(ctx, list[v-1]); err != nil {
				return fmt.Errorf("version %d: %w", v, err)
			}
			if _, err := c.ExecContext(ctx, s.d.q("INSERT INTO webhook_schema_migrations (version, applied_at) VALUES (?, ?)"), v, ms(time.Now())); err != nil {
				return err
			}
		}
		return nil
	}()
	if err != nil {
		c.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		return fmt.Errorf("webhook: migrate: %w", err)
	}
	if _, err := c.ExecContext(ctx, "COMMIT"); err != nil {
		c.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		return fmt.Errorf("webhook: migrate: %w", err)
	}
	return nil
}

// Start starts the writer.
func (s *Store) Start() {
	s.started = true
	go s.loop()
}

// Close stops the writer after it has committed every op already
// submitted, waits for the OnDisable callbacks, and closes what Open
// opened. It is safe to call more than once.
func (s *Store) Close() error {
	s.stopOnce.Do(func() {
		if s.stopc != nil {
			close(s.stopc)
			if s.started {
				<-s.donec
			}
		}
	})
	s.callbacks.Wait()
	return s.closeDBs()
}

func (s *Store) closeDBs() error {
	var errs []error
	for _, st := range s.stmts {
		st.Close()
	}
	s.stmts = nil
	if s.conn != nil {
		errs = append(errs, s.conn.Close())
		s.conn = nil
	}
	if s.own {
		errs = append(errs, s.wdb.Close(), s.rdb.Close())
		s.own = false
	}
	return errors.Join(errs...)
}

// IsPostgres reports whether the database is PostgreSQL.
func (s *Store) IsPostgres() bool { return s.d.pg }

// Reader is the pool the store reads with, for tests and tools.
func (s *Store) Reader() *sql.DB { return s.rdb }

// Path is the file or URL that Open was given; empty after New.
func (s *Store) Path() string { return s.path }

// Commits counts the writer's committed transactions since Open.
func (s *Store) Commits() int64 { return s.commits.Load() }

// Locks are the PostgreSQL advisory lock keys and channel, for tests.
func (s *Store) Locks() (retention int32, channel string) {
	return s.d.locks.retention, s.d.locks.channel
}

// do runs fn in the writer's next transaction and returns once it has
// committed, or failed. If ctx ends before the writer takes the op, fn
// does not run.
func (s *Store) do(ctx context.Context, fn func(*Tx) error) error {
	o := &op{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case s.ops <- o:
	case <-s.stopc:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		// The op may still commit; the caller learns only that it gave up.
		return ctx.Err()
	}
}

// Do runs fn in the writer's next transaction, for tests and tools that
// need a raw statement there.
func (s *Store) Do(ctx context.Context, fn func(*Tx) error) error { return s.do(ctx, fn) }

// submit queues fn without waiting for it. Errors are logged. It must not
// be called after the store is stopped.
func (s *Store) submit(fn func(*Tx) error) {
	s.ops <- &op{ctx: context.Background(), fn: fn}
}

// submitWait queues fn like submit, and waits until it is committed (or
// has failed), whatever becomes of the caller's context.
func (s *Store) submitWait(fn func(*Tx) error) error {
	o := &op{ctx: context.Background(), fn: fn, done: make(chan error, 1)}
	s.ops <- o
	return <-o.done
}

func (s *Store) loop() {
	defer close(s.donec)
	batch := make([]*op, 0, maxBatch)
	for {
		select {
		case o := <-s.ops:
			batch = append(batch[:0], o)
		case <-s.stopc:
			// Commit what is already queued, then stop.
			for {
				batch = batch[:0]
				for len(batch) < maxBatch {
					select {
					case o := <-s.ops:
						batch = append(batch, o)
						continue
					default:
					}
					break
				}
				if len(batch) == 0 {
					return
				}
				s.run(batch)
			}
		}
		// Let the goroutines that were just answered queue their next
		// op, so that they share this commit.
		runtime.Gosched()
	drain:
		for len(batch) < maxBatch {
			select {
			case o := <-s.ops:
				batch = append(batch, o)
			default:
				break drain
			}
		}
		s.run(batch)
	}
}

// run commits a batch. An op's own error fails that op alone (its
// savepoint is rolled back); only when the batch itself fails (begin,
// flush, commit) is each op run again alone, so that what can commit does.
func (s *Store) run(batch []*op) {
	live := batch[:0]
	for _, o := range batch {
		if err := o.ctx.Err(); err != nil {
			o.reply(err)
			continue
		}
		live = append(live, o)
	}
	if len(live) == 0 {
		return
	}
	err := s.commit(live)
	if err == nil || len(live) == 1 {
		for _, o := range live {
			if err != nil {
				o.reply(err)
			} else {
				o.reply(o.err)
			}
		}
		return
	}
	for _, o := range live {
		if err := s.commit([]*op{o}); err != nil {
			o.reply(err)
		} else {
			o.reply(o.err)
		}
	}
}

func (o *op) reply(err error) {
	if o.done != nil {
		o.done <- err
	}
}

// commit runs ops in one immediate transaction, each in a savepoint. It
// returns an error only when the transaction as a whole failed; each op's
// own error is left in op.err.
func (s *Store) commit(ops []*op) (err error) {
	ctx := context.Background()
	t := &Tx{s: s, ctx: ctx, now: s.now()}
	if _, err := s.conn.ExecContext(ctx, s.d.q("BEGIN IMMEDIATE")); err != nil {
		s.failBatch(ops, err)
		return fmt.Errorf("webhook: begin: %w", err)
	}
	defer func() {
		if err != nil {
			if _, rerr := s.conn.ExecContext(ctx, "ROLLBACK"); rerr != nil {
				s.log.Error("webhook: rollback failed", "error", rerr)
			}
			s.reg = nil // it may hold what was rolled back
			s.payloads.reset()
		}
	}()
	for _, o := range ops {
		o.err = nil
		if err := t.runOp(o); err != nil {
			s.failBatch(ops, err)
			return err
		}
	}
	if err := t.flush(); err != nil {
		s.failBatch(ops, err)
		return err
	}
	if t.notify && s.d.pg {
		if _, err := s.conn.ExecContext(ctx, `SELECT pg_notify($1, '')`, s.d.locks.channel); err != nil {
			s.failBatch(ops, err)
			return fmt.Errorf("webhook: notify: %w", err)
		}
	}
	if _, err := s.conn.ExecContext(ctx, "COMMIT"); err != nil {
		s.failBatch(ops, err)
		return fmt.Errorf("webhook: commit: %w", err)
	}
	s.commits.Add(1)
	for _, fn := range t.after {
		fn()
	}
	if counts := t.settled; counts != nil && s.cfg.OnSettled != nil {
		s.cfg.OnSettled(counts)
	}
	for _, o := range ops {
		if o.done == nil && o.err != nil {
			s.log.Error("webhook: recording failed; the delivery will be attempted again when its lease ends", "error", o.err)
		}
	}
	return nil
}

// failBatch logs the failure of a fire-and-forget op run alone, which has
// no caller to tell.
func (s *Store) failBatch(ops []*op, err error) {
	if len(ops) == 1 && ops[0].done == nil {
		s.log.Error("webhook: recording failed; the delivery will be attempted again when its lease ends", "error", err)
	}
}

// Rebind returns a "?"-placeholder query in the store's dialect, for tests
// and tools that query Reader.
func (s *Store) Rebind(query string) string { return s.d.q(query) }
