package webhook

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// migrations are applied in order, each once, in one immediate
// transaction per start. Never edit one that has shipped: append.
var migrations = []string{
	// 1: the registry, events, deliveries, attempts and score baselines.
	`
CREATE TABLE webhooks (
	seq               INTEGER PRIMARY KEY AUTOINCREMENT,
	id                TEXT    NOT NULL UNIQUE,
	url               TEXT    NOT NULL,
	events            TEXT    NOT NULL,
	secret            TEXT    NOT NULL,
	enabled           INTEGER NOT NULL DEFAULT 1,
	description       TEXT    NOT NULL DEFAULT '',
	created_at        INTEGER NOT NULL,
	updated_at        INTEGER NOT NULL,
	failure_streak    INTEGER NOT NULL DEFAULT 0,
	streak_started_at INTEGER,
	last_success_at   INTEGER,
	last_failure_at   INTEGER,
	disabled_reason   TEXT    NOT NULL DEFAULT '',
	disabled_at       INTEGER
);
CREATE TABLE webhook_meta (
	key   TEXT PRIMARY KEY,
	value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO webhook_meta (key, value) VALUES ('registry_version', 1);
CREATE TABLE webhook_events (
	seq        INTEGER PRIMARY KEY,
	id         TEXT    NOT NULL UNIQUE,
	type       TEXT    NOT NULL,
	payload    BLOB    NOT NULL,
	created_at INTEGER NOT NULL
);
CREATE TABLE webhook_deliveries (
	id          INTEGER PRIMARY KEY, -- never reused: retention keeps the newest row
	event_seq   INTEGER NOT NULL,
	webhook_seq INTEGER NOT NULL,
	status      INTEGER NOT NULL,
	attempts    INTEGER NOT NULL DEFAULT 0,
	next_at     INTEGER NOT NULL,
	created_at  INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL,
	last_status INTEGER NOT NULL DEFAULT 0,
	last_error  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at, webhook_seq) WHERE status = 0;
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_seq, id);
CREATE TABLE webhook_attempts (
	id          INTEGER PRIMARY KEY,
	delivery_id INTEGER NOT NULL,
	number      INTEGER NOT NULL,
	trigger     INTEGER NOT NULL,
	started_at  INTEGER NOT NULL,
	duration_us INTEGER NOT NULL,
	status_code INTEGER NOT NULL,
	error_class TEXT    NOT NULL,
	error       TEXT    NOT NULL,
	response    BLOB
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id);
CREATE TABLE webhook_counters (
	name  TEXT PRIMARY KEY,
	value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE webhook_scores (
	subject    TEXT PRIMARY KEY,
	score      REAL    NOT NULL,
	updated_at INTEGER NOT NULL
) WITHOUT ROWID;
`,
	// 2: secret rotation, and settings (the key check of sealed secrets).
	`
ALTER TABLE webhooks ADD COLUMN prev_secret TEXT;
ALTER TABLE webhooks ADD COLUMN prev_secret_until INTEGER;
CREATE TABLE webhook_settings (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
) WITHOUT ROWID;
`,
	// 3: formats (Slack, Discord, email), superseded score changes, and
	// recovery of what a disabled webhook missed.
	`
ALTER TABLE webhooks ADD COLUMN format TEXT NOT NULL DEFAULT 'json';
ALTER TABLE webhooks ADD COLUMN disabled_event_seq INTEGER;
ALTER TABLE webhook_deliveries ADD COLUMN payload BLOB;
ALTER TABLE webhook_deliveries ADD COLUMN leased INTEGER NOT NULL DEFAULT 0;
CREATE TABLE webhook_collapse (
	webhook_seq INTEGER NOT NULL,
	key         TEXT    NOT NULL,
	delivery_id INTEGER NOT NULL,
	since       REAL    NOT NULL,
	PRIMARY KEY (webhook_seq, key)
) WITHOUT ROWID;
`,
}

// Delivery status codes as stored.
const (
	stPending    = 0
	stDelivered  = 1
	stFailed     = 2
	stCancelled  = 3
	stSuperseded = 4
)

// store holds the SQL. Reads go to rdb; every write goes through one
// writer goroutine that owns one connection and commits whatever is
// waiting in one transaction (group commit): concurrent Publish calls share
// one fsync, and each still returns only after its own commit.
type store struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	rdb   *sql.DB // reads
	wdb   *sql.DB // writes; the host's db when not own
	own   bool    // Open made the pools and Close closes them
	path  string  // the file or URL, when Open made the pools
	conn  *sql.Conn
	pg    bool     // the database is PostgreSQL
	pgSQL sync.Map // query -> its PostgreSQL form
	locks pgLocks  // PostgreSQL advisory lock keys
	shard int      // PostgreSQL: this process's shard of webhook_counters

	ops   chan *op
	stopc chan struct{}
	donec chan struct{}

	// Writer state, touched only by the writer goroutine.
	stmts    map[string]*sql.Stmt
	reg      *regCache
	payloads *payloadCache

	onDisable func(WebhookDisabled)
	callbacks sync.WaitGroup

	off      sync.Map // seqs of the webhooks this process disabled or deleted
	sealer   *sealer  // nil: secrets are stored in clear
	met      *metrics // nil: no metrics
	started  bool
	stopOnce sync.Once
}

// op is one unit of work for the writer. fn runs inside the batch's
// transaction and must be safe to run again: when a batch fails, each of
// its ops is run again alone so that one bad op fails alone.
type op struct {
	ctx  context.Context
	fn   func(*wtx) error
	done chan error // nil for fire-and-forget ops
}

// maxBatch bounds the ops committed together.
const maxBatch = 512

