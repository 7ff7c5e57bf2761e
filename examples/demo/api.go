package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// client calls the host's HTTP API, as a user of the host would.
type client struct {
	base string
	hc   *http.Client
}

// call sends method path with body (JSON, when not nil), expects the
// status want and decodes the answer into out (when not nil).
func (c *client) call(ctx context.Context, method, path string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode != want {
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		json.Unmarshal(b, &e)
		return fmt.Errorf("%s %s: answered %d, want %d: %s %s", method, path, resp.StatusCode, want, e.Error.Code, e.Error.Message)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// The parts of the API's answers that the demo reads.
type (
	createdWebhook struct {
		ID     string `json:"id"`
		Format string `json:"format"`
		Secret string `json:"secret"`
	}
	webhookState struct {
		Format         string   `json:"format"`
		Events         []string `json:"events"`
		Enabled        bool     `json:"enabled"`
		FailureStreak  int      `json:"failure_streak"`
		DisabledReason string   `json:"disabled_reason"`
	}
	testResult struct {
		Delivered  bool  `json:"delivered"`
		StatusCode int   `json:"status_code"`
		DurationMS int64 `json:"duration_ms"`
	}
	delivery struct {
		ID        int64  `json:"id"`
		EventID   string `json:"event_id"`
		EventType string `json:"event_type"`
		Status    string `json:"status"`
		Attempts  int    `json:"attempts"`
	}
	deliveryPage struct {
		Deliveries []delivery `json:"deliveries"`
		NextCursor string     `json:"next_cursor"`
	}
	attempt struct {
		StatusCode int `json:"status_code"`
	}
	jobStarted struct {
		JobID string `json:"job_id"`
	}
	scoreResult struct {
		Published bool   `json:"published"`
		EventID   string `json:"event_id"`
	}
)

// deliveries returns every delivery of a webhook, oldest first.
func (c *client) deliveries(ctx context.Context, webhookID string) ([]delivery, error) {
	var all []delivery
	cursor := ""
	for {
		path := "/webhooks/" + webhookID + "/deliveries?limit=500"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		var page deliveryPage
		if err := c.call(ctx, http.MethodGet, path, nil, http.StatusOK, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Deliveries...)
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
		all[i], all[j] = all[j], all[i]
	}
	return all, nil
}
