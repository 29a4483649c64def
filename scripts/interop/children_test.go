package interop

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// The protected network split in two, each half its own Child SA; the host
// answers on an address in each.
var (
	lowerHalf = "10.99.0.0/25"
	upperHalf = "10.99.0.128/25"
	hostUpper = netip.MustParseAddr("10.99.0.200")
	// gatewayUpper is the gateway's own address in the upper half.
	gatewayUpper = "10.99.0.129"
)

// childByTS is one Child SA of the status, by its remote selectors.
type childByTS struct {
	spiIn, spiOut     string
	packetsIn, pktOut uint64
}

// childrenByTS returns the Child SAs of st per remote_ts entry (joined),
// the newest-looking (most inbound packets) when a rekey overlaps two.
func childrenByTS(st lab.Status) (map[string]childByTS, int) {
	out := map[string]childByTS{}
	for _, c := range st.Children {
		k := strings.Join(c.RemoteTS, ",")
		if old, ok := out[k]; ok && old.packetsIn > c.PacketsIn {
			continue
		}
		out[k] = childByTS{spiIn: string(c.SPIIn), spiOut: string(c.SPIOut), packetsIn: c.PacketsIn, pktOut: c.PacketsOut}
	}
	return out, len(st.Children)
}

// TestChildSAsFollowMoves: with children = "per_ts" two remote_ts entries
// become two Child SAs (one in IKE_AUTH, one by CREATE_CHILD_SA), against
// roam gateway and strongSwan (one child config whose local_ts covers both
// halves, which it narrows each request to, and one child config per
// half). Both carry pings; after
// the Wi-Fi link goes down and MOBIKE moves the IKE SA to cellular, both
// still carry them and status still shows two Child SAs. roam gateway
// moves them as they are (SPIs unchanged); strongSwan with kernel-libipsec
// may rekey them after the update instead, which is logged.
func TestChildSAsFollowMoves(t *testing.T) {
	for _, kind := range []string{"roam", "strongswan", "strongswan-two-children"} {
		t.Run(kind, func(t *testing.T) {
			l, bin := setup(t)
			pki := newPKI(t, l)
			var logs func() string
			var gwStatus func() ([]lab.Status, string, error)
			if kind == "roam" {
				g, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki})
				time.Sleep(300 * time.Millisecond) // listening
				gwStatus = g.Status
				logs = func() string {
					_, raw, _ := g.Status()
					return gp.Output() + "\ngateway status:\n" + string(raw)
				}
			} else {
				conn := lab.GatewayConn("psk", goodPSK, nil, nil)
				if kind == "strongswan-two-children" {
					// A child section per half instead of one child
					// narrowed to each.
					conn.ChildTS = [][]netip.Prefix{{netip.MustParsePrefix(lowerHalf)}, {netip.MustParsePrefix(upperHalf)}}
				}
				gw := startSwanConn(t, l, pki, conn)
				logs = gw.Log
			}
			if err := l.Exec(lab.Host, "ip", "addr", "add", hostUpper.String()+"/24", "dev", "eth0"); err != nil {
				t.Fatal(err)
			}
			// strongSwan's kernel-libipsec routes each Child SA with a
			// source address of ours within its selectors.
			if err := l.Exec(lab.Gateway, "ip", "addr", "add", gatewayUpper+"/24", "dev", "lan"); err != nil {
				t.Fatal(err)
			}
			p := lab.LabProfile("psk", goodPSK, pki, nil)
			p.RemoteTS = []string{lowerHalf, upperHalf}
			p.Children = "per_ts"
			r := roamClient(t, l, bin, p)
			fail := failWith(t, evidence{"gateway log", logs}, roamStatus("roam status", r), clientLog(r))
			pingBoth := func(when string) {
				t.Helper()
				for _, dst := range []netip.Addr{lab.HostAddr.Addr(), hostUpper} {
					if err := l.WaitPing(lab.Client, dst, 8*time.Second); err != nil {
						fail("ping %s %s: %v", dst, when, err)
					}
				}
			}
			// twoChildren waits (a rekey's old SA lingers for its grace)
			// until status shows exactly one Child SA per half, each
			// having carried traffic both ways.
			twoChildren := func(when string) (lab.Status, map[string]childByTS) {
				t.Helper()
				deadline := time.Now().Add(10 * time.Second)
				for {
					st := connected(t, r, "corp")
					m, n := childrenByTS(st)
					lo, hi := m[lowerHalf], m[upperHalf]
					if n == 2 && lo.packetsIn > 0 && lo.pktOut > 0 && hi.packetsIn > 0 && hi.pktOut > 0 {
						return st, m
					}
					if time.Now().After(deadline) {
						fail("%s: want one Child SA per half with traffic, have %d: %+v", when, n, m)
					}
					time.Sleep(200 * time.Millisecond)
				}
			}

			if out, err := r.Connect("corp", 20*time.Second); err != nil {
				fail("connect: %v\n%s", err, out)
			}
			pingBoth("before the move")
			before, was := twoChildren("before the move")
			if before.Interface != lab.WLAN {
				fail("tunnel starts on %q, want wlan", before.Interface)
			}
			t.Logf("before: lower %s/%s upper %s/%s", was[lowerHalf].spiIn, was[lowerHalf].spiOut, was[upperHalf].spiIn, was[upperHalf].spiOut)

			if err := l.LinkDown(lab.Client, lab.WLAN); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(15 * time.Second)
			for st := connected(t, r, "corp"); st.Interface != lab.WWAN || st.PathChanges <= before.PathChanges; st = connected(t, r, "corp") {
				if time.Now().After(deadline) {
					fail("the tunnel did not move to wwan: interface %q, path changes %d", st.Interface, st.PathChanges)
				}
				time.Sleep(100 * time.Millisecond)
			}
			pingBoth("after the move")
			// Counted afresh: each half's Child SA must carry new echoes.
			_, mid := twoChildren("after the move")
			pingBoth("after the move, again")
			after, now := twoChildren("after the move, again")
			for _, half := range []string{lowerHalf, upperHalf} {
				if now[half].spiIn == mid[half].spiIn && now[half].packetsIn <= mid[half].packetsIn {
					fail("the Child SA for %s carried nothing after the move: %+v then %+v", half, mid[half], now[half])
				}
				same := now[half].spiIn == was[half].spiIn && now[half].spiOut == was[half].spiOut
				switch {
				case same:
					t.Logf("%s: Child SA %s/%s kept through the move", half, now[half].spiIn, now[half].spiOut)
				case kind == "roam":
					fail("%s: Child SA changed from %s/%s to %s/%s; roam gateway moves it as it is", half,
						was[half].spiIn, was[half].spiOut, now[half].spiIn, now[half].spiOut)
				default:
					t.Logf("%s: the gateway rekeyed the Child SA after the move: %s/%s now %s/%s", half,
						was[half].spiIn, was[half].spiOut, now[half].spiIn, now[half].spiOut)
				}
			}
			if gwStatus != nil {
				// The gateway's side: one client, a Child SA per half
				// (its own selectors), each having carried traffic.
				sts, raw, err := gwStatus()
				if err != nil || len(sts) != 1 {
					fail("gateway status: %v\n%s", err, raw)
				}
				var locals []string
				for _, c := range sts[0].Children {
					if c.PacketsIn == 0 || c.PacketsOut == 0 {
						fail("gateway Child SA %s carried nothing:\n%s", c.SPIIn, raw)
					}
					locals = append(locals, strings.Join(c.LocalTS, ","))
				}
				slices.Sort(locals)
				if strings.Join(locals, " ") != lowerHalf+" "+upperHalf {
					fail("gateway Child SAs with local_ts %v, want %s and %s:\n%s", locals, lowerHalf, upperHalf, raw)
				}
			}
			if after.VirtualIP != before.VirtualIP {
				fail("inner address changed from %s to %s", before.VirtualIP, after.VirtualIP)
			}
			t.Logf("%s: %s", kind, fmt.Sprintf("two Child SAs on %s after %d path changes", after.Interface, after.PathChanges))
		})
	}
}