func sqliteDSN(path string, cfg Config, readOnly bool) string {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", cfg.Synchronous.pragma())
	q.Set("_busy_timeout", strconv.FormatInt(cfg.BusyTimeout.Milliseconds(), 10))
	q.Set("_txlock", "immediate")
	q.Set("_stmt_cache_size", "64")
	q.Set("_cache_size", "-16000")
	if readOnly {
		q.Set("_query_only", "1")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// openStore opens the SQLite file at path with a writer pool of one
// connection and a pool of readers.
func openStore(ctx context.Context, path string, cfg Config) (*store, error) {
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
	s := &store{cfg: cfg, rdb: rdb, wdb: wdb, own: true, path: path}
	if err := s.init(ctx); err != nil {
		s.closeDBs()
		return nil, err
	}
	return s, nil
}

// newStore uses a database that the host owns.
func newStore(ctx context.Context, db *sql.DB, cfg Config) (*store, error) {
	s := &store{cfg: cfg, rdb: db, wdb: db, pg: isPostgresDB(db)}
	if err := s.init(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *store) init(ctx context.Context) error {
	s.now = time.Now
	s.log = s.cfg.Logger
	conn, err := s.wdb.Conn(ctx)
	if err != nil {
		return fmt.Errorf("webhook: open database: %w", err)
	}
	s.conn = conn
	if s.pg {
		var schema string
		if err := conn.QueryRowContext(ctx, `SELECT COALESCE(current_schema(), '')`).Scan(&schema); err != nil {
			conn.Close()
			return fmt.Errorf("webhook: open database: %w", err)
		}
		s.locks = newPGLocks(schema)
		s.shard = rand.IntN(counterShards)
		if err := s.migrate(ctx); err != nil {
			conn.Close()
			return err
		}
		if err := s.setupSealing(ctx, s.cfg.SecretKey); err != nil {
			conn.Close()
			return err
		}
		s.initWriter()
		return nil
	}
	var mode string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode); err != nil {
		conn.Close()
		return fmt.Errorf("webhook: open database: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		conn.Close()
		return fmt.Errorf("webhook: open database: journal mode is %q, WAL is required (an in-memory database cannot be used)", mode)
	}
	if _, err := conn.ExecContext(ctx, "PRAGMA temp_store=MEMORY"); err != nil {
		conn.Close()
		return fmt.Errorf("webhook: open database: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "PRAGMA wal_autocheckpoint=10000"); err != nil {
		conn.Close()
		return fmt.Errorf("webhook: open database: %w", err)
	}
	if !s.own {
		// The host's DSN is not ours: set what our writes rely on, on the
		// connection that makes them.
		for _, p := range []string{
			"PRAGMA synchronous=" + s.cfg.Synchronous.pragma(),
			"PRAGMA busy_timeout=" + strconv.FormatInt(s.cfg.BusyTimeout.Milliseconds(), 10),
		} {
			if _, err := conn.ExecContext(ctx, p); err != nil {
				conn.Close()
				return fmt.Errorf("webhook: open database: %w", err)
			}
		}
	}
	if err := s.migrate(ctx); err != nil {
		conn.Close()
		return err
	}
	if err := s.setupSealing(ctx, s.cfg.SecretKey); err != nil {
		conn.Close()
		return err
	}
	s.initWriter()
	return nil
}

func (s *store) initWriter() {
	s.ops = make(chan *op, maxBatch)
	s.stopc = make(chan struct{})
	s.donec = make(chan struct{})
	s.stmts = make(map[string]*sql.Stmt)
	s.payloads = newPayloadCache(8 << 20)
}

// migrate applies the migrations that the database does not have yet.
func (s *store) migrate(ctx context.Context) error {
	c := s.conn
	list := migrations
	if s.pg {
		list = pgMigrations
	}
	if _, err := c.ExecContext(ctx, s.q("BEGIN IMMEDIATE")); err != nil {
		return fmt.Errorf("webhook: migrate: %w", err)
	}
	err := func() error {
		if s.pg {
			// Processes that start together migrate one after another.
			if _, err := c.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1, 0)`, s.locks.migrate); err != nil {
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
			if _, err := c.ExecContext(ctx, s.q("INSERT INTO webhook_schema_migrations (version, applied_at) VALUES (?, ?)"), v, ms(time.Now())); err != nil {
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

func (s *store) start() {
	s.started = true
	go s.loop()
}

// close stops the writer after it has committed every op already
// submitted, and closes what the store opened.
func (s *store) close() error {
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

func (s *store) closeDBs() error {
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

// do runs fn in the writer's next transaction and returns once it has
// committed, or failed. If ctx ends before the writer takes the op, fn
// does not run.
func (s *store) do(ctx context.Context, fn func(*wtx) error) error {
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

// submit queues fn without waiting for it. Errors are logged. It must not
// be called after the store is stopped.
func (s *store) submit(fn func(*wtx) error) {
	s.ops <- &op{ctx: context.Background(), fn: fn}
}

// submitWait queues fn like submit, and waits until it is committed (or
// has failed), whatever becomes of the caller's context.
func (s *store) submitWait(fn func(*wtx) error) error {
	o := &op{ctx: context.Background(), fn: fn, done: make(chan error, 1)}
	s.ops <- o
	return <-o.done
}

func (s *store) loop() {
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

// run commits a batch, isolating a failing op by running each op alone.
func (s *store) run(batch []*op) {
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
			o.reply(err)
		}
		return
	}
	for _, o := range live {
		o.reply(s.commit([]*op{o}))
	}
}

func (o *op) reply(err error) {
	if o.done != nil {
		o.done <- err
	}
}

// commit runs ops in one immediate transaction.
func (s *store) commit(ops []*op) (err error) {
	ctx := context.Background()
	t := &wtx{s: s, ctx: ctx, now: s.now()}
	if _, err := s.conn.ExecContext(ctx, s.q("BEGIN IMMEDIATE")); err != nil {
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
		if err := o.fn(t); err != nil {
			s.failBatch(ops, err)
			return err
		}
	}
	if err := t.flush(); err != nil {
		s.failBatch(ops, err)
		return err
	}
	if t.notify && s.pg {
		if _, err := s.conn.ExecContext(ctx, `SELECT pg_notify($1, '')`, s.locks.channel); err != nil {
			s.failBatch(ops, err)
			return fmt.Errorf("webhook: notify: %w", err)
		}
	}
	if _, err := s.conn.ExecContext(ctx, "COMMIT"); err != nil {
		s.failBatch(ops, err)
		return fmt.Errorf("webhook: commit: %w", err)
	}
	for _, fn := range t.after {
		fn()
	}
	return nil
}

// failBatch logs the failure of fire-and-forget ops, which have no caller
// to tell.
func (s *store) failBatch(ops []*op, err error) {
	if len(ops) == 1 && ops[0].done == nil {
		s.log.Error("webhook: recording failed; the delivery will be attempted again when its lease ends", "error", err)
	}
}

// wtx is the writer's transaction in progress.
type wtx struct {
	s     *store
	ctx   context.Context
	now   time.Time
	after []func()

	regChecked bool
	hooks      map[int64]*hookDelta
	counts     map[string]int64 // counter deltas, written by flush
	outcomes   []outcome        // scheduled outcomes, written by flush
	notify     bool             // deliveries became due: tell every process (PostgreSQL)
}

// count adds n to a counter of Stats, in this transaction.
func (t *wtx) count(name string, n int64) {
	if n == 0 {
		return
	}
	if t.counts == nil {
		t.counts = make(map[string]int64, 4)
	}
	t.counts[name] += n
}

// Counter names.
const (
	cDelivered      = "deliveries_delivered"
	cFailed         = "deliveries_failed"
	cCancelled      = "deliveries_cancelled"
	cSuperseded     = "deliveries_superseded"
	cAttemptsOK     = "attempts_succeeded"
	cAttemptsFailed = "attempts_failed"
)

func (t *wtx) stmt(query string) (*sql.Stmt, error) {
	if st, ok := t.s.stmts[query]; ok {
		return st, nil
	}
	st, err := t.s.conn.PrepareContext(t.ctx, t.s.q(query))
	if err != nil {
		return nil, err
	}
	t.s.stmts[query] = st
	return st, nil
}

func (t *wtx) exec(query string, args ...any) (sql.Result, error) {
	st, err := t.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(t.ctx, args...)
}

func (t *wtx) query(query string, args ...any) (*sql.Rows, error) {
	st, err := t.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(t.ctx, args...)
}

func (t *wtx) queryRow(query string, args ...any) *sql.Row {
	st, err := t.stmt(query)
	if err != nil {
		// Surface the error through a Row that fails on Scan.
		return t.s.conn.QueryRowContext(t.ctx, t.s.q(query), args...)
	}
	return st.QueryRowContext(t.ctx, args...)
}

// afterCommit runs fn once the transaction has committed.
func (t *wtx) afterCommit(fn func()) { t.after = append(t.after, fn) }

// jsonUnmarshalStrings decodes a stored JSON array of strings.
func jsonUnmarshalStrings(s string, out *[]string) error {
	return json.Unmarshal([]byte(s), out)
}

// ms converts a time to the stored unix milliseconds.
func ms(t time.Time) int64 { return t.UnixMilli() }

// fromMS converts stored unix milliseconds to a UTC time.
func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

// nullMS converts a nullable stored time; NULL is the zero time.
func nullMS(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMS(v.Int64)
}

// ---------------------------------------------------------------------------
// The registry cache: the writer's view of the webhooks, reloaded whenever
// the registry version stored in webhook_meta changes.

type hookEntry struct {
	seq       int64
	id        string
	url       string
	events    []string
	format    Format
	mailTo    string    // the address, for FormatEmail
	current   *signer   // the secret
	both      *signer   // the secret and the previous one, during a rotation
	prevUntil time.Time // when the previous one stops signing
	enabled   bool
}

type regCache struct {
	version int64
	bySeq   map[int64]*hookEntry
	enabled []*hookEntry
}

// registry returns the current registry, checking its version once per
// transaction.
func (t *wtx) registry() (*regCache, error) {
	if t.regChecked && t.s.reg != nil {
		return t.s.reg, nil
	}
	var v int64
	if err := t.queryRow("SELECT value FROM webhook_meta WHERE key = 'registry_version'").Scan(&v); err != nil {
		return nil, fmt.Errorf("webhook: read registry version: %w", err)
	}
	if t.s.reg == nil || t.s.reg.version != v {
		reg, err := loadRegistry(t, v)
		if err != nil {
			return nil, err
		}
		t.s.reg = reg
	}
	t.regChecked = true
	return t.s.reg, nil
}

func loadRegistry(t *wtx, version int64) (*regCache, error) {
	rows, err := t.query("SELECT " + hookColumns + " FROM webhooks w")
	if err != nil {
		return nil, fmt.Errorf("webhook: load registry: %w", err)
	}
	defer rows.Close()
	reg := &regCache{version: version, bySeq: make(map[int64]*hookEntry)}
	for rows.Next() {
		h, err := t.s.scanHook(rows)
		if err != nil {
			return nil, fmt.Errorf("webhook: load registry: %w", err)
		}
		reg.bySeq[h.seq] = h
		if h.enabled {
			reg.enabled = append(reg.enabled, h)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("webhook: load registry: %w", err)
	}
	return reg, nil
}

// registryChanged bumps the registry version, so that every writer
// (in this process or another) reloads it.
func (t *wtx) registryChanged() error {
	if _, err := t.exec("UPDATE webhook_meta SET value = value + 1 WHERE key = 'registry_version'"); err != nil {
		return fmt.Errorf("webhook: bump registry version: %w", err)
	}
	t.regChecked = false
	return nil
}

// ---------------------------------------------------------------------------
// Events and deliveries.

// publish stores an event and a pending delivery for every enabled webhook
// subscribed to its type. It reports the number of deliveries and whether
// the event was already stored (then nothing is written).
func (t *wtx) publish(p preparedEvent) (int, bool, error) {
	var seq int64
	err := t.queryRow(`INSERT INTO webhook_events (id, type, payload, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING seq`,
		p.id, p.typ, p.payload, ms(t.now)).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, true, nil // already stored
	}
	if err != nil {
		return 0, false, fmt.Errorf("webhook: store event: %w", err)
	}
	t.notify = true
	reg, err := t.registry()
	if err != nil {
		return 0, false, err
	}
	if p.score != nil {
		return t.publishScore(p, seq, reg)
	}
	// One statement inserts the whole fan-out: the webhooks' seqs travel
	// as a JSON array.
	buf := make([]byte, 0, 64)
	buf = append(buf, '[')
	n := 0
	for _, h := range reg.enabled {
		if !matchAny(h.events, p.typ) {
			continue
		}
		if n > 0 {
			buf = append(buf, ',')
		}
		buf = strconv.AppendInt(buf, h.seq, 10)
		n++
	}
	if n == 0 {
		return 0, false, nil
	}
	buf = append(buf, ']')
	now := ms(t.now)
	if _, err := t.exec(t.s.pick(`INSERT INTO webhook_deliveries (event_seq, webhook_seq, status, next_at, created_at, updated_at)
		SELECT ?, value, 0, ?, ?, ? FROM json_each(?)`, `INSERT INTO webhook_deliveries (event_seq, webhook_seq, status, next_at, created_at, updated_at)
		SELECT ?::bigint, value::bigint, 0, ?::bigint, ?::bigint, ?::bigint FROM json_array_elements_text(?::json)`), seq, now, now, now, string(buf)); err != nil {
		return 0, false, fmt.Errorf("webhook: store deliveries: %w", err)
	}
	return n, false, nil
}

// publishScore stores the deliveries of a score.changed event one by one:
// for each webhook, a delivery of an older score.changed for the same
// subject that is still waiting is marked superseded, and the new
// delivery carries the change since the last score that webhook was sent
// (its own payload, made here once and never encoded again).
func (t *wtx) publishScore(p preparedEvent, seq int64, reg *regCache) (int, bool, error) {
	key := EventScoreChanged + ":" + p.score.Subject
	now := ms(t.now)
	n := 0
	for _, h := range reg.enabled {
		if !matchAny(h.events, p.typ) {
			continue
		}
		n++
		since := p.score.Previous
		var oldID int64
		var oldSince float64
		err := t.queryRow(`SELECT delivery_id, since FROM webhook_collapse WHERE webhook_seq = ? AND key = ?`, h.seq, key).Scan(&oldID, &oldSince)
		switch {
		case err == nil:
			var status int
			var inFlight bool
			err := t.queryRow(`SELECT status, leased = 1 AND next_at > ? FROM webhook_deliveries WHERE id = ?`, now, oldID).Scan(&status, &inFlight)
			if errors.Is(err, sql.ErrNoRows) {
				break // gone with retention: it settled long ago
			}
			if err != nil {
				return 0, false, fmt.Errorf("webhook: supersede delivery: %w", err)
			}
			if status == stDelivered || status == stPending && inFlight {
				break // the receiver has seen (or is seeing) up to this event's Previous
			}
			since = oldSince // the receiver has not seen the older change
			if status == stPending {
				if _, err := t.exec(`UPDATE webhook_deliveries SET status = 4, updated_at = ?, last_error = 'superseded by a newer score.changed' WHERE id = ?`, now, oldID); err != nil {
					return 0, false, fmt.Errorf("webhook: supersede delivery: %w", err)
				}
				t.count(cSuperseded, 1)
			}
		case !errors.Is(err, sql.ErrNoRows):
			return 0, false, fmt.Errorf("webhook: supersede delivery: %w", err)
		}
		var own any // the event's payload unless the change starts earlier
		if since != p.score.Previous {
			ev, err := encodeEvent(Event{ID: p.id, Type: p.typ, Timestamp: p.at, Data: ScoreChanged{
				Subject: p.score.Subject, Previous: since, Current: p.score.Current, Delta: p.score.Current - since,
			}}, 1<<30)
			if err != nil {
				return 0, false, err
			}
			own = ev.payload
		}
		var id int64
		if err := t.queryRow(`INSERT INTO webhook_deliveries (event_seq, webhook_seq, status, next_at, created_at, updated_at, payload) VALUES (?, ?, 0, ?, ?, ?, ?) RETURNING id`,
			seq, h.seq, now, now, now, own).Scan(&id); err != nil {
			return 0, false, fmt.Errorf("webhook: store delivery: %w", err)
		}
		if _, err := t.exec(`INSERT INTO webhook_collapse (webhook_seq, key, delivery_id, since) VALUES (?, ?, ?, ?)
			ON CONFLICT (webhook_seq, key) DO UPDATE SET delivery_id = excluded.delivery_id, since = excluded.since`, h.seq, key, id, since); err != nil {
			return 0, false, fmt.Errorf("webhook: store delivery: %w", err)
		}
	}
	return n, false, nil
}

// publishTx is publish inside a transaction of the host's.
func (s *store) publishTx(ctx context.Context, tx *sql.Tx, p preparedEvent, now time.Time) (int, bool, error) {
	var seq int64
	err := tx.QueryRowContext(ctx, s.q(`INSERT INTO webhook_events (id, type, payload, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING seq`),
		p.id, p.typ, p.payload, ms(now)).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, true, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("webhook: store event: %w", err)
	}
	rows, err := tx.QueryContext(ctx, "SELECT seq, events FROM webhooks WHERE enabled = 1")
	if err != nil {
		return 0, false, fmt.Errorf("webhook: read registry: %w", err)
	}
	var targets []int64
	for rows.Next() {
		var hs int64
		var events string
		if err := rows.Scan(&hs, &events); err != nil {
			rows.Close()
			return 0, false, fmt.Errorf("webhook: read registry: %w", err)
		}
		var pats []string
		if json.Unmarshal([]byte(events), &pats) == nil && matchAny(pats, p.typ) {
			targets = append(targets, hs)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, false, fmt.Errorf("webhook: read registry: %w", err)
	}
	for _, hs := range targets {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO webhook_deliveries (event_seq, webhook_seq, status, next_at, created_at, updated_at) VALUES (?, ?, 0, ?, ?, ?)`),
			seq, hs, ms(now), ms(now), ms(now)); err != nil {
			return 0, false, fmt.Errorf("webhook: store delivery: %w", err)
		}
	}
	if s.pg && len(targets) > 0 {
		// Delivered to the listeners when tx commits, and dropped if it
		// rolls back: the workers of every process wake for the commit.
		if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1, '')`, s.locks.channel); err != nil {
			return 0, false, fmt.Errorf("webhook: notify: %w", err)
		}
	}
	return len(targets), false, nil
}

// job is a claimed delivery, ready to attempt.
type job struct {
	deliveryID int64
	claimedAt  time.Time // when its lease began (scheduled attempts)
	attempt    int
	trigger    Trigger
	hook       *hookEntry
	eventID    string
	eventType  string
	payload    []byte
	// interrupted reports that the previous attempt died with its process.
	interrupted bool
}

// claimPlan decides about a due delivery of a webhook. interrupted
// reports that the delivery's previous attempt never recorded an outcome:
// its process died during it, perhaps because of it. leased counts the
// webhook's deliveries whose leases are live in the database, those of
// every process (PostgreSQL only; 0 with SQLite, which one process owns).
//
// With PostgreSQL, breakerUntil is when the webhook's circuit breaker, which
// every process shares, ends its cool-down (zero while it is closed).
type claimPlan func(webhookSeq int64, interrupted bool, leased int, breakerUntil time.Time) planVerdict

type planVerdict int

const (
	planTake planVerdict = iota // attempt it now
	planHold                    // its webhook cannot take more now: leave it due
	planFull                    // every free worker is spoken for: stop
	planWait                    // not now, for a reason other than its webhook: leave it due
)

// claimed is what claim found.
type claimed struct {
	jobs []job
	// busy reports, with PostgreSQL, due deliveries left because another
	// process was claiming for their webhook at the same moment: worth
	// another look soon.
	busy bool
	// held reports due deliveries left for later because their webhook
	// was at its cap or its breaker was open.
	held bool
	// full reports that the last look at the queue was cut short, so more
	// deliveries may be due.
	full bool
	// next is when the next pending delivery is due (zero when none is).
	next time.Time
}

// claim leases due deliveries that plan takes, looking at up to window of
// them. Deliveries whose webhook is gone or disabled are cancelled, and
// those whose last attempt died with its process are failed. When some
// webhooks are held (at their cap, or their breaker open) and their
// deliveries crowd the head of the queue, it looks again past them, so
// that one slow endpoint cannot starve the others.
func (t *wtx) claim(window int, lease time.Duration, policy RetryPolicy, plan claimPlan) (claimed, error) {
	var out claimed
	reg, err := t.registry()
	if err != nil {
		return out, err
	}
	now := ms(t.now)
	leaseUntil := ms(t.now.Add(lease))
	var held []byte // JSON array of the held webhooks' seqs
	heldSet := map[int64]bool{}
	// With PostgreSQL, other processes attempt deliveries too: leased
	// counts every process's live leases of the webhooks this claim may
	// take from, and only one transaction at a time claims for a webhook.
	var leased map[int64]int
	var breakerUntil map[int64]time.Time
	if t.s.pg && plan != nil {
		leased = map[int64]int{}
		breakerUntil = map[int64]time.Time{}
	}
	for pass := 0; pass < 2; pass++ {
		var rows *sql.Rows
		// With PostgreSQL, the rows another process is claiming are
		// skipped, and the rows looked at stay locked until the commit.
		if pass == 0 {
			rows, err = t.query(t.s.pick(`SELECT id, event_seq, webhook_seq, attempts, payload, leased FROM webhook_deliveries
				WHERE status = 0 AND next_at <= ? ORDER BY next_at LIMIT ?`, `SELECT id, event_seq, webhook_seq, attempts, payload, leased = 1 FROM webhook_deliveries
				WHERE status = 0 AND next_at <= ? ORDER BY next_at LIMIT ? FOR UPDATE SKIP LOCKED`), now, window)
		} else {
			rows, err = t.query(t.s.pick(`SELECT id, event_seq, webhook_seq, attempts, payload, leased FROM webhook_deliveries
				WHERE status = 0 AND next_at <= ? AND webhook_seq NOT IN (SELECT value FROM json_each(?))
				ORDER BY next_at LIMIT ?`, `SELECT id, event_seq, webhook_seq, attempts, payload, leased = 1 FROM webhook_deliveries
				WHERE status = 0 AND next_at <= ? AND webhook_seq NOT IN (SELECT value::bigint FROM json_array_elements_text(?::json))
				ORDER BY next_at LIMIT ? FOR UPDATE SKIP LOCKED`), now, string(append(held, ']')), window)
		}
		if err != nil {
			return out, fmt.Errorf("webhook: claim: %w", err)
		}
		type cand struct {
			id, ev, hs int64
			attempts   int
			payload    []byte // the delivery's own, if any
			// interrupted: claimed before, and its lease ran out without
			// an outcome (a due delivery is leased only then).
			interrupted bool
		}
		var cands []cand
		for rows.Next() {
			var c cand
			if err := rows.Scan(&c.id, &c.ev, &c.hs, &c.attempts, &c.payload, &c.interrupted); err != nil {
				rows.Close()
				return out, fmt.Errorf("webhook: claim: %w", err)
			}
			cands = append(cands, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return out, fmt.Errorf("webhook: claim: %w", err)
		}
		out.full = len(cands) == window
		if leased != nil {
			seqs := make([]int64, 0, len(cands))
			for _, c := range cands {
				seqs = append(seqs, c.hs)
			}
			busy, err := t.lockWebhooks(seqs, now, leased, breakerUntil)
			if err != nil {
				return out, err
			}
			out.busy = out.busy || busy
		}
		var ids []byte // the taken ones, as a JSON array
		stopped := false
	scan:
		for _, c := range cands {
			h := reg.bySeq[c.hs]
			switch {
			case h == nil || !h.enabled:
				if _, err := t.exec(`UPDATE webhook_deliveries SET status = 3, updated_at = ?, last_error = 'webhook disabled or deleted' WHERE id = ?`, now, c.id); err != nil {
					return out, fmt.Errorf("webhook: claim: %w", err)
				}
				t.count(cCancelled, 1)
				continue
			case c.attempts > 0 && !canRetry(policy, c.attempts):
				// The last attempt's worker died with its lease.
				if _, err := t.exec(`UPDATE webhook_deliveries SET status = 2, updated_at = ?, last_error = 'the last attempt was interrupted' WHERE id = ?`, now, c.id); err != nil {
					return out, fmt.Errorf("webhook: claim: %w", err)
				}
				t.count(cFailed, 1)
				continue
			}
			if plan != nil {
				switch plan(c.hs, c.interrupted, leased[c.hs], breakerUntil[c.hs]) {
				case planFull:
					stopped = true
					break scan
				case planWait:
					out.held = true
					continue // it stays due, without a write
				case planHold:
					out.held = true
					if !heldSet[c.hs] {
						heldSet[c.hs] = true
						held = appendIDs(held, c.hs)
					}
					continue // it stays due, without a write
				}
			}
			ids = appendIDs(ids, c.id)
			ev, err := t.event(c.ev)
			if err != nil {
				return out, err
			}
			j := job{deliveryID: c.id, claimedAt: t.now, attempt: c.attempts + 1, trigger: TriggerScheduled, hook: h,
				eventID: ev.id, eventType: ev.typ, payload: ev.payload, interrupted: c.interrupted}
			if c.payload != nil {
				j.payload = c.payload
			}
			out.jobs = append(out.jobs, j)
		}
		if len(ids) > 0 {
			if _, err := t.exec(t.s.pick(`UPDATE webhook_deliveries SET attempts = attempts + 1, next_at = ?, leased = 1 WHERE id IN (SELECT value FROM json_each(?))`,
				`UPDATE webhook_deliveries SET attempts = attempts + 1, next_at = ?, leased = 1 WHERE id IN (SELECT value::bigint FROM json_array_elements_text(?::json))`),
				leaseUntil, string(append(ids, ']'))); err != nil {
				return out, fmt.Errorf("webhook: claim: %w", err)
			}
		}
		if stopped {
			out.full = true
			break
		}
		// Look past the held webhooks only when they filled the window.
		if !out.full || len(held) == 0 {
			break
		}
	}
	var nextAt sql.NullInt64
	if err := t.queryRow(`SELECT MIN(next_at) FROM webhook_deliveries WHERE status = 0`).Scan(&nextAt); err != nil {
		return out, fmt.Errorf("webhook: claim: %w", err)
	}
	out.next = nullMS(nextAt)
	return out, nil
}

// lockWebhooks prepares a PostgreSQL claim to take deliveries of the
// webhooks seqs not yet in leased: it takes each webhook's claim lock, a
// transaction-scoped advisory lock, without waiting, and records how many
// live leases the webhook has, in every process, and until when its shared
// circuit breaker is open. A webhook another transaction is claiming for
// is recorded as full, so its deliveries are held, and busy is true. Since
// the count is read under the lock and after the previous holder
// committed, a webhook's cap, and its breaker's single probe, hold across
// processes.
func (t *wtx) lockWebhooks(seqs []int64, now int64, leased map[int64]int, breakerUntil map[int64]time.Time) (busy bool, err error) {
	var want []byte
	seen := map[int64]bool{}
	for _, seq := range seqs {
		if _, done := leased[seq]; done || seen[seq] {
			continue
		}
		seen[seq] = true
		want = appendIDs(want, seq)
	}
	if want == nil {
		return false, nil
	}
	fail := func(err error) (bool, error) { return false, fmt.Errorf("webhook: claim: lock webhooks: %w", err) }
	rows, err := t.query(`SELECT v::bigint FROM json_array_elements_text(?::json) AS v
		WHERE pg_try_advisory_xact_lock(?, (v::bigint % 2147483647)::int)`, string(append(want, ']')), t.s.locks.claim)
	if err != nil {
		return fail(err)
	}
	var locked []byte
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			rows.Close()
			return fail(err)
		}
		delete(seen, seq)
		leased[seq] = 0
		locked = appendIDs(locked, seq)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	for seq := range seen {
		leased[seq] = math.MaxInt32 // another process is claiming for it
		busy = true
	}
	if locked == nil {
		return busy, nil
	}
	rows, err = t.query(`SELECT w.seq, w.breaker_open_until, COALESCE(l.n, 0) FROM webhooks w
		LEFT JOIN (SELECT webhook_seq, COUNT(*) AS n FROM webhook_deliveries WHERE status = 0 AND leased = 1 AND next_at > ? GROUP BY webhook_seq) l
		ON l.webhook_seq = w.seq
		WHERE w.seq IN (SELECT v::bigint FROM json_array_elements_text(?::json) AS v)`, now, string(append(locked, ']')))
	if err != nil {
		return fail(err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq, until int64
		var n int
		if err := rows.Scan(&seq, &until, &n); err != nil {
			return fail(err)
		}
		leased[seq] = n
		if until != 0 {
			breakerUntil[seq] = fromMS(until)
		}
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	return busy, nil
}

func canRetry(p RetryPolicy, attempts int) bool {
	_, ok := p.NextRetry(attempts)
	return ok
}

// event returns a stored event, from the payload cache when it can.
func (t *wtx) event(seq int64) (*cachedEvent, error) {
	if ev := t.s.payloads.get(seq); ev != nil {
		return ev, nil
	}
	ev := &cachedEvent{seq: seq}
	if err := t.queryRow(`SELECT id, type, payload FROM webhook_events WHERE seq = ?`, seq).Scan(&ev.id, &ev.typ, &ev.payload); err != nil {
		return nil, fmt.Errorf("webhook: read event: %w", err)
	}
	t.s.payloads.put(ev)
	return ev, nil
}

// outcome is what an attempt came to, to be recorded.
type outcome struct {
	deliveryID int64
	hookSeq    int64
	breaker    bool // it failed in a way that counts for the circuit breaker
	attempt    int
	trigger    Trigger
	started    time.Time
	duration   time.Duration
	status     int
	class      string
	errMsg     string
	body       []byte
	result     result
	nextAt     time.Time // for resultRetry
}

type result int

const (
	resultDelivered  result = iota
	resultRetry             // failed; next attempt at nextAt
	resultFailed            // failed; no attempt remains
	resultGone              // 410: failed, and the webhook is disabled
	resultReleased          // cancelled by Close: not an attempt at all
	resultManualFail        // a manual attempt that failed: the schedule stays
)

// complete records an outcome.
func (t *wtx) complete(o outcome) error {
	now := ms(t.now)
	if o.result == resultReleased {
		t.notify = true // due again, for whichever process
		_, err := t.exec(t.s.pick(`UPDATE webhook_deliveries SET attempts = MAX(attempts - 1, 0), next_at = ?, leased = 0 WHERE id = ? AND status = 0`,
			`UPDATE webhook_deliveries SET attempts = GREATEST(attempts - 1, 0), next_at = ?, leased = 0 WHERE id = ? AND status = 0`), now, o.deliveryID)
		return err
	}
	if o.result == resultDelivered {
		t.count(cAttemptsOK, 1)
	} else {
		t.count(cAttemptsFailed, 1)
	}
	if o.trigger == TriggerScheduled && (o.result == resultDelivered || o.result == resultRetry || o.result == resultFailed) {
		// The common case: written with the batch's others in flush.
		t.outcomes = append(t.outcomes, o)
		t.hookOutcome(o.hookSeq, o.result == resultDelivered, o.breaker, t.now)
		return nil
	}
	if err := t.insertAttempt(o); err != nil {
		return err
	}
	var from int
	var err error
	switch o.result {
	case resultDelivered:
		// A manual or test attempt may deliver a failed delivery.
		from = stPending
		if o.trigger != TriggerScheduled {
			err = t.queryRow(`SELECT status FROM webhook_deliveries WHERE id = ?`, o.deliveryID).Scan(&from)
		}
		if err == nil && (from == stPending || from == stFailed) {
			var res sql.Result
			res, err = t.exec(`UPDATE webhook_deliveries SET status = 1, updated_at = ?, last_status = ?, last_error = '' WHERE id = ? AND status = ?`, now, o.status, o.deliveryID, from)
			if err == nil {
				n, _ := res.RowsAffected()
				t.count(cDelivered, n)
				if from == stFailed {
					t.count(cFailed, -n)
				}
			}
		}
	case resultRetry:
		_, err = t.exec(`UPDATE webhook_deliveries SET next_at = ?, updated_at = ?, last_status = ?, last_error = ? WHERE id = ? AND status = 0`, ms(o.nextAt), now, o.status, o.errMsg, o.deliveryID)
	case resultFailed, resultGone:
		var res sql.Result
		res, err = t.exec(`UPDATE webhook_deliveries SET status = 2, updated_at = ?, last_status = ?, last_error = ? WHERE id = ? AND status = 0`, now, o.status, o.errMsg, o.deliveryID)
		if err == nil {
			n, _ := res.RowsAffected()
			t.count(cFailed, n)
		}
	case resultManualFail:
		_, err = t.exec(`UPDATE webhook_deliveries SET updated_at = ?, last_status = ?, last_error = ? WHERE id = ?`, now, o.status, o.errMsg, o.deliveryID)
	}
	if errors.Is(err, sql.ErrNoRows) {
		err = nil // settled meanwhile (cancelled, or delivered by another attempt)
	}
	if err != nil {
		return fmt.Errorf("webhook: record outcome: %w", err)
	}
	if o.trigger == TriggerTest {
		return nil
	}
	t.hookOutcome(o.hookSeq, o.result == resultDelivered, o.breaker, t.now)
	if o.result == resultGone {
		return t.disable(o.hookSeq, "the endpoint answered 410 Gone")
	}
	return nil
}

func (t *wtx) insertAttempt(o outcome) error {
	var body any
	if len(o.body) > 0 {
		body = o.body
	}
	_, err := t.exec(`INSERT INTO webhook_attempts (delivery_id, number, trigger, started_at, duration_us, status_code, error_class, error, response) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		o.deliveryID, o.attempt, o.trigger.code(), ms(o.started), o.duration.Microseconds(), o.status, o.class, o.errMsg, body)
	if err != nil {
		return fmt.Errorf("webhook: record attempt: %w", err)
	}
	return nil
}

// flushOutcomes records the batch's scheduled outcomes with one statement
// for the attempts and one per kind of outcome for the deliveries: the rows
// travel as JSON arrays, which SQLite reads with json_each, so a batch of a
// hundred outcomes costs a handful of statements instead of hundreds.
func (t *wtx) flushOutcomes() error {
	if len(t.outcomes) == 0 {
		return nil
	}
	now := ms(t.now)
	var att, ok, retry, fail []byte
	for i := range t.outcomes {
		o := &t.outcomes[i]
		att = appendRowStart(att)
		att = strconv.AppendInt(att, o.deliveryID, 10)
		att = append(att, ',')
		att = strconv.AppendInt(att, int64(o.attempt), 10)
		att = append(att, ',')
		att = strconv.AppendInt(att, ms(o.started), 10)
		att = append(att, ',')
		att = strconv.AppendInt(att, o.duration.Microseconds(), 10)
		att = append(att, ',')
		att = strconv.AppendInt(att, int64(o.status), 10)
		att = append(att, ',')
		att = appendJSONString(att, o.class)
		att = append(att, ',')
		att = appendJSONString(att, o.errMsg)
		att = append(att, ',', '"')
		att = hex.AppendEncode(att, o.body)
		att = append(att, '"', ']')
		switch o.result {
		case resultDelivered:
			ok = appendRowStart(ok)
			ok = strconv.AppendInt(ok, o.deliveryID, 10)
			ok = append(ok, ',')
			ok = strconv.AppendInt(ok, int64(o.status), 10)
			ok = append(ok, ']')
		case resultRetry, resultFailed:
			row := &fail
			if o.result == resultRetry {
				row = &retry
			}
			*row = appendRowStart(*row)
			*row = strconv.AppendInt(*row, o.deliveryID, 10)
			*row = append(*row, ',')
			*row = strconv.AppendInt(*row, int64(o.status), 10)
			*row = append(*row, ',')
			*row = appendJSONString(*row, o.errMsg)
			*row = append(*row, ',')
			*row = strconv.AppendInt(*row, ms(o.nextAt), 10)
			*row = append(*row, ']')
		}
	}
	t.outcomes = t.outcomes[:0]
	if _, err := t.exec(t.s.pick(`INSERT INTO webhook_attempts (delivery_id, number, trigger, started_at, duration_us, status_code, error_class, error, response)
		SELECT value->>0, value->>1, 0, value->>2, value->>3, value->>4, value->>5, value->>6, NULLIF(unhex(value->>7), x'')
		FROM json_each(?)`, `INSERT INTO webhook_attempts (delivery_id, number, trigger, started_at, duration_us, status_code, error_class, error, response)
		SELECT (value->>0)::bigint, (value->>1)::int, 0, (value->>2)::bigint, (value->>3)::bigint, (value->>4)::int, value->>5, value->>6, NULLIF(decode(value->>7, 'hex'), ''::bytea)
		FROM json_array_elements(?::json)`), closeRows(att)); err != nil {
		return fmt.Errorf("webhook: record attempts: %w", err)
	}
	if len(ok) > 0 {
		res, err := t.exec(t.s.pick(`UPDATE webhook_deliveries SET status = 1, updated_at = ?, last_status = j.value->>1, last_error = ''
			FROM json_each(?) AS j WHERE webhook_deliveries.id = j.value->>0 AND status = 0`, `UPDATE webhook_deliveries SET status = 1, updated_at = ?, last_status = (j.value->>1)::int, last_error = ''
			FROM json_array_elements(?::json) AS j WHERE webhook_deliveries.id = (j.value->>0)::bigint AND status = 0`), now, closeRows(ok))
		if err != nil {
			return fmt.Errorf("webhook: record outcomes: %w", err)
		}
		n, _ := res.RowsAffected()
		t.count(cDelivered, n)
	}
	if len(retry) > 0 {
		if _, err := t.exec(t.s.pick(`UPDATE webhook_deliveries SET next_at = j.value->>3, leased = 0, updated_at = ?, last_status = j.value->>1, last_error = j.value->>2
			FROM json_each(?) AS j WHERE webhook_deliveries.id = j.value->>0 AND status = 0`, `UPDATE webhook_deliveries SET next_at = (j.value->>3)::bigint, leased = 0, updated_at = ?, last_status = (j.value->>1)::int, last_error = j.value->>2
			FROM json_array_elements(?::json) AS j WHERE webhook_deliveries.id = (j.value->>0)::bigint AND status = 0`), now, closeRows(retry)); err != nil {
			return fmt.Errorf("webhook: record outcomes: %w", err)
		}
	}
	if len(fail) > 0 {
		res, err := t.exec(t.s.pick(`UPDATE webhook_deliveries SET status = 2, updated_at = ?, last_status = j.value->>1, last_error = j.value->>2
			FROM json_each(?) AS j WHERE webhook_deliveries.id = j.value->>0 AND status = 0`, `UPDATE webhook_deliveries SET status = 2, updated_at = ?, last_status = (j.value->>1)::int, last_error = j.value->>2
			FROM json_array_elements(?::json) AS j WHERE webhook_deliveries.id = (j.value->>0)::bigint AND status = 0`), now, closeRows(fail))
		if err != nil {
			return fmt.Errorf("webhook: record outcomes: %w", err)
		}
		n, _ := res.RowsAffected()
		t.count(cFailed, n)
	}
	return nil
}

// appendIDs appends an ID to an unterminated JSON array of IDs.
func appendIDs(b []byte, id int64) []byte {
	if len(b) == 0 {
		b = append(b, '[')
	} else {
		b = append(b, ',')
	}
	return strconv.AppendInt(b, id, 10)
}

// appendRowStart opens a row of a JSON array of rows.
func appendRowStart(b []byte) []byte {
	if len(b) == 0 {
		return append(b, '[', '[')
	}
	return append(b, ',', '[')
}

// closeRows closes a JSON array of rows.
func closeRows(b []byte) string {
	if len(b) == 0 {
		return "[]"
	}
	return string(append(b, ']'))
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hexdigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexdigits[c>>4], hexdigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// hookDelta accumulates a batch's outcomes for one webhook, so that the
// webhooks row is written once per batch.
type hookDelta struct {
	success      bool  // a success reset the streak in this batch
	lastSuccess  int64 // time of the latest success
	failures     int   // failures since the latest success (or since the batch began)
	firstFailure int64 // time of the first of those failures
	lastFailure  int64
	// For the circuit breaker shared by PostgreSQL processes:
	breakerReset bool // an outcome that does not count closed it
	breakerFails int  // failures that count since then (or since the batch began)
}

func (t *wtx) hookOutcome(seq int64, ok, breaker bool, at time.Time) {
	if t.hooks == nil {
		t.hooks = make(map[int64]*hookDelta)
	}
	d := t.hooks[seq]
	if d == nil {
		d = &hookDelta{}
		t.hooks[seq] = d
	}
	if breaker {
		d.breakerFails++
	} else {
		d.breakerReset, d.breakerFails = true, 0
	}
	if ok {
		d.success, d.lastSuccess, d.failures, d.firstFailure = true, ms(at), 0, 0
		return
	}
	if d.failures == 0 {
		d.firstFailure = ms(at)
	}
	d.failures++
	d.lastFailure = ms(at)
}

// flush writes what the batch accumulated: the outcomes of scheduled
// attempts, the webhooks' streaks (applying the disable rule) and the
// counters.
func (t *wtx) flush() error {
	if err := t.flushOutcomes(); err != nil {
		return err
	}
	// Rows are written in one order (webhooks by seq, counters by name),
	// so that with PostgreSQL two processes' commits never deadlock.
	seqs := make([]int64, 0, len(t.hooks))
	for seq := range t.hooks {
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		d := t.hooks[seq]
		var streak int
		var started sql.NullInt64
		var enabled bool
		var err error
		if d.success && d.failures == 0 {
			// All went well: the row is written only if its streak needs
			// clearing or its last success is more than a second old, so
			// that a busy webhook does not rewrite its page every commit.
			if _, err := t.exec(t.s.pick(`UPDATE webhooks SET failure_streak = 0, streak_started_at = NULL, last_success_at = ?
				WHERE seq = ? AND (failure_streak != 0 OR last_success_at IS NULL OR last_success_at < ?)`,
				`UPDATE webhooks SET failure_streak = 0, streak_started_at = NULL, last_success_at = ?, breaker_fails = 0, breaker_open_until = 0, breaker_cooldown_ms = 0
				WHERE seq = ? AND (failure_streak != 0 OR last_success_at IS NULL OR last_success_at < ? OR breaker_fails != 0 OR breaker_open_until != 0)`),
				d.lastSuccess, seq, d.lastSuccess-1000); err != nil {
				return fmt.Errorf("webhook: record webhook outcome: %w", err)
			}
			continue
		}
		if d.success {
			var st any
			if d.failures > 0 {
				st = d.firstFailure
			}
			var lf any
			if d.failures > 0 {
				lf = d.lastFailure
			}
			err = t.queryRow(`UPDATE webhooks SET failure_streak = ?, streak_started_at = ?, last_success_at = ?, last_failure_at = COALESCE(?, last_failure_at) WHERE seq = ? RETURNING failure_streak, streak_started_at, enabled`,
				d.failures, st, d.lastSuccess, lf, seq).Scan(&streak, &started, &enabled)
		} else {
			err = t.queryRow(`UPDATE webhooks SET failure_streak = failure_streak + ?, streak_started_at = COALESCE(streak_started_at, ?), last_failure_at = ? WHERE seq = ? RETURNING failure_streak, streak_started_at, enabled`,
				d.failures, d.firstFailure, d.lastFailure, seq).Scan(&streak, &started, &enabled)
		}
		if errors.Is(err, sql.ErrNoRows) {
			continue // deleted meanwhile
		}
		if err != nil {
			return fmt.Errorf("webhook: record webhook outcome: %w", err)
		}
		if t.s.pg {
			if err := t.sharedBreaker(seq, d); err != nil {
				return err
			}
		}
		if enabled && streak >= t.s.cfg.DisableAfterFailures && started.Valid &&
			t.now.Sub(fromMS(started.Int64)) >= t.s.cfg.DisableAfterPeriod {
			reason := fmt.Sprintf("%d consecutive failed attempts and no success for %s", streak, t.now.Sub(fromMS(started.Int64)).Round(time.Second))
			if err := t.disable(seq, reason); err != nil {
				return err
			}
		}
	}
	t.hooks = nil
	for _, name := range slices.Sorted(maps.Keys(t.counts)) {
		n := t.counts[name]
		var err error
		if t.s.pg {
			// Each process adds to its own shard of the counters, so
			// that processes do not queue for one row.
			_, err = t.exec(`INSERT INTO webhook_counters (name, shard, value) VALUES (?, ?, ?) ON CONFLICT (name, shard) DO UPDATE SET value = webhook_counters.value + excluded.value`, name, t.s.shard, n)
		} else {
			_, err = t.exec(`INSERT INTO webhook_counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = webhook_counters.value + excluded.value`, name, n)
		}
		if err != nil {
			return fmt.Errorf("webhook: update counters: %w", err)
		}
	}
	if counts := t.counts; counts != nil && t.s.met != nil {
		t.afterCommit(func() { t.s.met.settled(counts) })
	}
	t.counts = nil
	return nil
}

// sharedBreaker applies a batch's outcomes to a webhook's circuit breaker
// as PostgreSQL keeps it, on the webhook's row, for every process: the
// same rule as the in-memory breaker that serves SQLite (see breaker).
// When the breaker opens, the webhook's pending deliveries are held until
// its cool-down ends; the claims of every process then let one probe
// through (see lockWebhooks).
func (t *wtx) sharedBreaker(seq int64, d *hookDelta) error {
	cfg := t.s.cfg
	if cfg.BreakerThreshold < 0 {
		return nil
	}
	if d.breakerFails == 0 {
		if !d.breakerReset {
			return nil
		}
		_, err := t.exec(`UPDATE webhooks SET breaker_fails = 0, breaker_open_until = 0, breaker_cooldown_ms = 0
			WHERE seq = ? AND (breaker_fails != 0 OR breaker_open_until != 0)`, seq)
		if err != nil {
			return fmt.Errorf("webhook: record circuit breaker: %w", err)
		}
		return nil
	}
	var id string
	var fails int
	var openUntil, cooldown int64
	err := t.queryRow(`SELECT id, breaker_fails, breaker_open_until, breaker_cooldown_ms FROM webhooks WHERE seq = ? FOR UPDATE`, seq).Scan(&id, &fails, &openUntil, &cooldown)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("webhook: record circuit breaker: %w", err)
	}
	b := &breaker{fails: fails, cooldown: time.Duration(cooldown) * time.Millisecond}
	if openUntil != 0 {
		b.openUntil = fromMS(openUntil)
	}
	if d.breakerReset {
		*b = breaker{}
	}
	// The probe's failure: the cool-down is over and a failure came back.
	probe := !b.openUntil.IsZero() && !t.now.Before(b.openUntil)
	bs := &breakers{threshold: cfg.BreakerThreshold, base: cfg.BreakerCooldown, limit: cfg.BreakerMaxCooldown}
	opened := bs.fail(b, d.breakerFails, probe, t.now)
	var until int64
	if !b.openUntil.IsZero() {
		until = ms(b.openUntil)
	}
	if _, err := t.exec(`UPDATE webhooks SET breaker_fails = ?, breaker_open_until = ?, breaker_cooldown_ms = ? WHERE seq = ?`,
		b.fails, until, b.cooldown.Milliseconds(), seq); err != nil {
		return fmt.Errorf("webhook: record circuit breaker: %w", err)
	}
	if !opened {
		return nil
	}
	if _, err := t.exec(holdStatement, until, seq, until); err != nil {
		return fmt.Errorf("webhook: record circuit breaker: %w", err)
	}
	t.afterCommit(func() { logBreakerOpen(t.s.log, id, b.openUntil) })
	return nil
}

// disable disables a webhook automatically, cancels its pending
// deliveries and, after commit, tells the host.
func (t *wtx) disable(seq int64, reason string) error {
	now := ms(t.now)
	var id, u string
	err := t.queryRow(`UPDATE webhooks SET enabled = 0, disabled_reason = ?, disabled_at = ?, updated_at = ?,
		disabled_event_seq = (SELECT COALESCE(MAX(seq), 0) FROM webhook_events) WHERE seq = ? AND enabled = 1 RETURNING id, url`,
		reason, now, now, seq).Scan(&id, &u)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("webhook: disable webhook: %w", err)
	}
	if err := t.cancelPending(seq, "webhook disabled"); err != nil {
		return err
	}
	if err := t.registryChanged(); err != nil {
		return err
	}
	ev := WebhookDisabled{WebhookID: id, URL: u, Reason: reason, At: fromMS(now)}
	if cb := t.s.onDisable; cb != nil {
		t.afterCommit(func() {
			t.s.callbacks.Add(1)
			go func() {
				defer t.s.callbacks.Done()
				cb(ev)
			}()
		})
	}
	return nil
}

func (t *wtx) cancelPending(seq int64, why string) error {
	res, err := t.exec(`UPDATE webhook_deliveries SET status = 3, updated_at = ?, last_error = ? WHERE webhook_seq = ? AND status = 0`, ms(t.now), why, seq)
	if err != nil {
		return fmt.Errorf("webhook: cancel pending deliveries: %w", err)
	}
	n, _ := res.RowsAffected()
	t.count(cCancelled, n)
	t.afterCommit(func() { t.s.off.Store(seq, struct{}{}) })
	return nil
}

// isOff reports whether this process disabled or deleted the webhook since
// it started: a worker holding one of its deliveries, claimed just before,
// then drops it instead of sending it.
func (s *store) isOff(seq int64) bool {
	_, off := s.off.Load(seq)
	return off
}

// dropped records that a claimed delivery of a webhook disabled meanwhile
// was not attempted: its claim is not counted.
func (t *wtx) dropped(id int64) error {
	_, err := t.exec(t.s.pick(`UPDATE webhook_deliveries SET attempts = MAX(attempts - 1, 0), leased = 0 WHERE id = ? AND status = 3`,
		`UPDATE webhook_deliveries SET attempts = GREATEST(attempts - 1, 0), leased = 0 WHERE id = ? AND status = 3`), id)
	return err
}

// ---------------------------------------------------------------------------
// A small cache of event payloads, so that a fan-out to many webhooks reads
// the payload once.

type cachedEvent struct {
	seq     int64
	id, typ string
	payload []byte
}

type payloadCache struct {
	max, size int
	m         map[int64]*cachedEvent
	order     []int64 // insertion order, for eviction
}

func newPayloadCache(max int) *payloadCache {
	return &payloadCache{max: max, m: make(map[int64]*cachedEvent)}
}

func (c *payloadCache) get(seq int64) *cachedEvent { return c.m[seq] }

func (c *payloadCache) put(ev *cachedEvent) {
	c.m[ev.seq] = ev
	c.order = append(c.order, ev.seq)
	c.size += len(ev.payload) + len(ev.id) + 64
	for c.size > c.max && len(c.order) > 0 {
		old := c.order[0]
		c.order = c.order[1:]
		if e := c.m[old]; e != nil {
			c.size -= len(e.payload) + len(e.id) + 64
			delete(c.m, old)
		}
	}
	if len(c.order) > 4096 && cap(c.order) > 2*len(c.order) {
		c.order = append([]int64(nil), c.order...)
	}
}

func (c *payloadCache) reset() {
	c.m = make(map[int64]*cachedEvent)
	c.order = nil
	c.size = 0
}

// boolInt stores a bool as the INTEGER both dialects use.
func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
