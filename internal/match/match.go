// Package match decides which subscription patterns match an event type.
// The root package validates patterns; the store uses Any at fan-out.
package match

import "strings"

// Event reports whether a subscription pattern matches an event type.
// "*" matches every type; otherwise the pattern and the type must have as
// many dot-separated segments, and each segment of the pattern must equal
// the type's or be "*": "job.*" matches "job.complete" but not
// "job.step.done".
func Event(pattern, typ string) bool {
	if pattern == "*" || pattern == typ {
		return true
	}
	for {
		pi := strings.IndexByte(pattern, '.')
		ti := strings.IndexByte(typ, '.')
		if (pi < 0) != (ti < 0) {
			return false
		}
		ps, ts := pattern, typ
		if pi >= 0 {
			ps, ts = pattern[:pi], typ[:ti]
		}
		if ps != "*" && ps != ts {
			return false
		}
		if pi < 0 {
			return true
		}
		pattern, typ = pattern[pi+1:], typ[ti+1:]
	}
}

// Any reports whether any of patterns matches typ.
func Any(patterns []string, typ string) bool {
	for _, p := range patterns {
		if Event(p, typ) {
			return true
		}
	}
	return false
}
