package interop

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// healthStatus is the part of `roam status --json` that says whether
// traffic flows.
type healthStatus struct {
	Name         string  `json:"name"`
	State        string  `json:"state"`
	Health       string  `json:"health"`
	HealthReason string  `json:"health_reason"`
	RTTMS        float64 `json:"rtt_ms"`
	RTTSamples   int     `json:"rtt_samples"`
	LastIKE      *string `json:"last_inbound_ike"`
}

func healthOf(r *lab.Roam) (healthStatus, bool) {
	return statusEntry[healthStatus](r, "corp")
}

// TestHealthBlackholedUplink: the only uplink's NAT router silently drops
// everything from the client while a ping runs. Status must stop saying ok
// within dead_after and a few looks (testing or no-path, whatever the SA's
// state), never say ok while the blackhole lasts, and say ok again once
// the router forwards again; the events report the changes as health
// events from ok and back to it.
func TestHealthBlackholedUplink(t *testing.T) {
	l, bin := setup(t)
	// One uplink only: the test is about status, not about a move.
	_, r, fail := wlanOnlyTunnel(t, l, bin, newPKI(t, l))
	st, ok := healthOf(r)
	if !ok || st.State != "established" || st.Health != "ok" {
		fail("status before the blackhole: %+v", st)
	}
	if st.RTTSamples == 0 || st.RTTMS <= 0 || st.LastIKE == nil {
		fail("no RTT or IKE time on an established tunnel: %+v", st)
	}
	evp, err := l.Start(lab.Client, bin, "events", "--socket", r.Socket, "--json")
	if err != nil {
		t.Fatal(err)
	}
	defer evp.Stop()
	p := startPinger(t, l, 12*time.Second)

	lift := blackhole(t, l, lab.NATWLAN)
	start := time.Now()
	// dead_after (500 ms), a tick of the health watcher, a status call on
	// a loaded machine.
	const notice = 2 * time.Second
	const hole = 5 * time.Second
	var noticed time.Duration
	seen := map[string]bool{}
	for time.Since(start) < hole {
		st, ok := healthOf(r)
		if !ok {
			time.Sleep(50 * time.Millisecond) // a failed status call returns at once
			continue
		}
		seen[st.State+"/"+st.Health] = true
		switch {
		case st.Health != "ok" && noticed == 0:
			noticed = time.Since(start)
		case st.Health == "ok" && time.Since(start) > notice:
			fail("status ok %v into the blackhole: %+v", time.Since(start).Round(time.Millisecond), st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if noticed == 0 {
		fail("status stayed ok through the blackhole")
	}
	lift()
	lifted := time.Now()
	var back time.Duration
	for back == 0 {
		if time.Since(lifted) > 25*time.Second {
			fail("status not ok 25 s after the blackhole ended: %+v", st)
		}
		if st, ok = healthOf(r); ok && st.Health == "ok" && st.State == "established" {
			back = time.Since(lifted)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := l.Ping(lab.Client, lab.HostAddr.Addr(), 1); err != nil {
		fail("status ok but no ping: %v (%+v)", err, st)
	}
	if text, err := r.Run(10*time.Second, "status"); err != nil || !strings.Contains(text, "  health ok (") {
		fail("text status lacks the health line: %v\n%s", err, text)
	}
	var states []string
	for k := range seen {
		states = append(states, k)
	}
	t.Logf("blackholed: status not ok after %v (states seen: %s); ok again %v after the blackhole ended",
		noticed.Round(time.Millisecond), strings.Join(states, ", "), back.Round(time.Millisecond))

	// The changes are events: away from ok, then back to it.
	time.Sleep(300 * time.Millisecond)
	var left, returned bool
	for _, line := range strings.Split(evp.Output(), "\n") {
		var ev struct{ Event, Profile, From, To, Reason string }
		if json.Unmarshal([]byte(line), &ev) != nil || ev.Event != "health" {
			continue
		}
		if ev.Reason == "" {
			fail("health event without a reason: %s", line)
		}
		if ev.From == "ok" && ev.To != "ok" {
			left = true
		}
		if left && ev.To == "ok" {
			returned = true
		}
	}
	if !left || !returned {
		fail("health events do not show leaving ok and coming back (left %v, back %v):\n%s", left, returned, evp.Output())
	}
	p.result(t, time.Minute)
}

// gatewayHealthOf is the gateway's view of alice (roam gateway's status).
func gatewayHealthOf(g *lab.Roam) (healthStatus, *string, bool) {
	s, ok := statusEntry[struct {
		healthStatus
		LastESP *string `json:"last_inbound_esp"`
	}](g, lab.ClientID)
	return s.healthStatus, s.LastESP, ok
}

// TestGatewayClientHealth: roam gateway's status says for each client
// whether its traffic flows. The host behind the gateway pings the
// client's virtual address; while the client's NAT router drops
// everything from the client, the gateway's ESP goes unanswered, so the
// client's health there must leave ok within a few looks, never be ok
// later in the blackhole, and come back once the router forwards again.
func TestGatewayClientHealth(t *testing.T) {
	l, bin := setup(t)
	g, r, fail := wlanOnlyTunnel(t, l, bin, nil)
	st, _, err := r.Status()
	if err != nil || len(st) != 1 || st[0].VirtualIP == "" {
		fail("client status: %v %+v", err, st)
	}
	ping, err := l.Start(lab.Host, "ping", "-n", "-q", "-i", "0.05", "-W", "1", "-w", "40", st[0].VirtualIP)
	if err != nil {
		t.Fatal(err)
	}
	defer ping.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, esp, ok := gatewayHealthOf(g)
		if ok && h.Health == "ok" && esp != nil && h.LastIKE != nil && h.HealthReason != "" {
			break
		}
		if time.Now().After(deadline) {
			fail("gateway status of the client not ok with traffic times under a ping: %+v (last ESP %v)", h, esp)
		}
		time.Sleep(100 * time.Millisecond)
	}
	lift := blackhole(t, l, lab.NATWLAN)
	start := time.Now()
	// dead_after (500 ms), a tick of the gateway's health look, a status
	// call on a loaded machine.
	const notice = 2 * time.Second
	var noticed time.Duration
	for time.Since(start) < 5*time.Second {
		h, _, ok := gatewayHealthOf(g)
		if !ok {
			time.Sleep(50 * time.Millisecond) // a failed status call returns at once
			continue
		}
		switch {
		case h.Health != "ok" && noticed == 0:
			noticed = time.Since(start)
			if h.Health != "testing" || !strings.Contains(h.HealthReason, "nothing received") {
				fail("gateway health %q (%s) in the blackhole, want testing: nothing received", h.Health, h.HealthReason)
			}
		case h.Health == "ok" && time.Since(start) > notice:
			fail("gateway says the client is ok %v into the blackhole: %+v", time.Since(start).Round(time.Millisecond), h)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if noticed == 0 {
		fail("gateway status of the client stayed ok through the blackhole")
	}
	lift()
	lifted := time.Now()
	for {
		if h, _, ok := gatewayHealthOf(g); ok && h.Health == "ok" {
			break
		}
		if time.Since(lifted) > 20*time.Second {
			fail("gateway status of the client not ok 20 s after the blackhole ended")
		}
		time.Sleep(50 * time.Millisecond)
	}
	text, err := g.Run(10*time.Second, "status")
	if err != nil || !strings.Contains(text, "  health ok (") {
		fail("gateway's text status lacks the client's health line: %v\n%s", err, text)
	}
	t.Logf("gateway: client not ok %v into the blackhole, ok again %v after it", noticed.Round(time.Millisecond), time.Since(lifted).Round(time.Millisecond))
}
