package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/netip"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// SMTPTLSMode says how the connection to the SMTP server is protected.
type SMTPTLSMode int

const (
	// SMTPStartTLS connects in clear text and upgrades the connection with
	// STARTTLS before anything else is sent, usually on port 587. A server
	// that does not offer STARTTLS is not sent anything. It is the default.
	SMTPStartTLS SMTPTLSMode = iota
	// SMTPImplicitTLS speaks TLS from the first byte, usually on port 465.
	SMTPImplicitTLS
	// SMTPPlain never uses TLS: messages, and the event data in them, cross
	// the network in clear text, readable and changeable by anyone on the
	// path. It is meant for an SMTP server on the same host, such as a
	// local relay or a test server; credentials are only sent in clear
	// text to a loopback host.
	SMTPPlain
)

// String returns "starttls", "tls" or "plain".
func (m SMTPTLSMode) String() string {
	switch m {
	case SMTPStartTLS:
		return "starttls"
	case SMTPImplicitTLS:
		return "tls"
	case SMTPPlain:
		return "plain"
	}
	return "SMTPTLSMode(" + strconv.Itoa(int(m)) + ")"
}

// SMTPConfig is how email deliveries are sent: a webhook whose URL is
// "mailto:<address>" receives one email, with a plain-text and an HTML
// part, for each event, through this SMTP server.
type SMTPConfig struct {
	// Host and Port locate the SMTP server, such as "smtp.example.com" and
	// 587. Both are required to send email. The server is the host's own
	// configuration, not a stranger's URL, so it may be on a private
	// network: the guard of webhook requests does not apply to it.
	Host string
	Port int
	// TLS says how the connection is protected. The default,
	// SMTPStartTLS, requires STARTTLS.
	TLS SMTPTLSMode
	// Username and Password, when Username is set, are sent with AUTH PLAIN
	// (or AUTH LOGIN, when the server offers only that), only over TLS or
	// to a loopback host. Optional.
	Username, Password string
	// From is the sender of every email, such as
	// "SPARC <sparc@example.com>". Required. Its domain also ends each
	// Message-ID.
	From string
	// TLSConfig, when set, configures TLS, such as RootCAs for a server
	// with a private certificate authority. ServerName defaults to Host.
	// Optional.
	TLSConfig *tls.Config
}

// validate returns a *ValidationError naming the first field of c that is
// wrong, as "SMTP.<field>".
func (c SMTPConfig) validate() error {
	switch {
	case c.Host == "":
		return invalid("SMTP.Host", "is required to send email")
	case !validSMTPHost(c.Host):
		return invalid("SMTP.Host", "must be a host name or an IP address")
	case c.Port < 1 || c.Port > 65535:
		return invalid("SMTP.Port", "must be between 1 and 65535")
	case c.TLS < SMTPStartTLS || c.TLS > SMTPPlain:
		return invalid("SMTP.TLS", "must be SMTPStartTLS, SMTPImplicitTLS or SMTPPlain")
	case c.From == "":
		return invalid("SMTP.From", "is required to send email")
	case strings.ContainsFunc(c.Username+c.Password, func(r rune) bool { return r == 0 || r == '\r' || r == '\n' }):
		return invalid("SMTP.Username", "and the password must not hold NUL, CR or LF")
	case c.Password != "" && c.Username == "":
		return invalid("SMTP.Username", "is required when a password is set")
	case c.Username != "" && c.TLS == SMTPPlain && !loopbackHost(c.Host):
		return invalid("SMTP.TLS", "must not be SMTPPlain with credentials unless the host is loopback: the password would cross the network in clear text")
	}
	a, err := mail.ParseAddress(c.From)
	if err != nil || strings.ContainsAny(c.From, "\r\n") {
		return invalid("SMTP.From", "must be one email address, such as %q", "SPARC <sparc@example.com>")
	}
	if !asciiAddress(a.Address) {
		return invalid("SMTP.From", "must have an ASCII address (international addresses are not supported)")
	}
	return nil
}

// validSMTPHost reports whether h is an IP address or a host name of
// letters, digits, '-' and '_' in dot-separated labels.
func validSMTPHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// loopbackHost reports whether h is "localhost" or a loopback address.
func loopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Unmap().IsLoopback()
}

