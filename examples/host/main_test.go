package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a log sink safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestHost starts the host with a token, calls a few routes and shuts it
// down by cancelling its context, as SIGTERM does.
func TestHost(t *testing.T) {
	base, logs, stop := startHost(t, "-db", filepath.Join(t.TempDir(), "host.db"), "-token", "s3cret")
	require.Contains(t, logs.String(), "local development only")

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	call := func(method, path, token, body string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, base+path, strings.NewReader(body))
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := hc.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusOK, call(http.MethodGet, "/healthz", "", ""), "health checks need no token")
	require.Equal(t, http.StatusUnauthorized, call(http.MethodGet, "/webhooks", "", ""))
	require.Equal(t, http.StatusUnauthorized, call(http.MethodGet, "/webhooks", "wrong", ""))
	require.Equal(t, http.StatusUnauthorized, call(http.MethodPost, "/jobs", "", `{"name":"a"}`))
	require.Equal(t, http.StatusCreated, call(http.MethodPost, "/webhooks", "s3cret", `{"url":"http://127.0.0.1:9/hook","events":["*"]}`),
		"-allow-private lets a loopback URL be registered")
	require.Equal(t, http.StatusOK, call(http.MethodGet, "/event-types", "s3cret", ""))
	require.Equal(t, http.StatusAccepted, call(http.MethodPost, "/jobs", "s3cret", `{"name":"long","items":1000}`))

	stop()
	require.Contains(t, logs.String(), "interrupted by the host shutting down")
	require.Contains(t, logs.String(), "msg=stopped")
}

// startHost runs the host (with -allow-private) with args, and returns its
// base URL, its logs, and stop, which shuts it down as SIGTERM does and
// checks that it stopped cleanly. stop runs when the test ends, if not
// before.
func startHost(t *testing.T, args ...string) (string, *syncBuffer, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"-addr", "127.0.0.1:0", "-allow-private"}, args...), logs) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Error("the host did not shut down")
			}
		})
	}
	t.Cleanup(stop)
	listening := regexp.MustCompile(`msg="host listening" url=(\S+)`)
	var base string
	require.Eventually(t, func() bool {
		m := listening.FindStringSubmatch(logs.String())
		if m != nil {
			base = m[1]
		}
		return m != nil
	}, 10*time.Second, 10*time.Millisecond, logs.String())
	return base, logs, stop
}

// Two replicas of the host on one PostgreSQL database act as one: a
// webhook registered on one receives the event of a job run on the other.
// It runs when WEBHOOK_TEST_POSTGRES_DSN names a database (.ci/run starts
// one).
func TestHostReplicasOnPostgres(t *testing.T) {
	dsn := os.Getenv("WEBHOOK_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("needs PostgreSQL: set WEBHOOK_TEST_POSTGRES_DSN=postgres://user@127.0.0.1:5432/dbname (.ci/run starts one)")
	}
	admin, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	defer admin.Close()
	schema := fmt.Sprintf("host_%d", os.Getpid())
	_, err = admin.Exec("CREATE SCHEMA " + schema)
	require.NoError(t, err)
	defer admin.Exec("DROP SCHEMA " + schema + " CASCADE")
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	u.User = url.UserPassword(u.User.Username(), "pw-never-logged") // trust auth ignores it
	db := u.String()

	got := make(chan string, 16)
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("X-SPARC-Event")
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rc.Close()

	a, logsA, _ := startHost(t, "-db", db)
	b, logsB, _ := startHost(t, "-db", db)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	post := func(base, path, body string) int {
		resp, err := hc.Post(base+path, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusCreated, post(a, "/webhooks", `{"url":"`+rc.URL+`/hook","events":["job.complete"]}`))
	require.Equal(t, http.StatusAccepted, post(b, "/jobs", `{"name":"replicated","items":2}`))
	select {
	case ev := <-got:
		require.Equal(t, "job.complete", ev)
	case <-time.After(20 * time.Second):
		t.Fatal("the job run on one replica was not delivered to the webhook registered on the other")
	}
	for _, logs := range []*syncBuffer{logsA, logsB} {
		require.NotContains(t, logs.String(), "pw-never-logged")
		require.Contains(t, logs.String(), "xxxxx", "the password is redacted")
	}
}

func TestHostBadArguments(t *testing.T) {
	var logs syncBuffer
	require.Error(t, run(t.Context(), []string{"-no-such-flag"}, &logs))
	require.Error(t, run(t.Context(), []string{"extra"}, &logs))
}
