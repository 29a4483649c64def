package mobility

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/roam-vpn/roam/netmon"
)

// TestRetest: while no path works, Retest tests them at once instead of at
// the next backed-off retry (a captive portal let us through); while a
// path works it does nothing.
func TestRetest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(knobs{}, wlan, []netmon.Address{wlan}, []netmon.Address{wlan})
		defer r.stop()
		r.m.Retest()
		r.wait(time.Minute)
		if n := r.sa.callCount(); n != 0 {
			t.Fatalf("Retest on a working path sent %d updates", n)
		}
		// wlan goes, wwan is there but does not answer (a captive uplink).
		r.setAddrs(wwan)
		r.send(netmon.LinkDown{IfIndex: wlan.IfIndex, IfName: "wlan", Current: true})
		// The first test fails at 10 s, the retries come 2 s, 4 s and 8 s
		// after each failure: three updates by 40 s, the next at 54 s.
		r.wait(40 * time.Second)
		expectLog(t, r.take(), "suspend: mobility: no working path")
		if n := r.sa.callCount(); n != 3 {
			t.Fatalf("%d updates before the retest, want 3", n)
		}
		r.sa.setWorking(wwan)
		r.m.Retest()
		r.wait(0)
		expectLog(t, r.take(), "move wlan->wwan", "resume wwan")
		if n := r.sa.callCount(); n != 4 {
			t.Fatalf("%d updates after the retest, want 4", n)
		}
	})
}
