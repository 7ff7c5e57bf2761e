// Package storetest is the store's conformance suite: every behaviour of
// internal/store that the dispatcher relies on, written once and run on
// each backend, so that PostgreSQL cannot drift from SQLite. Run calls it
// with a function that opens a fresh, empty store.
package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sparc-webhooks/webhook/internal/store"
	"github.com/sparc-webhooks/webhook/signature"
)

// Opener opens a fresh, empty, started store that the test closes.
type Opener func(t *testing.T) *store.Store

// Retries is a retry policy of n attempts.
type Retries int

// NextRetry allows n attempts, 10 ms apart.
func (r Retries) NextRetry(attempt int) (time.Duration, bool) {
	return 10 * time.Millisecond, attempt < int(r)
}

// Config is a store configuration for the suite.
func Config() store.Config {
	return store.Config{
		Synchronous: "NORMAL", BusyTimeout: 5 * time.Second, Workers: 8,
		DisableAfterFailures: 1000, DisableAfterPeriod: time.Hour,
		BreakerThreshold: 3, BreakerCooldown: time.Hour, BreakerMaxCooldown: time.Hour,
		RetryPolicy: Retries(3),
	}
}

// Run runs the suite on the stores open makes.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, *store.Store)
	}{
		{"Registry", testRegistry},
		{"FanOut", testFanOut},
		{"ClaimAndRecord", testClaimAndRecord},
		{"CallerErrorsFailAlone", testCallerErrorsFailAlone},
		{"Supersede", testSupersede},
		{"BreakerOnTheRow", testBreaker},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

var ids = map[string]string{
	"a": "0190f000-0000-7000-8000-00000000000a",
	"b": "0190f000-0000-7000-8000-00000000000b",
}

func insert(t *testing.T, s *store.Store, key string, events ...string) {
	t.Helper()
	secret, err := signature.GenerateSecret()
	require.NoError(t, err)
	now := time.Now().UTC().Truncate(time.Millisecond)
	require.NoError(t, s.InsertWebhook(t.Context(), store.NewWebhook{Secret: secret, Webhook: store.Webhook{
		ID: ids[key], URL: "https://example.com/" + key, Format: "json", Events: events, Enabled: true, CreatedAt: now, UpdatedAt: now,
	}}))
}

func event(id, typ string) store.Event {
	return store.Event{ID: id, Type: typ, Payload: []byte(`{"id":"` + id + `"}`)}
}

func testRegistry(t *testing.T, s *store.Store) {
	ctx := t.Context()
	insert(t, s, "a", "job.*")
	w, err := s.Webhook(ctx, ids["a"])
	require.NoError(t, err)
	require.Equal(t, []string{"job.*"}, w.Events)
	require.True(t, w.Enabled)
	_, err = s.Webhook(ctx, ids["b"])
	require.ErrorIs(t, err, store.ErrNotFound)
	off := false
	w, err = s.UpdateWebhook(ctx, ids["a"], store.Change{Enabled: &off}, nil)
	require.NoError(t, err)
	require.False(t, w.Enabled)
	require.Equal(t, "disabled by request", w.DisabledReason)
	_, err = s.UpdateWebhook(ctx, ids["b"], store.Change{Enabled: &off}, nil)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NoError(t, s.DeleteWebhook(ctx, ids["a"]))
	require.ErrorIs(t, s.DeleteWebhook(ctx, ids["a"]), store.ErrNotFound)
	all, err := s.Webhooks(ctx)
	require.NoError(t, err)
	require.Empty(t, all)
}

func testFanOut(t *testing.T, s *store.Store) {
	ctx := t.Context()
	insert(t, s, "a", "job.*")
	insert(t, s, "b", "score.changed")
	p, err := s.Publish(ctx, event("evt-1", "job.complete"))
	require.NoError(t, err)
	require.Equal(t, store.Published{Deliveries: 1}, p, "only the subscribed webhook")
	p, err = s.Publish(ctx, event("evt-1", "job.complete"))
	require.NoError(t, err)
	require.True(t, p.Duplicate, "an event ID is stored once")
	page, _, err := s.Deliveries(ctx, ids["a"], store.DeliveryFilter{Limit: 10})
	require.NoError(t, err)
	require.Len(t, page, 1)
	require.Equal(t, store.Pending, page[0].Status)
	page, _, err = s.Deliveries(ctx, ids["b"], store.DeliveryFilter{Limit: 10})
	require.NoError(t, err)
	require.Empty(t, page)
}

func testClaimAndRecord(t *testing.T, s *store.Store) {
	ctx := t.Context()
	insert(t, s, "a", "*")
	for _, id := range []string{"e1", "e2", "e3"} {
		_, err := s.Publish(ctx, event(id, "job.complete"))
		require.NoError(t, err)
	}
	got, err := s.Claim(ctx, store.ClaimRequest{Room: 10, Window: 10, Lease: time.Minute, Cap: 2})
	require.NoError(t, err)
	require.Len(t, got.Jobs, 2, "the cap holds")
	require.True(t, got.Held)
	again, err := s.Claim(ctx, store.ClaimRequest{Room: 10, Window: 10, Lease: time.Minute, Cap: 2, InFlight: map[int64]int{got.Jobs[0].Hook.Seq: 2}})
	require.NoError(t, err)
	require.Empty(t, again.Jobs, "two in flight: none more")
	for _, j := range got.Jobs {
		require.Equal(t, 1, j.Attempt)
		require.NoError(t, s.RecordWait(store.Outcome{DeliveryID: j.DeliveryID, HookSeq: j.Hook.Seq, Attempt: 1, Status: 200, Result: store.ResultDelivered, Started: time.Now()}))
	}
	dl, err := s.Delivery(ctx, got.Jobs[0].DeliveryID)
	require.NoError(t, err)
	require.Equal(t, store.Delivered, dl.Status)
	att, err := s.Attempts(ctx, dl.ID)
	require.NoError(t, err)
	require.Len(t, att, 1)
	require.Equal(t, 200, att[0].StatusCode)
	st, err := s.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(2), st.Counters[store.CounterDelivered])
	require.Equal(t, 1, st.Pending)
}

