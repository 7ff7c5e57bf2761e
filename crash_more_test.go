package webhook

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sparc-webhooks/webhook/internal/store"
)

// childModeEnv selects a mode of the child process other than childMain's
// original one; see childMode.
const childModeEnv = "WEBHOOK_TEST_MODE"

// childConfigs are the configurations of the child modes. The parent uses
// the same one when it opens the database itself.
var childConfigs = map[string]func() Config{
	"churn":  churnConfig,
	"poison": poisonConfig,
}

// churnConfig is crashConfig: killed children's deliveries are claimed
// again after a 3-second lease.
func churnConfig() Config { return crashConfig() }

// poisonConfig has a short lease and three attempts in all.
func poisonConfig() Config {
	cfg := testConfig()
	cfg.AttemptTimeout = time.Second
	cfg.LeaseDuration = 3 * time.Second
	cfg.MaxInFlightPerWebhook = 4
	cfg.RetryPolicy = &ScheduleRetryPolicy{Schedule: []time.Duration{20 * time.Millisecond, 20 * time.Millisecond}}
	return cfg
}

// childMode runs in a child process started by startModeChild. It opens
// WEBHOOK_TEST_DB with the mode's configuration (and WEBHOOK_TEST_WORKERS
// workers, when set), prints "ready", publishes
// WEBHOOK_TEST_EVENTS events named WEBHOOK_TEST_PREFIX-<i> from 8
// goroutines, printing "published <id>" after each Publish that returned
// nil, prints "done" and delivers until it is killed.
func childMode(mode string) int {
	newConfig, ok := childConfigs[mode]
	if !ok {
		fmt.Println("unknown mode:", mode)
		return 2
	}
	cfg := newConfig()
	if v := os.Getenv("WEBHOOK_TEST_WORKERS"); v != "" {
		cfg.Workers, _ = strconv.Atoi(v)
	}
	ctx := context.Background()
	d, err := Open(ctx, os.Getenv("WEBHOOK_TEST_DB"), cfg)
	if err != nil {
		fmt.Println("open:", err)
		return 1
	}
	fmt.Println("ready")
	n, _ := strconv.Atoi(os.Getenv("WEBHOOK_TEST_EVENTS"))
	prefix := os.Getenv("WEBHOOK_TEST_PREFIX")
	var wg sync.WaitGroup
	var mu sync.Mutex
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				pub, err := d.Publish(ctx, Event{ID: fmt.Sprintf("%s-%d", prefix, i), Type: EventJobComplete})
				mu.Lock()
				if err != nil {
					fmt.Println("publish:", err)
				} else {
					fmt.Println("published", pub.EventID)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fmt.Println("done")
	select {} // deliver until killed
}

// startModeChild starts a child process in mode on db, with env added to
// its environment.
func startModeChild(t *testing.T, mode, db, prefix string, events int, env ...string) *child {
	t.Helper()
	return startTestChild(t, append([]string{childModeEnv + "=" + mode, "WEBHOOK_TEST_DB=" + db,
		"WEBHOOK_TEST_PREFIX=" + prefix, fmt.Sprintf("WEBHOOK_TEST_EVENTS=%d", events)}, env...)...)
}

// read collects the child's output until it ends.
func (c *child) read(out io.Reader) {
	defer close(c.done)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if id, ok := strings.CutPrefix(line, "published "); ok {
			c.mu.Lock()
			c.published = append(c.published, id)
			c.mu.Unlock()
		}
		select {
		case c.lines <- line:
		default:
		}
	}
}

// waitLine waits until the child prints want, failing on an error line
// or when the child ends first.
func (c *child) waitLine(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case line := <-c.lines:
			if line == want {
				return
			}
			require.False(t, strings.HasPrefix(line, "open:") || strings.HasPrefix(line, "unknown mode:"), "child: %s", line)
		case <-c.done:
			t.Fatalf("the child ended before printing %q", want)
		case <-timeout:
			t.Fatalf("the child did not print %q within 30s", want)
		}
	}
}

// tally is a loopback receiver that counts the events it gets, checks
// their signatures, and that the webhook-id header is the envelope's id.
type tally struct {
	srv    *httptest.Server
	secret string
	mu     sync.Mutex
	counts map[string]int
	bad    []string // what was wrong with a request
	answer func(id string, w http.ResponseWriter, r *http.Request) bool
}

