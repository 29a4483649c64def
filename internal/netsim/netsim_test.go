package netsim

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

var (
	aAddr = netip.MustParseAddr("192.0.2.1")
	bAddr = netip.MustParseAddr("198.51.100.1")
	b2    = netip.MustParseAddr("198.51.100.2")
	natIP = netip.MustParseAddr("203.0.113.7")
)

type collector struct {
	mu  sync.Mutex
	got []Datagram
	ch  chan struct{}
}

func newCollector() *collector { return &collector{ch: make(chan struct{}, 1000)} }

func (c *collector) add(d Datagram) {
	c.mu.Lock()
	c.got = append(c.got, d)
	c.mu.Unlock()
	c.ch <- struct{}{}
}

func (c *collector) wait(t *testing.T, n int) []Datagram {
	t.Helper()
	deadline := time.After(2 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case <-c.ch:
		case <-deadline:
			t.Fatalf("got %d datagrams, want %d", i, n)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Datagram(nil), c.got...)
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

func TestDeliveryAndDemux(t *testing.T) {
	n := New(1)
	defer n.Close()
	a := n.AddHost("a", aAddr)
	b := n.AddHost("b", bAddr)
	ikeGot := make(chan []byte, 4)
	b.HandleIKE(func(pkt []byte, src, dst netip.AddrPort) { ikeGot <- pkt })
	esp := newCollector()
	b.HandleESP(esp.add)

	src := netip.AddrPortFrom(netip.IPv4Unspecified(), 1234)
	if err := a.SendIKEFrom(src, netip.AddrPortFrom(bAddr, 500), []byte("ike500")); err != nil {
		t.Fatal(err)
	}
	if err := a.SendIKEFrom(src, netip.AddrPortFrom(bAddr, 4500), []byte("ike4500")); err != nil {
		t.Fatal(err)
	}
	if err := a.Send(src, netip.AddrPortFrom(bAddr, 4500), []byte{0xFF}); err != nil {
		t.Fatal(err)
	}
	if err := a.Send(src, netip.AddrPortFrom(bAddr, 4500), []byte{1, 2, 3, 4, 5}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ike500", "ike4500"} {
		select {
		case got := <-ikeGot:
			if string(got) != want {
				t.Fatalf("IKE payload %q, want %q", got, want)
			}
		case <-time.After(time.Second):
			t.Fatal("IKE not delivered")
		}
	}
	d := esp.wait(t, 1)
	if d[0].Src != netip.AddrPortFrom(aAddr, 1234) {
		t.Fatalf("ESP source %v", d[0].Src)
	}
	if b.Keepalives() != 1 {
		t.Fatalf("keepalives %d", b.Keepalives())
	}
}

func TestImpairments(t *testing.T) {
	tests := []struct {
		name      string
		imp       Impairment
		send      int
		wantAtLst int
		wantAtMst int
	}{
		{"clean", Impairment{}, 50, 50, 50},
		{"drop-even", Impairment{Drop: func(i int, _ Datagram) bool { return i%2 == 0 }}, 50, 25, 25},
		{"loss-all", Impairment{Loss: 1}, 20, 0, 0},
		{"duplicate-all", Impairment{Duplicate: 1}, 20, 40, 40},
		{"delay-jitter", Impairment{Delay: time.Millisecond, Jitter: 5 * time.Millisecond}, 30, 30, 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := New(7)
			defer n.Close()
			a := n.AddHost("a", aAddr)
			b := n.AddHost("b", bAddr)
			c := newCollector()
			b.HandleRaw(c.add)
			n.SetLink(aAddr, bAddr, tc.imp)
			for i := 0; i < tc.send; i++ {
				if err := a.Send(netip.AddrPortFrom(aAddr, 1), netip.AddrPortFrom(bAddr, 2), []byte{byte(i)}); err != nil {
					t.Fatal(err)
				}
			}
			if tc.wantAtLst > 0 {
				c.wait(t, tc.wantAtLst)
			}
			time.Sleep(20 * time.Millisecond)
			if got := c.count(); got < tc.wantAtLst || got > tc.wantAtMst {
				t.Fatalf("delivered %d, want [%d,%d]", got, tc.wantAtLst, tc.wantAtMst)
			}
		})
	}
}

