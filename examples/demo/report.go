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
	shown  shown // set by check
}

// shown is what the Slack and Discord stand-ins showed people of the
// failed job's event.
type shown struct {
	job     string // the job's name
	eventID string
	lines   []shownLine
}

type shownLine struct{ receiver, label, text string }

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
func (rep *report) check(c receivers, jobs []*demoJob, published int) []string {
	healthy, flaky, gone := c.healthy, c.flaky, c.gone
	add := func(ok bool, format string, args ...any) {
		rep.checks = append(rep.checks, check{ok, fmt.Sprintf(format, args...)})
	}

	// The healthy and flaky receivers got every event, each delivered
	// and accepted exactly once.
	everyEvent := func(ep *endpoint, want int) (delivered int, ok bool) {
		rows := rep.rowsOf(ep)
		ok = len(rows) == want
		for _, r := range rows {
			oks := 0
			for _, q := range r.reqs {
				if q.accepted() {
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

	// The API kept the format and the events of each registration.
	kept := true
	var formats []string
	for _, ep := range rep.eps {
		st := rep.states[ep]
		kept = kept && st.Format == ep.format() && slices.Equal(st.Events, ep.events)
		formats = append(formats, st.Format)
	}
	add(kept, "GET /webhooks/{id} reports the format and events each webhook was registered with (%s)", strings.Join(formats, ", "))

	// The stand-ins got every published event of the types they
	// subscribed to, and nothing else, each as a valid message.
	sent := map[string]string{} // event ID → type, of every published event
	for _, r := range rep.rowsOf(healthy) {
		if r.dl.EventType != webhook.EventTest {
			sent[r.dl.EventID] = r.dl.EventType
		}
	}
	for _, ep := range []*endpoint{c.slack, c.discord} {
		want := 0
		for _, typ := range sent {
			if subscribed(ep.events, typ) {
				want++
			}
		}
		n, ok := everyEvent(ep, want)
		for _, r := range rep.rowsOf(ep) {
			ok = ok && subscribed(ep.events, sent[r.dl.EventID])
		}
		reqs, valid := ep.got(), 0
		for _, q := range reqs {
			if q.message == nil {
				valid++
			}
		}
		add(ok && valid == len(reqs), "%s got every event it subscribed to (%s): %d of %d delivered, each once; %d of %d requests were valid %s messages (%s)",
			ep.name, strings.Join(ep.events, ", "), n, want, valid, len(reqs), ep.svc.title, ep.svc.valid)
	}

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

	// The failed job reads well in Slack and Discord: both name it.
	named := rep.showFailedJob(c, jobs)
	add(named, "the Slack text and the Discord embed of the failed job %s name it", rep.shown.job)

	var problems []string
	for _, c := range rep.checks {
		if !c.ok {
			problems = append(problems, c.what)
		}
	}
	return problems
}

// showFailedJob sets rep.shown to what the Slack and Discord stand-ins
// showed of the failed job's event, and reports whether the Slack text
// and the Discord title name the job.
func (rep *report) showFailedJob(c receivers, jobs []*demoJob) bool {
	for _, j := range jobs {
		if j.Fail {
			rep.shown.job = j.Name
			for _, q := range c.healthy.got() {
				if q.jobID == j.id && q.eventType == webhook.EventJobFailed {
					rep.shown.eventID = q.eventID
				}
			}
			break
		}
	}
	if rep.shown.eventID == "" {
		return false
	}
	named := map[string]bool{}
	for _, ep := range []*endpoint{c.slack, c.discord} {
		for _, q := range ep.got() {
			if q.eventID != rep.shown.eventID || q.message != nil {
				continue
			}
			for _, p := range q.parts {
				rep.shown.lines = append(rep.shown.lines, shownLine{ep.name, p.label, readable(p.text, 100)})
				if strings.Contains(p.text, rep.shown.job) {
					named[ep.name+" "+p.label] = true
				}
			}
			break
		}
	}
	return named[c.slack.name+" text"] && named[c.discord.name+" title"]
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

	if len(rep.shown.lines) > 0 {
		con.printf("\nWhat the Slack and Discord stand-ins got for the failed job %s  (%s %s)\n", rep.shown.job, webhook.EventJobFailed, shortID(rep.shown.eventID))
		tw = tabwriter.NewWriter(&lineWriter{con}, 0, 0, 2, ' ', 0)
		prev := ""
		for _, l := range rep.shown.lines {
			name := l.receiver
			if name == prev {
				name = ""
			}
			prev = l.receiver
			fmt.Fprintf(tw, "   %s\t%s\t%s\n", name, l.label, l.text)
		}
		tw.Flush()
	}

	con.printf("\nThe webhooks now  (GET /webhooks/{id})\n")
	tw = tabwriter.NewWriter(&lineWriter{con}, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "   RECEIVER\tFORMAT\tEVENTS\tSTATE\tFAILURE STREAK\tREASON")
	for _, ep := range rep.eps {
		st := rep.states[ep]
		reason := st.DisabledReason
		if reason == "" {
			reason = "-"
		}
		fmt.Fprintf(tw, "   %s\t%s\t%s\t%s\t%d\t%s\n", ep.name, st.Format, strings.Join(st.Events, ", "), enabledWord(st.Enabled), st.FailureStreak, reason)
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