// newTally starts a tally; answer, when set, may take over a request by
// returning true.
func newTally(t testing.TB, answer func(id string, w http.ResponseWriter, r *http.Request) bool) *tally {
	t.Helper()
	tl := &tally{counts: map[string]int{}, answer: answer}
	tl.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return // the sender died mid-request
		}
		var env struct {
			ID string `json:"id"`
		}
		id := r.Header.Get(HeaderWebhookID)
		tl.mu.Lock()
		secret := tl.secret
		switch {
		case json.Unmarshal(body, &env) != nil:
			tl.bad = append(tl.bad, fmt.Sprintf("unreadable body %q", body))
		case env.ID != id:
			tl.bad = append(tl.bad, fmt.Sprintf("webhook-id %q carries the envelope of %q", id, env.ID))
		case secret != "" && Verify(secret, r.Header, body) != nil:
			tl.bad = append(tl.bad, fmt.Sprintf("bad signature on %q: %v", id, Verify(secret, r.Header, body)))
		}
		tl.mu.Unlock()
		if tl.answer != nil && tl.answer(id, w, r) {
			return
		}
		tl.mu.Lock()
		tl.counts[id]++
		tl.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(tl.srv.Close)
	return tl
}

func (tl *tally) url() string { return tl.srv.URL + "/hook" }

// setSecret makes the tally verify signatures with secret.
func (tl *tally) setSecret(secret Secret) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.secret = string(secret)
}

func (tl *tally) count(id string) int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.counts[id]
}

func (tl *tally) problems() []string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return append([]string(nil), tl.bad...)
}

// requireConsistent checks the database behind d: integrity, and that
// every event has one delivery per webhook and no delivery lacks its
// event.
// openWatch opens db for reading beside the dispatchers that use it.
func openWatch(db string) (*sql.DB, error) {
	if onPostgres() {
		return sql.Open("pgx", db)
	}
	return sql.Open("sqlite3", "file:"+db+"?_busy_timeout=5000")
}

func requireConsistent(t testing.TB, db *sql.DB, webhooks int) {
	t.Helper()
	if !onPostgres() {
		var ok string
		require.NoError(t, db.QueryRow("PRAGMA integrity_check").Scan(&ok))
		require.Equal(t, "ok", ok)
	}
	rows, err := db.Query(`SELECT e.id, COUNT(d.id) FROM webhook_events e LEFT JOIN webhook_deliveries d ON d.event_seq = e.seq GROUP BY e.seq`)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var id string
		var n int
		require.NoError(t, rows.Scan(&id, &n))
		require.Equal(t, webhooks, n, "event %s has %d deliveries: a fan-out was half-written", id, n)
	}
	require.NoError(t, rows.Err())
	var orphans int
	require.NoError(t, db.QueryRow(`SELECT COUNT(*) FROM webhook_deliveries d LEFT JOIN webhook_events e ON e.seq = d.event_seq WHERE e.seq IS NULL`).Scan(&orphans))
	require.Zero(t, orphans, "deliveries without their event")
}

// storedEvents lists the IDs of the stored events.
func storedEvents(t testing.TB, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query(`SELECT id FROM webhook_events ORDER BY seq`)
	require.NoError(t, err)
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	return ids
}

