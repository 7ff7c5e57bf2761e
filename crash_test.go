package webhook

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// childEnv names the environment variable that makes the test binary run
// childMain instead of the tests: crash tests start the dispatcher in a
// child process and kill it.
const childEnv = "WEBHOOK_TEST_CHILD"

// crashConfig is the configuration of both the child and the parent that
// takes over: short attempts and leases, so that a killed child's
// deliveries are claimed again quickly.
func crashConfig() Config {
	cfg := testConfig()
	cfg.AttemptTimeout = 2 * time.Second
	cfg.LeaseDuration = 3 * time.Second
	cfg.RetryPolicy = &ScheduleRetryPolicy{Schedule: []time.Duration{20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond}}
	return cfg
}

// childMain runs in the child process. It opens the database named by
// WEBHOOK_TEST_DB, registers WEBHOOK_TEST_URL when it has no webhook, and
// publishes WEBHOOK_TEST_EVENTS events, printing "published <id>" for each
// after Publish returned nil. Then it waits to be killed.
func childMain() int {
	if mode := os.Getenv(childModeEnv); mode != "" {
		return childMode(mode) // crash_more_test.go
	}
	ctx := context.Background()
	d, err := Open(ctx, os.Getenv("WEBHOOK_TEST_DB"), crashConfig())
	if err != nil {
		fmt.Println("open:", err)
		return 1
	}
	hooks, err := d.List(ctx)
	if err != nil {
		fmt.Println("list:", err)
		return 1
	}
	if len(hooks) == 0 {
		for _, u := range strings.Fields(os.Getenv("WEBHOOK_TEST_URL")) {
			if _, err := d.Register(ctx, Registration{URL: u, Events: []string{"*"}}); err != nil {
				fmt.Println("register:", err)
				return 1
			}
		}
	}
	var n int
	fmt.Sscan(os.Getenv("WEBHOOK_TEST_EVENTS"), &n)
	prefix := os.Getenv("WEBHOOK_TEST_PREFIX")
	var wg sync.WaitGroup
	var mu sync.Mutex
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				pub, err := d.Publish(ctx, Event{ID: fmt.Sprintf("%s-%d", prefix, i), Type: EventJobComplete})
				if err != nil {
					mu.Lock()
					fmt.Println("publish:", err)
					mu.Unlock()
					continue
				}
				mu.Lock()
				fmt.Println("published", pub.EventID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fmt.Println("done")
	select {} // wait for the kill
}

// child is a dispatcher process.
type child struct {
	cmd       *exec.Cmd
	mu        sync.Mutex
	published []string
	done      chan struct{}
	lines     chan string
}

func startChild(t *testing.T, db, urls, prefix string, events int) *child {
	t.Helper()
	return startTestChild(t, "WEBHOOK_TEST_DB="+db, "WEBHOOK_TEST_URL="+urls,
		"WEBHOOK_TEST_PREFIX="+prefix, fmt.Sprintf("WEBHOOK_TEST_EVENTS=%d", events))
}

// startTestChild starts the test binary as a child dispatcher process
// (childMain) with env added to its environment. The child is killed when
// the test ends.
func startTestChild(t *testing.T, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// The child dies with the test process, even when a timeout kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Env = append(append(os.Environ(), childEnv+"=1"), env...)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	c := &child{cmd: cmd, done: make(chan struct{}), lines: make(chan string, 1<<16)}
	go c.read(out)
	t.Cleanup(func() { c.kill() })
	return c
}

// kill SIGKILLs the child and returns the IDs it reported as published.
func (c *child) kill() []string {
	c.cmd.Process.Signal(syscall.SIGKILL)
	c.cmd.Wait()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.published...)
}

// An unclean stop (SIGKILL) while a delivery is in flight, followed by a
// restart, delivers everything that was pending, the interrupted one too.
func TestRestartAfterKillDeliversPending(t *testing.T) {
	db := testDB(t) // in the PostgreSQL run, a schema both processes share
	inFlight := make(chan struct{}, 1)
	var mu sync.Mutex
	seen := map[string]int{}
	var hang = true
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		h := hang
		if !h {
			seen[r.Header.Get("webhook-id")]++
		}
		mu.Unlock()
		if h {
			select {
			case inFlight <- struct{}{}:
			default:
			}
			<-r.Context().Done() // never answers while the child lives
			return
		}
		w.WriteHeader(200)
	})
	c := startChild(t, db, rc.url(), "evt", 50)
	for line := range c.lines {
		if line == "done" {
			break
		}
		require.True(t, strings.HasPrefix(line, "published "), line)
	}
	<-inFlight // a delivery is in flight in the child
	published := c.kill()
	require.Len(t, published, 50)

	mu.Lock()
	hang = false
	mu.Unlock()
	d := openTestAt(t, db, crashConfig())
	eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == len(published)
	}, "not every published event was delivered after the restart")
	mu.Lock()
	for _, id := range published {
		require.GreaterOrEqual(t, seen[id], 1, id)
	}
	mu.Unlock()
	if !onPostgres() {
		var ok string
		require.NoError(t, d.st.Reader().QueryRow("PRAGMA integrity_check").Scan(&ok))
		require.Equal(t, "ok", ok)
	}
}
