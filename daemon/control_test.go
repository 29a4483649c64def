package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func eventNames(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Profile+" "+ev.Event)
	}
	return out
}

func TestConnectStatusDisconnect(t *testing.T) {
	td := startTestDaemon(t, false)
	ctx := testCtx(t)

	var progress []Event
	st, err := td.client.Connect(ctx, "corp", td.config, func(ev Event) { progress = append(progress, ev) })
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != "corp" || st.State != "established" || st.VirtualIP != "10.99.200.1" {
		t.Errorf("connect status %+v", st)
	}
	if got, want := eventNames(progress), []string{"corp connecting", "corp established"}; !slices.Equal(got, want) {
		t.Errorf("progress %v, want %v", got, want)
	}
	for _, ev := range progress {
		if ev.Time.IsZero() {
			t.Errorf("event %+v has no time", ev)
		}
	}

	if _, err := td.client.Connect(ctx, "corp", td.config, nil); err == nil || err.Error() != "already connected" {
		t.Errorf("second connect: %v, want already connected", err)
	}
	if _, err := td.client.Connect(ctx, "home", td.config, nil); err != nil {
		t.Fatal(err)
	}
	all, err := td.client.Status(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Name != "corp" || all[1].Name != "home" || all[0].Children[0].Proposal != "aes256gcm16" {
		t.Errorf("status %+v", all)
	}
	one, err := td.client.Status(ctx, "home")
	if err != nil || len(one) != 1 || one[0].Name != "home" {
		t.Errorf("status home: %+v, %v", one, err)
	}

	if err := td.client.Disconnect(ctx, "corp"); err != nil {
		t.Fatal(err)
	}
	if !td.dialer.tunnel("corp").closed() {
		t.Error("disconnect did not close the tunnel")
	}
	if err := td.client.Disconnect(ctx, "corp"); err == nil || !strings.Contains(err.Error(), "corp: not connected") {
		t.Errorf("second disconnect: %v", err)
	}
	if _, err := td.client.Status(ctx, "corp"); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Errorf("status of a disconnected profile: %v", err)
	}
	names, err := td.client.DisconnectAll(ctx)
	if err != nil || !slices.Equal(names, []string{"home"}) {
		t.Errorf("disconnect all: %v, %v", names, err)
	}
	if st, err := td.client.Status(ctx, ""); err != nil || len(st) != 0 {
		t.Errorf("status after disconnect: %+v, %v", st, err)
	}
}

func TestConnectFailures(t *testing.T) {
	td := startTestDaemon(t, false)
	ctx := testCtx(t)
	const reason = "authentication failed: gateway sent AUTHENTICATION_FAILED"
	td.dialer.set(func(d *fakeDialer) { d.fail["corp"] = reason })
	tests := []struct {
		name, profile, config, want string
	}{
		{"dial error", "corp", td.config, reason},
		{"unknown profile", "nope", td.config, `no profile "nope"`},
		{"missing file", "corp", filepath.Join(t.TempDir(), "none.toml"), "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := td.client.Connect(ctx, tt.profile, tt.config, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("connect: %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("reason is not one line: %q", err)
			}
		})
	}
	if st, err := td.client.Status(ctx, ""); err != nil || len(st) != 0 {
		t.Errorf("status after failures: %+v, %v", st, err)
	}
	// A failed profile can be tried again.
	td.dialer.set(func(d *fakeDialer) { delete(d.fail, "corp") })
	if _, err := td.client.Connect(ctx, "corp", td.config, nil); err != nil {
		t.Errorf("retry: %v", err)
	}
}

