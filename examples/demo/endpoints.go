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
// every request with the library's functions, checks that the body is a
// message of its webhook's format, records it, and answers as its script
// says. An endpoint with a service stands in for Slack or Discord.
type endpoint struct {
	name   string
	script string                    // what it does, for people
	events []string                  // what its webhook subscribes to
	svc    *service                  // the service it stands in for; nil for a JSON receiver
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
	jobID     string // the data's job_id, for job events in the JSON format
	status    int    // what the endpoint answered
	standard  error  // the result of webhook.Verify
	sparc     error  // the result of webhook.VerifySPARC
	message   error  // why the body is not a message of the webhook's format; nil when it is
	parts     []part // what people see of a Slack or Discord message
}

// verified reports whether both signatures of the request were valid.
func (r request) verified() bool { return r.standard == nil && r.sparc == nil }

// accepted reports whether the endpoint answered with a 2xx status.
func (r request) accepted() bool { return r.status >= 200 && r.status < 300 }

// startEndpoint starts ep, whose name, script, events, service and answer
// are set, on a loopback port.
func startEndpoint(con *console, ep *endpoint) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ep.con, ep.url = con, "http://"+ln.Addr().String()+"/hooks/"+ep.name
	ep.srv = &http.Server{Handler: ep, ReadHeaderTimeout: 5 * time.Second}
	go ep.srv.Serve(ln)
	return nil
}

// format returns the format of the endpoint's webhook.
func (ep *endpoint) format() string {
	if ep.svc == nil {
		return string(webhook.FormatJSON)
	}
	return ep.svc.format
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
	req := request{eventID: r.Header.Get(webhook.HeaderWebhookID)}
	kind := "an event"
	if ep.svc == nil {
		var ev struct {
			ID   string `json:"id"`
			Type string `json:"type"`
			Data struct {
				JobID string `json:"job_id"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &ev); err != nil || ev.ID == "" || ev.Type == "" {
			req.message = errors.New("not an event envelope")
		}
		req.eventType, req.jobID = ev.Type, ev.Data.JobID
	} else {
		// A message for people does not hold its event's type; the
		// header does.
		kind = "a " + ep.svc.title + " message"
		req.eventType = r.Header.Get(webhook.HeaderSPARCEvent)
		req.parts, req.message = ep.svc.check(body)
	}

	ep.mu.Lock()
	req.standard = webhook.Verify(ep.secret, r.Header, body)
	req.sparc = webhook.VerifySPARC(ep.secret, r.Header, body)
	var why string
	req.status, why = ep.answer(len(ep.requests) + 1)
	switch {
	case !req.verified():
		req.status, why = http.StatusUnauthorized, "signature check failed: "+errors.Join(req.standard, req.sparc).Error()
	case req.message != nil:
		req.status, why = http.StatusBadRequest, "not "+kind+": "+req.message.Error()
	}
	note := ""
	if why != "" {
		note = "  (" + why + ")"
	}
	ep.requests = append(ep.requests, req)
	ep.mu.Unlock()

	ep.con.event("%-7s ← %-14s answered %d %s%s", ep.name, req.eventType, req.status, http.StatusText(req.status), note)
	if ep.svc != nil {
		ep.svc.reply(w, req.status, why)
		return
	}
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
