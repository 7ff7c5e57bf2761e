package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
)

// FuzzAPIDecoding sends arbitrary bodies to the routes that decode JSON.
// Whatever the body, the API answers with a documented status and a JSON
// body (an error object, or the resource), never a 500 or a panic.
func FuzzAPIDecoding(f *testing.F) {
	for _, seed := range []string{
		`{"url":"https://example.com/h","events":["*"]}`,
		`{"url":"https://example.com/h","events":["job.*"],"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw","description":"d","enabled":false}`,
		`{"URL":"https://example.com/h","events":["*"]}`,
		`{"url":null}`, `null`, `[]`, `{}`, `{"url":"x","url":"y"}`, `{"events":[1,2]}`,
		`{"url":"https://example.com/h","events":["*"]} trailing`, `{"since":"2026-01-01T00:00:00Z"}`,
		"\xff\xfe", `{"enabled":"yes"}`, `{"grace_seconds":-5}`,
		`{"url":"https://example.com/h","events":["*"],"format":"slack"}`, `{"format":"email"}`, `{"recover":true}`,
	} {
		f.Add(seed, uint8(0))
		f.Add(seed, uint8(1))
		f.Add(seed, uint8(2))
		f.Add(seed, uint8(3))
		f.Add(seed, uint8(4))
	}
	cfg := testConfig()
	cfg.DisableDelivery = true
	d, err := Open(context.Background(), filepath.Join(f.TempDir(), "fuzz.db"), cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Close(context.Background()) })
	w, err := d.Register(context.Background(), Registration{URL: "https://example.com/fixed", Events: []string{"*"}})
	if err != nil {
		f.Fatal(err)
	}
	h := d.Handler()
	routes := []struct{ method, path string }{
		{http.MethodPost, "/webhooks"},
		{http.MethodPatch, "/webhooks/" + w.ID},
		{http.MethodPost, "/webhooks/" + w.ID + "/recover"},
		{http.MethodPost, "/webhooks/" + w.ID + "/enable"},
		{http.MethodPost, "/webhooks/" + w.ID + "/rotate-secret"},
	}
	f.Fuzz(func(t *testing.T, body string, which uint8) {
		rt := routes[int(which)%len(routes)]
		req := httptest.NewRequest(rt.method, rt.path, bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusCreated, http.StatusBadRequest, http.StatusConflict, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("%s %s with %q: status %d: %s", rt.method, rt.path, body, rec.Code, rec.Body)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("the answer is not JSON: %q", rec.Body)
		}
		if rec.Code == http.StatusBadRequest {
			var e struct {
				Error struct {
					Code    string `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Fatalf("a 400 without an error object: %s", rec.Body)
			}
		}
	})
}
