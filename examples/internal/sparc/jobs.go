package sparc

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/http"
	"strings"
	"time"

	"github.com/sparc-webhooks/webhook"
)

// job is a batch job to run.
type job struct {
	id    string
	name  string
	items int
	fail  bool
}

// createJob serves POST /jobs: it starts a job and answers 202 with its ID.
func (s *Server) createJob(w http.ResponseWriter, r *http.Request) {
	j, err := readJob(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		writeError(w, errShuttingDown)
		return
	case s.running >= s.maxJobs:
		s.mu.Unlock()
		writeError(w, &apiError{status: http.StatusTooManyRequests, code: codeTooManyRequests,
			message: fmt.Sprintf("%d jobs are running, the most allowed; try again later", s.maxJobs)})
		return
	}
	s.running++
	s.jobs.Add(1)
	s.mu.Unlock()

	j.id = newJobID()
	go s.run(j)
	writeJSON(w, http.StatusAccepted, struct {
		JobID string `json:"job_id"`
	}{j.id})
}

// readJob decodes and checks the body of POST /jobs.
func readJob(w http.ResponseWriter, r *http.Request) (job, *apiError) {
	obj, err := readObject(w, r, "name", "items", "fail")
	if err != nil {
		return job{}, err
	}
	j := job{items: DefaultItems}
	if ok, err := obj.str("name", &j.name); err != nil {
		return job{}, err
	} else if !ok {
		return job{}, badField("name", "is required")
	}
	if strings.TrimSpace(j.name) == "" || len(j.name) > 128 {
		return job{}, badField("name", "must be 1 to 128 bytes and not blank")
	}
	if _, err := obj.integer("items", &j.items); err != nil {
		return job{}, err
	}
	if j.items < 0 || j.items > MaxItems {
		return job{}, badField("items", fmt.Sprintf("must be between 0 and %d", MaxItems))
	}
	if _, err := obj.boolean("fail", &j.fail); err != nil {
		return job{}, err
	}
	return j, nil
}

// completeResult is the result of a job.complete event.
type completeResult struct {
	Items int     `json:"items"`
	Score float64 `json:"score"`
}

// partialResult is the result of a job.failed event.
type partialResult struct {
	Items int `json:"items"`
}

// run processes the job's items, one every s.itemInterval, and publishes
// its outcome. A job asked to fail fails halfway through; a job
// interrupted by Close fails too.
func (s *Server) run(j job) {
	defer func() {
		s.mu.Lock()
		s.running--
		s.mu.Unlock()
		s.jobs.Done()
	}()
	log := s.log.With("job_id", j.id, "job_name", j.name)
	log.Info("job started", "items", j.items, "fail", j.fail)
	started := time.Now()

	tick := time.NewTicker(s.itemInterval)
	defer tick.Stop()
	step := max(1, j.items/4) // log progress about four times
	done := 0
	failure := ""
	for failure == "" && done < j.items {
		if j.fail && done == j.items/2 {
			failure = fmt.Sprintf("simulated failure at item %d of %d", done+1, j.items)
			break
		}
		select {
		case <-s.ctx.Done():
			failure = fmt.Sprintf("interrupted by the host shutting down after %d of %d items", done, j.items)
		case <-tick.C:
			done++
			if done%step == 0 || done == j.items {
				log.Info("job progress", "done", done, "items", j.items)
			}
		}
	}
	if j.fail && failure == "" { // a job of zero items
		failure = "simulated failure before the first item"
	}

	finished := time.Now()
	var ev webhook.Event
	if failure == "" {
		ev = webhook.NewJobComplete(webhook.JobComplete{
			JobID: j.id, Name: j.name, StartedAt: started, FinishedAt: finished,
			Result: completeResult{Items: done, Score: score(j.name)},
		})
	} else {
		ev = webhook.NewJobFailed(webhook.JobFailed{
			JobID: j.id, Name: j.name, StartedAt: started, FinishedAt: finished,
			Result: partialResult{Items: done}, Error: failure,
		})
	}
	// The outcome is recorded even when Close interrupted the job.
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	p, err := s.pub.Publish(ctx, ev)
	if err != nil {
		log.Error("job outcome not published", "event_type", ev.Type, "error", err)
		return
	}
	if failure != "" {
		log.Warn("job failed", "done", done, "items", j.items, "error", failure, "event_id", p.EventID, "deliveries", p.Deliveries)
		return
	}
	log.Info("job complete", "items", done, "event_id", p.EventID, "deliveries", p.Deliveries)
}

// score is the simulated quality score of a job's output, between 0 and
// 99.9, derived from its name so that reruns agree.
func score(name string) float64 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return float64(h.Sum32()%1000) / 10
}
