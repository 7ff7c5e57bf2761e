package webhook

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/require"
)

// smtpTestCert is a self-signed certificate for localhost, 127.0.0.1 and
// ::1, and a pool that trusts it.
var smtpTestCert = sync.OnceValues(func() (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(parsed)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
})

// smtpServerOptions says how a test SMTP server behaves.
type smtpServerOptions struct {
	startTLS     bool              // offer STARTTLS
	implicitTLS  bool              // speak TLS from the first byte
	insecureAuth bool              // offer AUTH without TLS
	users        map[string]string // accounts for AUTH; AUTH is required when set
	loginOnly    bool              // offer AUTH LOGIN, not PLAIN
	rcptErr      error             // the answer to RCPT TO
	dataErr      error             // the answer to the message
}

// smtpMail is a message as the test server received it.
type smtpMail struct {
	from string
	to   []string
	data []byte
	tls  bool
	user string
}

// smtpTestServer is a go-smtp server on loopback that records what it
// receives. It is shut down when the test ends.
type smtpTestServer struct {
	opts     smtpServerOptions
	host     string
	port     int
	mu       sync.Mutex
	mails    []smtpMail
	mailCmds int // MAIL commands seen
}

func startSMTPServer(t *testing.T, opts smtpServerOptions) *smtpTestServer {
	t.Helper()
	cert, _ := smtpTestCert()
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().(*net.TCPAddr)
	ts := &smtpTestServer{opts: opts, host: addr.IP.String(), port: addr.Port}
	if opts.implicitTLS {
		ln = tls.NewListener(ln, tlsCfg)
	}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &smtpTestSession{srv: ts, conn: c}, nil
	}))
	s.Domain = "localhost"
	s.ErrorLog = log.New(io.Discard, "", 0)
	s.AllowInsecureAuth = opts.insecureAuth
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	if opts.startTLS {
		s.TLSConfig = tlsCfg
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("smtp server shutdown: %v", err)
		}
		<-served
	})
	return ts
}

// received returns the messages received so far and how many MAIL
// commands were given.
func (ts *smtpTestServer) received() ([]smtpMail, int) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.mails), ts.mailCmds
}

// config returns an SMTPConfig for this server.
func (ts *smtpTestServer) config() SMTPConfig {
	_, pool := smtpTestCert()
	c := SMTPConfig{Host: ts.host, Port: ts.port, From: "SPARC Alerts <sparc@example.com>", TLSConfig: &tls.Config{RootCAs: pool}}
	switch {
	case ts.opts.implicitTLS:
		c.TLS = SMTPImplicitTLS
	case ts.opts.startTLS:
		c.TLS = SMTPStartTLS
	default:
		c.TLS = SMTPPlain
	}
	return c
}

type smtpTestSession struct {
	srv  *smtpTestServer
	conn *smtp.Conn
	from string
	to   []string
	user string
}

func (s *smtpTestSession) AuthMechanisms() []string {
	switch {
	case s.srv.opts.users == nil:
		return nil
	case s.srv.opts.loginOnly:
		return []string{"LOGIN"}
	}
	return []string{sasl.Plain}
}