func waitSubscribers(t *testing.T, h *hub, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		got := len(h.subs)
		h.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d subscribers, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEventsStream(t *testing.T) {
	td := startTestDaemon(t, false)
	ctx := testCtx(t)
	streamCtx, stop := context.WithCancel(ctx)
	evs := make(chan Event, 16)
	streamed := make(chan error, 1)
	go func() { streamed <- td.client.Events(streamCtx, func(ev Event) { evs <- ev }) }()
	waitSubscribers(t, td.d.m.hub, 1)

	if _, err := td.client.Connect(ctx, "corp", td.config, nil); err != nil {
		t.Fatal(err)
	}
	// The gateway drops the tunnel: the manager forgets it and says why.
	td.dialer.tunnel("corp").end(errors.New("gateway deleted the IKE SA"))
	want := []string{"corp connecting", "corp established", "corp disconnected"}
	var got []Event
	for len(got) < len(want) {
		select {
		case ev := <-evs:
			got = append(got, ev)
		case <-ctx.Done():
			t.Fatalf("events so far %v, want %v", eventNames(got), want)
		}
	}
	if !slices.Equal(eventNames(got), want) {
		t.Errorf("events %v, want %v", eventNames(got), want)
	}
	if got[2].Reason != "gateway deleted the IKE SA" {
		t.Errorf("disconnected reason %q", got[2].Reason)
	}
	if st, err := td.client.Status(ctx, ""); err != nil || len(st) != 0 {
		t.Errorf("status after the tunnel died: %+v, %v", st, err)
	}

	// The client going away ends its subscription.
	stop()
	if err := <-streamed; err != nil {
		t.Errorf("events after cancel: %v", err)
	}
	waitSubscribers(t, td.d.m.hub, 0)
}

func TestDisconnectWhileConnecting(t *testing.T) {
	td := startTestDaemon(t, false)
	ctx := testCtx(t)
	td.dialer.set(func(d *fakeDialer) { d.block["corp"] = true })
	connected := make(chan error, 1)
	go func() {
		_, err := td.client.Connect(ctx, "corp", td.config, nil)
		connected <- err
	}()
	<-td.dialer.dialing
	st, err := td.client.Status(ctx, "corp")
	if err != nil || len(st) != 1 || st[0].State != "connecting" {
		t.Errorf("status while connecting: %+v, %v", st, err)
	}
	if _, err := td.client.Connect(ctx, "corp", td.config, nil); err == nil || err.Error() != "already connected" {
		t.Errorf("connect while connecting: %v", err)
	}
	if err := td.client.Disconnect(ctx, "corp"); err != nil {
		t.Fatal(err)
	}
	if err := <-connected; err == nil || !strings.Contains(err.Error(), "cancelled") {
		t.Errorf("aborted connect: %v", err)
	}
}

func TestClientHangupCancelsConnect(t *testing.T) {
	td := startTestDaemon(t, false)
	td.dialer.set(func(d *fakeDialer) { d.block["corp"] = true })
	ctx, cancel := context.WithCancel(testCtx(t))
	connected := make(chan error, 1)
	go func() {
		_, err := td.client.Connect(ctx, "corp", td.config, nil)
		connected <- err
	}()
	<-td.dialer.dialing
	cancel()
	<-connected
	deadline := time.Now().Add(5 * time.Second)
	for td.d.m.Active() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the dial went on after the client hung up")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAutoExit(t *testing.T) {
	tests := []struct {
		name string
		end  func(t *testing.T, td *testDaemon)
	}{
		{"disconnect", func(t *testing.T, td *testDaemon) {
			if err := td.client.Disconnect(testCtx(t), "corp"); err != nil {
				t.Fatal(err)
			}
		}},
		{"tunnel died", func(t *testing.T, td *testDaemon) { td.dialer.tunnel("corp").end(errors.New("peer gone")) }},
		{"failed connect", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td := startTestDaemon(t, true)
			ctx := testCtx(t)
			if tt.end == nil {
				td.dialer.set(func(d *fakeDialer) { d.fail["corp"] = "no proposal chosen" })
				if _, err := td.client.Connect(ctx, "corp", td.config, nil); err == nil {
					t.Fatal("connect succeeded")
				}
			} else {
				if _, err := td.client.Connect(ctx, "corp", td.config, nil); err != nil {
					t.Fatal(err)
				}
				select {
				case <-td.ran:
					t.Fatal("daemon exited while a connection was up")
				case <-time.After(50 * time.Millisecond):
				}
				tt.end(t, td)
			}
			select {
			case err := <-td.ran:
				td.ran <- err // for the cleanup
				if err != nil {
					t.Errorf("run: %v", err)
				}
			case <-ctx.Done():
				t.Fatal("auto-exit daemon still running after its last connection ended")
			}
			if _, err := os.Lstat(td.socket); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket left behind: %v", err)
			}
		})
	}
}

func TestShutdownClosesTunnels(t *testing.T) {
	td := startTestDaemon(t, false)
	ctx := testCtx(t)
	for _, p := range []string{"corp", "home"} {
		if _, err := td.client.Connect(ctx, p, td.config, nil); err != nil {
			t.Fatal(err)
		}
	}
	td.cancel() // what SIGTERM does in cmd/roam
	select {
	case err := <-td.ran:
		td.ran <- err
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("daemon did not stop")
	}
	for _, p := range []string{"corp", "home"} {
		if !td.dialer.tunnel(p).closed() {
			t.Errorf("%s not closed at shutdown", p)
		}
	}
	if _, err := os.Lstat(td.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if err := td.client.Ping(ctx); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("ping after shutdown: %v, want ErrNoDaemon", err)
	}
}

func TestSocketPermissions(t *testing.T) {
	td := startTestDaemon(t, false)
	fi, err := os.Stat(td.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want socket 0600", fi.Mode())
	}
	di, err := os.Stat(filepath.Dir(td.socket))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("socket directory mode %v, want 0700", di.Mode().Perm())
	}
}

func TestListenControl(t *testing.T) {
	t.Run("stale", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "roam.sock")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close() // the file stays, as after a crash
		if _, err := os.Lstat(path); err != nil {
			t.Fatal(err)
		}
		ln2, err := ListenControl(path)
		if err != nil {
			t.Fatalf("stale socket not replaced: %v", err)
		}
		ln2.Close()
	})
	t.Run("live", func(t *testing.T) {
		td := startTestDaemon(t, false)
		if _, err := ListenControl(td.socket); !errors.Is(err, ErrDaemonRunning) {
			t.Errorf("second listener: %v, want ErrDaemonRunning", err)
		}
		if err := td.client.Ping(testCtx(t)); err != nil {
			t.Errorf("the running daemon lost its socket: %v", err)
		}
	})
	t.Run("not a socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "roam.sock")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ListenControl(path); err == nil {
			t.Error("a regular file was replaced")
		}
	})
}

func TestBadRequests(t *testing.T) {
	td := startTestDaemon(t, false)
	ctx := testCtx(t)
	for _, req := range []Request{{Op: "reboot"}, {Op: OpConnect}, {Op: OpConnect, Profile: "corp", Config: "relative.toml"}, {Op: OpDisconnect}} {
		if _, err := td.client.call(ctx, req, nil); err == nil {
			t.Errorf("%+v accepted", req)
		}
	}
	c, err := net.Dial("unix", td.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("{not json\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, _ := c.Read(buf)
	if !strings.Contains(string(buf[:n]), "bad request") {
		t.Errorf("reply to garbage: %q", buf[:n])
	}
}

// A spawned daemon whose connect never arrives does not linger.
func TestAutoExitUnused(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "roam.sock")
	d, err := Start(Options{Socket: socket, Dial: newFakeDialer().dial, AutoExit: true, IdleTimeout: 50 * time.Millisecond, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- d.Run(context.Background()) }()
	select {
	case err := <-ran:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("unused auto-exit daemon still running")
	}
	if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}
