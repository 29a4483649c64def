package tunnel

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/ikeesp"
	"github.com/roam-vpn/roam/report"
)

// StepAside records nothing: the fake device has no policy rules.
func (d *fakeDevice) StepAside(bool) error { return nil }

// asideDevice records whether the routes are stepped aside.
type asideDevice struct {
	*fakeDevice
	mu    sync.Mutex
	aside bool
	calls int
}

func (d *asideDevice) StepAside(on bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.aside, d.calls = on, d.calls+1
	return nil
}

func (d *asideDevice) state() (bool, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.aside, d.calls
}

func TestHealthCaptive(t *testing.T) {
	const loc = "http://10.1.1.1/login"
	for _, tc := range []struct {
		name    string
		in      ikeesp.HealthInput
		want    string
		portalR bool
	}{
		{"reconnecting behind a portal", ikeesp.HealthInput{State: report.StateReconnecting, Captive: loc}, report.HealthCaptivePortal, true},
		{"suspended behind a portal", ikeesp.HealthInput{State: report.StateSuspended, SuspendCause: "mobility: no working path: x", Captive: loc}, report.HealthCaptivePortal, true},
		{"path test behind a portal", ikeesp.HealthInput{State: "established", Testing: true, Captive: loc}, report.HealthCaptivePortal, true},
		{"connecting behind a portal", ikeesp.HealthInput{State: "connecting", Captive: loc}, report.HealthCaptivePortal, true},
		{"suspended without one", ikeesp.HealthInput{State: report.StateSuspended, SuspendCause: "mobility: no working path: x"}, report.HealthNoPath, false},
		{"established again", ikeesp.HealthInput{State: "established", Captive: loc, ESPRecv: time.Unix(1, 0)}, report.HealthOK, false},
		{"disconnected", ikeesp.HealthInput{State: "disconnected", Captive: loc}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := ikeesp.HealthTracker{DeadAfter: time.Second}
			state, reason, _, _ := h.Update(tc.in, time.Unix(2, 0))
			if state != tc.want || strings.Contains(reason, loc) != tc.portalR {
				t.Fatalf("health %q (%s), want %q with the portal in the reason: %v", state, reason, tc.want, tc.portalR)
			}
		})
	}
}

func TestProbePort(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want uint16
	}{
		{"", 0},
		{config.DefaultCaptiveProbe, 80},
		{"http://192.0.2.1:8080/x", 8080},
		{"http://[2001:db8::1]/x", 80},
	} {
		if got := probePort(tc.url); got != tc.want {
			t.Errorf("probePort(%q) = %d, want %d", tc.url, got, tc.want)
		}
	}
}

// TestWatchCaptive runs the watcher against a real portal on loopback:
// while IKE gets no answer it finds the portal (event, status, and with
// step-aside the routes aside), the portal's 204 asks for a retry at once,
// and IKE passing again takes the routes back.
func TestWatchCaptive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the probe's SO_MARK needs CAP_NET_ADMIN")
	}
	for _, tc := range []struct {
		mode  string
		aside bool
	}{
		{config.CaptiveStepAside, true},
		{config.CaptiveReport, false},
	} {
		t.Run(tc.mode, func(t *testing.T) { testWatchCaptive(t, tc.mode, tc.aside) })
	}
}

func testWatchCaptive(t *testing.T, mode string, wantAside bool) {
	var open atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if open.Load() {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		http.Redirect(w, r, "http://127.0.0.1:1/login", http.StatusFound)
	}))
	defer srv.Close()
	events := make(chan report.Event, 16)
	p := &config.Profile{Name: "corp", Gateway: "198.51.100.1", Captive: config.Captive{Probe: srv.URL + "/generate_204", Mode: mode}}
	c := newConn(p, discardLog(), func(ev report.Event) { events <- ev })
	dev := &asideDevice{fakeDevice: &fakeDevice{}}
	c.dev = dev
	c.mu.Lock()
	c.state, c.suspendCause = report.StateSuspended, "mobility: no working path: timeout"
	c.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.watchCaptive(c.life)
	}()
	defer func() {
		c.cancel()
		<-done
	}()
	waitEvent := func(kind string) report.Event {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case ev := <-events:
				if ev.Event == kind {
					return ev
				}
			case <-timeout:
				t.Fatalf("no %s event", kind)
			}
		}
	}
	ev := waitEvent(report.EventCaptivePortal)
	if ev.To != "http://127.0.0.1:1/login" || !strings.Contains(ev.Reason, "302") || strings.Contains(ev.Reason, "stepped aside") != wantAside {
		t.Errorf("event %+v", ev)
	}
	if aside, _ := dev.state(); aside != wantAside {
		t.Errorf("routes stepped aside: %v, want %v", aside, wantAside)
	}
	st := c.Status() // no SA yet: health is judged, not shown
	health, _ := c.healthNow()
	if st.CaptivePortal != ev.To || st.CaptiveStepAside != wantAside || health != report.HealthCaptivePortal {
		t.Errorf("status: captive_portal %q step aside %v health %q", st.CaptivePortal, st.CaptiveStepAside, health)
	}

	// The portal lets us through: the next probe asks for a retry.
	open.Store(true)
	select {
	case <-c.captiveRetry:
	case <-time.After(30 * time.Second):
		t.Fatal("the probe's 204 did not ask for a retry")
	}
	// IKE answers: back into the tunnel.
	c.mu.Lock()
	c.state, c.suspendCause = "established", ""
	c.mu.Unlock()
	wantCalls := 0
	if wantAside {
		wantCalls = 2
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		aside, calls := dev.state()
		c.mu.Lock()
		gone := c.captive == nil
		c.mu.Unlock()
		if gone && !aside && calls == wantCalls {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not back in the tunnel: aside %v after %d calls, portal kept %v", aside, calls, !gone)
		}
	}
	if st := c.Status(); st.CaptivePortal != "" || st.CaptiveStepAside {
		t.Errorf("status after IKE passed: captive_portal %q step aside %v", st.CaptivePortal, st.CaptiveStepAside)
	}
}
