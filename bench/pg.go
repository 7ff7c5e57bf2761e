package main

// The pg mode: the library on PostgreSQL, drained by 1, 2 and 3 processes
// that share one database, as replicas of a service would. It runs only
// when a PostgreSQL DSN is given (-pg, or WEBHOOK_BENCH_POSTGRES_DSN, or
// WEBHOOK_TEST_POSTGRES_DSN); without one it is skipped and the report
// says so.
//
// Every run gets a fresh schema (bench_<pid>_<n>, dropped afterwards). A
// publish-only dispatcher (DisableDelivery) on it registers the 10
// webhooks and publishes the backlog, as in the webhook mode. Then N child
// processes (this binary with -pg-drain) start and say READY; the parent
// writes GO to each and starts the clock; each child opens a delivering
// dispatcher with the same Config as the webhook mode (each process gets
// the full -workers, as a replica would) and delivers until its standard
// input closes. The clock stops when the receiver has answered every
// delivery and Stats, read by the parent's own publish-only dispatcher
// from the shared database, reports none pending and all delivered.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver for the schema's CREATE and DROP
	"github.com/sparc-webhooks/webhook"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// pgDSNEnvs are the environment variables that name a PostgreSQL DSN when
// -pg is not given, in order.
var pgDSNEnvs = []string{"WEBHOOK_BENCH_POSTGRES_DSN", "WEBHOOK_TEST_POSTGRES_DSN"}

// pgProcs are the numbers of drain processes compared.
var pgProcs = []int{1, 2, 3}

// pgDSN returns the DSN the pg mode uses and where it came from, or "" when
// none is set.
func pgDSN(flagValue string) (dsn, from string) {
	if flagValue != "" {
		return flagValue, "-pg"
	}
	for _, env := range pgDSNEnvs {
		if v := os.Getenv(env); v != "" {
			return v, env
		}
	}
	return "", ""
}

// pgSkipReason says why the pg mode does not run without a DSN.
func pgSkipReason() string {
	return "no PostgreSQL DSN: give -pg postgres://user@host:port/db?sslmode=disable or set " +
		strings.Join(pgDSNEnvs, " or ")
}

// withSearchPath returns dsn with its search_path set to schema: pgx
// passes unknown URL parameters to the server as run-time settings.
func withSearchPath(dsn, schema string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// pgRedact hides a DSN's password, for progress lines.
func pgRedact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return u.Redacted()
}

