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
	require.Regexp(t, `(?m)^\s+gone\s+json\s+\*\s+disabled\s+1\s+the endpoint answered 410 Gone$`, report)
	require.Regexp(t, `(?m)^\s+ok\s+flaky got every event after retries`, report)

	// The Slack and Discord stand-ins: registered with their format, sent
	// only what they subscribed to, and answering as the services do.
	require.Regexp(t, `(?m)^\s+slack\s+webhook \S+\s+format slack\s+events job\.\*$`, report)
	require.Regexp(t, `(?m)^\s+discord\s+webhook \S+\s+format discord\s+events job\.failed, score\.changed$`, report)
	require.Regexp(t, `(?m)^\s+slack\s+job\.\w+\s+evt_\S+\s+1\s+200\s+both valid\s+delivered$`, report)
	require.Regexp(t, `(?m)^\s+discord\s+job\.failed\s+evt_\S+\s+1\s+204\s+both valid\s+delivered$`, report)
	require.Regexp(t, `(?m)^\s+score\.changed\s+evt_\S+\s+1\s+204\s+both valid\s+delivered$`, report)
	require.Regexp(t, `(?m)^\s+slack\s+slack\s+job\.\*\s+enabled\s+0\s+-$`, report)
	require.Regexp(t, `(?m)^\s+discord\s+discord\s+job\.failed, score\.changed\s+enabled\s+0\s+-$`, report)
	require.Regexp(t, `(?m)^\s+ok\s+slack got every event it subscribed to \(job\.\*\): 3 of 3 delivered, each once; 3 of 3 requests were valid Slack messages`, report)
	require.Regexp(t, `(?m)^\s+ok\s+discord got every event it subscribed to \(job\.failed, score\.changed\): 2 of 2 delivered, each once; 2 of 2 requests were valid Discord messages`, report)
	require.Regexp(t, `(?m)^\s+ok\s+18 of 18 requests carried a valid Standard Webhooks and a valid SPARC signature$`, report)
	require.Regexp(t, `(?m)^\s+ok\s+the Slack text and the Discord embed of the failed job export-ledger name it$`, report)
	// What people read of the failed job.
	require.Regexp(t, `(?m)^\s+slack\s+text\s+❌ Job export-ledger failed after \S+: simulated failure at item \d+ of 12$`, report)
	require.Regexp(t, `(?m)^\s+discord\s+title\s+❌ Job failed: export-ledger$`, report)
	require.Regexp(t, `(?m)^\s+description\s+simulated failure at item \d+ of 12$`, report)
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
