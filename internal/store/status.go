package store

import (
	"strconv"
	"unicode/utf8"
)

// Status is a delivery's state as stored.
type Status int

// The delivery states.
const (
	Pending    Status = 0 // waiting for an attempt, or being attempted (leased)
	Delivered  Status = 1 // a 2xx answer came
	Failed     Status = 2 // no attempt remains, or a 410 disabled its webhook
	Cancelled  Status = 3 // its webhook was disabled or deleted first
	Superseded Status = 4 // a newer score.changed for its subject replaced it
)

// The states as SQL literals. Statements spell them out, rather than bind
// them, because SQLite uses a partial index (the due index, WHERE status =
// 0) only when its condition appears literally in the query.
const (
	pending    = "0"
	delivered  = "1"
	failed     = "2"
	cancelled  = "3"
	superseded = "4"
)

// Trigger is what started an attempt, as stored.
type Trigger int

// The triggers.
const (
	Scheduled Trigger = 0 // the workers
	Manual    Trigger = 1 // Retry
	Test      Trigger = 2 // SendTest
)

// Counter names, as stored in webhook_counters and reported to OnSettled.
const (
	CounterDelivered      = "deliveries_delivered"
	CounterFailed         = "deliveries_failed"
	CounterCancelled      = "deliveries_cancelled"
	CounterSuperseded     = "deliveries_superseded"
	CounterAttemptsOK     = "attempts_succeeded"
	CounterAttemptsFailed = "attempts_failed"
)

// idList returns ids as a JSON array, the form in which a statement takes
// a list (json_each, json_array_elements_text).
func idList(ids []int64) string {
	b := make([]byte, 0, 2+len(ids)*8)
	for _, id := range ids {
		b = appendIDs(b, id)
	}
	return closeIDs(b)
}

// appendIDs appends an ID to an unterminated JSON array of IDs.
func appendIDs(b []byte, id int64) []byte {
	if len(b) == 0 {
		b = append(b, '[')
	} else {
		b = append(b, ',')
	}
	return strconv.AppendInt(b, id, 10)
}

// closeIDs closes a JSON array of IDs made by appendIDs.
func closeIDs(b []byte) string {
	if len(b) == 0 {
		return "[]"
	}
	return string(append(b, ']'))
}

// appendRowStart opens a row of a JSON array of rows.
func appendRowStart(b []byte) []byte {
	if len(b) == 0 {
		return append(b, '[', '[')
	}
	return append(b, ',', '[')
}

// closeRows closes a JSON array of rows.
func closeRows(b []byte) string {
	if len(b) == 0 {
		return "[]"
	}
	return string(append(b, ']'))
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hexdigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexdigits[c>>4], hexdigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
