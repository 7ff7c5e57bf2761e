// Command demo shows the webhook library at work in one process, with no
// setup:
//
//	go run ./examples/demo
//
// It starts five webhook receivers on loopback ports: three that take the
// JSON envelope (one healthy, one that fails its first three requests and
// then recovers, one that answers 410 Gone) and two that stand in for
// Slack and Discord, which take a message for people and answer as those
// services do. It opens the library on a database in a temporary
// directory, starts the example host (the library's management API beside
// the host's /jobs and /scores routes) and then acts as a user would, over
// HTTP: it registers the receivers with POST /webhooks, the stand-ins with
// "format":"slack" and "format":"discord", sends a test event, runs three
// batch jobs, reports scores, waits until every delivery has settled and
// prints what each receiver got, with the Slack and Discord messages of
// the failed job. It exits 0 only when everything happened as it should:
// the healthy receiver got every event, the flaky one got every event
// after retries, the gone one got one request and its webhook was
// disabled, the stand-ins got every event they subscribed to as a valid
// Slack or Discord message, and every request carried two valid
// signatures.
//
// Flags:
//
//	-db path  keep the database at path instead of a temporary directory
//	-v        also show the library's own logs
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sparc-webhooks/webhook"
	"github.com/sparc-webhooks/webhook/examples/internal/sparc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

const (
	// runTimeout bounds the whole demo.
	runTimeout = 45 * time.Second
	// settleTimeout bounds the wait for every delivery to settle.
	settleTimeout = 30 * time.Second
	// flakyFailures is how many requests the flaky receiver fails.
	flakyFailures = 3
)

// retrySchedule is short, so that the flaky receiver recovers within
// seconds; the default schedule spans three days.
var retrySchedule = []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond}

// demoJob is a job the demo runs.
type demoJob struct {
	Name  string `json:"name"`
	Items int    `json:"items"`
	Fail  bool   `json:"fail"`
	id    string
}

// demoScore is a score the demo reports.
type demoScore struct {
	Subject string  `json:"subject"`
	Score   float64 `json:"score"`
	what    string
}

