package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/sparc-webhooks/webhook"
)

// report is what the demo found once every delivery had settled.
type report struct {
	eps    []*endpoint
	rows   []row
	states map[*endpoint]webhookState
	checks []check
}

// row is one delivery: what the library recorded and what the receiver
// saw.
type row struct {
	ep    *endpoint
	dl    delivery
	codes []int     // the status of each attempt, from the attempt log
	reqs  []request // the receiver's requests for the delivery's event
}

// check is one thing that should have happened.
type check struct {
	ok   bool
	what string
}

// gather reads, through the API, the attempts of every delivery and the
// final state of every webhook.
func gather(ctx context.Context, api *client, eps []*endpoint, all map[*endpoint][]delivery) (*report, error) {
	rep := &report{eps: eps, states: map[*endpoint]webhookState{}}
	for _, ep := range eps {
		got := ep.got()
		for _, dl := range all[ep] {
			var ans struct {
				Attempts []attempt `json:"attempts"`
			}
			if err := api.call(ctx, http.MethodGet, "/deliveries/"+strconv.FormatInt(dl.ID, 10)+"/attempts", nil, http.StatusOK, &ans); err != nil {
				return nil, err
			}
			r := row{ep: ep, dl: dl}
			for _, a := range ans.Attempts {
				r.codes = append(r.codes, a.StatusCode)
			}
			for _, q := range got {
				if q.eventID == dl.EventID {
					r.reqs = append(r.reqs, q)
				}
			}
			rep.rows = append(rep.rows, r)
		}
		var st webhookState
		if err := api.call(ctx, http.MethodGet, "/webhooks/"+ep.webhookID, nil, http.StatusOK, &st); err != nil {
			return nil, err
		}
		rep.states[ep] = st
	}
	return rep, nil
}

func (rep *report) rowsOf(ep *endpoint) []row {
	var out []row
	for _, r := range rep.rows {
		if r.ep == ep {
			out = append(out, r)
		}
	}
	return out
}

// check decides whether what should have happened happened, and returns
// what did not.
func (rep *report) check(healthy, flaky, gone *endpoint, jobs []*demoJob, published int) []string {
	add := func(ok bool, format string, args ...any) {
		rep.checks = append(rep.checks, check{ok, fmt.Sprintf(format, args...)})
	}

	// The healthy and flaky receivers got every event, each delivered
	// and received with a 200 exactly once.
	everyEvent := func(ep *endpoint, want int) (delivered int, ok bool) {
		rows := rep.rowsOf(ep)
		ok = len(rows) == want
		for _, r := range rows {
			oks := 0
			for _, q := range r.reqs {
				if q.status == http.StatusOK {
					oks++
				}
			}
			if r.dl.Status == string(webhook.StatusDelivered) && oks == 1 {
				delivered++
			} else {
				ok = false
			}
		}
		return delivered, ok
	}
	n, ok := everyEvent(healthy, published+1)
	add(ok, "healthy got every event: %d of %d (%d published and a test) delivered, each once", n, published+1, published)

	n, ok = everyEvent(flaky, published)
	failed := 0
	for _, q := range flaky.got() {
		if q.status == http.StatusInternalServerError {
			failed++
		}
	}
	add(ok && failed == flakyFailures, "flaky got every event after retries: %d of %d delivered; %d failed attempts were retried", n, published, failed)

	// The gone receiver got one request, and its webhook was disabled:
	// its other deliveries, if any, were cancelled.
	reqs := gone.got()
	goneOK := len(reqs) == 1 && reqs[0].status == http.StatusGone && !rep.states[gone].Enabled
	for _, r := range rep.rowsOf(gone) {
		switch {
		case len(reqs) == 1 && r.dl.EventID == reqs[0].eventID:
			goneOK = goneOK && r.dl.Status == string(webhook.StatusFailed) && r.dl.Attempts == 1
		default:
			goneOK = goneOK && r.dl.Status == string(webhook.StatusCancelled) && r.dl.Attempts == 0
		}
	}
	add(goneOK, "gone got %d request, answered 410, and its webhook is %s", len(reqs), enabledWord(rep.states[gone].Enabled))

	// Every request carried two valid signatures.
	total, valid := 0, 0
	for _, ep := range rep.eps {
		for _, q := range ep.got() {
			total++
			if q.verified() {
				valid++
			}
		}
	}
	add(total > 0 && valid == total, "%d of %d requests carried a valid Standard Webhooks and a valid SPARC signature", valid, total)

	// The library's attempt log agrees with what the receivers answered.
	agree := true
	for _, r := range rep.rows {
		var answered []int
		for _, q := range r.reqs {
			answered = append(answered, q.status)
		}
		agree = agree && slices.Equal(r.codes, answered)
	}
	add(agree, "the attempt log (GET /deliveries/{id}/attempts) matches what the receivers answered")

	// Each job announced its end with the right event type.
	right := 0
	for _, j := range jobs {
		want := webhook.EventJobComplete
		if j.Fail {
			want = webhook.EventJobFailed
		}
		for _, q := range healthy.got() {
			if q.jobID == j.id && q.eventType == want {
				right++
				break
			}
		}
	}
	add(right == len(jobs), "%d of %d jobs announced their end with the right event type", right, len(jobs))

	var problems []string
	for _, c := range rep.checks {
		if !c.ok {
			problems = append(problems, c.what)
		}
	}
	return problems
}