// Killing the dispatcher with SIGKILL at random moments, again and again,
// while it publishes and delivers loses nothing: every event whose Publish
// returned nil reaches every webhook, every fan-out is whole, duplicates
// carry the same event id, and the database stays intact.
// WEBHOOK_CRASH_ITERATIONS raises the number of kills (default 15).
func TestCrashRandomKillsLoseNothing(t *testing.T) {
	iterations := 15
	if v := os.Getenv("WEBHOOK_CRASH_ITERATIONS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err)
		iterations = n
	}
	const perChild = 40
	db := testDB(t) // in the PostgreSQL run, a schema every child shares
	// The receivers answer after a moment, so that kills find attempts in
	// flight.
	slow := func(string, http.ResponseWriter, *http.Request) bool {
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		return false
	}
	receivers := []*tally{newTally(t, slow), newTally(t, slow)}
	d, err := Open(t.Context(), db, churnConfig())
	require.NoError(t, err)
	for _, rc := range receivers {
		rc.setSecret(register(t, d, rc.url()).Secret)
	}
	require.NoError(t, d.Close(t.Context()))

	var published []string
	killedEarly := 0
	for i := range iterations {
		c := startModeChild(t, "churn", db, fmt.Sprintf("it%d", i), perChild)
		if i%5 == 4 {
			// Now and then, kill it while it may still be opening.
			time.Sleep(time.Duration(rand.IntN(100)) * time.Millisecond)
			killedEarly++
		} else {
			c.waitLine(t, "ready")
			time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		}
		published = append(published, c.kill()...)
	}
	t.Logf("%d kills (%d maybe while opening), %d events reported published", iterations, killedEarly, len(published))

	d = openTestAt(t, db, churnConfig())
	eventually(t, func() bool { return pendingCount(t, d) == 0 }, "deliveries still pending after the restart")

	stored := storedEvents(t, d.st.Reader())
	storedSet := make(map[string]bool, len(stored))
	for _, id := range stored {
		storedSet[id] = true
	}
	for _, id := range published {
		require.True(t, storedSet[id], "event %s was reported published but is not stored", id)
	}
	// Every stored event, a fortiori every published one, reached every
	// webhook.
	for _, id := range stored {
		for i, rc := range receivers {
			require.GreaterOrEqual(t, rc.count(id), 1, "event %s never reached webhook %d", id, i)
		}
	}
	for _, rc := range receivers {
		require.Empty(t, rc.problems())
	}
	requireConsistent(t, d.st.Reader(), len(receivers))

	var interrupted int
	rows, err := d.st.Reader().Query(`SELECT status, last_error, COUNT(*) FROM webhook_deliveries GROUP BY status, last_error`)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var status store.Status
		var n int
		var lastErr string
		require.NoError(t, rows.Scan(&status, &lastErr, &n))
		switch {
		case status == store.Delivered:
		case status == store.Failed && strings.Contains(lastErr, "interrupted"):
			interrupted += n // its attempts all died with their process; it was received all the same (checked above)
		default:
			t.Fatalf("%d deliveries ended as %s (%q)", n, statusFromStore(store.Status(status)), lastErr)
		}
	}
	require.NoError(t, rows.Err())
	var dups int
	for _, rc := range receivers {
		for _, id := range stored {
			dups += rc.count(id) - 1
		}
	}
	t.Logf("%d events stored, %d duplicate requests, %d deliveries failed by interruption", len(stored), dups, interrupted)
}

// A delivery whose attempt kills its process every time still ends: after
// its last attempt it is failed as interrupted, and the other deliveries,
// published between the crashes, all get through.
func TestCrashPoisonDeliveryFails(t *testing.T) {
	tests := []struct {
		name    string
		workers int
		// together publishes the others with the poison, so that some are
		// claimed with it and in flight when it kills the process;
		// otherwise a batch is published after each crash, and the next
		// process delivers it before the poison's lease runs out.
		together bool
	}{
		{"others between crashes", 8, false},
		{"others claimed with the poison, one worker", 1, true},
		{"others claimed with the poison, eight workers", 8, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { testPoisonDelivery(t, tt.workers, tt.together) })
	}
}