func (s *smtpTestSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if want, ok := s.srv.opts.users[user]; !ok || want != pass {
			return smtp.ErrAuthFailed
		}
		s.user = user
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case "LOGIN":
		return &loginServer{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *smtpTestSession) Mail(from string, _ *smtp.MailOptions) error {
	s.srv.mu.Lock()
	s.srv.mailCmds++
	s.srv.mu.Unlock()
	if s.srv.opts.users != nil && s.user == "" {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *smtpTestSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.srv.opts.rcptErr != nil {
		return s.srv.opts.rcptErr
	}
	s.to = append(s.to, to)
	return nil
}

func (s *smtpTestSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.srv.opts.dataErr != nil {
		return s.srv.opts.dataErr
	}
	_, isTLS := s.conn.TLSConnectionState()
	s.srv.mu.Lock()
	s.srv.mails = append(s.srv.mails, smtpMail{from: s.from, to: s.to, data: data, tls: isTLS, user: s.user})
	s.srv.mu.Unlock()
	return nil
}

func (s *smtpTestSession) Reset()        { s.from, s.to = "", nil }
func (s *smtpTestSession) Logout() error { return nil }

// loginServer is the server side of AUTH LOGIN, which go-sasl lacks.
type loginServer struct {
	step  int
	user  string
	check func(user, pass string) error
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	l.step++
	switch l.step {
	case 1:
		return []byte("Username:"), false, nil
	case 2:
		l.user = string(resp)
		return []byte("Password:"), false, nil
	}
	return nil, true, l.check(l.user, string(resp))
}

var smtpDial = (&net.Dialer{}).DialContext

// testEmail returns a message rendered from a job.failed event with
// non-ASCII text and lines that need dot-stuffing.
func testEmail(t *testing.T) emailMessage {
	r := newTestRenderer(t, formatLinks)
	payload := formatPayload(t, NewJobFailed(JobFailed{
		JobID: "job-43", Name: "Nächtliche Auswertung ✓", DurationMS: 90000,
		Error: ".hidden file missing\n.\n..\nend of trace " + strings.Repeat("long line ", 30),
	}))
	subject, text, html, err := r.renderEmail(payload)
	require.NoError(t, err)
	return emailMessage{subject: subject, text: text, html: html, eventID: "evt_0001", eventType: EventJobFailed, deliveryID: 7,
		date: formatTime}
}

func emailContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// readEmail parses a received message and returns its headers and the
// decoded text and HTML parts.
func readEmail(t *testing.T, data []byte) (mail.Header, string, string) {
	t.Helper()
	for i, line := range strings.Split(string(data), "\r\n") {
		require.LessOrEqual(t, len(line), 78, "line %d is short: %q", i, line)
		for _, c := range []byte(line) {
			require.True(t, c == '\t' || c >= ' ' && c < 0x7f, "line %d is 7-bit: %q", i, line)
		}
	}
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	require.NoError(t, err)
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	require.NoError(t, err)
	require.Equal(t, "multipart/alternative", mediaType)
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var parts []string
	for _, want := range []string{"text/plain; charset=utf-8", "text/html; charset=utf-8"} {
		p, err := mr.NextRawPart()
		require.NoError(t, err)
		require.Equal(t, want, p.Header.Get("Content-Type"))
		require.Equal(t, "quoted-printable", p.Header.Get("Content-Transfer-Encoding"))
		b, err := io.ReadAll(quotedprintable.NewReader(p))
		require.NoError(t, err)
		parts = append(parts, strings.ReplaceAll(string(b), "\r\n", "\n"))
	}
	_, err = mr.NextRawPart()
	require.ErrorIs(t, err, io.EOF)
	return msg.Header, parts[0], parts[1]
}

func TestSendEmail(t *testing.T) {
	ts := startSMTPServer(t, smtpServerOptions{})
	msg := testEmail(t)
	code, err := sendEmail(emailContext(t), ts.config(), smtpDial, "ops@example.com", msg)
	require.NoError(t, err)
	require.Equal(t, 250, code)

	mails, _ := ts.received()
	require.Len(t, mails, 1)
	got := mails[0]
	require.Equal(t, "sparc@example.com", got.from)
	require.Equal(t, []string{"ops@example.com"}, got.to)
	require.False(t, got.tls)

	h, text, html := readEmail(t, got.data)
	date, err := h.Date()
	require.NoError(t, err)
	require.True(t, date.Equal(formatTime))
	from, err := h.AddressList("From")
	require.NoError(t, err)
	require.Equal(t, []*mail.Address{{Name: "SPARC Alerts", Address: "sparc@example.com"}}, from)
	to, err := h.AddressList("To")
	require.NoError(t, err)
	require.Equal(t, []*mail.Address{{Address: "ops@example.com"}}, to)
	subject, err := new(mime.WordDecoder).DecodeHeader(h.Get("Subject"))
	require.NoError(t, err)
	require.Equal(t, "[SPARC] Job Nächtliche Auswertung ✓ failed after 1m30s", subject)
	require.Equal(t, msg.subject, subject)
	require.Equal(t, "<evt_0001.7@example.com>", h.Get("Message-ID"))
	require.Equal(t, "1.0", h.Get("MIME-Version"))
	require.Equal(t, "auto-generated", h.Get("Auto-Submitted"))
	require.Equal(t, "job.failed", h.Get("X-SPARC-Event"))
	require.Equal(t, "7", h.Get("X-SPARC-Delivery"))
	require.Equal(t, "evt_0001", h.Get("webhook-id"))

	require.Equal(t, msg.text, text)
	require.Equal(t, msg.html, html)
	require.Contains(t, text, "\n  .hidden file missing\n  .\n  ..\n") // dot-stuffed on the wire
	require.Contains(t, html, "Nächtliche Auswertung ✓")
}

func TestSendEmailStartTLSAndAuth(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts smtpServerOptions
	}{
		{"STARTTLS, AUTH PLAIN", smtpServerOptions{startTLS: true, users: map[string]string{"sparc": "s3cret"}}},
		{"STARTTLS, AUTH LOGIN", smtpServerOptions{startTLS: true, users: map[string]string{"sparc": "s3cret"}, loginOnly: true}},
		{"implicit TLS, AUTH PLAIN", smtpServerOptions{implicitTLS: true, users: map[string]string{"sparc": "s3cret"}}},
		{"loopback without TLS, AUTH PLAIN", smtpServerOptions{insecureAuth: true, users: map[string]string{"sparc": "s3cret"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startSMTPServer(t, tc.opts)
			cfg := ts.config()
			cfg.Username, cfg.Password = "sparc", "s3cret"
			require.NoError(t, cfg.validate())
			code, err := sendEmail(emailContext(t), cfg, smtpDial, "ops@example.com", testEmail(t))
			require.NoError(t, err)
			require.Equal(t, 250, code)
			mails, _ := ts.received()
			require.Len(t, mails, 1)
			require.Equal(t, "sparc", mails[0].user)
			require.Equal(t, tc.opts.startTLS || tc.opts.implicitTLS, mails[0].tls)
		})
	}
}

func TestSendEmailFailures(t *testing.T) {
	_, pool := smtpTestCert()
	for _, tc := range []struct {
		name      string
		opts      smtpServerOptions
		cfg       func(*SMTPConfig)
		code      int
		class     string
		permanent bool
		msg       string
		mailCmd   bool // the MAIL command was given
	}{
		{name: "recipient refused", opts: smtpServerOptions{rcptErr: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}},
			code: 550, class: ClassSMTP, permanent: true, msg: "refused RCPT TO: 550 5.1.1 No such user here", mailCmd: true},
		{name: "message deferred", opts: smtpServerOptions{dataErr: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Try again later"}},
			code: 451, class: ClassSMTP, msg: "refused the message for now: 451 4.3.0 Try again later", mailCmd: true},
		{name: "wrong password", opts: smtpServerOptions{startTLS: true, users: map[string]string{"sparc": "right"}},
			cfg:  func(c *SMTPConfig) { c.Username, c.Password = "sparc", "s3cret" },
			code: 535, class: ClassSMTP, permanent: true, msg: "refused AUTH: 535"},
		{name: "no AUTH offered", opts: smtpServerOptions{startTLS: true},
			cfg:   func(c *SMTPConfig) { c.Username, c.Password = "sparc", "s3cret" },
			class: ClassSMTP, msg: "offers no AUTH mechanism"},
		{name: "no STARTTLS", opts: smtpServerOptions{}, cfg: func(c *SMTPConfig) { c.TLS = SMTPStartTLS },
			class: ClassTLS, msg: "does not offer STARTTLS"},
		{name: "untrusted certificate", opts: smtpServerOptions{startTLS: true}, cfg: func(c *SMTPConfig) { c.TLSConfig = nil },
			class: ClassTLS, msg: "certificate is not valid"},
		{name: "certificate for another name", opts: smtpServerOptions{implicitTLS: true},
			cfg:   func(c *SMTPConfig) { c.TLSConfig = &tls.Config{RootCAs: pool, ServerName: "mail.example.com"} },
			class: ClassTLS, msg: "certificate is not valid"},
		{name: "TLS to a clear-text server", opts: smtpServerOptions{}, cfg: func(c *SMTPConfig) { c.TLS = SMTPImplicitTLS },
			class: ClassTLS, msg: "TLS handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startSMTPServer(t, tc.opts)
			cfg := ts.config()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			code, err := sendEmail(emailContext(t), cfg, smtpDial, "ops@example.com", testEmail(t))
			require.Error(t, err)
			var ee *emailError
			require.True(t, errors.As(err, &ee), "%T %v", err, err)
			require.Equal(t, tc.code, code)
			require.Equal(t, tc.code, ee.code)
			require.Equal(t, tc.class, ee.class)
			require.Equal(t, tc.permanent, ee.permanent)
			require.Contains(t, err.Error(), tc.msg)
			require.NotContains(t, err.Error(), "s3cret")
			require.NotContains(t, err.Error(), base64.StdEncoding.EncodeToString([]byte("\x00sparc\x00s3cret")))
			require.NotContains(t, err.Error(), ts.host)
			mails, mailCmds := ts.received()
			require.Empty(t, mails)
			require.Equal(t, tc.mailCmd, mailCmds > 0)
		})
	}
}

// startScriptedServer listens on loopback and answers each connection with
// greeting and then, for each line the client sends, with answer(line)
// ("" for no answer); the lines of a message after a 354 answer are
// skipped up to the final ".", which is answered. It stops when the test
// ends.
func startScriptedServer(t *testing.T, greeting string, answer func(line string) string) SMTPConfig {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				io.WriteString(c, greeting)
				sc := bufio.NewScanner(c)
				inData := false
				for sc.Scan() {
					line := strings.TrimSuffix(sc.Text(), "\r")
					if inData && line != "." {
						continue
					}
					inData = false
					reply := answer(line)
					inData = strings.HasPrefix(reply, "354")
					io.WriteString(c, reply)
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	addr := ln.Addr().(*net.TCPAddr)
	return SMTPConfig{Host: addr.IP.String(), Port: addr.Port, TLS: SMTPPlain, From: "sparc@example.com"}
}

func silent(string) string { return "" }

// smtpScript answers as a plain SMTP server that accepts everything;
// more, when set, answers first.
func smtpScript(more func(line string) (string, bool)) func(string) string {
	return func(line string) string {
		if more != nil {
			if reply, ok := more(line); ok {
				return reply
			}
		}
		switch cmd, _, _ := strings.Cut(line, " "); strings.ToUpper(cmd) {
		case "EHLO":
			return "250-localhost\r\n250 8BITMIME\r\n"
		case "DATA":
			return "354 go ahead\r\n"
		case ".":
			return "250 2.0.0 queued as 42\r\n"
		case "QUIT":
			return "221 bye\r\n"
		}
		return "250 ok\r\n"
	}
}

func TestSendEmailTimeout(t *testing.T) {
	for _, tc := range []struct{ name, greeting string }{
		{"no greeting", ""},
		{"no answer to EHLO", "220 localhost ESMTP\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := startScriptedServer(t, tc.greeting, silent)
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			code, err := sendEmail(ctx, cfg, smtpDial, "ops@example.com", testEmail(t))
			require.Less(t, time.Since(start), 3*time.Second)
			var ee *emailError
			require.True(t, errors.As(err, &ee), "%v", err)
			require.Equal(t, 0, code)
			require.Equal(t, ClassTimeout, ee.class)
			require.Contains(t, err.Error(), "no answer from the SMTP server in time")
		})
	}
	t.Run("implicit TLS handshake", func(t *testing.T) {
		cfg := startScriptedServer(t, "", silent)
		cfg.TLS = SMTPImplicitTLS
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		_, err := sendEmail(ctx, cfg, smtpDial, "ops@example.com", testEmail(t))
		var ee *emailError
		require.True(t, errors.As(err, &ee), "%v", err)
		require.Equal(t, ClassTimeout, ee.class)
	})
}

func TestSendEmailCancel(t *testing.T) {
	cfg := startScriptedServer(t, "220 localhost ESMTP\r\n", silent)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := sendEmail(ctx, cfg, smtpDial, "ops@example.com", testEmail(t))
	require.Less(t, time.Since(start), 3*time.Second)
	var ee *emailError
	require.True(t, errors.As(err, &ee), "%v", err)
	require.Equal(t, ClassConnection, ee.class)
	require.Contains(t, err.Error(), "cancelled")
}

func TestSendEmailScripted(t *testing.T) {
	const greeting = "220 localhost ESMTP\r\n"
	t.Run("unanswered QUIT", func(t *testing.T) {
		cfg := startScriptedServer(t, greeting, smtpScript(func(line string) (string, bool) { return "", line == "QUIT" }))
		start := time.Now()
		code, err := sendEmail(emailContext(t), cfg, smtpDial, "ops@example.com", testEmail(t))
		require.NoError(t, err, "the message was accepted")
		require.Equal(t, 250, code)
		require.Less(t, time.Since(start), 5*time.Second)
	})
	t.Run("HELO server", func(t *testing.T) {
		cfg := startScriptedServer(t, greeting, smtpScript(func(line string) (string, bool) {
			return "502 5.5.1 what?\r\n", strings.HasPrefix(line, "EHLO")
		}))
		code, err := sendEmail(emailContext(t), cfg, smtpDial, "ops@example.com", testEmail(t))
		require.NoError(t, err)
		require.Equal(t, 250, code)
	})
	t.Run("data injected after STARTTLS", func(t *testing.T) {
		cfg := startScriptedServer(t, greeting, smtpScript(func(line string) (string, bool) {
			switch line {
			case "EHLO localhost":
				return "250-localhost\r\n250 STARTTLS\r\n", true
			case "STARTTLS":
				return "220 go ahead\r\n250-localhost\r\n250 AUTH PLAIN\r\n", true
			}
			return "", false
		}))
		cfg.TLS = SMTPStartTLS
		_, err := sendEmail(emailContext(t), cfg, smtpDial, "ops@example.com", testEmail(t))
		var ee *emailError
		require.True(t, errors.As(err, &ee), "%v", err)
		require.Equal(t, ClassTLS, ee.class)
		require.Contains(t, err.Error(), "sent data before the TLS handshake")
	})
	t.Run("malformed reply", func(t *testing.T) {
		cfg := startScriptedServer(t, greeting, smtpScript(func(line string) (string, bool) {
			return "hello?\r\n", strings.HasPrefix(line, "MAIL")
		}))
		code, err := sendEmail(emailContext(t), cfg, smtpDial, "ops@example.com", testEmail(t))
		var ee *emailError
		require.True(t, errors.As(err, &ee), "%v", err)
		require.Equal(t, 0, code)
		require.Equal(t, ClassSMTP, ee.class)
		require.False(t, ee.permanent)
		require.Contains(t, err.Error(), "answer to MAIL FROM is malformed")
	})
	t.Run("unexpected code", func(t *testing.T) {
		cfg := startScriptedServer(t, greeting, smtpScript(func(line string) (string, bool) {
			return "250 ok but no go-ahead\r\n", line == "DATA"
		}))
		code, err := sendEmail(emailContext(t), cfg, smtpDial, "ops@example.com", testEmail(t))
		var ee *emailError
		require.True(t, errors.As(err, &ee), "%v", err)
		require.Equal(t, 250, code)
		require.Equal(t, ClassSMTP, ee.class)
		require.False(t, ee.permanent)
		require.Contains(t, err.Error(), "answered DATA with an unexpected 250")
	})
}

func TestSendEmailConnectionErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	refused := SMTPConfig{Host: "127.0.0.1", Port: port, TLS: SMTPPlain, From: "sparc@example.com"}

	for _, tc := range []struct {
		name  string
		dial  func(ctx context.Context, network, addr string) (net.Conn, error)
		class string
		msg   string
	}{
		{"refused", smtpDial, ClassConnection, "refused the connection"},
		{"unknown host", func(context.Context, string, string) (net.Conn, error) {
			return nil, &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "mail.invalid", IsNotFound: true}}
		}, ClassDNS, "does not resolve"},
		{"blocked", func(context.Context, string, string) (net.Conn, error) {
			return nil, fmt.Errorf("dial: %w", ErrBlockedDestination)
		}, ClassBlocked, "address is not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, err := sendEmail(emailContext(t), refused, tc.dial, "ops@example.com", testEmail(t))
			var ee *emailError
			require.True(t, errors.As(err, &ee), "%v", err)
			require.Equal(t, 0, code)
			require.Equal(t, tc.class, ee.class)
			require.False(t, ee.permanent)
			require.Contains(t, err.Error(), tc.msg)
			require.NotContains(t, err.Error(), "127.0.0.1")
		})
	}
}