// runPGMode runs the pg mode in rounds, each round 1, 2 and 3 processes in
// turn, and reports each one's median rate, the medians of the per-round
// ratios to 1 process, the smallest share one process had of the
// deliveries, and the duplicates the receiver saw.
func runPGMode(ctx context.Context, rep *report, rc *receiver, sz sizes, rounds, workers int, dsn string) error {
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return fmt.Errorf("pg: the DSN must be a postgres:// URL (webhook.Open takes only those), got %q", pgRedact(dsn))
	}
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		return fmt.Errorf("pg: %w", err)
	}
	defer admin.Close()
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = admin.PingContext(pingCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("pg: connect to %s: %w", pgRedact(dsn), err)
	}
	var version string
	if err := admin.QueryRowContext(ctx, "SHOW server_version").Scan(&version); err != nil {
		return fmt.Errorf("pg: %w", err)
	}
	progress("pg: PostgreSQL %s at %s", version, pgRedact(dsn))

	hooks, err := makeHooks(rc, sz.hooks, false)
	if err != nil {
		return err
	}
	total := int64(sz.pgEvents * sz.hooks)
	rep.sizes["pg_deliveries"] = total
	rep.sizes["pg_processes"] = "1,2,3"
	rep.sizes["pg_server"] = version

	var dups, logged int64
	for r := 1; r <= rounds; r++ {
		var one float64
		for _, n := range pgProcs {
			res, err := runPGRound(ctx, admin, dsn, rc, hooks, sz.pgEvents, workers, n)
			if err != nil {
				return err
			}
			v := rate(total, res.elapsed)
			dups += res.duplicates
			logged += res.logged
			k := fmt.Sprintf("pg%d", n)
			rep.round(k+"_per_s", v)
			if n == 1 {
				one = v
			} else {
				rep.round(k+"_vs_pg1", v/one)
				rep.round(k+"_min_share", float64(slices.Min(res.perProc))/float64(total))
			}
			progress("round %d: pg, %d process(es) %6.0f deliveries/s (%d in %.2f s; delivered per process %s; Open took up to %.0f ms)",
				r, n, v, total, res.elapsed.Seconds(), joinInts(res.perProc), res.maxOpenMS)
		}
	}

	med := func(k string) float64 { return median(rep.rounds[k]) }
	for _, n := range pgProcs {
		label := "drain throughput, 1 process"
		if n > 1 {
			label = fmt.Sprintf("drain throughput, %d processes", n)
		}
		rep.add(fmt.Sprintf("pg%d_per_s", n), "pg", label, "deliveries/s", med(fmt.Sprintf("pg%d_per_s", n)))
	}
	for _, n := range pgProcs[1:] {
		rep.add(fmt.Sprintf("pg%d_vs_pg1", n), "pg", fmt.Sprintf("%d processes / 1", n), "ratio", med(fmt.Sprintf("pg%d_vs_pg1", n)))
	}
	for _, n := range pgProcs[1:] {
		rep.add(fmt.Sprintf("pg%d_min_share", n), "pg", fmt.Sprintf("%d processes: smallest one's share", n), "fraction", med(fmt.Sprintf("pg%d_min_share", n)))
	}
	rep.addZeroCount("pg_duplicates", "pg", "duplicate deliveries (sum of all runs)", "requests", float64(dups))
	rep.addZeroCount("pg_logged", "pg", "warnings and errors the library logged (sum)", "records", float64(logged))
	return nil
}

func joinInts(xs []int64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatInt(x, 10)
	}
	return strings.Join(parts, "/")
}

// pgResult is one run of the pg mode.
type pgResult struct {
	elapsed    time.Duration
	perProc    []int64 // deliveries each process settled as delivered
	duplicates int64   // requests the receiver had answered before
	maxOpenMS  float64 // the slowest child's webhook.Open, which the clock includes
	logged     int64   // warnings and errors the children's dispatchers logged
}

// pgSchemaSeq numbers this process's schemas.
var pgSchemaSeq atomic.Int64

