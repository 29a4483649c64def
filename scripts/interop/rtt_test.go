package interop

import (
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// TestRTTFromTunnelTraffic: the tunnel's own requests and answers (here a
// ping through it) measure the path. After connecting, a delay line of
// 15 ms each way goes on the uplink in use; no IKE exchange runs in the
// seconds that follow, so only the ping's round trips can tell the client
// that its path's round trip grew by 30 ms. Status must follow: many new
// samples, and rtt_ms at least the delay added.
func TestRTTFromTunnelTraffic(t *testing.T) {
	const delay = 15 * time.Millisecond
	l, bin := setup(t)
	pki := newPKI(t, l)
	_, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki})
	r := roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, pki, nil))
	fail := failWith(t, gatewayOutput(gp), clientLog(r))
	connectRoam(t, l, r, fail)
	before, ok := healthOf(r)
	if !ok {
		fail("no status after connecting")
	}
	delayBin, err := lab.BuildDelay(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dl, err := l.AddDelay(lab.NATWLAN, delayBin, delay)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Stop()
	sent, recv := startPinger(t, l, 2*time.Second).result(t, time.Minute)
	after, ok := healthOf(r)
	if !ok {
		fail("no status after the ping")
	}
	t.Logf("%d pings, %d answered; rtt %.1f ms from %d samples before, %.1f ms from %d after", sent, recv, before.RTTMS, before.RTTSamples, after.RTTMS, after.RTTSamples)
	if recv < sent/2 {
		fail("%d of %d pings answered: the tunnel did not carry the ping", recv, sent)
	}
	if after.RTTSamples < before.RTTSamples+recv/2 {
		fail("rtt_samples %d → %d over %d answered pings: the ping's round trips were not measured", before.RTTSamples, after.RTTSamples, recv)
	}
	if after.RTTMS < 2*float64(delay.Milliseconds()) {
		fail("rtt_ms %.1f after the path's round trip grew by %v", after.RTTMS, 2*delay)
	}
}