// run runs the demo, writing its report to stdout. It returns an error
// when the demo could not run or something did not happen as it should.
func run(ctx context.Context, args []string, stdout io.Writer) (err error) {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stdout)
	dbPath := fs.String("db", "", "SQLite database file (default: one in a temporary directory, removed at the end)")
	verbose := fs.Bool("v", false, "also show the library's own logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	con := newConsole(stdout)

	dbNote := ""
	if *dbPath == "" {
		dir, err := os.MkdirTemp("", "webhook-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		*dbPath = filepath.Join(dir, "webhooks.db")
		dbNote = "(temporary, removed at the end)"
	}

	// The receivers. They stop last, after the library has finished
	// with them.
	var eps []*endpoint
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, ep := range eps {
			ep.stop(sctx)
		}
	}()
	every := []string{"*"}
	for _, ep := range []*endpoint{
		{name: "healthy", script: "answers 200", events: every, answer: always(http.StatusOK, "")},
		{name: "flaky", script: fmt.Sprintf("answers 500 to its first %d requests, then 200", flakyFailures), events: every, answer: failFirst(flakyFailures)},
		{name: "gone", script: "answers 410 Gone", events: every, answer: always(http.StatusGone, "this endpoint is gone")},
		// A team channel for jobs, and an alerts channel.
		{name: "slack", script: `stands in for Slack: checks text and blocks, answers 200 "ok"`,
			events: []string{"job.*"}, svc: slackService, answer: always(http.StatusOK, "")},
		{name: "discord", script: "stands in for Discord: checks the embed and mentions, answers 204",
			events: []string{webhook.EventJobFailed, webhook.EventScoreChanged}, svc: discordService, answer: always(http.StatusNoContent, "")},
	} {
		if err := startEndpoint(con, ep); err != nil {
			return fmt.Errorf("start receiver %s: %w", ep.name, err)
		}
		eps = append(eps, ep)
	}
	cast := receivers{healthy: eps[0], flaky: eps[1], gone: eps[2], slack: eps[3], discord: eps[4]}
	healthy := cast.healthy

	// The library, configured as a host would for local development.
	libLevel := slog.LevelError
	if *verbose {
		libLevel = slog.LevelDebug
	}
	d, err := webhook.Open(ctx, *dbPath, webhook.Config{
		Logger:        slog.New(&logHandler{c: con, level: libLevel}),
		AllowNetworks: []string{"127.0.0.0/8", "::1/128"}, // the receivers are on loopback
		RetryPolicy:   &webhook.ScheduleRetryPolicy{Schedule: retrySchedule},
		// One request at a time to each receiver keeps the story simple:
		// the gone receiver is disabled after its first answer.
		MaxInFlightPerWebhook: 1,
		AttemptTimeout:        5 * time.Second,
		OnDisable: func(ev webhook.WebhookDisabled) {
			con.event("%-7s webhook disabled by the library: %s", nameOf(eps, ev.WebhookID), ev.Reason)
		},
	})
	if err != nil {
		return fmt.Errorf("open the library: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if cerr := d.Close(cctx); cerr != nil && err == nil {
			err = fmt.Errorf("close the library: %w", cerr)
		}
	}()

	// The host: the management API beside the host's own routes, as
	// examples/host serves them.
	// Its logs show the jobs' progress; the demo prints the rest itself.
	jobs := sparc.New(d, sparc.Config{Logger: slog.New(&logHandler{c: con, level: slog.LevelInfo,
		skip: []string{"job started", "score change published"},
		hide: []string{"job_id", "event_id", "deliveries"}})})
	defer jobs.Close()
	mux := http.NewServeMux()
	jobs.Register(mux)
	mux.Handle("/", d.Handler())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("start the host: %w", err)
	}
	host := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go host.Serve(ln)
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if host.Shutdown(sctx) != nil {
			host.Close()
		}
	}()
	transport := http.DefaultTransport.(*http.Transport).Clone()
	defer transport.CloseIdleConnections()
	api := &client{base: "http://" + ln.Addr().String(), hc: &http.Client{Transport: transport, Timeout: 10 * time.Second}}

	con.printf("SPARC webhooks demo: five receivers (three JSON, Slack and Discord stand-ins), three batch jobs and a score feed, in one process.\n")
	tw := tabwriter.NewWriter(&lineWriter{con}, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "   database\t%s\t%s\n", *dbPath, dbNote)
	fmt.Fprintf(tw, "   host\t%s\t(management API and /jobs, /scores)\n", api.base)
	for i, ep := range eps {
		label := ""
		if i == 0 {
			label = "receivers"
		}
		fmt.Fprintf(tw, "   %s\t%-7s %s\t%s\n", label, ep.name, ep.url, ep.script)
	}
	fmt.Fprintf(tw, "   retries\t%s\t(the default schedule spans three days)\n", formatSchedule(retrySchedule))
	tw.Flush()

	// 1. Register the receivers, as a user would.
	con.step(1, "Register the five receivers", "POST /webhooks")
	for _, ep := range eps {
		body := map[string]any{"url": ep.url, "events": ep.events, "description": "demo receiver " + ep.name + ": " + ep.script}
		if ep.svc != nil {
			body["format"] = ep.svc.format // the default is json
		}
		var wh createdWebhook
		if err := api.call(ctx, http.MethodPost, "/webhooks", body, http.StatusCreated, &wh); err != nil {
			return err
		}
		ep.registered(wh.ID, wh.Secret)
		con.printf("   %-7s  webhook %s  format %-7s  events %s", ep.name, wh.ID, wh.Format, strings.Join(ep.events, ", "))
	}
	con.printf("   (each answer carries the webhook's signing secret; its receiver checks both signatures with it)")

	// 2. A test send, synchronous.
	con.step(2, "Send a test event to healthy", "POST /webhooks/{id}/test")
	var tr testResult
	if err := api.call(ctx, http.MethodPost, "/webhooks/"+healthy.webhookID+"/test", nil, http.StatusOK, &tr); err != nil {
		return err
	}
	con.printf("   delivered=%t, status %d in %d ms", tr.Delivered, tr.StatusCode, tr.DurationMS)

	// 3. Jobs, which announce themselves through webhooks when they end.
	djobs := []*demoJob{
		{Name: "ingest-orders", Items: 10},
		{Name: "rebuild-index", Items: 16},
		{Name: "export-ledger", Items: 12, Fail: true},
	}
	con.step(3, "Run three batch jobs", "POST /jobs")
	for _, j := range djobs {
		var js jobStarted
		if err := api.call(ctx, http.MethodPost, "/jobs", j, http.StatusAccepted, &js); err != nil {
			return err
		}
		j.id = js.JobID
		note := ""
		if j.Fail {
			note = ", told to fail"
		}
		con.printf("   %-14s %2d items%-14s → 202, %s", j.Name, j.Items, note, j.id)
	}
	if err := waitForJobs(ctx, healthy, djobs); err != nil {
		return err
	}

	// 4. Scores: only a significant change is announced.
	con.step(4, "Report scores", "POST /scores")
	scores := []demoScore{
		{"acme", 70, "the first score: the baseline"},
		{"acme", 71.5, "noise"},
		{"acme", 68.9, "noise"},
		{"acme", 83, "a significant jump"},
	}
	announced := 0
	for _, s := range scores {
		var sr scoreResult
		if err := api.call(ctx, http.MethodPost, "/scores", s, http.StatusOK, &sr); err != nil {
			return err
		}
		verdict := "not announced"
		if sr.Published {
			announced++
			verdict = "announced as score.changed " + sr.EventID
		}
		con.printf("   %s %5.1f  %-30s → %s", s.Subject, s.Score, s.what, verdict)
	}

	// 5. Wait for the retries to play out.
	con.step(5, "Wait until every delivery has settled", "GET /webhooks/{id}/deliveries")
	published := len(djobs) + announced
	count := map[string]int{
		webhook.EventJobComplete:  len(djobs) - failing(djobs),
		webhook.EventJobFailed:    failing(djobs),
		webhook.EventScoreChanged: announced,
	}
	want := map[*endpoint]int{healthy: published + 1, cast.flaky: published}
	for _, ep := range []*endpoint{cast.slack, cast.discord} {
		for typ, n := range count {
			if subscribed(ep.events, typ) {
				want[ep] += n
			}
		}
	}
	settleStart := time.Now()
	all, err := settle(ctx, api, eps, want)
	if err != nil {
		return err
	}
	n := 0
	for _, dls := range all {
		n += len(dls)
	}
	con.printf("   all %d deliveries settled after %.1fs", n, time.Since(settleStart).Seconds())

	// The report.
	rep, err := gather(ctx, api, eps, all)
	if err != nil {
		return err
	}
	problems := rep.check(cast, djobs, published)
	rep.print(con)
	if len(problems) > 0 {
		con.printf("\nThe demo FAILED after %.1fs:", time.Since(con.start).Seconds())
		for _, p := range problems {
			con.printf("   - %s", p)
		}
		return fmt.Errorf("%d of the demo's checks failed", len(problems))
	}
	con.printf("\nEverything happened as it should, in %.1fs.", time.Since(con.start).Seconds())
	con.printf("Next, run the host yourself: go run ./examples/host -allow-private (see its package comment).")
	return nil
}