// runPGRound is one run: a fresh schema with the backlog, drained by procs
// child processes.
func runPGRound(ctx context.Context, admin *sql.DB, dsn string, rc *receiver, hooks []hook, events, workers, procs int) (res pgResult, err error) {
	schema := fmt.Sprintf("bench_%d_%d", os.Getpid(), pgSchemaSeq.Add(1))
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		return res, fmt.Errorf("pg: create schema: %w", err)
	}
	defer func() {
		dropCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, derr := admin.ExecContext(dropCtx, "DROP SCHEMA "+schema+" CASCADE"); derr != nil && err == nil {
			err = fmt.Errorf("pg: drop schema %s: %w", schema, derr)
		}
	}()
	u, err := withSearchPath(dsn, schema)
	if err != nil {
		return res, fmt.Errorf("pg: %w", err)
	}
	want := int64(events * len(hooks))
	cfg := libConfig(workers)
	if err := buildBacklog(ctx, u, cfg, hooks, events); err != nil {
		return res, fmt.Errorf("pg: %w", err)
	}

	// The parent's own view of the shared database, for Stats: a
	// publish-only dispatcher, opened before the clock starts.
	obsCfg := cfg
	obsCfg.DisableDelivery = true
	obs, err := webhook.Open(ctx, u, obsCfg)
	if err != nil {
		return res, fmt.Errorf("pg: open the parent's publish-only dispatcher: %w", err)
	}
	defer obs.Close(context.Background())
	if s, err := obs.Stats(ctx); err != nil {
		return res, fmt.Errorf("pg: %w", err)
	} else if s.Pending != want {
		return res, fmt.Errorf("pg: backlog has %d pending deliveries, want %d", s.Pending, want)
	}
	if err := rc.resetTracking(); err != nil {
		return res, err
	}

	kids, err := startPGDrains(ctx, u, workers, procs)
	defer func() {
		for _, k := range kids {
			k.kill()
		}
	}()
	if err != nil {
		return res, err
	}

	// A child that exits before it is told to stop ends the wait.
	waitCtx, cancelWait := context.WithCancelCause(ctx)
	defer cancelWait(nil)
	for i, k := range kids {
		go func() {
			select {
			case <-k.exited:
				cancelWait(fmt.Errorf("pg: drain process %d of %d exited early: %v", i+1, procs, k.waitErr))
			case <-waitCtx.Done():
			}
		}()
	}

	start := time.Now()
	for _, k := range kids {
		if _, err := io.WriteString(k.stdin, "GO\n"); err != nil {
			return res, fmt.Errorf("pg: start drain process: %w", err)
		}
	}
	var st webhook.Stats
	res.elapsed, err = func() (time.Duration, error) {
		if _, err := rc.waitFor(waitCtx, want, drainTimeout(want)); err != nil {
			return 0, err
		}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			st, err = obs.Stats(waitCtx)
			if err != nil {
				return 0, err
			}
			if st.Delivered >= want && st.Pending == 0 {
				return time.Since(start), nil
			}
			select {
			case <-waitCtx.Done():
				return 0, waitCtx.Err()
			case <-tick.C:
			}
		}
	}()
	cancelWait(nil)
	if err != nil {
		if cause := context.Cause(waitCtx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause
		}
		return res, fmt.Errorf("pg x%d: %w", procs, err)
	}

	// Stop the children: each closes its dispatcher and says what it did.
	for i, k := range kids {
		r, err := k.stop()
		if err != nil {
			return res, fmt.Errorf("pg x%d: drain process %d: %w", procs, i+1, err)
		}
		res.perProc = append(res.perProc, r.Delivered)
		res.maxOpenMS = max(res.maxOpenMS, r.OpenMS)
		res.logged += r.Logged
	}
	kids = nil

	// Check the work: every delivery arrived, signed and whole, once.
	c, err := rc.counts()
	if err != nil {
		return res, err
	}
	res.duplicates = c.Duplicates
	if res.logged > 0 {
		progress("pg x%d: WARNING: the drain processes' dispatchers logged %d warnings or errors (above, on stderr)", procs, res.logged)
	}
	if c.Duplicates > 0 {
		progress("pg x%d: WARNING: the receiver got %d duplicate requests (%d requests for %d deliveries)", procs, c.Duplicates, c.OK, want)
	}
	var sum int64
	for _, n := range res.perProc {
		sum += n
	}
	switch {
	case c.OK-c.Duplicates != want:
		return res, fmt.Errorf("pg x%d: receiver answered %d distinct deliveries, want %d", procs, c.OK-c.Duplicates, want)
	case c.Unsigned != 0:
		return res, fmt.Errorf("pg x%d: receiver got %d requests without signature headers", procs, c.Unsigned)
	case c.Bytes != c.OK*payloadSize:
		return res, fmt.Errorf("pg x%d: receiver read %d body bytes for %d requests, want %d each", procs, c.Bytes, c.OK, payloadSize)
	case st.AttemptsFailed != 0:
		return res, fmt.Errorf("pg x%d: stats: %d failed attempts, want 0", procs, st.AttemptsFailed)
	case c.Duplicates == 0 && (st.Delivered != want || sum != want):
		return res, fmt.Errorf("pg x%d: stats count %d delivered and the processes %d (%s), want %d", procs, st.Delivered, sum, joinInts(res.perProc), want)
	}
	return res, nil
}

