// Package systemd speaks the two small protocols a service needs when
// systemd runs it: sd_notify(3) readiness messages and the journal's native
// protocol (systemd.journal-fields(7)), so that log records keep their level
// and fields. Outside systemd both are no-ops, detected from the
// environment systemd sets.
package systemd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Notify sends state ("READY=1", "STOPPING=1", "STATUS=...") to the
// service manager. Without NOTIFY_SOCKET (not a Type=notify service) it
// does nothing and returns nil.
func Notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract namespace
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// JournalSocket is where journald reads native-protocol datagrams.
const JournalSocket = "/run/systemd/journal/socket"

// StderrIsJournal reports whether stderr is connected to the journal:
// systemd sets JOURNAL_STREAM to the device and inode of that stream, and
// a redirected stderr no longer matches.
func StderrIsJournal() bool {
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(2, &st); err != nil {
		return false
	}
	return strconv.FormatUint(uint64(st.Dev), 10) == dev && strconv.FormatUint(st.Ino, 10) == ino
}

// JournalHandler is a slog.Handler that sends each record to journald
// with PRIORITY from its level and every attribute as a field of its own
// (ROAM_PROFILE=corp for "profile", groups joined with "_"). MESSAGE is
// the record's message followed by its attributes as key=value, as slog's
// text handler writes them: journalctl shows MESSAGE alone, and "error"
// without its reason would tell the reader nothing.
type JournalHandler struct {
	opts   slog.HandlerOptions
	conn   *net.UnixConn
	prefix string // of the field names, e.g. "ROAM_"
	attrs  []byte // preformatted fields of WithAttrs
	text   []byte // the same attributes as " key=value", for MESSAGE
	group  string // field name prefix of WithGroup
	tgroup string // key prefix of WithGroup in MESSAGE ("group.")
	mu     *sync.Mutex
	// Guarded by mu: the datagram, MESSAGE and the record's own fields.
	buf, msg, fields *bytes.Buffer
}

// NewJournalHandler connects to the journal socket at path (JournalSocket).
// prefix starts every attribute's field name.
func NewJournalHandler(path, prefix string, opts *slog.HandlerOptions) (*JournalHandler, error) {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	h := &JournalHandler{conn: c, prefix: prefix, mu: new(sync.Mutex), buf: new(bytes.Buffer), msg: new(bytes.Buffer), fields: new(bytes.Buffer)}
	if opts != nil {
		h.opts = *opts
	}
	return h, nil
}

// Close closes the journal connection.
func (h *JournalHandler) Close() error { return h.conn.Close() }

// Enabled implements slog.Handler.
func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool {
	min := slog.LevelInfo
	if h.opts.Level != nil {
		min = h.opts.Level.Level()
	}
	return l >= min
}

// Priority maps a slog level to a syslog priority (sd-daemon.h).
func Priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	default:
		return 7
	}
}

// Handle implements slog.Handler.
func (h *JournalHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	b, msg, fields := h.buf, h.msg, h.fields
	b.Reset()
	msg.Reset()
	fields.Reset()
	msg.WriteString(r.Message)
	msg.Write(h.text)
	r.Attrs(func(a slog.Attr) bool {
		h.appendAttr(fields, msg, h.group, h.tgroup, a)
		return true
	})
	writeField(b, "MESSAGE", msg.String())
	writeField(b, "PRIORITY", strconv.Itoa(Priority(r.Level)))
	b.Write(h.attrs)
	b.Write(fields.Bytes())
	_, err := h.conn.Write(b.Bytes())
	if errors.Is(err, syscall.EMSGSIZE) {
		return fmt.Errorf("journal: record of %d bytes too large", b.Len())
	}
	return err
}

// WithAttrs implements slog.Handler.
func (h *JournalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b, text bytes.Buffer
	b.Write(h.attrs)
	text.Write(h.text)
	for _, a := range attrs {
		h.appendAttr(&b, &text, h.group, h.tgroup, a)
	}
	h2 := *h
	h2.attrs, h2.text = b.Bytes(), text.Bytes()
	return &h2
}

// WithGroup implements slog.Handler.
func (h *JournalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.group = h.group + name + "_"
	h2.tgroup = h.tgroup + name + "."
	return &h2
}

// appendAttr writes a as a field to fields and as " key=value" to text;
// group and tgroup prefix the field name and the key.
func (h *JournalHandler) appendAttr(fields, text *bytes.Buffer, group, tgroup string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		g, tg := group, tgroup
		if a.Key != "" {
			g += a.Key + "_"
			tg += a.Key + "."
		}
		for _, ga := range a.Value.Group() {
			h.appendAttr(fields, text, g, tg, ga)
		}
		return
	}
	v := a.Value.String()
	writeField(fields, FieldName(h.prefix+group+a.Key), v)
	text.WriteByte(' ')
	text.WriteString(tgroup + a.Key)
	text.WriteByte('=')
	if needsQuote(v) {
		text.WriteString(strconv.Quote(v))
	} else {
		text.WriteString(v)
	}
}

// needsQuote reports whether v must be quoted to read back as one value,
// as slog's text handler decides it.
func needsQuote(v string) bool {
	if v == "" {
		return true
	}
	for _, r := range v {
		if r <= ' ' || r == '=' || r == '"' || r == 0x7f || !strconv.IsPrint(r) {
			return true
		}
	}
	return false
}

// FieldName makes a journal field name: upper case letters, digits and
// underscores, not starting with a digit or underscore.
func FieldName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(s) {
		if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	name := strings.TrimLeft(b.String(), "_0123456789")
	if name == "" {
		return "FIELD"
	}
	return name
}

// writeField writes one field: "NAME=value\n", or, for a value with a
// newline, the binary form NAME\n<64-bit LE length><value>\n.
func writeField(b *bytes.Buffer, name, value string) {
	if !strings.Contains(value, "\n") {
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(value)
		b.WriteByte('\n')
		return
	}
	b.WriteString(name)
	b.WriteByte('\n')
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(value)))
	b.Write(n[:])
	b.WriteString(value)
	b.WriteByte('\n')
}