func TestSendEmailRefusesABadRecipient(t *testing.T) {
	cfg := startScriptedServer(t, "220 localhost\r\n", smtpScript(nil))
	for _, to := range []string{"", "ops@example.com>\r\nRCPT TO:<x@example.com", "a b@example.com", "jörg@example.com"} {
		code, err := sendEmail(emailContext(t), cfg, smtpDial, to, testEmail(t))
		require.ErrorIs(t, err, ErrInvalid, "%q", to)
		require.Equal(t, 0, code)
	}
	t.Run("greeting refused", func(t *testing.T) {
		cfg := startScriptedServer(t, "554 5.7.1 go away\r\n", silent)
		code, err := sendEmail(emailContext(t), cfg, smtpDial, "ops@example.com", testEmail(t))
		require.Equal(t, 554, code)
		require.ErrorContains(t, err, "the SMTP server refused the connection: 554 5.7.1 go away")
	})
}

func TestSMTPConfigValidate(t *testing.T) {
	ok := SMTPConfig{Host: "smtp.example.com", Port: 587, From: "SPARC <sparc@example.com>"}
	require.NoError(t, ok.validate())
	for _, tc := range []struct {
		name  string
		edit  func(*SMTPConfig)
		field string
	}{
		{"no host", func(c *SMTPConfig) { c.Host = "" }, "SMTP.Host"},
		{"host with a port", func(c *SMTPConfig) { c.Host = "smtp.example.com:587" }, "SMTP.Host"},
		{"host with a space", func(c *SMTPConfig) { c.Host = "smtp example.com" }, "SMTP.Host"},
		{"no port", func(c *SMTPConfig) { c.Port = 0 }, "SMTP.Port"},
		{"port too large", func(c *SMTPConfig) { c.Port = 65536 }, "SMTP.Port"},
		{"unknown TLS mode", func(c *SMTPConfig) { c.TLS = 7 }, "SMTP.TLS"},
		{"no from", func(c *SMTPConfig) { c.From = "" }, "SMTP.From"},
		{"bad from", func(c *SMTPConfig) { c.From = "SPARC" }, "SMTP.From"},
		{"two senders", func(c *SMTPConfig) { c.From = "a@example.com, b@example.com" }, "SMTP.From"},
		{"header injection in from", func(c *SMTPConfig) { c.From = "a@example.com\r\nBcc: x@example.com" }, "SMTP.From"},
		{"international from", func(c *SMTPConfig) { c.From = "jörg@example.com" }, "SMTP.From"},
		{"password without user", func(c *SMTPConfig) { c.Password = "x" }, "SMTP.Username"},
		{"NUL in password", func(c *SMTPConfig) { c.Username, c.Password = "u", "a\x00b" }, "SMTP.Username"},
		{"credentials in clear text", func(c *SMTPConfig) { c.Username, c.Password, c.TLS = "u", "p", SMTPPlain }, "SMTP.TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.validate()
			require.ErrorIs(t, err, ErrInvalid)
			var ve *ValidationError
			require.True(t, errors.As(err, &ve))
			require.Equal(t, tc.field, ve.Field)
		})
	}
	for _, host := range []string{"localhost", "127.0.0.1", "::1"} {
		c := SMTPConfig{Host: host, Port: 25, TLS: SMTPPlain, Username: "u", Password: "p", From: "a@example.com"}
		require.NoError(t, c.validate(), host)
	}
	require.Equal(t, "starttls", SMTPConfig{}.TLS.String())
	require.Equal(t, "tls", SMTPImplicitTLS.String())
	require.Equal(t, "plain", SMTPPlain.String())
}

