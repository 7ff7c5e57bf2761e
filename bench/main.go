// Command bench measures github.com/sparc-webhooks/webhook against a raw
// HTTP client and against the same job built on goqite and on River, and,
// given a PostgreSQL URL, the library on PostgreSQL with 1, 2 and 3
// processes sharing the database; it prints a table (or, with -json, one
// JSON object). See README.md.
//
//	go run .                  # the full run, 12 to 20 minutes on 2 cores
//	go run . -quick           # small sizes, well under 2 minutes
//	go run . -only publish,scale -rounds 5 -json
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"
)

// allModes are the modes, in the order they run.
var allModes = []string{"raw", "webhook", "goqite", "river", "publish", "scale", "isolation", "pg"}

// sizes of a run.
type sizes struct {
	events          int           // events of the raw and webhook backlog, each to `hooks` webhooks
	peerEvents      int           // events of the goqite and river backlog (and of a webhook run to compare them with)
	hooks           int           // webhooks in those modes and in publish and scale
	publishDur      time.Duration // length of one publish run
	scaleSmall      int           // events of the small scale backlog
	scaleLarge      int           // events of the large scale backlog
	isolationEvents int           // events of the isolation backlog, each to 50 webhooks
	pgEvents        int           // events of the pg backlog, each to `hooks` webhooks
}

var (
	// The full run drains 10,000 events × 10 webhooks in raw and webhook.
	// goqite and river get 2,000 × 10: at their speed (one transaction per
	// receive and per delete, one to two fsyncs per message) 100,000
	// messages take two to three minutes each per round, which would take
	// the run past 20 minutes; their rate per message does not depend on
	// the backlog's size, and they are compared with a webhook run of the
	// same size in the same round.
	fullSizes = sizes{events: 10_000, peerEvents: 2_000, hooks: 10, publishDur: 3 * time.Second,
		scaleSmall: 1_000, scaleLarge: 100_000, isolationEvents: 1_000, pgEvents: 2_000}
	// The quick run is for CI: every mode once at sizes that take seconds,
	// so that the whole run stays well under 2 minutes on 2 busy cores.
	quickSizes = sizes{events: 500, peerEvents: 100, hooks: 10, publishDur: 500 * time.Millisecond,
		scaleSmall: 200, scaleLarge: 5_000, isolationEvents: 60, pgEvents: 400}
)

