package main

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

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
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "host.db"), "-allow-private", "-token", "s3cret"}, &logs)
	}()
	listening := regexp.MustCompile(`msg="host listening" url=(\S+)`)
	var base string
	require.Eventually(t, func() bool {
		m := listening.FindStringSubmatch(logs.String())
		if m != nil {
			base = m[1]
		}
		return m != nil
	}, 10*time.Second, 10*time.Millisecond, logs.String())
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

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the host did not shut down")
	}
	require.Contains(t, logs.String(), "interrupted by the host shutting down")
	require.Contains(t, logs.String(), "msg=stopped")
}

func TestHostBadArguments(t *testing.T) {
	var logs syncBuffer
	require.Error(t, run(t.Context(), []string{"-no-such-flag"}, &logs))
	require.Error(t, run(t.Context(), []string{"extra"}, &logs))
}
