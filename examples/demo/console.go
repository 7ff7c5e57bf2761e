package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// console writes the demo's output. Receivers, jobs and the main flow
// print from different goroutines, so every write holds a lock.
type console struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func newConsole(w io.Writer) *console {
	return &console{w: w, start: time.Now()}
}

// printf prints a line of the main flow.
func (c *console) printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, format+"\n", args...)
}

// step prints the heading of a step.
func (c *console) step(n int, title, api string) {
	c.printf("\n%d. %s  (%s)", n, title, api)
}

// event prints something that happened in the background, stamped with
// the time since the demo started.
func (c *console) event(format string, args ...any) {
	c.printf("   %6s  "+format, append([]any{c.since()}, args...)...)
}

func (c *console) since() string {
	return fmt.Sprintf("+%.2fs", time.Since(c.start).Seconds())
}

// write prints text as it is.
func (c *console) write(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	io.WriteString(c.w, s)
}

// logHandler is a slog.Handler that prints records as console events:
// the message, then its attributes as key=value. It leaves out the
// records whose message is in skip and the attributes whose key is in
// hide.
type logHandler struct {
	c     *console
	level slog.Level
	skip  []string
	hide  []string
	attrs []slog.Attr
}

func (h *logHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	if slices.Contains(h.skip, r.Message) {
		return nil
	}
	var b strings.Builder
	b.WriteString(r.Message)
	add := func(a slog.Attr) bool {
		if !slices.Contains(h.hide, a.Key) {
			fmt.Fprintf(&b, "  %s=%v", a.Key, a.Value)
		}
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	if r.Level >= slog.LevelWarn {
		h.c.event("%s: %s", r.Level, b.String())
		return nil
	}
	h.c.event("%s", b.String())
	return nil
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append(slices.Clip(h.attrs), attrs...)
	return &h2
}

func (h *logHandler) WithGroup(string) slog.Handler { return h }