// print prints the tables and the checks.
func (rep *report) print(con *console) {
	con.printf("\nWhat each receiver got  (attempts and status codes from the library's attempt log)\n")
	tw := tabwriter.NewWriter(&lineWriter{con}, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "   RECEIVER\tEVENT\tEVENT ID\tATTEMPTS\tSTATUS CODES\tSIGNATURES\tDELIVERY")
	prev := (*endpoint)(nil)
	for _, r := range rep.rows {
		name := r.ep.name
		if r.ep == prev {
			name = ""
		}
		prev = r.ep
		fmt.Fprintf(tw, "   %s\t%s\t%s\t%d\t%s\t%s\t%s\n", name, r.dl.EventType, shortID(r.dl.EventID), r.dl.Attempts, codes(r.codes), signatures(r.reqs), r.dl.Status)
	}
	tw.Flush()

	con.printf("\nThe webhooks now  (GET /webhooks/{id})\n")
	tw = tabwriter.NewWriter(&lineWriter{con}, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "   RECEIVER\tSTATE\tFAILURE STREAK\tREASON")
	for _, ep := range rep.eps {
		st := rep.states[ep]
		reason := st.DisabledReason
		if reason == "" {
			reason = "-"
		}
		fmt.Fprintf(tw, "   %s\t%s\t%d\t%s\n", ep.name, enabledWord(st.Enabled), st.FailureStreak, reason)
	}
	tw.Flush()

	con.printf("\nChecks\n")
	for _, c := range rep.checks {
		mark := "ok  "
		if !c.ok {
			mark = "FAIL"
		}
		con.printf("   %s  %s", mark, c.what)
	}
}

func enabledWord(enabled bool) string {
	if enabled {
		return "enabled"
	}
	return "disabled"
}

// shortID shortens an event ID for the table: its prefix and its last,
// random, characters.
func shortID(id string) string {
	if len(id) <= 14 {
		return id
	}
	if i := strings.IndexByte(id, '_'); i >= 0 && i < 8 {
		return id[:i+1] + "…" + id[len(id)-8:]
	}
	return "…" + id[len(id)-12:]
}

func codes(cs []int) string {
	if len(cs) == 0 {
		return "-"
	}
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = strconv.Itoa(c)
		if c == 0 {
			parts[i] = "no answer"
		}
	}
	return strings.Join(parts, " → ")
}

func signatures(reqs []request) string {
	if len(reqs) == 0 {
		return "-"
	}
	for _, q := range reqs {
		if !q.verified() {
			return "INVALID"
		}
	}
	return "both valid"
}