func testPoisonDelivery(t *testing.T, workers int, together bool) {
	const batch = 10
	workersEnv := fmt.Sprintf("WEBHOOK_TEST_WORKERS=%d", workers)
	db := testDB(t)
	poisonSeen := make(chan struct{}, 16)
	var mu sync.Mutex
	poisonSends := 0
	rc := newTally(t, func(id string, _ http.ResponseWriter, r *http.Request) bool {
		if id != "poison" {
			return false
		}
		mu.Lock()
		poisonSends++
		mu.Unlock()
		poisonSeen <- struct{}{}
		<-r.Context().Done() // the process dies mid-attempt
		return true
	})
	var others []string
	publish := func(ids ...string) {
		t.Helper()
		cfg := poisonConfig()
		cfg.DisableDelivery = true
		d, err := Open(t.Context(), db, cfg)
		require.NoError(t, err)
		hooks, err := d.List(t.Context())
		require.NoError(t, err)
		if len(hooks) == 0 {
			rc.setSecret(register(t, d, rc.url()).Secret)
		}
		for _, id := range ids {
			_, err := d.Publish(t.Context(), Event{ID: id, Type: EventJobComplete})
			require.NoError(t, err)
		}
		require.NoError(t, d.Close(t.Context()))
	}
	publishOthers := func(n int) {
		t.Helper()
		var ids []string
		for range n {
			ids = append(ids, fmt.Sprintf("ok-%d", len(others)))
			others = append(others, ids[len(ids)-1])
		}
		publish(ids...)
	}
	publish("poison")
	if together {
		publishOthers(3 * batch)
	}

	// Watch the database from the side while children deliver.
	watch, err := openWatch(db)
	require.NoError(t, err)
	t.Cleanup(func() { watch.Close() })
	poisonStatus := func() (int, int, string) {
		var status, attempts int
		var lastErr string
		require.NoError(t, watch.QueryRow(`SELECT d.status, d.attempts, d.last_error FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq WHERE e.id = 'poison'`).Scan(&status, &attempts, &lastErr))
		return status, attempts, lastErr
	}

	crashes := 0
	for crashes < 3 {
		if !together && crashes > 0 {
			publishOthers(batch)
		}
		c := startModeChild(t, "poison", db, "none", 0, workersEnv)
		select {
		case <-poisonSeen:
			c.kill()
			crashes++
		case <-time.After(30 * time.Second):
			status, attempts, lastErr := poisonStatus()
			t.Fatalf("after %d crashes the poison was not attempted again within 30s (status %s, %d attempts, %q)",
				crashes, statusFromStore(store.Status(status)), attempts, lastErr)
		}
	}
	if !together {
		publishOthers(batch)
	}
	c := startModeChild(t, "poison", db, "none", 0, workersEnv)
	eventually(t, func() bool {
		var pending int
		require.NoError(t, watch.QueryRow(`SELECT COUNT(*) FROM webhook_deliveries WHERE status = 0`).Scan(&pending))
		return pending == 0
	}, "deliveries still pending after %d crashes", crashes)
	c.kill()

	status, attempts, lastErr := poisonStatus()
	require.Equal(t, StatusFailed, statusFromStore(store.Status(status)), "the poison delivery (%q)", lastErr)
	require.Equal(t, 3, attempts, "one attempt and two retries")
	require.Contains(t, lastErr, "interrupted")
	mu.Lock()
	require.Equal(t, 3, poisonSends, "the poison was sent after its last attempt")
	mu.Unlock()

	for _, id := range others {
		var st, attempts int
		var lastErr string
		require.NoError(t, watch.QueryRow(`SELECT d.status, d.attempts, d.last_error FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq WHERE e.id = $1`, id).Scan(&st, &attempts, &lastErr))
		require.Equal(t, StatusDelivered, statusFromStore(store.Status(st)), "event %s, after %d attempts (%q), reached the receiver %d times", id, attempts, lastErr, rc.count(id))
		require.GreaterOrEqual(t, rc.count(id), 1, "event %s never arrived", id)
	}
	require.Len(t, others, 3*batch)
	require.Empty(t, rc.problems())
	requireConsistent(t, watch, 1)
}

// setMaxPageCount sets the writer connection's max_page_count, which makes
// SQLite answer "database or disk is full" beyond it.
func setMaxPageCount(t testing.TB, d *Dispatcher, n int) {
	t.Helper()
	require.NoError(t, d.st.Do(t.Context(), func(t *store.Tx) error {
		_, err := t.Exec(fmt.Sprintf("PRAGMA max_page_count=%d", n))
		return err
	}))
}

