package interop

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// evidence is one thing a failing lab test prints before it stops: a name
// and a function that reads it ("" when there is nothing, so a process
// that has not started yet or a log not written yet prints nothing).
type evidence struct {
	name string
	read func() string
}

// failWith returns the test's fatal-error function: it logs every piece of
// evidence, then fails with the message, so a lab failure on a loaded CI
// machine can be told apart afterwards without running it again.
func failWith(t testing.TB, ev ...evidence) func(format string, args ...any) {
	return func(format string, args ...any) {
		t.Helper()
		for _, e := range ev {
			if text := e.read(); text != "" {
				t.Logf("%s:\n%s", e.name, text)
			}
		}
		t.Fatalf(format, args...)
	}
}

// procOutput is what a process of the lab printed; p may be filled in
// after the failure function was made, so it is read through a pointer.
func procOutput(name string, p **lab.Proc) evidence {
	return evidence{name, func() string {
		if *p == nil {
			return ""
		}
		return (*p).Output()
	}}
}

// gatewayOutput is the roam gateway's output.
func gatewayOutput(gp *lab.Proc) evidence {
	return evidence{"roam gateway output", gp.Output}
}

// swanLog is a strongSwan daemon's log.
func swanLog(name string, c *lab.Charon) evidence {
	return evidence{name, c.Log}
}

// clientLog is the log of the roam daemon r's connect started.
func clientLog(r *lab.Roam) evidence {
	return evidence{"roam daemon log", func() string {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(r.Socket), "roam.log"))
		if err != nil {
			return ""
		}
		return string(b)
	}}
}

// roamStatus is `roam status --json` of r (a client or a gateway).
func roamStatus(name string, r *lab.Roam) evidence {
	return evidence{name, func() string {
		_, raw, err := r.Status()
		if err != nil {
			return ""
		}
		return raw
	}}
}

// connectRoam connects r's profile corp to a roam gateway that may still
// be binding its sockets, then waits for a ping to the host behind the
// gateway; fail reports either failure.
func connectRoam(t testing.TB, l *lab.Lab, r *lab.Roam, fail func(string, ...any)) {
	t.Helper()
	if err := r.ConnectRetry("corp"); err != nil {
		fail("connect: %v", err)
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		fail("ping through the tunnel: %v", err)
	}
}

// commandOutput is what a command prints in the client namespace, such as
// its ruleset when the test is about what the client lets through.
func commandOutput(l *lab.Lab, name string, args ...string) evidence {
	return evidence{name, func() string {
		out, err := l.Output(lab.Client, args...)
		if err != nil {
			return ""
		}
		return out
	}}
}

// wlanOnlyTunnel starts a roam gateway (PSK auth) and connects a roam
// client over wlan alone, its wwan uplink down, for tests about one path
// rather than a move; pki, when not nil, goes into both configs. fail
// logs the gateway's output and the client daemon's log.
func wlanOnlyTunnel(t *testing.T, l *lab.Lab, bin string, pki *lab.PKI) (g, r *lab.Roam, fail func(string, ...any)) {
	t.Helper()
	g, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki})
	if err := l.LinkDown(lab.Client, lab.WWAN); err != nil {
		t.Fatal(err)
	}
	r = roamClient(t, l, bin, lab.LabProfile("psk", goodPSK, pki, nil))
	fail = failWith(t, gatewayOutput(gp), clientLog(r))
	connectRoam(t, l, r, fail)
	return g, r, fail
}

// blackhole makes router drop everything that comes from the client's
// side until lift is called (or the test ends).
func blackhole(t *testing.T, l *lab.Lab, router string) (lift func()) {
	t.Helper()
	const drop = "add table ip blackhole; add chain ip blackhole hold { type filter hook forward priority -10; policy accept; }; " +
		"add rule ip blackhole hold iifname \"lan\" drop"
	if err := l.Exec(router, "nft", drop); err != nil {
		t.Fatal(err)
	}
	holed := true
	t.Cleanup(func() {
		if holed {
			_ = l.Exec(router, "nft", "delete table ip blackhole")
		}
	})
	return func() {
		t.Helper()
		if err := l.Exec(router, "nft", "delete table ip blackhole"); err != nil {
			t.Fatal(err)
		}
		holed = false
	}
}

// connectOnce connects r's profile corp to a gateway that is up already
// (strongSwan's, whose start waits for it), logs what connect printed and
// waits for a ping to the host behind the gateway; fail reports either
// failure.
func connectOnce(t testing.TB, l *lab.Lab, r *lab.Roam, fail func(string, ...any)) {
	t.Helper()
	out, err := r.Connect("corp", 20*time.Second)
	if err != nil {
		fail("connect: %v\n%s", err, out)
	}
	t.Logf("roam connect:\n%s", out)
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		fail("ping through the tunnel: %v", err)
	}
}
