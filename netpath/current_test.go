package netpath

import (
	"net/netip"
	"slices"
	"testing"
)

type recorder []State

func (r *recorder) FollowPath(s State) { *r = append(*r, s) }

func pathFrom(local string) Path {
	return Path{Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort("203.0.113.10:4500"), IfIndex: 2}
}

func TestCurrent(t *testing.T) {
	wlan, wwan, eth := pathFrom("192.168.10.2:4500"), pathFrom("192.168.20.2:4500"), pathFrom("192.168.30.2:4500")
	wwan.IfIndex, eth.IfIndex = 3, 4
	wlanNAT := wlan
	wlanNAT.Remote = netip.MustParseAddrPort("203.0.113.10:4501")
	type step struct {
		try     bool // Try instead of Set
		confirm bool // Confirm instead of Set
		path    Path
		ifname  string
	}
	tests := []struct {
		name  string
		steps []step
		want  []State // what a follower is told, after the state at Follow
		load  State   // Load at the end
	}{
		{"set", []step{{path: wwan, ifname: "wwan"}},
			[]State{{Path: wwan, IfName: "wwan", Sending: wwan}},
			State{Path: wwan, IfName: "wwan", Sending: wwan}},
		{"set the same path again", []step{{path: wlan, ifname: "wlan"}},
			[]State{{Path: wlan, IfName: "wlan", Sending: wlan}},
			State{Path: wlan, IfName: "wlan", Sending: wlan}},
		{"try then confirm it", []step{{try: true, path: wwan}, {path: wwan, ifname: "wwan"}},
			[]State{{Path: wlan, IfName: "wlan", Sending: wwan}, {Path: wwan, IfName: "wwan", Sending: wwan, Kept: true}},
			State{Path: wwan, IfName: "wwan", Sending: wwan, Kept: true}},
		{"try then another answers", []step{{try: true, path: wwan}, {path: eth, ifname: "eth0"}},
			[]State{{Path: wlan, IfName: "wlan", Sending: wwan}, {Path: eth, IfName: "eth0", Sending: eth}},
			State{Path: eth, IfName: "eth0", Sending: eth}},
		// A Set after a plain Confirm is not Kept: the dataplane may have
		// been suspended since (an outage, then the same path back).
		{"confirm then set it", []step{{confirm: true, path: wwan}, {path: wwan, ifname: "wwan"}},
			[]State{{Path: wwan, Sending: wwan}, {Path: wwan, IfName: "wwan", Sending: wwan}},
			State{Path: wwan, IfName: "wwan", Sending: wwan}},
		{"confirm on the same uplink keeps its name", []step{{confirm: true, path: wlanNAT}},
			[]State{{Path: wlanNAT, IfName: "wlan", Sending: wlanNAT}},
			State{Path: wlanNAT, IfName: "wlan", Sending: wlanNAT}},
		{"try, confirm, name", []step{{try: true, path: wwan}, {confirm: true, path: wwan}, {path: wwan, ifname: "wwan"}},
			[]State{{Path: wlan, IfName: "wlan", Sending: wwan}, {Path: wwan, Sending: wwan, Kept: true},
				{Path: wwan, IfName: "wwan", Sending: wwan, Kept: true}},
			State{Path: wwan, IfName: "wwan", Sending: wwan, Kept: true}},
		{"confirm, try elsewhere, set", []step{{confirm: true, path: wwan}, {try: true, path: eth}, {path: wwan, ifname: "wwan"}},
			[]State{{Path: wwan, Sending: wwan}, {Path: wwan, Sending: eth}, {Path: wwan, IfName: "wwan", Sending: wwan}},
			State{Path: wwan, IfName: "wwan", Sending: wwan}},
		{"try, fall back, resume", []step{{try: true, path: wwan}, {try: true, path: wlan}, {path: wlan, ifname: "wlan"}},
			[]State{{Path: wlan, IfName: "wlan", Sending: wwan}, {Path: wlan, IfName: "wlan", Sending: wlan},
				{Path: wlan, IfName: "wlan", Sending: wlan}},
			State{Path: wlan, IfName: "wlan", Sending: wlan}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCurrent(wlan, "wlan")
			var first, second recorder
			c.Follow(&first)
			c.Follow(&second)
			for _, s := range tt.steps {
				switch {
				case s.try:
					c.Try(s.path)
				case s.confirm:
					c.Confirm(s.path)
				default:
					c.Set(s.path, s.ifname)
				}
			}
			start := State{Path: wlan, IfName: "wlan", Sending: wlan, Kept: true}
			want := append([]State{start}, tt.want...)
			if !slices.Equal(first, want) || !slices.Equal(second, want) {
				t.Fatalf("followers told\n%+v\n%+v\nwant %+v", first, second, want)
			}
			if got := c.Load(); got != tt.load {
				t.Fatalf("Load %+v, want %+v", got, tt.load)
			}
		})
	}
}

// TestLoadAllocs: readers on the packet path take a snapshot for free.
func TestLoadAllocs(t *testing.T) {
	c := NewCurrent(pathFrom("192.168.10.2:4500"), "wlan")
	var sink State
	if n := testing.AllocsPerRun(100, func() { sink = c.Load() }); n != 0 {
		t.Fatalf("Load allocates %v times", n)
	}
	_ = sink
}
