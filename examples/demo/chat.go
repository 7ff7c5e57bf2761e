package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"
)

// service is a chat service that a receiver stands in for. It reads a
// message as the service would take it, and answers as the service does.
type service struct {
	title  string // "Slack"
	format string // the webhook format that posts to it
	valid  string // what makes a valid message, for people
	ok     int    // the status of an accepted message
	check  func(body []byte) ([]part, error)
	reply  func(w http.ResponseWriter, status int, why string)
}

// part is a part of a message as people see it: the Slack text, the
// Discord embed's title and description.
type part struct{ label, text string }

var (
	// Slack's incoming webhooks answer 200 with the text "ok", and 400
	// with a short code such as "invalid_payload"
	// (docs.slack.dev/messaging/sending-messages-using-incoming-webhooks).
	slackService = &service{
		title: "Slack", format: "slack", valid: "text and blocks", ok: http.StatusOK,
		check: checkSlack, reply: replySlack,
	}
	// Discord's Execute Webhook answers 204 No Content, unless asked to
	// wait for the message, and 400 with a JSON error
	// (discord.com/developers/docs/resources/webhook#execute-webhook).
	discordService = &service{
		title: "Discord", format: "discord", valid: "one embed, no mentions", ok: http.StatusNoContent,
		check: checkDiscord, reply: replyDiscord,
	}
)

// checkSlack checks that body is a Slack incoming-webhook message: a
// fallback text, shown in notifications, and at most 50 Block Kit blocks,
// each with a type. It returns the text.
func checkSlack(body []byte) ([]part, error) {
	var m struct {
		Text   *string `json:"text"`
		Blocks []struct {
			Type string `json:"type"`
		} `json:"blocks"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	switch {
	case m.Text == nil || strings.TrimSpace(*m.Text) == "":
		return nil, errors.New(`no "text"`)
	case len(m.Blocks) == 0:
		return nil, errors.New(`no "blocks"`)
	case len(m.Blocks) > 50:
		return nil, fmt.Errorf("%d blocks, more than 50", len(m.Blocks))
	}
	for i, b := range m.Blocks {
		if b.Type == "" {
			return nil, fmt.Errorf("block %d has no type", i)
		}
	}
	return []part{{"text", *m.Text}}, nil
}

// checkDiscord checks that body is a Discord webhook message with one
// embed, within Discord's limits, and with every mention disabled
// ("allowed_mentions":{"parse":[]}). It returns the embed's title and
// description.
func checkDiscord(body []byte) ([]part, error) {
	var m struct {
		Content string `json:"content"`
		Embeds  []struct {
			Title       string `json:"title"`
			Description string `json:"description"`
		} `json:"embeds"`
		AllowedMentions *struct {
			Parse *[]string `json:"parse"`
		} `json:"allowed_mentions"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	switch {
	case len(m.Embeds) != 1:
		return nil, fmt.Errorf("%d embeds, want 1", len(m.Embeds))
	case m.AllowedMentions == nil || m.AllowedMentions.Parse == nil || len(*m.AllowedMentions.Parse) > 0:
		return nil, errors.New(`mentions are not disabled with "allowed_mentions":{"parse":[]}`)
	case utf8.RuneCountInString(m.Content) > 2000:
		return nil, errors.New("content longer than 2000 characters")
	}
	e := m.Embeds[0]
	switch {
	case strings.TrimSpace(e.Title) == "":
		return nil, errors.New("the embed has no title")
	case utf8.RuneCountInString(e.Title) > 256:
		return nil, errors.New("the embed's title is longer than 256 characters")
	case utf8.RuneCountInString(e.Description) > 4096:
		return nil, errors.New("the embed's description is longer than 4096 characters")
	}
	return []part{{"title", e.Title}, {"description", e.Description}}, nil
}

func replySlack(w http.ResponseWriter, status int, why string) {
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(status)
	switch {
	case status == http.StatusOK:
		io.WriteString(w, "ok")
	case status == http.StatusBadRequest:
		io.WriteString(w, "invalid_payload")
	default:
		io.WriteString(w, why)
	}
}

func replyDiscord(w http.ResponseWriter, status int, why string) {
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	code := 0
	if status == http.StatusBadRequest {
		code = 50035 // Invalid Form Body
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"message": why, "code": code})
}

// readable shows a part of a message on one short line: a code block
// without its fences, lines joined with " / ", cut to max characters.
func readable(s string, max int) string {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "```") && strings.HasSuffix(s, "```") && len(s) >= 6 {
		s = strings.TrimSpace(s[3 : len(s)-3])
	}
	s = strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " / ")), " ")
	if utf8.RuneCountInString(s) > max {
		r := []rune(s)
		s = string(r[:max-1]) + "…"
	}
	return s
}