// asciiAddress reports whether an address is printable ASCII: without
// SMTPUTF8, which this client does not use, nothing else can be sent.
func asciiAddress(a string) bool {
	for i := 0; i < len(a); i++ {
		if a[i] <= ' ' || a[i] >= 0x7f {
			return false
		}
	}
	return a != ""
}

// parseMailto validates the URL of an email webhook, "mailto:" and one
// bare address such as "mailto:ops@example.com", and returns the address.
// Headers and queries (?subject=...), several addresses, display names and
// non-ASCII addresses are refused with a *ValidationError for the field
// "url".
func parseMailto(raw string) (string, error) {
	scheme, rest, ok := strings.Cut(raw, ":")
	if !ok || !strings.EqualFold(scheme, "mailto") {
		return "", invalid("url", "must be mailto: followed by an email address")
	}
	if strings.ContainsAny(rest, "?#") {
		return "", invalid("url", "must be mailto: and one address, without headers or a query")
	}
	addr, err := url.PathUnescape(rest)
	if err != nil {
		return "", invalid("url", "has a malformed %%-escape")
	}
	switch {
	case addr == "":
		return "", invalid("url", "must name an email address after mailto:")
	case !asciiAddress(addr):
		return "", invalid("url", "must hold an ASCII address without spaces or control characters")
	case strings.ContainsAny(addr, ",;"):
		return "", invalid("url", "must hold exactly one address")
	case len(addr) > 254:
		return "", invalid("url", "must hold an address of at most 254 bytes")
	}
	a, err := mail.ParseAddress(addr)
	if err != nil || a.Name != "" || a.Address != addr {
		return "", invalid("url", "must hold one bare email address, such as mailto:ops@example.com")
	}
	if at := strings.LastIndexByte(addr, '@'); at > 64 {
		return "", invalid("url", "must hold an address whose local part is at most 64 bytes")
	}
	return a.Address, nil
}

// ClassSMTP is the error class of an email attempt that the SMTP server
// refused with a 4xx (transient) or 5xx (permanent) reply, or answered in
// a way that this client does not follow.
const ClassSMTP = "smtp"

// emailMessage is one email to send: its rendered content and what its
// headers name.
type emailMessage struct {
	subject, text, html string
	eventID, eventType  string
	deliveryID          int64     // X-SPARC-Delivery; left out when 0
	date                time.Time // the Date header; the time of sending when zero
}

// emailError is a failed email attempt, classified like an HTTP attempt.
// Its message names no address, port or credential.
type emailError struct {
	class     string // ClassTimeout, ClassConnection, ClassDNS, ClassTLS, ClassBlocked or ClassSMTP
	code      int    // the SMTP reply code, 0 when there was none
	permanent bool   // a 5xx reply: sending the same message again will fail again
	msg       string
	err       error
}

func (e *emailError) Error() string { return "webhook: send email: " + e.msg }

func (e *emailError) Unwrap() error { return e.err }

// defaultSMTPTimeout bounds an exchange whose context has no deadline.
const defaultSMTPTimeout = time.Minute

// smtpHello is the name this client gives in EHLO, as net/smtp does.
const smtpHello = "localhost"

// sendEmail sends msg to the address to through the SMTP server of cfg,
// which must be valid, connecting with dial. The whole exchange ends when
// ctx does (after a minute when ctx has no deadline). It returns the reply
// code of the server's final answer to the message, such as 250, or of the
// command that failed, such as 550 (0 when there was no reply), and an
// *emailError that says what failed.
func sendEmail(ctx context.Context, cfg SMTPConfig, dial func(ctx context.Context, network, addr string) (net.Conn, error), to string, msg emailMessage) (code int, err error) {
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return 0, invalid("SMTP.From", "must be one email address")
	}
	// to goes into the RCPT command: whoever forgot parseMailto must not
	// be able to add commands.
	if !asciiAddress(to) || strings.ContainsAny(to, "<>") {
		return 0, invalid("url", "must hold one bare ASCII email address")
	}
	data := msg.build(from, to, time.Now())
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultSMTPTimeout)
		defer cancel()
	}
	conn, err := dial(ctx, "tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
	if err != nil {
		return 0, netEmailError(ctx, err)
	}
	c := &smtpClient{ctx: ctx, cfg: cfg, conn: conn}
	defer func() { c.conn.Close() }()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	// Cancelling ctx interrupts whatever read or write is under way.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	return c.send(from.Address, to, data)
}