func TestRestrictedConeNAT(t *testing.T) {
	n := New(3)
	defer n.Close()
	inside := netip.MustParseAddr("10.0.0.2")
	client := n.AddHost("client", inside)
	gw := n.AddHost("gw", bAddr, b2)
	nat := n.AddNAT(natIP, RestrictedCone)
	nat.Attach(client)

	atGW := newCollector()
	gw.HandleRaw(atGW.add)
	atClient := newCollector()
	client.HandleRaw(atClient.add)

	if err := client.Send(netip.AddrPortFrom(inside, 5000), netip.AddrPortFrom(bAddr, 4500), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	d := atGW.wait(t, 1)[0]
	if d.Src.Addr() != natIP {
		t.Fatalf("source not translated: %v", d.Src)
	}
	// Reply from the address the client talked to passes.
	if err := gw.Send(netip.AddrPortFrom(bAddr, 4500), d.Src, []byte("reply")); err != nil {
		t.Fatal(err)
	}
	got := atClient.wait(t, 1)[0]
	if got.Dst != netip.AddrPortFrom(inside, 5000) {
		t.Fatalf("reply delivered to %v", got.Dst)
	}
	// A packet from the gateway's other address is filtered: the r-mobike problem.
	if err := gw.Send(netip.AddrPortFrom(b2, 4500), d.Src, []byte("switch")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if atClient.count() != 1 || n.Stats().NATFiltered != 1 {
		t.Fatalf("packet from unknown address not filtered: %d delivered, stats %+v", atClient.count(), n.Stats())
	}
	nat.Flush()
	if err := gw.Send(netip.AddrPortFrom(bAddr, 4500), d.Src, []byte("after flush")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if atClient.count() != 1 {
		t.Fatal("packet delivered after flush")
	}
}

// TestBind checks that a bound address and port takes its datagrams ahead
// of the demux, an unspecified address any of the family's, and that
// unbinding gives them back to the demux.
func TestBind(t *testing.T) {
	tests := []struct {
		name  string
		bind  netip.AddrPort
		to    netip.AddrPort
		bound bool
	}{
		{"exact", netip.AddrPortFrom(bAddr, 4500), netip.AddrPortFrom(bAddr, 4500), true},
		{"unspecified", netip.AddrPortFrom(netip.IPv4Unspecified(), 4500), netip.AddrPortFrom(b2, 4500), true},
		{"other port", netip.AddrPortFrom(bAddr, 4500), netip.AddrPortFrom(bAddr, 4501), false},
		{"other address", netip.AddrPortFrom(bAddr, 4500), netip.AddrPortFrom(b2, 4500), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := New(1)
			defer n.Close()
			a := n.AddHost("a", aAddr)
			b := n.AddHost("b", bAddr, b2)
			got, demux := newCollector(), newCollector()
			b.HandleESP(demux.add)
			unbind, err := b.Bind(tc.bind, got.add)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Bind(tc.bind, got.add); err == nil {
				t.Fatal("second bind of the same address and port succeeded")
			}
			src := netip.AddrPortFrom(aAddr, 4500)
			a.Send(src, tc.to, []byte{1, 2, 3, 4, 5, 6, 7, 8})
			if tc.bound {
				if g := got.wait(t, 1); g[0].Payload[0] != 1 || g[0].Dst != tc.to {
					t.Fatalf("bound receiver got %v", g[0])
				}
			}
			unbind()
			a.Send(src, tc.to, []byte{9, 2, 3, 4, 5, 6, 7, 8})
			want := 1
			if !tc.bound {
				want = 2
			}
			d := demux.wait(t, want)
			if d[want-1].Payload[0] != 9 {
				t.Fatalf("after unbind the demux got %v", d[want-1])
			}
			if !tc.bound && got.count() != 0 {
				t.Fatalf("bound receiver got %d datagrams to another address", got.count())
			}
		})
	}
}