func testCallerErrorsFailAlone(t *testing.T, s *store.Store) {
	ctx := t.Context()
	insert(t, s, "a", "*")
	errMine := errors.New("the caller's own error")
	var wg sync.WaitGroup
	start := make(chan struct{})
	pubErrs := make([]error, 64)
	for i := range pubErrs {
		wg.Go(func() {
			<-start
			_, pubErrs[i] = s.Publish(ctx, event("evt-"+string(rune('A'+i)), "job.complete"))
		})
	}
	var badErr error
	wg.Go(func() {
		<-start
		badErr = s.Do(ctx, func(tx *store.Tx) error {
			// A statement, then an error: the statement must not survive.
			if _, err := tx.Exec(`UPDATE webhooks SET description = 'changed by a failed op'`); err != nil {
				return err
			}
			return errMine
		})
	})
	close(start)
	wg.Wait()
	require.ErrorIs(t, badErr, errMine)
	for _, err := range pubErrs {
		require.NoError(t, err)
	}
	w, err := s.Webhook(ctx, ids["a"])
	require.NoError(t, err)
	require.Empty(t, w.Description, "the failed op's statement was rolled back")
	page, _, err := s.Deliveries(ctx, ids["a"], store.DeliveryFilter{Limit: 100})
	require.NoError(t, err)
	require.Len(t, page, 64)
}

func testSupersede(t *testing.T, s *store.Store) {
	ctx := t.Context()
	insert(t, s, "a", "score.changed")
	score := func(id string, prev, cur float64) store.Event {
		ev := event(id, "score.changed")
		ev.Score = &store.Score{Subject: "acme", Previous: prev, Current: cur,
			Rescore: func(since float64) ([]byte, error) { return []byte(`{"rescored":true}`), nil }}
		return ev
	}
	_, err := s.Publish(ctx, score("s1", 1, 2))
	require.NoError(t, err)
	_, err = s.Publish(ctx, score("s2", 2, 3))
	require.NoError(t, err)
	page, _, err := s.Deliveries(ctx, ids["a"], store.DeliveryFilter{Limit: 10})
	require.NoError(t, err)
	require.Len(t, page, 2)
	require.Equal(t, store.Pending, page[0].Status)
	require.Equal(t, store.Superseded, page[1].Status)
	got, err := s.Claim(ctx, store.ClaimRequest{Room: 10, Window: 10, Lease: time.Minute, Cap: 10})
	require.NoError(t, err)
	require.Len(t, got.Jobs, 1)
	require.JSONEq(t, `{"rescored":true}`, string(got.Jobs[0].Payload), "the newer carries the change since what was sent")
}

func testBreaker(t *testing.T, s *store.Store) {
	ctx := t.Context()
	insert(t, s, "a", "*")
	for _, id := range []string{"b1", "b2", "b3", "b4"} {
		_, err := s.Publish(ctx, event(id, "job.complete"))
		require.NoError(t, err)
	}
	got, err := s.Claim(ctx, store.ClaimRequest{Room: 3, Window: 10, Lease: time.Minute, Cap: 10})
	require.NoError(t, err)
	require.Len(t, got.Jobs, 3)
	for _, j := range got.Jobs {
		require.NoError(t, s.RecordWait(store.Outcome{DeliveryID: j.DeliveryID, HookSeq: j.Hook.Seq, Attempt: 1, Status: 503, Breaker: true,
			Result: store.ResultRetry, NextAt: time.Now(), Started: time.Now()}))
	}
	// Three failures that count open the breaker (threshold 3): the
	// webhook's deliveries are held for the cool-down, by every claim.
	got, err = s.Claim(ctx, store.ClaimRequest{Room: 10, Window: 10, Lease: time.Minute, Cap: 10})
	require.NoError(t, err)
	require.Empty(t, got.Jobs, "the open breaker holds the webhook's deliveries")
	require.True(t, got.Next.After(time.Now().Add(30*time.Minute)), "held until the cool-down ends: %v", got.Next)
}