// smtpClient is one SMTP exchange.
type smtpClient struct {
	ctx  context.Context
	cfg  SMTPConfig
	conn net.Conn // the TLS connection once TLS is on
	text *textproto.Conn
	ext  map[string]string // EHLO keywords, upper case, and their parameters
	tls  bool
}

// send runs the exchange on the connection: TLS, EHLO, AUTH, one message
// from from to to, and QUIT.
func (c *smtpClient) send(from, to string, data []byte) (int, error) {
	if c.cfg.TLS == SMTPImplicitTLS {
		if err := c.startTLS(); err != nil {
			return 0, err
		}
	}
	c.text = textproto.NewConn(c.conn)
	if code, _, err := c.read(220, "the connection"); err != nil {
		return code, err
	}
	if code, err := c.hello(); err != nil {
		return code, err
	}
	if c.cfg.TLS == SMTPStartTLS {
		if _, ok := c.ext["STARTTLS"]; !ok {
			return 0, &emailError{class: ClassTLS, msg: "the SMTP server does not offer STARTTLS"}
		}
		if code, _, err := c.cmd(220, "STARTTLS", "STARTTLS"); err != nil {
			return code, err
		}
		// Anything sent before the handshake would be taken as if it had
		// come over TLS: refuse it.
		if c.text.R.Buffered() > 0 {
			return 0, &emailError{class: ClassTLS, msg: "the SMTP server sent data before the TLS handshake"}
		}
		if err := c.startTLS(); err != nil {
			return 0, err
		}
		c.text = textproto.NewConn(c.conn)
		if code, err := c.hello(); err != nil {
			return code, err
		}
	}
	if c.cfg.Username != "" {
		if code, err := c.auth(); err != nil {
			return code, err
		}
	}
	if code, _, err := c.cmd(250, "MAIL FROM", "MAIL FROM:<%s>", from); err != nil {
		return code, err
	}
	if code, _, err := c.cmd(25, "RCPT TO", "RCPT TO:<%s>", to); err != nil {
		return code, err
	}
	if code, _, err := c.cmd(354, "DATA", "DATA"); err != nil {
		return code, err
	}
	w := c.text.DotWriter()
	if _, err := w.Write(data); err != nil {
		return 0, netEmailError(c.ctx, err)
	}
	if err := w.Close(); err != nil {
		return 0, netEmailError(c.ctx, err)
	}
	code, _, err := c.read(250, "the message")
	if err != nil {
		return code, err
	}
	c.quit()
	return code, nil
}

// cmd sends a command and reads its reply, which must have the code
// expect (or begin with its digits, when shorter). what names the command
// in errors; the command line itself, which may hold credentials, never
// appears in them.
func (c *smtpClient) cmd(expect int, what, format string, args ...any) (int, string, error) {
	if err := c.text.PrintfLine(format, args...); err != nil {
		return 0, "", netEmailError(c.ctx, err)
	}
	return c.read(expect, what)
}

// read reads a reply, which must have the code expect.
func (c *smtpClient) read(expect int, what string) (int, string, error) {
	code, msg, err := c.text.ReadResponse(expect)
	if err == nil {
		return code, msg, nil
	}
	var te *textproto.Error
	var pe textproto.ProtocolError
	switch {
	case errors.As(err, &te):
		e := &emailError{class: ClassSMTP, code: te.Code, err: err}
		reply := clip(te.Msg, 200, plainEsc, false)
		switch te.Code / 100 {
		case 5:
			e.permanent = true
			e.msg = fmt.Sprintf("the SMTP server refused %s: %d %s", what, te.Code, reply)
		case 4:
			e.msg = fmt.Sprintf("the SMTP server refused %s for now: %d %s", what, te.Code, reply)
		default:
			e.msg = fmt.Sprintf("the SMTP server answered %s with an unexpected %d %s", what, te.Code, reply)
		}
		return te.Code, msg, e
	case errors.As(err, &pe):
		return 0, "", &emailError{class: ClassSMTP, msg: "the SMTP server's answer to " + what + " is malformed", err: err}
	}
	return 0, "", netEmailError(c.ctx, err)
}