// A full disk: Publish returns SQLite's error, what failed is not written
// at all (no event without its deliveries, no delivery without its event),
// and once there is room again the dispatcher carries on.
func TestCrashDiskFull(t *testing.T) {
	skipOnPostgres(t, "SQLite's max_page_count simulates a full disk")
	cfg := testConfig()
	cfg.AttemptTimeout = time.Second
	cfg.LeaseDuration = 2 * time.Second // recordings lost to the full disk are retried soon
	d := openTest(t, cfg)
	receivers := []*tally{newTally(t, nil), newTally(t, nil)}
	for _, rc := range receivers {
		register(t, d, rc.url())
	}
	var pages int
	require.NoError(t, d.st.Reader().QueryRow("PRAGMA page_count").Scan(&pages))
	setMaxPageCount(t, d, pages+64) // 256 KiB more with 4 KiB pages

	data := json.RawMessage(`{"blob":"` + strings.Repeat("z", 60<<10) + `"}`)
	type result struct {
		id  string
		err error
	}
	results := make(chan result, 1000)
	var wg sync.WaitGroup
	for w := range 8 { // concurrent calls share commits: each must fail alone
		wg.Go(func() {
			for i := range 6 {
				id := fmt.Sprintf("big-%d-%d", w, i)
				_, err := d.Publish(t.Context(), Event{ID: id, Type: EventJobComplete, Data: data})
				results <- result{id, err}
			}
		})
	}
	wg.Wait()
	close(results)
	var ok, failed []string
	for r := range results {
		if r.err == nil {
			ok = append(ok, r.id)
			continue
		}
		require.ErrorContains(t, r.err, "full", "Publish %s", r.id)
		failed = append(failed, r.id)
	}
	require.NotEmpty(t, failed, "the disk never filled up")
	t.Logf("%d published, %d refused for a full disk", len(ok), len(failed))

	stored := map[string]bool{}
	for _, id := range storedEvents(t, d.st.Reader()) {
		stored[id] = true
	}
	for _, id := range ok {
		require.True(t, stored[id], "event %s: Publish returned nil but it is not stored", id)
	}
	for _, id := range failed {
		require.False(t, stored[id], "event %s: Publish failed but it is stored", id)
	}
	requireConsistent(t, d.st.Reader(), len(receivers))

	// Room again: the dispatcher carries on, and the failed events can be
	// published now.
	setMaxPageCount(t, d, 1<<30)
	for _, id := range failed {
		_, err := d.Publish(t.Context(), Event{ID: id, Type: EventJobComplete, Data: data})
		require.NoError(t, err)
	}
	eventually(t, func() bool { return pendingCount(t, d) == 0 }, "deliveries still pending")
	for _, id := range append(ok, failed...) {
		for i, rc := range receivers {
			require.GreaterOrEqual(t, rc.count(id), 1, "event %s never reached webhook %d", id, i)
		}
	}
	for _, rc := range receivers {
		require.Empty(t, rc.problems())
	}
	requireConsistent(t, d.st.Reader(), len(receivers))
}

// Another writer holding the database longer than BusyTimeout: Publish
// returns the "database is locked" error, writes nothing, and works again
// once the other writer is done.
func TestCrashDatabaseBusy(t *testing.T) {
	skipOnPostgres(t, "SQLite's file lock makes the database busy")
	cfg := testConfig()
	cfg.BusyTimeout = 200 * time.Millisecond
	d := openTest(t, cfg)
	rc := newTally(t, nil)
	rc.setSecret(register(t, d, rc.url()).Secret)

	other, err := sql.Open("sqlite3", "file:"+d.st.Path()+"?_busy_timeout=5000")
	require.NoError(t, err)
	t.Cleanup(func() { other.Close() })
	conn, err := other.Conn(t.Context())
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(t.Context(), "BEGIN IMMEDIATE")
	require.NoError(t, err)

	_, err = d.Publish(t.Context(), Event{ID: "while-locked", Type: EventJobComplete})
	require.Error(t, err)
	require.Regexp(t, "locked|busy", err.Error())
	_, err = d.Register(t.Context(), Registration{URL: rc.url(), Events: []string{"*"}})
	require.Error(t, err, "Register, too, fails while the database is held")

	_, err = conn.ExecContext(t.Context(), "ROLLBACK")
	require.NoError(t, err)
	require.NotContains(t, storedEvents(t, d.st.Reader()), "while-locked", "a failed Publish wrote its event")
	hooks, err := d.List(t.Context())
	require.NoError(t, err)
	require.Len(t, hooks, 1, "a failed Register wrote its webhook")

	pub, err := d.Publish(t.Context(), Event{ID: "while-locked", Type: EventJobComplete})
	require.NoError(t, err)
	require.False(t, pub.Duplicate)
	require.Equal(t, 1, pub.Deliveries)
	eventually(t, func() bool { return rc.count("while-locked") == 1 }, "the event was not delivered after the lock ended")
	eventually(t, func() bool { return pendingCount(t, d) == 0 }, "deliveries still pending")
	require.Empty(t, rc.problems())
	requireConsistent(t, d.st.Reader(), 1)
}
