package store

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The breaker's rule: the threshold opens it for the base cool-down, a
// failed probe doubles it up to the limit, and one probe goes at a time.
func TestBreakerStates(t *testing.T) {
	rule := BreakerRule{Threshold: 2, Base: time.Second, Limit: 4 * time.Second}
	t0 := time.Unix(1000, 0)
	var b Breaker
	require.True(t, breakerAllows(b.OpenUntil, 0, t0))
	require.False(t, rule.Fail(&b, 1, false, t0), "one failure does not open")
	require.True(t, rule.Fail(&b, 1, false, t0), "the second opens")
	require.Equal(t, t0.Add(time.Second), b.OpenUntil, "for the base cool-down")
	require.False(t, breakerAllows(b.OpenUntil, 0, t0.Add(500*time.Millisecond)), "held during the cool-down")
	require.True(t, breakerAllows(b.OpenUntil, 0, t0.Add(time.Second)), "then one probe")
	require.False(t, breakerAllows(b.OpenUntil, 1, t0.Add(time.Second)), "only one: not while one is in flight")
	require.True(t, rule.Fail(&b, 1, true, t0.Add(2*time.Second)))
	require.Equal(t, t0.Add(4*time.Second), b.OpenUntil, "a failed probe doubles the cool-down")
	require.True(t, rule.Fail(&b, 1, true, t0.Add(4*time.Second)))
	require.Equal(t, t0.Add(8*time.Second), b.OpenUntil, "up to the limit")
	require.True(t, rule.Fail(&b, 1, true, t0.Add(8*time.Second)))
	require.Equal(t, t0.Add(12*time.Second), b.OpenUntil, "and stays there")
	require.True(t, breakerAllows(time.Time{}, 5, t0), "a closed breaker lets everything through")
}