// hello sends EHLO, or HELO to a server that does not know EHLO, and
// records the extensions the server offers.
func (c *smtpClient) hello() (int, error) {
	code, msg, err := c.cmd(250, "EHLO", "EHLO %s", smtpHello)
	var ee *emailError
	if errors.As(err, &ee) && ee.class == ClassSMTP && ee.code >= 500 {
		c.ext = map[string]string{}
		code, _, err = c.cmd(250, "HELO", "HELO %s", smtpHello)
		return code, err
	}
	if err != nil {
		return code, err
	}
	c.ext = map[string]string{}
	lines := strings.Split(msg, "\n")
	for _, line := range lines[1:] { // the first line greets
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		c.ext[strings.ToUpper(k)] = v
	}
	return code, nil
}

// startTLS runs the TLS handshake on the connection.
func (c *smtpClient) startTLS() error {
	cfg := &tls.Config{}
	if c.cfg.TLSConfig != nil {
		cfg = c.cfg.TLSConfig.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = c.cfg.Host
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	tc := tls.Client(c.conn, cfg)
	if err := tc.HandshakeContext(c.ctx); err != nil {
		e := netEmailError(c.ctx, err)
		if e.class == ClassConnection && c.ctx.Err() == nil {
			e.class, e.msg = ClassTLS, "the TLS handshake with the SMTP server failed"
		}
		return e
	}
	c.conn, c.tls = tc, true
	return nil
}

// auth authenticates with AUTH PLAIN, or AUTH LOGIN when the server offers
// only that (RFC 4954).
func (c *smtpClient) auth() (int, error) {
	if !c.tls && !loopbackHost(c.cfg.Host) {
		return 0, &emailError{class: ClassTLS, msg: "credentials are sent only over TLS or to a loopback host"}
	}
	mechs := strings.Fields(strings.ToUpper(c.ext["AUTH"]))
	b64 := base64.StdEncoding.EncodeToString
	switch {
	case slices.Contains(mechs, "PLAIN"):
		code, _, err := c.cmd(235, "AUTH", "AUTH PLAIN %s", b64([]byte("\x00"+c.cfg.Username+"\x00"+c.cfg.Password)))
		return code, err
	case slices.Contains(mechs, "LOGIN"):
		if code, _, err := c.cmd(334, "AUTH", "AUTH LOGIN"); err != nil {
			return code, err
		}
		if code, _, err := c.cmd(334, "AUTH", "%s", b64([]byte(c.cfg.Username))); err != nil {
			return code, err
		}
		code, _, err := c.cmd(235, "AUTH", "%s", b64([]byte(c.cfg.Password)))
		return code, err
	}
	return 0, &emailError{class: ClassSMTP, msg: "the SMTP server offers no AUTH mechanism this client has (PLAIN, LOGIN)"}
}

// quit ends the session politely. The message is accepted already, so the
// answer, if any, is not waited for long and does not matter.
func (c *smtpClient) quit() {
	if c.ctx.Err() != nil {
		return
	}
	wait := time.Now().Add(time.Second)
	if d, ok := c.ctx.Deadline(); ok && d.Before(wait) {
		wait = d
	}
	c.conn.SetDeadline(wait)
	if c.text.PrintfLine("QUIT") == nil {
		c.text.ReadResponse(221)
	}
}

// netEmailError classifies an error of the connection, with the classes of
// HTTP attempts.
func netEmailError(ctx context.Context, err error) *emailError {
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recErr tls.RecordHeaderError
	var alert tls.AlertError
	e := &emailError{class: ClassConnection, err: err}
	switch {
	case errors.Is(err, ErrBlockedDestination):
		e.class, e.msg = ClassBlocked, "the SMTP server's address is not allowed"
	case errors.Is(ctx.Err(), context.Canceled) || errors.Is(err, context.Canceled):
		e.msg = "the attempt was cancelled"
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		e.class, e.msg = ClassTimeout, "no answer from the SMTP server in time"
	case errors.As(err, &dnsErr):
		e.class, e.msg = ClassDNS, "the SMTP server's host name could not be resolved"
		if dnsErr.IsNotFound {
			e.msg = "the SMTP server's host name does not resolve"
		}
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr):
		e.class, e.msg = ClassTLS, "the SMTP server's certificate is not valid for it"
	case errors.As(err, &recErr), errors.As(err, &alert):
		e.class, e.msg = ClassTLS, "the TLS handshake with the SMTP server failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		e.msg = "the SMTP server refused the connection"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.EPIPE):
		e.msg = "the SMTP server closed the connection"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		e.msg = "the SMTP server is unreachable"
	default:
		e.msg = "the connection to the SMTP server failed"
	}
	return e
}