func TestParseMailto(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"mailto:ops@example.com", "ops@example.com"},
		{"MAILTO:Ops.Team+sparc@Example.COM", "Ops.Team+sparc@Example.COM"},
		{"mailto:ops%40example.com", "ops@example.com"},
		{"mailto:ops@[127.0.0.1]", "ops@[127.0.0.1]"},
	} {
		got, err := parseMailto(tc.raw)
		require.NoError(t, err, tc.raw)
		require.Equal(t, tc.want, got)
	}
	for _, raw := range []string{
		"", "ops@example.com", "https://example.com", "mailto:", "mailto:ops",
		"mailto:ops@example.com?subject=hi", "mailto:ops@example.com?bcc=x@example.com", "mailto:ops@example.com#x",
		"mailto:a@example.com,b@example.com", "mailto:Ops <ops@example.com>", "mailto:<ops@example.com>",
		"mailto:ops@example.com%0d%0aBcc:x@example.com", "mailto:jörg@example.com", "mailto:ops%zz@example.com",
		"mailto:" + strings.Repeat("a", 65) + "@example.com", "mailto:a@" + strings.Repeat("b", 260) + ".com",
		"mailto:ops@@example.com", "mailto:ops@example.com (team)",
	} {
		_, err := parseMailto(raw)
		var ve *ValidationError
		require.True(t, errors.As(err, &ve), "%q: %v", raw, err)
		require.Equal(t, "url", ve.Field, raw)
	}
}

