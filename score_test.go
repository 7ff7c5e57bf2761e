package webhook

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestObserveScore(t *testing.T) {
	tests := []struct {
		name      string
		abs, rel  float64
		scores    []float64
		published []bool    // per observation
		deltas    []float64 // of the published events, in order
	}{
		{
			name:      "first observation is the baseline",
			scores:    []float64{50},
			published: []bool{false},
		},
		{
			name:      "noise is not announced",
			scores:    []float64{50, 51, 49, 52.5, 47.6},
			published: []bool{false, false, false, false, false},
		},
		{
			name:      "a jump is announced and becomes the baseline",
			scores:    []float64{50, 56, 57, 61},
			published: []bool{false, true, false, true},
			deltas:    []float64{6, 5},
		},
		{
			name:      "slow drift is announced once it adds up",
			scores:    []float64{50, 51, 52, 53, 54, 55, 56},
			published: []bool{false, false, false, false, false, true, false},
			deltas:    []float64{5},
		},
		{
			name:      "drops count too",
			scores:    []float64{50, 44},
			published: []bool{false, true},
			deltas:    []float64{-6},
		},
		{
			name:      "relative threshold",
			abs:       1000,
			rel:       0.1,
			scores:    []float64{200, 215, 221, 240},
			published: []bool{false, false, true, false},
			deltas:    []float64{21},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.ScoreThreshold = tt.abs
			cfg.ScoreRelativeThreshold = tt.rel
			d := openTest(t, cfg)
			rc := newReceiver(t, nil)
			register(t, d, rc.url(), EventScoreChanged)
			sent := 0
			for i, s := range tt.scores {
				obs, err := d.ObserveScore(t.Context(), "acme", s)
				require.NoError(t, err)
				require.Equal(t, tt.published[i], obs.Published, "observation %d (%v)", i, s)
				require.Equal(t, i == 0, obs.Baseline)
				if obs.Published {
					require.NotEmpty(t, obs.EventID)
					// Wait for it, so that the next one does not supersede
					// it (TestScoreChangesCollapse covers that).
					sent++
					rc.waitFor(sent)
				}
			}
			if len(tt.deltas) == 0 {
				eventually(t, func() bool { return pendingCount(t, d) == 0 }, "pending")
				require.Empty(t, rc.requests())
				return
			}
			got := rc.waitFor(len(tt.deltas))
			var deltas []float64
			for _, g := range got {
				var env struct {
					Data ScoreChanged `json:"data"`
				}
				require.NoError(t, json.Unmarshal(g.Body, &env))
				require.Equal(t, "acme", env.Data.Subject)
				require.InDelta(t, env.Data.Current-env.Data.Previous, env.Data.Delta, 1e-9)
				deltas = append(deltas, env.Data.Delta)
			}
			require.ElementsMatch(t, tt.deltas, deltas)
		})
	}
}

func TestObserveScoreSubjectsAreSeparate(t *testing.T) {
	d := openTest(t, testConfig())
	_, err := d.ObserveScore(t.Context(), "a", 10)
	require.NoError(t, err)
	obs, err := d.ObserveScore(t.Context(), "b", 100)
	require.NoError(t, err)
	require.True(t, obs.Baseline, "b has its own baseline")
	obs, err = d.ObserveScore(t.Context(), "a", 20)
	require.NoError(t, err)
	require.True(t, obs.Published)
	require.Equal(t, 10.0, obs.Previous)

	for _, bad := range []float64{nan(), inf()} {
		_, err = d.ObserveScore(t.Context(), "a", bad)
		require.ErrorIs(t, err, ErrInvalid)
	}
	_, err = d.ObserveScore(t.Context(), "", 1)
	require.ErrorIs(t, err, ErrInvalid)
}

func nan() float64 { z := 0.0; return z / z }
func inf() float64 { z := 0.0; return 1 / z }