// build returns the message as sent after DATA: headers, then a
// multipart/alternative body whose text/plain and text/html parts are
// UTF-8 in quoted-printable, so that every line is 7-bit and short.
func (m emailMessage) build(from *mail.Address, to string, now time.Time) []byte {
	var b bytes.Buffer
	header := func(name, value string) {
		b.WriteString(name)
		b.WriteString(": ")
		b.WriteString(value)
		b.WriteString("\r\n")
	}
	date := m.date
	if date.IsZero() {
		date = now
	}
	header("Date", date.Format(time.RFC1123Z))
	header("From", from.String())
	header("To", (&mail.Address{Address: to}).String())
	b.WriteString(foldHeader("Subject", mime.QEncoding.Encode("utf-8", clip(m.subject, 998, plainEsc, false))))
	header("Message-ID", messageID(m.eventID, m.deliveryID, from.Address))
	header("MIME-Version", "1.0")
	header("Auto-Submitted", "auto-generated") // RFC 3834: no auto-replies
	header(HeaderSPARCEvent, headerToken(m.eventType))
	if m.deliveryID != 0 {
		header(HeaderSPARCDelivery, strconv.FormatInt(m.deliveryID, 10))
	}
	header(textproto.CanonicalMIMEHeaderKey(HeaderWebhookID), headerToken(m.eventID))
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	b.WriteString(foldHeader("Content-Type", mime.FormatMediaType("multipart/alternative", map[string]string{"boundary": mw.Boundary()})))
	b.WriteString("\r\n")
	for _, p := range []struct{ typ, content string }{{"text/plain", m.text}, {"text/html", m.html}} {
		h := textproto.MIMEHeader{}
		h.Set("Content-Type", p.typ+"; charset=utf-8")
		h.Set("Content-Transfer-Encoding", "quoted-printable")
		w, _ := mw.CreatePart(h) // writes to a bytes.Buffer: no error
		qp := quotedprintable.NewWriter(w)
		qp.Write([]byte(strings.ToValidUTF8(p.content, "\uFFFD")))
		qp.Close()
	}
	mw.Close()
	b.Write(body.Bytes())
	return b.Bytes()
}

// foldHeader returns the header line "name: value", CRLF included, folded
// at the spaces of value so that its lines stay within 78 characters where
// they can. An encoded word that does not fit after the name begins a
// line of its own.
func foldHeader(name, value string) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte(':')
	n := len(name) + 1
	for w := range strings.SplitSeq(value, " ") {
		if n+1+len(w) > 78 && n > 1 {
			b.WriteString("\r\n")
			n = 0
		}
		b.WriteByte(' ')
		b.WriteString(w)
		n += 1 + len(w)
	}
	b.WriteString("\r\n")
	return b.String()
}

// headerToken keeps only the printable ASCII of s, which is all an event
// type or ID holds: nothing can end a header early.
func headerToken(s string) string {
	return strings.Map(func(r rune) rune {
		if r > ' ' && r < 0x7f {
			return r
		}
		return -1
	}, s)
}

// messageID returns the Message-ID of an event's email: the event ID and
// the delivery ID, which stay the same across retries so that a receiver
// can tell a repeat, at the domain of the sender. Characters other than
// letters, digits, '_' and '-' are written as "=XX".
func messageID(eventID string, deliveryID int64, from string) string {
	var b strings.Builder
	b.WriteByte('<')
	if eventID == "" {
		var r [16]byte
		rand.Read(r[:])
		eventID = hex.EncodeToString(r[:])
	}
	for i := 0; i < len(eventID); i++ {
		c := eventID[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "=%02X", c)
		}
	}
	if deliveryID != 0 {
		b.WriteByte('.')
		b.WriteString(strconv.FormatInt(deliveryID, 10))
	}
	b.WriteByte('@')
	b.WriteString(messageIDDomain(from))
	b.WriteByte('>')
	return b.String()
}

// messageIDDomain returns the domain of the address from when it is a
// plain domain name, and "localhost" otherwise.
func messageIDDomain(from string) string {
	d := from[strings.LastIndexByte(from, '@')+1:]
	if d == "" || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") || strings.Contains(d, "..") {
		return "localhost"
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return "localhost"
		}
	}
	return d
}