func TestMessageID(t *testing.T) {
	require.Equal(t, "<evt_0001.7@example.com>", messageID("evt_0001", 7, "sparc@example.com"))
	require.Equal(t, "<evt_0001@example.com>", messageID("evt_0001", 0, "sparc@example.com"))
	require.Equal(t, "<a=3Ab=2Ec@localhost>", messageID("a:b.c", 0, "sparc@[127.0.0.1]"))
	id := messageID("", 0, "sparc@example.com")
	require.Regexp(t, `^<[0-9a-f]{32}@example\.com>$`, id)
	_, err := mail.ParseAddress("x <" + strings.Trim(messageID("a:b.c-d_e", 12, "s@mail.example.com"), "<>") + ">")
	require.NoError(t, err, "the left and right sides are dot-atoms")
}

func TestEmailHeaders(t *testing.T) {
	from := &mail.Address{Name: "SPARC Élan", Address: "sparc@example.com"}
	for _, subject := range []string{
		"[SPARC] Job nightly completed in 1m30s",
		"[SPARC] " + strings.Repeat("Auswertung für Ärger ✓ ", 12),
		"[SPARC] " + strings.Repeat("x", 150) + " " + strings.Repeat("y", 40),
		"[SPARC] broken\r\nBcc: x@example.com",
	} {
		data := emailMessage{subject: subject, text: "t", html: "h", eventID: "evt_1", eventType: "job.complete"}.build(from, "ops@example.com", formatTime)
		msg, err := mail.ReadMessage(bytes.NewReader(data))
		require.NoError(t, err)
		got, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
		require.NoError(t, err)
		require.Equal(t, strings.ReplaceAll(strings.ReplaceAll(subject, "\r", ""), "\n", " "), got)
		require.Empty(t, msg.Header.Get("Bcc"))
		require.Empty(t, msg.Header.Get("X-SPARC-Delivery"), "left out without a delivery")
		fromList, err := msg.Header.AddressList("From")
		require.NoError(t, err)
		require.Equal(t, from, fromList[0])
		for line := range strings.SplitSeq(string(data[:bytes.Index(data, []byte("\r\n\r\n"))]), "\r\n") {
			require.LessOrEqual(t, len(line), 998)
			if !strings.Contains(line, strings.Repeat("x", 150)) {
				require.LessOrEqual(t, len(line), 78, line)
			}
		}
	}
}