// receivers are the demo's receivers, by role.
type receivers struct {
	healthy, flaky, gone *endpoint // JSON
	slack, discord       *endpoint // stand-ins for the services
}

// failing returns the number of jobs told to fail.
func failing(jobs []*demoJob) int {
	n := 0
	for _, j := range jobs {
		if j.Fail {
			n++
		}
	}
	return n
}

// subscribed reports whether one of the patterns matches the event type.
// path.Match is close enough to the library's rule for the demo's event
// types; unlike the library, it would let "job.*" match "job.step.done".
func subscribed(patterns []string, typ string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, typ); ok {
			return true
		}
	}
	return false
}

// waitForJobs waits until the healthy receiver has been told how every
// job ended: a user learns it from the webhooks.
func waitForJobs(ctx context.Context, healthy *endpoint, jobs []*demoJob) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		seen := map[string]bool{}
		for _, r := range healthy.got() {
			if r.jobID != "" {
				seen[r.jobID] = true
			}
		}
		missing := 0
		for _, j := range jobs {
			if !seen[j.id] {
				missing++
			}
		}
		if missing == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d jobs never announced their end to the healthy receiver: %w", missing, ctx.Err())
		case <-tick.C:
		}
	}
}

// settle polls the deliveries of every receiver's webhook until none is
// pending and each receiver in want has the number of deliveries expected.
func settle(ctx context.Context, api *client, eps []*endpoint, want map[*endpoint]int) (map[*endpoint][]delivery, error) {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		all := map[*endpoint][]delivery{}
		waiting := []string{}
		for _, ep := range eps {
			dls, err := api.deliveries(ctx, ep.webhookID)
			if err != nil {
				return nil, err
			}
			all[ep] = dls
			pending := 0
			for _, dl := range dls {
				if dl.Status == string(webhook.StatusPending) {
					pending++
				}
			}
			if n, ok := want[ep]; pending > 0 || ok && len(dls) < n {
				waiting = append(waiting, fmt.Sprintf("%s: %d of %d deliveries pending", ep.name, pending, len(dls)))
			}
		}
		if len(waiting) == 0 {
			return all, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("deliveries did not settle (%s): %w", strings.Join(waiting, "; "), ctx.Err())
		case <-tick.C:
		}
	}
}

// nameOf returns the name of the receiver of a webhook.
func nameOf(eps []*endpoint, webhookID string) string {
	for _, ep := range eps {
		ep.mu.Lock()
		id := ep.webhookID
		ep.mu.Unlock()
		if id == webhookID {
			return ep.name
		}
	}
	return webhookID
}

func formatSchedule(s []time.Duration) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = d.String()
	}
	return "after " + strings.Join(parts, ", ")
}

// lineWriter writes to the console, for a tabwriter.
type lineWriter struct{ c *console }

func (w *lineWriter) Write(p []byte) (int, error) {
	w.c.write(string(p))
	return len(p), nil
}
