package webhook

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"
)

func init() { childConfigs["replica"] = replicaConfig }

// requirePostgres skips a test of PostgreSQL's own behaviour outside the
// PostgreSQL run.
func requirePostgres(t *testing.T) {
	t.Helper()
	if !onPostgres() {
		t.Skipf("runs in the PostgreSQL run of the suite: set %s (see TestPostgres)", postgresDSNEnv)
	}
}

// replicaConfig is the configuration of each process in
// TestPostgresProcesses: crashConfig's 3-second lease, so that a killed
// replica's deliveries are taken over quickly, and 16 workers.
func replicaConfig() Config {
	cfg := crashConfig()
	cfg.Workers = 16
	cfg.Retention = -1
	return cfg
}

// processesDeliveries is the size of TestPostgresProcesses: 100,000
// deliveries unless WEBHOOK_TEST_PROCESSES_DELIVERIES says otherwise (a
// multiple of 10, for its 10 webhooks).
func processesDeliveries(t *testing.T) int {
	n := 100_000
	if v := os.Getenv("WEBHOOK_TEST_PROCESSES_DELIVERIES"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(t, err)
	}
	return n / 10 * 10
}

// overlapReceiver records, for each delivery, how many times it arrived
// and whether it ever arrived while an earlier request for it was still
// being answered: two attempts at once.
type overlapReceiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	seen     map[string]int
	inFlight map[string]int
	overlaps []string
	total    int
	half     chan struct{}
	halfAt   int
	all      chan struct{}
	want     int
}