// pgDrainResult is what a drain child reports when it stops.
type pgDrainResult struct {
	Delivered int64   `json:"delivered"`    // deliveries this process settled as delivered
	Attempts  int64   `json:"attempts"`     // attempts this process made
	OpenMS    float64 `json:"open_ms"`      // how long webhook.Open took
	CloseMS   float64 `json:"close_ms"`     // how long Close took
	PeakRSS   int64   `json:"peak_rss_kib"` // VmHWM at the end
	Elapsed   float64 `json:"elapsed_ms"`   // from GO to the stop
	Logged    int64   `json:"logged"`       // warnings and errors the library logged
	Error     string  `json:"error,omitempty"`
}

// pgKid is the parent's handle on one drain child.
type pgKid struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	lines   chan string
	exited  chan struct{}
	waitErr error // set before exited closes
}

// startPGDrains starts procs drain children on the database at u and waits
// until each says READY. On error it returns the children it started, for
// the caller to kill.
func startPGDrains(ctx context.Context, u string, workers, procs int) ([]*pgKid, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var kids []*pgKid
	for i := range procs {
		cmd := exec.CommandContext(ctx, self, "-pg-drain", "-db", u, "-workers", strconv.Itoa(workers))
		cmd.Stderr = os.Stderr
		lw := &lineWriter{lines: make(chan string, 16)}
		cmd.Stdout = lw
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return kids, err
		}
		if err := cmd.Start(); err != nil {
			return kids, fmt.Errorf("pg: start drain process %d: %w", i+1, err)
		}
		k := &pgKid{cmd: cmd, stdin: stdin, lines: lw.lines, exited: make(chan struct{})}
		go func() {
			k.waitErr = cmd.Wait()
			close(k.exited)
		}()
		kids = append(kids, k)
	}
	for i, k := range kids {
		select {
		case line := <-k.lines:
			if line != "READY" {
				return kids, fmt.Errorf("pg: drain process %d said %q, want READY", i+1, line)
			}
		case <-k.exited:
			return kids, fmt.Errorf("pg: drain process %d exited before READY: %v", i+1, k.waitErr)
		case <-time.After(30 * time.Second):
			return kids, fmt.Errorf("pg: drain process %d did not say READY within 30 s", i+1)
		}
	}
	return kids, nil
}

// stop closes the child's standard input, which tells it to close its
// dispatcher, and reads its result.
func (k *pgKid) stop() (pgDrainResult, error) {
	k.stdin.Close()
	var r pgDrainResult
	select {
	case <-k.exited:
	case <-time.After(time.Minute):
		return r, errors.New("did not exit within a minute of being stopped")
	}
	var line string
	select {
	case line = <-k.lines:
	default:
	}
	if k.waitErr != nil {
		return r, fmt.Errorf("exited: %v (said %q)", k.waitErr, line)
	}
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		return r, fmt.Errorf("said %q: %w", line, err)
	}
	if r.Error != "" {
		return r, errors.New(r.Error)
	}
	return r, nil
}

// kill ends a child that is still running (after an error) and waits for
// it.
func (k *pgKid) kill() {
	k.stdin.Close()
	select {
	case <-k.exited:
		return
	case <-time.After(5 * time.Second):
	}
	k.cmd.Process.Kill()
	<-k.exited
}

// lineWriter hands each complete line written to it to lines. exec's copy
// goroutine is its only writer.
type lineWriter struct {
	buf   bytes.Buffer
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	for {
		i := bytes.IndexByte(w.buf.Bytes(), '\n')
		if i < 0 {
			return len(p), nil
		}
		line := strings.TrimSpace(string(w.buf.Next(i + 1)))
		select {
		case w.lines <- line:
		default: // nobody reads that much: drop it
		}
	}
}

