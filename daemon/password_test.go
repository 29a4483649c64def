package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/internal/syncbuf"
	"github.com/roam-vpn/roam/internal/testpki"
)

func TestUsePassword(t *testing.T) {
	eapProfile := func(pw string) *config.Profile {
		p := &config.Profile{Name: "corp", Auth: config.AuthEAPMSCHAPv2, LocalID: "alice@example.com", EAPIdentity: "alice"}
		if pw != "" {
			p.Password = []byte(pw)
		}
		return p
	}
	for _, tc := range []struct {
		name    string
		p       *config.Profile
		sent    string
		wantErr string
		wantPW  string
	}{
		{name: "prompted password used", p: eapProfile(""), sent: "s3cret", wantPW: "s3cret"},
		{name: "none sent, none needed", p: eapProfile("from-file"), wantPW: "from-file"},
		{name: "none sent but needed", p: eapProfile(""), wantErr: "needs the password typed into `roam connect` on a terminal"},
		{name: "sent but file has one", p: eapProfile("from-file"), sent: "s3cret", wantErr: "does not ask for one"},
		{name: "sent for psk", p: &config.Profile{Name: "corp", Auth: "psk", PSK: []byte("k")}, sent: "s3cret", wantErr: "does not ask for one"},
		{name: "invalid UTF-8", p: eapProfile(""), sent: "\xff", wantErr: "not valid UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent []byte
			if tc.sent != "" {
				sent = []byte(tc.sent)
			}
			err := usePassword(tc.p, sent)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Fatal("error shows the password")
				}
				return
			}
			if err != nil || string(tc.p.Password) != tc.wantPW {
				t.Fatalf("err %v, password set %v", err, string(tc.p.Password) == tc.wantPW)
			}
		})
	}
}

// TestConnectPasswordOverSocket: the password `roam connect` asked for
// reaches the dialer's profile, and neither the replies, the status nor
// the daemon's log show it.
func TestConnectPasswordOverSocket(t *testing.T) {
	dir := t.TempDir()
	cfg := writeProfiles(t, dir, "corp")
	ca := testpki.WriteCA(t)
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "[profiles.eap]\ngateway = \"198.51.100.1\"\nlocal_id = \"alice@example.com\"\nremote_id = \"vpn.example.com\"\nauth = \"eap-mschapv2\"\nca = %q\n", ca)
	f.Close()
	fake := newFakeDialer()
	var mu sync.Mutex
	got := map[string]string{}
	dial := func(ctx context.Context, p *config.Profile, emit func(Event)) (Tunnel, error) {
		mu.Lock()
		got[p.Name] = string(p.Password)
		mu.Unlock()
		return fake.dial(ctx, p, emit)
	}
	var logBuf syncbuf.Buffer
	socket := filepath.Join(dir, "run", "roam.sock")
	d, err := Start(Options{Socket: socket, Dial: dial, Log: slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- d.Run(ctx) }()
	defer func() { cancel(); <-ran }()
	client := Client{Socket: socket}
	cctx := testCtx(t)

	if _, err := client.Connect(cctx, "eap", cfg, nil); err == nil || !strings.Contains(err.Error(), "needs the password") {
		t.Fatalf("connect without password: %v", err)
	}
	if _, err := client.ConnectPassword(cctx, "corp", cfg, []byte("s3cret-pw"), nil); err == nil || !strings.Contains(err.Error(), "does not ask for one") {
		t.Fatalf("password for a PSK profile: %v", err)
	}
	var events []Event
	st, err := client.ConnectPassword(cctx, "eap", cfg, []byte("s3cret-pw"), func(ev Event) { events = append(events, ev) })
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	pw := got["eap"]
	mu.Unlock()
	if pw != "s3cret-pw" {
		t.Fatal("the dialer did not get the password")
	}
	all, err := client.Status(cctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprintf("%+v %+v %+v", st, events, all), logBuf.String()} {
		if strings.Contains(s, "s3cret-pw") {
			t.Fatalf("password visible: %s", s)
		}
	}
}