func main() {
	var (
		quick      = flag.Bool("quick", false, "small sizes: seconds, not minutes")
		asJSON     = flag.Bool("json", false, "print one JSON object instead of the table")
		rounds     = flag.Int("rounds", 3, "rounds of every comparison (at least 3 is meaningful)")
		only       = flag.String("only", "", "comma-separated modes to run: "+strings.Join(allModes, ","))
		workers    = flag.Int("workers", 32, "concurrency shared by every mode: the library's Workers, the peers' workers, raw's senders")
		cpuProfile = flag.String("cpuprofile", "", "write a CPU profile of the first webhook drain to this file")
		pgFlag     = flag.String("pg", "", "PostgreSQL URL for the pg mode (default: $"+strings.Join(pgDSNEnvs, ", else $")+"); without one, pg is skipped")

		// Internal: how the binary runs as its own helper processes.
		asReceiver = flag.Bool("receiver", false, "internal: run as the receiver process")
		scaleDrain = flag.Bool("scale-drain", false, "internal: run as the scale mode's drain process")
		pgDrain    = flag.Bool("pg-drain", false, "internal: run as one of the pg mode's drain processes")
		dbPath     = flag.String("db", "", "internal: -scale-drain's database, -pg-drain's PostgreSQL URL")
		addr       = flag.String("addr", "", "internal: -scale-drain's receiver address")
		want       = flag.Int("want", 0, "internal: -scale-drain's number of deliveries")
	)
	flag.Parse()

	switch {
	case *asReceiver:
		exitOn(runReceiver())
		return
	case *scaleDrain:
		exitOn(runScaleDrain(*dbPath, *addr, *want, *workers))
		return
	case *pgDrain:
		exitOn(runPGDrain(*dbPath, *workers))
		return
	}

	modes, err := parseModes(*only)
	exitOn(err)
	if *rounds < 1 {
		exitOn(fmt.Errorf("-rounds must be at least 1"))
	}
	sz := fullSizes
	if *quick {
		sz = quickSizes
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	dsn, _ := pgDSN(*pgFlag)
	rep, err := run(ctx, modes, sz, *rounds, *workers, *cpuProfile, dsn)
	if rep != nil {
		rep.quick = *quick
		if *asJSON {
			rep.writeJSON(os.Stdout)
		} else {
			rep.writeTable(os.Stdout)
		}
	}
	exitOn(err)
}

// parseModes reads -only. The peers and raw are compared with the
// library, so selecting any of them selects webhook too.
func parseModes(only string) (map[string]bool, error) {
	modes := map[string]bool{}
	if only == "" {
		for _, m := range allModes {
			modes[m] = true
		}
		return modes, nil
	}
	for _, m := range strings.Split(only, ",") {
		m = strings.TrimSpace(m)
		if !slices.Contains(allModes, m) {
			return nil, fmt.Errorf("unknown mode %q (modes: %s)", m, strings.Join(allModes, ","))
		}
		modes[m] = true
	}
	if modes["raw"] || modes["goqite"] || modes["river"] {
		modes["webhook"] = true
	}
	return modes, nil
}

func exitOn(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// progress reports on stderr how the run goes, so that stdout holds only
// the table or the JSON.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench %6.1fs: "+format+"\n", append([]any{time.Since(startTime).Seconds()}, args...)...)
}

// startTime is when the process started, for progress lines.
var startTime = time.Now()

// run runs the selected modes and returns their report. An error of the
// library or of the harness ends the run; a peer that cannot run is
// reported in the report's errors instead.
func run(ctx context.Context, modes map[string]bool, sz sizes, rounds, workers int, cpuProfile, pgURL string) (*report, error) {
	started := time.Now()
	rep := newReport()
	defer func() { rep.elapsed = time.Since(started).Seconds() }()
	rep.sizes["workers"] = workers
	rep.sizes["rounds"] = rounds

	rc, err := startReceiver()
	if err != nil {
		return nil, err
	}
	defer rc.close()

	if modes["webhook"] {
		if err := runCompare(ctx, rep, rc, modes, sz, rounds, workers, cpuProfile); err != nil {
			return rep, err
		}
	}
	if modes["publish"] {
		if err := runPublishMode(ctx, rep, rc, sz, rounds); err != nil {
			return rep, err
		}
	}
	if modes["scale"] {
		if err := runScaleMode(ctx, rep, rc, sz, rounds, workers); err != nil {
			return rep, err
		}
	}
	if modes["isolation"] {
		if err := runIsolationMode(ctx, rep, rc, sz, rounds, workers); err != nil {
			return rep, err
		}
	}
	if modes["pg"] {
		if pgURL == "" {
			rep.skipped["pg"] = pgSkipReason()
			progress("pg: skipped: %s", rep.skipped["pg"])
		} else if err := runPGMode(ctx, rep, rc, sz, rounds, workers, pgURL); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// runCompare runs raw, webhook, goqite and river (those selected) in
// rounds, each round all of them in turn, and reports each one's median
// rate and the median of the per-round ratios. When the peers' backlog is
// smaller than raw's and webhook's, each round also drains a webhook
// backlog of the peers' size, and the peers are compared with that.
func runCompare(ctx context.Context, rep *report, rc *receiver, modes map[string]bool, sz sizes, rounds, workers int, cpuProfile string) error {
	hooks, err := makeHooks(rc, sz.hooks, false)
	if err != nil {
		return err
	}
	total := int64(sz.events * sz.hooks)
	peerTotal := int64(sz.peerEvents * sz.hooks)
	rep.sizes["events"] = sz.events
	rep.sizes["webhooks"] = sz.hooks
	rep.sizes["deliveries"] = total
	peers := []string{}
	for _, p := range []string{"goqite", "river"} {
		if modes[p] {
			peers = append(peers, p)
			rep.sizes["peer_deliveries"] = peerTotal
		}
	}
	runPeer := map[string]func(context.Context, *receiver, []hook, int, int) (time.Duration, error){
		"goqite": runGoqite,
		"river":  runRiver,
	}

	for r := 1; r <= rounds; r++ {
		var rawRate float64
		if modes["raw"] {
			d, err := runRaw(ctx, rc, hooks, sz.events, workers)
			if err != nil {
				return err
			}
			rawRate = rate(total, d)
			rep.round("raw_per_s", rawRate)
			progress("round %d: raw            %6.0f deliveries/s (%d in %.1f s)", r, rawRate, total, d.Seconds())
		}
		prof := ""
		if r == 1 {
			prof = cpuProfile
		}
		d, err := runWebhook(ctx, rc, hooks, sz.events, workers, prof)
		if err != nil {
			return err
		}
		whRate := rate(total, d)
		rep.round("webhook_per_s", whRate)
		progress("round %d: webhook        %6.0f deliveries/s (%d in %.1f s)", r, whRate, total, d.Seconds())
		if modes["raw"] {
			rep.round("webhook_vs_raw", whRate/rawRate)
		}

		// The peers, each compared with a webhook drain of its size.
		live := 0
		for _, p := range peers {
			if rep.errors[p] == "" {
				live++
			}
		}
		if live == 0 {
			continue
		}
		peerBase := whRate
		if peerTotal != total {
			d, err := runWebhook(ctx, rc, hooks, sz.peerEvents, workers, "")
			if err != nil {
				return err
			}
			peerBase = rate(peerTotal, d)
			rep.round("webhook_peer_size_per_s", peerBase)
			progress("round %d: webhook (peer) %6.0f deliveries/s (%d in %.1f s)", r, peerBase, peerTotal, d.Seconds())
		}
		for _, p := range peers {
			if rep.errors[p] != "" {
				continue // it failed before: its reason is in the report
			}
			d, err := runPeer[p](ctx, rc, hooks, sz.peerEvents, workers)
			if err != nil {
				rep.errors[p] = err.Error()
				progress("round %d: %s failed: %v", r, p, err)
				continue
			}
			v := rate(peerTotal, d)
			rep.round(p+"_per_s", v)
			rep.round("webhook_vs_"+p, peerBase/v)
			progress("round %d: %-14s %6.0f deliveries/s (%d in %.1f s)", r, p, v, peerTotal, d.Seconds())
		}
	}

	med := func(k string) float64 { return median(rep.rounds[k]) }
	if modes["raw"] {
		rep.add("raw_per_s", "raw", "throughput (the ceiling)", "deliveries/s", med("raw_per_s"))
	}
	rep.add("webhook_per_s", "webhook", "drain throughput", "deliveries/s", med("webhook_per_s"))
	if modes["raw"] {
		rep.addAtLeast("webhook_vs_raw", "webhook", "webhook / raw", "ratio", med("webhook_vs_raw"), 0.80, "%.2f")
	}
	if _, ok := rep.rounds["webhook_peer_size_per_s"]; ok {
		rep.add("webhook_peer_size_per_s", "webhook", fmt.Sprintf("drain throughput, %d (peers' size)", peerTotal), "deliveries/s", med("webhook_peer_size_per_s"))
	}
	for _, p := range peers {
		if rep.errors[p] != "" { // failed, perhaps after some rounds: keep no partial figures
			delete(rep.rounds, p+"_per_s")
			delete(rep.rounds, "webhook_vs_"+p)
			continue
		}
		rep.add(p+"_per_s", p, "drain throughput", "deliveries/s", med(p+"_per_s"))
		rep.addAtLeast("webhook_vs_"+p, "webhook", "webhook / "+p, "ratio", med("webhook_vs_"+p), 1.5, "%.1f")
	}
	return nil
}

// runPublishMode runs publish with 1 and with 64 publishers in rounds.
func runPublishMode(ctx context.Context, rep *report, rc *receiver, sz sizes, rounds int) error {
	hooks, err := makeHooks(rc, sz.hooks, false)
	if err != nil {
		return err
	}
	rep.sizes["publish_seconds"] = sz.publishDur.Seconds()
	for r := 1; r <= rounds; r++ {
		for _, n := range []int{1, 64} {
			res, err := runPublish(ctx, hooks, n, sz.publishDur)
			if err != nil {
				return err
			}
			k := fmt.Sprintf("publish%d", n)
			rep.round(k+"_per_s", res.EventsPerS)
			rep.round(k+"_p50_ms", res.P50MS)
			rep.round(k+"_p99_ms", res.P99MS)
			progress("round %d: publish x%-2d %7.0f events/s, p50 %.2f ms, p99 %.2f ms", r, n, res.EventsPerS, res.P50MS, res.P99MS)
		}
	}
	med := func(k string) float64 { return median(rep.rounds[k]) }
	rep.add("publish1_per_s", "publish", "1 publisher", "events/s", med("publish1_per_s"))
	rep.add("publish1_p50_ms", "publish", "1 publisher p50", "ms", med("publish1_p50_ms"))
	rep.add("publish1_p99_ms", "publish", "1 publisher p99", "ms", med("publish1_p99_ms"))
	rep.addAtLeast("publish64_per_s", "publish", "64 publishers", "events/s", med("publish64_per_s"), 20_000, "%.0f")
	rep.add("publish64_p50_ms", "publish", "64 publishers p50", "ms", med("publish64_p50_ms"))
	rep.add("publish64_p99_ms", "publish", "64 publishers p99", "ms", med("publish64_p99_ms"))
	return nil
}

// runScaleMode drains the small and the large backlog in rounds.
func runScaleMode(ctx context.Context, rep *report, rc *receiver, sz sizes, rounds, workers int) error {
	hooks, err := makeHooks(rc, sz.hooks, false)
	if err != nil {
		return err
	}
	small, large := int64(sz.scaleSmall*sz.hooks), int64(sz.scaleLarge*sz.hooks)
	rep.sizes["scale_small_deliveries"] = small
	rep.sizes["scale_large_deliveries"] = large
	progress("scale: building the backlogs of %d and %d deliveries", small, large)
	smallB, err := buildScaleBacklog(ctx, hooks, sz.scaleSmall, workers)
	if err != nil {
		return err
	}
	defer smallB.cleanup()
	largeB, err := buildScaleBacklog(ctx, hooks, sz.scaleLarge, workers)
	if err != nil {
		return err
	}
	defer largeB.cleanup()
	var peak float64
	for r := 1; r <= rounds; r++ {
		s, err := runScaleRound(ctx, rc, smallB, workers)
		if err != nil {
			return err
		}
		l, err := runScaleRound(ctx, rc, largeB, workers)
		if err != nil {
			return err
		}
		sr := float64(small) / (s.ElapsedMS / 1000)
		lr := float64(large) / (l.ElapsedMS / 1000)
		mib := float64(l.PeakRSSKiB) / 1024
		peak = max(peak, mib)
		rep.round("scale_small_per_s", sr)
		rep.round("scale_large_per_s", lr)
		rep.round("scale_ratio", lr/sr)
		rep.round("scale_small_rss_mib", float64(s.PeakRSSKiB)/1024)
		rep.round("peak_rss_mib", mib)
		progress("round %d: scale %d: %.0f/s, %d: %.0f/s (%.1f s), ratio %.2f, peak RSS %.0f MiB",
			r, small, sr, large, lr, l.ElapsedMS/1000, lr/sr, mib)
	}
	med := func(k string) float64 { return median(rep.rounds[k]) }
	rep.add("scale_small_per_s", "scale", fmt.Sprintf("drain, %d pending", small), "deliveries/s", med("scale_small_per_s"))
	rep.add("scale_large_per_s", "scale", fmt.Sprintf("drain, %d pending", large), "deliveries/s", med("scale_large_per_s"))
	rep.addAtLeast("scale_ratio", "scale", "large / small", "ratio", med("scale_ratio"), 0.9, "%.1f")
	rep.addAtMost("peak_rss_mib", "scale", fmt.Sprintf("peak RSS, %d drain (max of rounds)", large), "MiB", peak, 200, "%.0f")
	return nil
}

// runIsolationMode runs isolation without and with the hanging endpoint in
// rounds.
func runIsolationMode(ctx context.Context, rep *report, rc *receiver, sz sizes, rounds, workers int) error {
	rep.sizes["isolation_deliveries"] = sz.isolationEvents * isolationHooks
	for r := 1; r <= rounds; r++ {
		without, err := runIsolation(ctx, rc, sz.isolationEvents, workers, false)
		if err != nil {
			return fmt.Errorf("isolation without: %w", err)
		}
		with, err := runIsolation(ctx, rc, sz.isolationEvents, workers, true)
		if err != nil {
			return fmt.Errorf("isolation with: %w", err)
		}
		rep.round("isolation_without_per_s", without)
		rep.round("isolation_with_per_s", with)
		rep.round("isolation_ratio", with/without)
		progress("round %d: isolation healthy %.0f/s without, %.0f/s with a hung endpoint, ratio %.2f", r, without, with, with/without)
	}
	med := func(k string) float64 { return median(rep.rounds[k]) }
	rep.add("isolation_without_per_s", "isolation", "healthy, 50 healthy webhooks", "deliveries/s", med("isolation_without_per_s"))
	rep.add("isolation_with_per_s", "isolation", "healthy, 1 of 50 never answers", "deliveries/s", med("isolation_with_per_s"))
	rep.addAtLeast("isolation_ratio", "isolation", "with / without", "ratio", med("isolation_ratio"), 0.9, "%.2f")
	return nil
}
