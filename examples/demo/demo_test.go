package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	err := run(t.Context(), []string{"-db", filepath.Join(t.TempDir(), "demo.db")}, &out)
	report := out.String()
	require.NoError(t, err, report)

	require.Contains(t, report, "Everything happened as it should")
	require.NotRegexp(t, `(?m)^\s+FAIL\s`, report)
	// The table has rows for each receiver, and the final states.
	require.Regexp(t, `(?m)^\s+healthy\s+webhook\.test\s+evt_\S+\s+1\s+200\s+both valid\s+delivered$`, report)
	require.Regexp(t, `(?m)^\s+flaky\s+job\.\w+\s+evt_\S+\s+\d\s+500 → `, report)
	require.Regexp(t, `(?m)^\s+gone\s+job\.\w+\s+evt_\S+\s+1\s+410\s+both valid\s+failed$`, report)
	require.Regexp(t, `(?m)^\s+gone\s+disabled\s+1\s+the endpoint answered 410 Gone$`, report)
	require.Regexp(t, `(?m)^\s+ok\s+flaky got every event after retries`, report)
}

func TestDemoBadArguments(t *testing.T) {
	var out bytes.Buffer
	require.Error(t, run(t.Context(), []string{"-no-such-flag"}, &out))
	require.Error(t, run(t.Context(), []string{"extra"}, &out))
}

func TestShortID(t *testing.T) {
	require.Equal(t, "evt_…89abcdef", shortID("evt_0123456789abcdef0123456789abcdef"))
	require.Equal(t, "evt_1", shortID("evt_1"))
	require.Equal(t, "…456789abcdef", shortID("0123456789abcdef0123456789abcdef"))
}
