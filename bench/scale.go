package main

// The scale mode: does a deep backlog slow the library down or make it
// hold more memory? A backlog of 10 thousand and one of 1 million
// deliveries (10 webhooks × 1k or 100k events) are each drained by the
// same delivering dispatcher, and the ratio of their drain rates is
// reported, with the peak RSS of the process that drained the big one.
//
// Each backlog is built once in this process (publish-only) and copied to
// a fresh file for every round; the drain runs in a child process (this binary with -scale-drain), so that its peak RSS
// (VmHWM) is the delivering dispatcher's own and not the builder's, and
// so that every drain starts in a fresh process.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// scaleResult is what a drain child reports.
type scaleResult struct {
	ElapsedMS  float64 `json:"elapsed_ms"`
	PeakRSSKiB int64   `json:"peak_rss_kib"`
}

// scaleBacklog is a backlog built once, from which every round copies a
// fresh database: building 100,000 events takes longer than copying the
// file, and a copy is the same fresh file a build would be.
type scaleBacklog struct {
	path    string
	want    int // deliveries
	cleanup func()
}

// buildScaleBacklog builds a backlog of events × len(hooks) deliveries.
func buildScaleBacklog(ctx context.Context, hooks []hook, events, workers int) (*scaleBacklog, error) {
	path, cleanup, err := tempDB("scale.db")
	if err != nil {
		return nil, err
	}
	if err := buildBacklog(ctx, path, libConfig(workers), hooks, events); err != nil {
		cleanup()
		return nil, fmt.Errorf("scale: %w", err)
	}
	return &scaleBacklog{path: path, want: events * len(hooks), cleanup: cleanup}, nil
}

// runScaleRound copies the backlog b into a fresh temp dir and has a child
// process drain it with `workers` workers.
func runScaleRound(ctx context.Context, rc *receiver, b *scaleBacklog, workers int) (scaleResult, error) {
	path, cleanup, err := tempDB("scale.db")
	if err != nil {
		return scaleResult{}, err
	}
	defer cleanup()
	if err := copyDB(b.path, path); err != nil {
		return scaleResult{}, fmt.Errorf("scale: copy backlog: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return scaleResult{}, err
	}
	cmd := exec.CommandContext(ctx, self, "-scale-drain",
		"-db", path, "-addr", rc.addr, "-want", strconv.Itoa(b.want), "-workers", strconv.Itoa(workers))
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return scaleResult{}, fmt.Errorf("scale: drain child: %w", err)
	}
	var res scaleResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return scaleResult{}, fmt.Errorf("scale: drain child said %q: %w", stdout.String(), err)
	}
	return res, nil
}

// copyDB copies the closed SQLite database at src, with its -wal and -shm
// files when they exist, to dst.
func copyDB(src, dst string) error {
	for _, suffix := range []string{"", "-wal", "-shm"} {
		in, err := os.Open(src + suffix)
		if errors.Is(err, fs.ErrNotExist) && suffix != "" {
			continue
		}
		if err != nil {
			return err
		}
		out, err := os.Create(dst + suffix)
		if err == nil {
			_, err = io.Copy(out, in)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
		}
		in.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// runScaleDrain is the body of the drain child: it drains the backlog at
// path, checks that all `want` deliveries were made, and prints the drain
// time and its own peak RSS as JSON.
func runScaleDrain(path, addr string, want, workers int) error {
	rc := &receiver{addr: addr, ctl: &http.Client{Timeout: 30 * time.Minute}}
	elapsed, err := drainWebhook(context.Background(), rc, path, libConfig(workers), drainOpts{want: int64(want), exact: true})
	if err != nil {
		return err
	}
	peak, err := peakRSSKiB()
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(scaleResult{ElapsedMS: ms(elapsed), PeakRSSKiB: peak})
}

// peakRSSKiB reads this process's peak resident set size (VmHWM) from
// /proc/self/status.
func peakRSSKiB() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}