func newOverlapReceiver(t *testing.T, want int) *overlapReceiver {
	rc := &overlapReceiver{seen: map[string]int{}, inFlight: map[string]int{}, half: make(chan struct{}), all: make(chan struct{}), want: want, halfAt: want / 2}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// One delivery is one event at one webhook: the path names the
		// webhook, webhook-id the event.
		key := r.URL.Path + " " + r.Header.Get(HeaderWebhookID)
		rc.mu.Lock()
		if rc.inFlight[key] > 0 {
			rc.overlaps = append(rc.overlaps, key)
		}
		rc.inFlight[key]++
		rc.seen[key]++
		rc.total++
		if rc.total == rc.halfAt {
			close(rc.half)
		}
		if rc.seen[key] == 1 && len(rc.seen) == rc.want {
			close(rc.all)
		}
		rc.mu.Unlock()
		// A short answer, so that an attempt spans some time in which a
		// second one could overlap it.
		time.Sleep(200 * time.Microsecond)
		w.WriteHeader(http.StatusNoContent)
		rc.mu.Lock()
		rc.inFlight[key]--
		rc.mu.Unlock()
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// Three processes that share one PostgreSQL database deliver 100,000
// deliveries, and one of them is SIGKILLed halfway: every delivery arrives
// at least once, no delivery is attempted by two processes at the same
// time, and the database ends with every delivery delivered.
func TestPostgresProcesses(t *testing.T) {
	requirePostgres(t)
	total := processesDeliveries(t)
	events := total / 10
	db := testDB(t)
	rc := newOverlapReceiver(t, total)

	// The parent publishes and never delivers.
	pcfg := replicaConfig()
	pcfg.DisableDelivery = true
	pub := openTestAt(t, db, pcfg)
	for i := range 10 {
		_, err := pub.Register(t.Context(), Registration{URL: fmt.Sprintf("%s/h%d", rc.srv.URL, i), Events: []string{"*"}})
		require.NoError(t, err)
	}

	// Three replicas, ready before the first event: LISTEN/NOTIFY wakes
	// them as events are published.
	var replicas []*child
	for i := range 3 {
		c := startModeChild(t, "replica", db, fmt.Sprintf("r%d", i), 0)
		for line := range c.lines {
			if line == "ready" {
				break
			}
			require.NotContains(t, line, ":", "replica %d: %s", i, line)
		}
		replicas = append(replicas, c)
	}

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < events; i += 8 {
				res, err := pub.Publish(t.Context(), Event{ID: fmt.Sprintf("evt-%d", i), Type: EventJobComplete})
				if err == nil && res.Deliveries != 10 {
					err = fmt.Errorf("event %d fanned out to %d webhooks", i, res.Deliveries)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	published := time.Since(start)

	select {
	case <-rc.half:
	case <-time.After(5 * time.Minute):
		t.Fatal("half the deliveries did not arrive in 5 minutes")
	}
	replicas[0].kill()
	killedAt := time.Since(start)

	select {
	case <-rc.all:
	case <-time.After(5 * time.Minute):
		rc.mu.Lock()
		n := len(rc.seen)
		rc.mu.Unlock()
		t.Fatalf("only %d of %d deliveries arrived", n, total)
	}
	arrived := time.Since(start)

	// The outcomes are recorded after the answers: wait for the last.
	eventually(t, func() bool {
		var n int
		require.NoError(t, pub.st.Reader().QueryRow(`SELECT COUNT(*) FROM webhook_deliveries WHERE status = 1`).Scan(&n))
		return n == total
	}, "not every delivery recorded as delivered")
	var pending, other int
	require.NoError(t, pub.st.Reader().QueryRow(`SELECT COUNT(*) FILTER (WHERE status = 0), COUNT(*) FILTER (WHERE status NOT IN (0, 1)) FROM webhook_deliveries`).Scan(&pending, &other))
	require.Zero(t, pending)
	require.Zero(t, other, "failed or cancelled deliveries")

	// No two attempts of one delivery overlapped, by the receiver's
	// account and by the database's.
	rc.mu.Lock()
	overlaps := append([]string(nil), rc.overlaps...)
	dups := rc.total - len(rc.seen)
	requests := rc.total
	rc.mu.Unlock()
	require.Empty(t, overlaps, "deliveries attempted twice at the same time")
	var overlapping int
	require.NoError(t, pub.st.Reader().QueryRow(`SELECT COUNT(*) FROM webhook_attempts a JOIN webhook_attempts b
		ON a.delivery_id = b.delivery_id AND a.id < b.id
		AND b.started_at * 1000 + 1000 <= a.started_at * 1000 + a.duration_us
		AND a.started_at * 1000 + 1000 <= b.started_at * 1000 + b.duration_us`).Scan(&overlapping)) // started_at in ms (1 ms of slack), durations in µs
	require.Zero(t, overlapping, "recorded attempts that overlap")

	// Only the deliveries the killed replica had sent, without recording
	// the answer, arrive twice: at most what its workers held.
	held := replicaConfig().Workers * prefetch
	require.LessOrEqual(t, dups, held, "duplicates beyond what the killed replica held")

	t.Logf("%d deliveries by 3 processes, one SIGKILLed after %d: published in %s, killed at %s, all arrived at %s (%.0f/s); %d requests, %d duplicates, 0 overlaps",
		total, total/2, published.Round(time.Millisecond), killedAt.Round(time.Millisecond), arrived.Round(time.Millisecond),
		float64(total)/arrived.Seconds(), requests, dups)
}

// Two dispatchers that share one PostgreSQL database, as two replicas
// would, together keep a webhook's cap (MaxInFlightPerWebhook): the
// receiver never has more requests in progress than the cap of one.
func TestPostgresCapAcrossProcesses(t *testing.T) {
	requirePostgres(t)
	const limit, events = 2, 40
	var mu sync.Mutex
	var now, peak, got int
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		now++
		peak = max(peak, now)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		now--
		got++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	db := testDB(t)
	cfg := testConfig()
	cfg.Workers = 8
	cfg.MaxInFlightPerWebhook = limit
	a := openTestAt(t, db, cfg)
	b := openTestAt(t, db, cfg)
	register(t, a, rc.url())
	for i := range events {
		d := a
		if i%2 == 1 {
			d = b
		}
		_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
		require.NoError(t, err)
	}
	eventually(t, func() bool { return pendingCount(t, a) == 0 }, "deliveries still pending")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, events, got)
	require.LessOrEqual(t, peak, limit, "requests in progress at once, by both dispatchers")
	require.Equal(t, limit, peak, "the cap was reached, so the test means something")
}

// With PostgreSQL, one process at a time prunes: while another holds the
// retention lock, prune deletes nothing; once it is free, prune works.
func TestPostgresRetentionOneAtATime(t *testing.T) {
	requirePostgres(t)
	cfg := testConfig()
	cfg.Retention = -1
	d := openTest(t, cfg)
	rc := newReceiver(t, nil)
	register(t, d, rc.url())
	for range 5 {
		_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
		require.NoError(t, err)
	}
	rc.waitFor(5)
	eventually(t, func() bool { return pendingCount(t, d) == 0 }, "deliveries still pending")

	// Another process's prune, as far as the database can tell.
	other, err := d.st.Reader().Conn(t.Context())
	require.NoError(t, err)
	defer other.Close()
	var ok bool
	require.NoError(t, other.QueryRowContext(t.Context(), `SELECT pg_try_advisory_lock($1, 0)`, retentionLock(d)).Scan(&ok))
	require.True(t, ok)
	n, err := d.prune(t.Context(), time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Zero(t, n, "pruned while another process held the lock")

	_, err = other.ExecContext(t.Context(), `SELECT pg_advisory_unlock($1, 0)`, retentionLock(d))
	require.NoError(t, err)
	n, err = d.prune(t.Context(), time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, 4, n, "every settled delivery but the newest")
}

// Two dispatchers on one PostgreSQL database share a webhook's circuit
// breaker: once it opens, neither sends during the cool-down, and after it
// one probe at a time goes out, from either. With a breaker per process,
// the process whose breaker never opened would send every held delivery
// as soon as the cool-down ended.
func TestPostgresBreakerAcrossProcesses(t *testing.T) {
	requirePostgres(t)
	cfg := testConfig()
	cfg.Workers = 4
	cfg.MaxInFlightPerWebhook = 4
	cfg.BreakerThreshold = 3
	cfg.BreakerCooldown = 400 * time.Millisecond
	cfg.BreakerMaxCooldown = 400 * time.Millisecond
	sched := make([]time.Duration, 50)
	for i := range sched {
		sched[i] = time.Millisecond
	}
	cfg.RetryPolicy = &ScheduleRetryPolicy{Schedule: sched}
	logs := &logBuffer{}
	cfg.Logger = logs.logger()

	var opened atomic.Bool
	var after gauge // requests that arrived once the breaker had opened
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		if opened.Load() {
			after.enter()
			defer after.leave()
			time.Sleep(30 * time.Millisecond) // let a second probe overlap, if one were sent
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	db := testDB(t)
	a := openTestAt(t, db, cfg)
	register(t, a, rc.url())
	for range 20 {
		_, err := a.Publish(t.Context(), Event{Type: EventJobComplete})
		require.NoError(t, err)
	}
	eventually(t, func() bool { return containsLine(logs.String(), "circuit breaker open") }, "the breaker never opened")
	// A second replica starts while the breaker is open. It has seen no
	// failure itself, and would not open a breaker of its own before many
	// (its threshold is high): it must keep to the shared one.
	bcfg := cfg
	bcfg.BreakerThreshold = 1000
	b := openTestAt(t, db, bcfg)
	_, err := b.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond) // attempts in flight when it opened end
	opened.Store(true)
	time.Sleep(3 * cfg.BreakerCooldown)
	_, most, total := after.read()
	require.LessOrEqual(t, most, 1, "one probe at a time, across both dispatchers")
	require.GreaterOrEqual(t, total, 1, "a probe went out after the cool-down")
	require.LessOrEqual(t, total, 4, "about one probe per cool-down (3 in this window), not a flood")
	require.Equal(t, 21, pendingCount(t, a), "held deliveries keep their attempts")
}

// A host that owns a pgx pool hands it to New (through stdlib.OpenDBFromPool)
// and publishes inside its own PostgreSQL transaction: a rolled-back
// event is never sent, a committed one is, once.
func TestPostgresNewWithPoolAndPublishTx(t *testing.T) {
	requirePostgres(t)
	pool, err := pgxpool.New(t.Context(), testDB(t))
	require.NoError(t, err)
	defer pool.Close()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	cfg := testConfig()
	cfg.PollInterval = time.Hour // only a NOTIFY wakes the workers in time
	d, err := New(t.Context(), db, cfg)
	require.NoError(t, err)
	defer func() { require.NoError(t, d.Close(context.Background())) }()
	time.Sleep(100 * time.Millisecond) // the first poll, at the start, is over
	checkPublishTx(t, db, d, false)    // no Notify: the commit's NOTIFY wakes the workers
}

// New refuses a PostgreSQL pool too small for the two connections the
// dispatcher holds for good and one more.
func TestPostgresNewNeedsThreeConnections(t *testing.T) {
	requirePostgres(t)
	db, err := sql.Open("pgx", testDB(t))
	require.NoError(t, err)
	defer db.Close()
	db.SetMaxOpenConns(2)
	_, err = New(t.Context(), db, testConfig())
	require.ErrorIs(t, err, ErrInvalid)
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, "db", ve.Field)

	db.SetMaxOpenConns(3)
	d, err := New(t.Context(), db, testConfig())
	require.NoError(t, err)
	require.NoError(t, d.Close(t.Context()))
}

// A PostgreSQL URL's password never shows in Open's errors, whether the
// URL does not parse or the server cannot be reached (nothing listens on
// port 1 of loopback).
func TestPostgresOpenErrorsHideThePassword(t *testing.T) {
	for _, u := range []string{
		"postgres://user:hunter2-secret@127.0.0.1:1/db?sslmode=disable&connect_timeout=2",
		"postgres://user:hunter2-secret@127.0.0.1:1/db?sslmode=nonsense",
	} {
		d, err := Open(t.Context(), u, testConfig())
		require.Error(t, err)
		require.Nil(t, d)
		require.NotContains(t, err.Error(), "hunter2", "%v", err)
		require.NotContains(t, fmt.Sprintf("%+v", err), "hunter2")
	}
}

// The LISTEN connection is the only thing that wakes a replica for work
// another replica published (besides the poll). When the server ends it,
// the listener says so in the log, reconnects, and notifications wake the
// workers again.
func TestPostgresListenerReconnects(t *testing.T) {
	requirePostgres(t)
	db := testDB(t)
	logs := &logBuffer{}
	cfg := testConfig()
	cfg.PollInterval = time.Hour // only a NOTIFY wakes the workers in time
	cfg.Logger = logs.logger()
	a := openTestAt(t, db, cfg)
	pcfg := testConfig()
	pcfg.DisableDelivery = true // publishes only: its commits must wake a
	b := openTestAt(t, db, pcfg)
	rc := newReceiver(t, nil)
	register(t, b, rc.url())

	listener := func() (pid int) {
		err := a.st.Reader().QueryRow(`SELECT pid FROM pg_stat_activity WHERE query = 'LISTEN ' || $1`, listenChannel(a)).Scan(&pid)
		if err != nil {
			return 0
		}
		return pid
	}
	publish := func(n int) {
		t.Helper()
		_, err := b.Publish(t.Context(), Event{Type: EventJobComplete})
		require.NoError(t, err)
		rc.waitFor(n)
	}
	eventually(t, func() bool { return listener() != 0 }, "no LISTEN connection")
	publish(1)

	old := listener()
	var ended bool
	require.NoError(t, b.st.Reader().QueryRow(`SELECT pg_terminate_backend($1)`, old).Scan(&ended))
	require.True(t, ended)
	eventually(t, func() bool { return containsLine(logs.String(), "listening for PostgreSQL notifications failed") }, "the lost listener went unnoticed")
	eventually(t, func() bool { p := listener(); return p != 0 && p != old }, "the listener did not reconnect")
	publish(2)
}

func retentionLock(d *Dispatcher) int32 { r, _ := d.st.Locks(); return r }

func listenChannel(d *Dispatcher) string { _, c := d.st.Locks(); return c }
