package memconn

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/netpath"
)

var (
	aAddr  = netip.MustParseAddr("192.0.2.10")
	aAddr2 = netip.MustParseAddr("192.0.2.11")
	bAddr  = netip.MustParseAddr("198.51.100.1")
)

func TestListen(t *testing.T) {
	n := netsim.New(1)
	defer n.Close()
	h := n.AddHost("a", aAddr)
	tests := []struct {
		name  string
		local netip.AddrPort
		ok    bool
	}{
		{"own address", netip.AddrPortFrom(aAddr, 4500), true},
		{"unspecified", netip.AddrPortFrom(netip.IPv4Unspecified(), 4501), true},
		{"no port", netip.AddrPortFrom(aAddr, 0), false},
		{"foreign address", netip.AddrPortFrom(bAddr, 4500), false},
		{"bound already", netip.AddrPortFrom(aAddr, 4500), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Listen(h, tc.local, 0)
			if (err == nil) != tc.ok {
				t.Fatalf("listen %s: %v, want ok %v", tc.local, err, tc.ok)
			}
			if err == nil && c.LocalAddr() != tc.local {
				t.Fatalf("local %s, want %s", c.LocalAddr(), tc.local)
			}
		})
	}
}

// TestReadWrite sends between two Conns: a batch read takes what is queued
// with the local address each datagram reached, a send takes the path's
// source, a source the host no longer owns fails, a full queue drops and
// counts, and Close ends a blocked read with net.ErrClosed.
func TestReadWrite(t *testing.T) {
	n := netsim.New(1)
	defer n.Close()
	a := n.AddHost("a", aAddr, aAddr2)
	b := n.AddHost("b", bAddr)
	ca, err := Listen(a, netip.AddrPortFrom(netip.IPv4Unspecified(), 4500), 0)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := Listen(b, netip.AddrPortFrom(bAddr, 4500), 3)
	if err != nil {
		t.Fatal(err)
	}
	toB := netip.AddrPortFrom(bAddr, 4500)
	sends := []struct {
		src     netip.Addr
		wantSrc netip.Addr
	}{
		{aAddr2, aAddr2},
		{netip.Addr{}, aAddr}, // the host's first address
		{aAddr, aAddr},
	}
	pkts := make([]esp.Packet, len(sends))
	for i, s := range sends {
		pkts[i] = esp.Packet{Buf: []byte{byte(i)}, Path: netpath.Path{Local: netip.AddrPortFrom(s.src, 0), Remote: toB}}
	}
	if failed := ca.WriteBatch(pkts); failed != 0 {
		t.Fatalf("%d sends failed", failed)
	}
	msgs := make([]esp.Message, 8)
	var got []esp.Message
	for len(got) < len(sends) {
		k, err := cb.ReadBatch(msgs)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, msgs[:k]...)
	}
	for i, m := range got {
		if m.Buf[0] != byte(i) || m.From != netip.AddrPortFrom(sends[i].wantSrc, 4500) || m.Local != bAddr {
			t.Fatalf("datagram %d: %v from %s to %s, want from %s", i, m.Buf, m.From, m.Local, sends[i].wantSrc)
		}
	}

	a.RemoveAddr(aAddr2)
	if err := ca.WriteTo([]byte{1}, netpath.Path{Local: netip.AddrPortFrom(aAddr2, 4500), Remote: toB}); !errors.Is(err, ErrAddrNotAvailable) {
		t.Fatalf("send from a removed address: %v", err)
	}

	// Five datagrams into a queue of three: two dropped, counted.
	for i := range 5 {
		ca.WriteTo([]byte{byte(i)}, netpath.Path{Remote: toB})
	}
	for cb.Overflows() < 2 {
		runtime.Gosched() // delivery runs on the network's goroutine
	}
	k, err := cb.ReadBatch(msgs)
	if err != nil || k != 3 {
		t.Fatalf("read %d, %v; want 3 queued", k, err)
	}
	if m := msgs[k-1]; !m.OverflowKnown || m.Overflow != 2 || cb.Overflows() != 2 {
		t.Fatalf("overflow %d (known %v), want 2", m.Overflow, m.OverflowKnown)
	}

	read := make(chan error, 1)
	go func() { _, err := cb.ReadBatch(msgs); read <- err }()
	cb.Close()
	if err := <-read; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if err := cb.WriteTo([]byte{1}, netpath.Path{Remote: netip.AddrPortFrom(aAddr, 4500)}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

// TestLinkMTU runs a dataplane over a Conn: the inner MTU of a peer's path
// follows the link MTU the Conn reports, and is unknown (0) without one.
func TestLinkMTU(t *testing.T) {
	tests := []struct {
		name    string
		linkMTU int
		want    int
	}{
		{"unknown", 0, 0},
		{"1500", 1500, esp.InnerMTU(1500, false)},
		{"1280", 1280, esp.InnerMTU(1280, false)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := netsim.New(1)
			defer n.Close()
			c, err := Listen(n.AddHost("a", aAddr), netip.AddrPortFrom(aAddr, 4500), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetLinkMTU(tc.linkMTU)
			d := esp.NewDataplane(nil, nil, nil)
			d.AddConn(c)
			p := d.NewPeer(netpath.Path{Local: c.LocalAddr(), Remote: netip.AddrPortFrom(bAddr, 4500)})
			if got := p.MTU(); got != tc.want {
				t.Fatalf("inner MTU %d, want %d", got, tc.want)
			}
		})
	}
}