// runPGDrain is the body of a drain child: it says READY, waits for GO,
// opens a delivering dispatcher on the database at u, and delivers until
// its standard input closes; then it closes the dispatcher and prints a
// pgDrainResult as JSON.
func runPGDrain(u string, workers int) error {
	fmt.Println("READY")
	in := make([]byte, 3)
	if _, err := io.ReadFull(os.Stdin, in); err != nil || string(in) != "GO\n" {
		return fmt.Errorf("pg drain: wanted GO on stdin, got %q (%v)", in, err)
	}
	start := time.Now()
	mp := &countingMeterProvider{}
	logged := &countingHandler{n: new(atomic.Int64), Handler: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})}
	cfg := libConfig(workers)
	cfg.MeterProvider = mp
	cfg.Logger = slog.New(logged).With("pg_drain_pid", os.Getpid())
	var r pgDrainResult
	d, err := webhook.Open(context.Background(), u, cfg)
	r.OpenMS = ms(time.Since(start))
	if err != nil {
		return fmt.Errorf("pg drain: open delivering dispatcher: %w", err)
	}
	io.Copy(io.Discard, os.Stdin) // until the parent closes it (or exits)
	r.Elapsed = ms(time.Since(start))
	closeStart := time.Now()
	closeCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Close(closeCtx); err != nil {
		r.Error = fmt.Sprintf("close: %v", err)
	}
	r.CloseMS = ms(time.Since(closeStart))
	r.Delivered = mp.delivered.Load()
	r.Attempts = mp.attempts.Load()
	r.Logged = logged.n.Load()
	r.PeakRSS, _ = peakRSSKiB()
	return json.NewEncoder(os.Stdout).Encode(r)
}

// countingHandler passes the library's log records on (to stderr) and
// counts them. The drain children log at warning level and above: the
// library then logs every failed attempt and every failure to record one,
// and in this bench there should be none.
type countingHandler struct {
	slog.Handler
	n *atomic.Int64
}

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.n.Add(1)
	return h.Handler.Handle(ctx, r)
}

func (h *countingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &countingHandler{Handler: h.Handler.WithAttrs(attrs), n: h.n}
}

func (h *countingHandler) WithGroup(name string) slog.Handler {
	return &countingHandler{Handler: h.Handler.WithGroup(name), n: h.n}
}

// countingMeterProvider is an OpenTelemetry MeterProvider that counts, in
// this process, the deliveries settled as delivered (webhook.deliveries
// with outcome=delivered) and the attempts (webhook.attempts), so that each
// drain process can say how much of the work it did: Stats cannot, since
// on PostgreSQL it reads the counters every process shares. Everything
// else is a no-op, and its gauges' callbacks are never called.
type countingMeterProvider struct {
	noop.MeterProvider
	delivered atomic.Int64
	attempts  atomic.Int64
}

func (p *countingMeterProvider) Meter(string, ...metric.MeterOption) metric.Meter {
	return countingMeter{p: p}
}

type countingMeter struct {
	noop.Meter
	p *countingMeterProvider
}

func (m countingMeter) Int64Counter(name string, _ ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	switch name {
	case "webhook.deliveries":
		return countingCounter{n: &m.p.delivered, onlyOutcome: "delivered"}, nil
	case "webhook.attempts":
		return countingCounter{n: &m.p.attempts}, nil
	}
	return noop.Int64Counter{}, nil
}

type countingCounter struct {
	noop.Int64Counter
	n           *atomic.Int64
	onlyOutcome string // when set, only adds with this outcome attribute count
}

func (c countingCounter) Add(_ context.Context, incr int64, opts ...metric.AddOption) {
	if c.onlyOutcome != "" {
		attrs := metric.NewAddConfig(opts).Attributes()
		v, ok := attrs.Value("outcome")
		if !ok || v.AsString() != c.onlyOutcome {
			return
		}
	}
	c.n.Add(incr)
}
