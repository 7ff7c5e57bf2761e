package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sparc-webhooks/webhook"
)

// endpoint is a scripted webhook receiver: it verifies both signatures of
// every request with the library's functions, records it, and answers as
// its script says.
type endpoint struct {
	name   string
	script string                    // what it does, for people
	answer func(n int) (int, string) // the status of the n-th request (from 1), and why
	con    *console

	srv *http.Server
	url string

	mu        sync.Mutex
	secret    string
	webhookID string
	requests  []request
}

// request is a request an endpoint got.
type request struct {
	eventID   string
	eventType string
	jobID     string // the data's job_id, for job events
	status    int    // what the endpoint answered
	standard  error  // the result of webhook.Verify
	sparc     error  // the result of webhook.VerifySPARC
}

// verified reports whether both signatures of the request were valid.
func (r request) verified() bool { return r.standard == nil && r.sparc == nil }

// startEndpoint starts an endpoint on a loopback port.
func startEndpoint(con *console, name, script string, answer func(n int) (int, string)) (*endpoint, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ep := &endpoint{name: name, script: script, answer: answer, con: con, url: "http://" + ln.Addr().String() + "/hooks/" + name}
	ep.srv = &http.Server{Handler: ep, ReadHeaderTimeout: 5 * time.Second}
	go ep.srv.Serve(ln)
	return ep, nil
}

// stop shuts the endpoint down.
func (ep *endpoint) stop(ctx context.Context) {
	if ep.srv.Shutdown(ctx) != nil {
		ep.srv.Close()
	}
}

// registered tells the endpoint its webhook's ID and secret, as POST
// /webhooks returned them.
func (ep *endpoint) registered(id, secret string) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	ep.webhookID, ep.secret = id, secret
}

func (ep *endpoint) got() []request {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	return append([]request(nil), ep.requests...)
}

func (ep *endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		http.Error(w, "body unreadable", http.StatusBadRequest)
		return
	}
	var ev struct {
		ID   string `json:"id"`
		Type string `json:"type"`
		Data struct {
			JobID string `json:"job_id"`
		} `json:"data"`
	}
	json.Unmarshal(body, &ev) // a body that is not an event shows as an empty type

	ep.mu.Lock()
	req := request{
		eventID:   r.Header.Get(webhook.HeaderWebhookID),
		eventType: ev.Type,
		jobID:     ev.Data.JobID,
		standard:  webhook.Verify(ep.secret, r.Header, body),
		sparc:     webhook.VerifySPARC(ep.secret, r.Header, body),
	}
	var why string
	req.status, why = ep.answer(len(ep.requests) + 1)
	if !req.verified() {
		req.status, why = http.StatusUnauthorized, "signature check failed: "+errors.Join(req.standard, req.sparc).Error()
	}
	note := ""
	if why != "" {
		note = "  (" + why + ")"
	}
	ep.requests = append(ep.requests, req)
	ep.mu.Unlock()

	ep.con.event("%-7s ← %-14s answered %d %s%s", ep.name, ev.Type, req.status, http.StatusText(req.status), note)
	w.WriteHeader(req.status)
}

// failFirst answers 500 to the first n requests and 200 afterwards.
func failFirst(n int) func(int) (int, string) {
	return func(i int) (int, string) {
		if i <= n {
			return http.StatusInternalServerError, fmt.Sprintf("failing on purpose, %d of %d", i, n)
		}
		return http.StatusOK, ""
	}
}

// always answers status to every request.
func always(status int, why string) func(int) (int, string) {
	return func(int) (int, string) { return status, why }
}
