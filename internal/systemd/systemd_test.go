package systemd

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"syscall"
	"testing"
)

func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *net.UnixConn) []byte {
	t.Helper()
	b := make([]byte, 65536)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	return b[:n]
}

func TestNotify(t *testing.T) {
	tests := []struct{ env, listenAt string }{
		{filepath.Join(t.TempDir(), "notify"), ""},
		{fmt.Sprintf("@roam-test-notify-%d", syscall.Getpid()), fmt.Sprintf("\x00roam-test-notify-%d", syscall.Getpid())},
	}
	for _, tt := range tests {
		at := tt.listenAt
		if at == "" {
			at = tt.env
		}
		c := listen(t, at)
		t.Setenv("NOTIFY_SOCKET", tt.env)
		for _, state := range []string{"READY=1", "STOPPING=1"} {
			if err := Notify(state); err != nil {
				t.Fatal(err)
			}
			if got := string(read(t, c)); got != state {
				t.Errorf("%s: got %q, want %q", tt.env, got, state)
			}
		}
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify("READY=1"); err != nil {
		t.Errorf("outside systemd: %v", err)
	}
}

func TestStderrIsJournal(t *testing.T) {
	var st syscall.Stat_t
	if err := syscall.Fstat(2, &st); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		env  string
		want bool
	}{
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino), true},
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), false},
		{"", false},
		{"garbage", false},
	}
	for _, tt := range tests {
		t.Setenv("JOURNAL_STREAM", tt.env)
		if got := StderrIsJournal(); got != tt.want {
			t.Errorf("JOURNAL_STREAM=%q: %v, want %v", tt.env, got, tt.want)
		}
	}
}

// parseFields decodes a native-protocol datagram, both field forms.
func parseFields(t *testing.T, b []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			t.Fatalf("unterminated field %q", b)
		}
		line := b[:nl]
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			out[string(k)] = string(v)
			b = b[nl+1:]
			continue
		}
		n := binary.LittleEndian.Uint64(b[nl+1 : nl+9])
		out[string(line)] = string(b[nl+9 : nl+9+int(n)])
		b = b[nl+9+int(n)+1:]
	}
	return out
}

func TestJournalHandler(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	c := listen(t, path)
	h, err := NewJournalHandler(path, "ROAM_", &slog.HandlerOptions{Level: slog.LevelDebug})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	log := slog.New(h).With("profile", "corp")
	tests := []struct {
		log  func()
		want map[string]string
	}{
		{func() { log.Info("connected", "virtual_ip", "10.99.200.7") },
			map[string]string{"MESSAGE": "connected profile=corp virtual_ip=10.99.200.7", "PRIORITY": "6", "ROAM_PROFILE": "corp", "ROAM_VIRTUAL_IP": "10.99.200.7"}},
		{func() { log.Debug("path test", "took", "12ms") }, map[string]string{"PRIORITY": "7", "ROAM_TOOK": "12ms"}},
		{func() { log.Warn("rekey refused", "reason", "NO_PROPOSAL_CHOSEN from the gateway", "empty", "") },
			map[string]string{"MESSAGE": `rekey refused profile=corp reason="NO_PROPOSAL_CHOSEN from the gateway" empty=""`, "PRIORITY": "4"}},
		{func() { log.WithGroup("child").Error("two\nlines", slog.Group("sa", "spi", "c0000001")) },
			map[string]string{"MESSAGE": "two\nlines profile=corp child.sa.spi=c0000001", "PRIORITY": "3", "ROAM_PROFILE": "corp", "ROAM_CHILD_SA_SPI": "c0000001"}},
	}
	for i, tt := range tests {
		tt.log()
		got := parseFields(t, read(t, c))
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("record %d: %s = %q, want %q (all: %q)", i, k, got[k], v, got)
			}
		}
	}
	quiet, _ := NewJournalHandler(path, "ROAM_", nil)
	defer quiet.Close()
	if quiet.Enabled(t.Context(), slog.LevelDebug) || !quiet.Enabled(t.Context(), slog.LevelInfo) {
		t.Error("the default level is not info")
	}
}

func TestFieldName(t *testing.T) {
	for in, want := range map[string]string{"ROAM_profile": "ROAM_PROFILE", "ROAM_to-addr": "ROAM_TO_ADDR", "_9x": "X", "": "FIELD"} {
		if got := FieldName(in); got != want {
			t.Errorf("FieldName(%q) = %q, want %q", in, got, want)
		}
	}
}
