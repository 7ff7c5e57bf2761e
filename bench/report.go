package main

// The report: figures with their units and targets, printed as a table or
// as one JSON object.

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
)

// figure is one reported number.
type figure struct {
	key   string // JSON key, such as "webhook_vs_raw"
	mode  string // the mode that measured it
	label string // what the table calls it
	unit  string
	value float64
	// target says what the figure should reach, such as ">= 0.80"; empty
	// when there is none. met is nil when there is no target.
	target string
	met    *bool
	// format, when set, prints the value in the table (counts: "%.0f");
	// otherwise formatValue does.
	format string
}

// report gathers the figures of a run.
type report struct {
	figures []figure
	rounds  map[string][]float64 // per-round figures behind the medians
	errors  map[string]string    // mode → why it has no figures
	skipped map[string]string    // mode → why it did not run (pg without a DSN)
	sizes   map[string]any
	elapsed float64 // seconds, the whole run
	quick   bool
}

func newReport() *report {
	return &report{rounds: map[string][]float64{}, errors: map[string]string{}, skipped: map[string]string{}, sizes: map[string]any{}}
}

// add records a figure without a target.
func (r *report) add(key, mode, label, unit string, v float64) {
	r.figures = append(r.figures, figure{key: key, mode: mode, label: label, unit: unit, value: v})
}

// addAtLeast records a figure that should be at least min.
func (r *report) addAtLeast(key, mode, label, unit string, v, min float64, format string) {
	met := v >= min
	r.figures = append(r.figures, figure{key: key, mode: mode, label: label, unit: unit, value: v,
		target: ">= " + fmt.Sprintf(format, min), met: &met})
}

// addAtMost records a figure that should be at most max.
func (r *report) addAtMost(key, mode, label, unit string, v, max float64, format string) {
	met := v <= max
	r.figures = append(r.figures, figure{key: key, mode: mode, label: label, unit: unit, value: v,
		target: "<= " + fmt.Sprintf(format, max), met: &met})
}

// addZeroCount records a count that should be zero, printed as an integer.
func (r *report) addZeroCount(key, mode, label, unit string, v float64) {
	r.addAtMost(key, mode, label, unit, v, 0, "%.0f")
	r.figures[len(r.figures)-1].format = "%.0f"
}

// round records one round's value of key.
func (r *report) round(key string, v float64) { r.rounds[key] = append(r.rounds[key], v) }

// machine describes where the run happened.
func machine() map[string]any {
	m := map[string]any{
		"cores":      runtime.NumCPU(),
		"gomaxprocs": runtime.GOMAXPROCS(0),
		"go":         runtime.Version(),
		"os_arch":    runtime.GOOS + "/" + runtime.GOARCH,
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return m
}

// writeJSON writes the report as one JSON object: every figure under its
// key, then "rounds", "targets", "errors", "skipped", "sizes", "machine"
// and "elapsed_s".
func (r *report) writeJSON(w io.Writer) error {
	out := map[string]any{}
	targets := map[string]any{}
	for _, f := range r.figures {
		out[f.key] = round3(f.value)
		if f.met != nil {
			targets[f.key] = map[string]any{"target": f.target, "met": *f.met}
		}
	}
	rounds := map[string][]float64{}
	for k, vs := range r.rounds {
		for _, v := range vs {
			rounds[k] = append(rounds[k], round3(v))
		}
	}
	out["rounds"] = rounds
	out["targets"] = targets
	out["errors"] = r.errors
	out["skipped"] = r.skipped
	out["sizes"] = r.sizes
	out["machine"] = machine()
	out["elapsed_s"] = round3(r.elapsed)
	out["quick"] = r.quick
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// writeTable prints the machine, the table of figures, the per-round
// figures and the errors.
func (r *report) writeTable(w io.Writer) {
	m := machine()
	fmt.Fprintf(w, "machine: %v cores (GOMAXPROCS %v), %v, %v, %v\n", m["cores"], m["gomaxprocs"], m["cpu"], m["go"], m["os_arch"])
	fmt.Fprintf(w, "sizes: %s\n\n", r.sizeLine())
	if len(r.figures) == 0 {
		fmt.Fprintln(w, "(no figures)")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if len(r.figures) > 0 {
		fmt.Fprintln(tw, "MODE\tFIGURE\tVALUE\tUNIT\tTARGET\tMET")
	}
	for _, f := range r.figures {
		met := ""
		if f.met != nil {
			met = "no"
			if *f.met {
				met = "yes"
			}
		}
		v := formatValue(f.value)
		if f.format != "" {
			v = fmt.Sprintf(f.format, f.value)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.mode, f.label, v, f.unit, f.target, met)
	}
	tw.Flush()
	if len(r.rounds) > 0 {
		fmt.Fprintln(w, "\nper round (medians above are of these):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, f := range r.figures {
			if vs, ok := r.rounds[f.key]; ok {
				parts := make([]string, len(vs))
				for i, v := range vs {
					parts[i] = formatValue(v)
				}
				fmt.Fprintf(tw, "  %s\t%s\n", f.key, strings.Join(parts, "  "))
			}
		}
		tw.Flush()
	}
	for mode, e := range r.errors {
		fmt.Fprintf(w, "\n%s: NO NUMBERS: %s\n", mode, e)
	}
	for mode, why := range r.skipped {
		fmt.Fprintf(w, "\n%s: SKIPPED: %s\n", mode, why)
	}
	if r.quick {
		fmt.Fprintln(w, "\n-quick: small sizes; the targets are meant for the full run.")
	}
	fmt.Fprintf(w, "\ntotal time: %.1f s\n", r.elapsed)
}

func (r *report) sizeLine() string {
	var parts []string
	for _, k := range []string{"workers", "events", "webhooks", "deliveries", "peer_deliveries", "publish_seconds", "scale_small_deliveries", "scale_large_deliveries", "isolation_deliveries", "pg_deliveries", "pg_processes", "pg_server", "rounds"} {
		if v, ok := r.sizes[k]; ok {
			parts = append(parts, fmt.Sprintf("%s=%v", k, v))
		}
	}
	return strings.Join(parts, " ")
}

// formatValue prints large numbers without decimals and small ones with
// three significant decimals.
func formatValue(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
