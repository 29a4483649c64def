package esp

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// icmpEcho is an ICMP (v4) or ICMPv6 echo request or reply from src to dst.
func icmpEcho(src, dst netip.Addr, reply bool, id, seq uint16) []byte {
	var pkt, icmp []byte
	if src.Is4() {
		pkt = make([]byte, ipv4HeaderLen+16)
		pkt[0] = 0x45
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		pkt[8], pkt[9] = 64, 1
		copy(pkt[12:], src.AsSlice())
		copy(pkt[16:], dst.AsSlice())
		icmp = pkt[ipv4HeaderLen:]
		icmp[0] = 8
		if reply {
			icmp[0] = 0
		}
	} else {
		pkt = make([]byte, ipv6HeaderLen+16)
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], 16)
		pkt[6], pkt[7] = 58, 64
		copy(pkt[8:], src.AsSlice())
		copy(pkt[24:], dst.AsSlice())
		icmp = pkt[ipv6HeaderLen:]
		icmp[0] = 128
		if reply {
			icmp[0] = 129
		}
	}
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	return pkt
}

// synAck is the answer from dst to src of tcpPacket's SYN from src.
func synAck(src, dst netip.Addr) []byte {
	pkt := tcpPacket(dst, src, 0x12, nil, 0)
	tcp := pkt[len(pkt)-tcpHeaderLen:]
	binary.BigEndian.PutUint16(tcp[0:], 5201)
	binary.BigEndian.PutUint16(tcp[2:], 40000)
	binary.BigEndian.PutUint32(tcp[4:], 0x0a0b0c0d)
	binary.BigEndian.PutUint32(tcp[8:], 0x01020304+1) // the SYN's sequence number, plus one
	return pkt
}

// TestEchoKey: an answer has its request's key; anything else has another
// key, or none.
func TestEchoKey(t *testing.T) {
	me4, far4, other4 := netip.MustParseAddr("10.99.200.7"), netip.MustParseAddr("10.99.0.10"), netip.MustParseAddr("10.99.0.11")
	me6, far6 := netip.MustParseAddr("fd00::7"), netip.MustParseAddr("fd00:99::10")
	fragment := icmpEcho(me4, far4, false, 7, 1)
	binary.BigEndian.PutUint16(fragment[6:], 0x2000) // more fragments
	ackSeqWrong := synAck(me4, far4)
	binary.BigEndian.PutUint32(ackSeqWrong[ipv4HeaderLen+8:], 0x01020304)
	tests := []struct {
		name             string
		request, answer  []byte
		match, noRequest bool
	}{
		{name: "ping", request: icmpEcho(me4, far4, false, 7, 1), answer: icmpEcho(far4, me4, true, 7, 1), match: true},
		{name: "ping6", request: icmpEcho(me6, far6, false, 7, 1), answer: icmpEcho(far6, me6, true, 7, 1), match: true},
		{name: "SYN", request: tcpPacket(me4, far4, 0x02, nil, 0), answer: synAck(me4, far4), match: true},
		{name: "SYN6", request: tcpPacket(me6, far6, 0x02, nil, 0), answer: synAck(me6, far6), match: true},
		{name: "another sequence number", request: icmpEcho(me4, far4, false, 7, 1), answer: icmpEcho(far4, me4, true, 7, 2)},
		{name: "another identifier", request: icmpEcho(me4, far4, false, 7, 1), answer: icmpEcho(far4, me4, true, 8, 1)},
		{name: "from another host", request: icmpEcho(me4, far4, false, 7, 1), answer: icmpEcho(other4, me4, true, 7, 1)},
		{name: "acknowledges another SYN", request: tcpPacket(me4, far4, 0x02, nil, 0), answer: ackSeqWrong},
		{name: "a reply is no request", request: icmpEcho(me4, far4, true, 7, 1), noRequest: true},
		{name: "data is no request", request: tcpPacket(me4, far4, 0x18, nil, 100), noRequest: true},
		{name: "SYN-ACK is no request", request: synAck(far4, me4), noRequest: true},
		{name: "a fragment", request: fragment, noRequest: true},
		{name: "truncated", request: icmpEcho(me4, far4, false, 7, 1)[:ipv4HeaderLen+4], noRequest: true},
		{name: "empty", request: nil, noRequest: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, ok := echoKey(tt.request, false)
			if ok == tt.noRequest {
				t.Fatalf("request key ok %v, want %v", ok, !tt.noRequest)
			}
			if tt.noRequest {
				return
			}
			ans, ok := echoKey(tt.answer, true)
			if got := ok && ans == req; got != tt.match {
				t.Fatalf("answer matches %v (ok %v), want %v", got, ok, tt.match)
			}
			if _, ok := echoKey(tt.request, true); ok {
				t.Fatal("the request counts as an answer")
			}
		})
	}
}

// TestEchoTracker: an answer to a request on the same path gives one
// sample; a retransmitted request (Karn), an answer after a move, or one
// with no request gives none.
func TestEchoTracker(t *testing.T) {
	me, far := netip.MustParseAddr("10.99.200.7"), netip.MustParseAddr("10.99.0.10")
	pathA := Path{Local: netip.MustParseAddrPort("198.51.100.2:4500"), Remote: netip.MustParseAddrPort("203.0.113.10:4500")}
	pathB := Path{Local: netip.MustParseAddrPort("192.0.2.2:4500"), Remote: pathA.Remote}
	req, rep := icmpEcho(me, far, false, 7, 1), icmpEcho(far, me, true, 7, 1)
	tests := []struct {
		name     string
		sends    int
		answerOn Path
		answers  int
		want     int
	}{
		{name: "answered", sends: 1, answerOn: pathA, answers: 1, want: 1},
		{name: "answered twice", sends: 1, answerOn: pathA, answers: 2, want: 1},
		{name: "retransmitted", sends: 2, answerOn: pathA, answers: 1, want: 0},
		{name: "answered after a move", sends: 1, answerOn: pathB, answers: 1, want: 0},
		{name: "never asked", sends: 0, answerOn: pathA, answers: 1, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Peer
			var got []time.Duration
			p.SetEchoRTT(func(path Path, rtt time.Duration) {
				if path != tt.answerOn {
					t.Errorf("sample on %v, want %v", path, tt.answerOn)
				}
				got = append(got, rtt)
			})
			for range tt.sends {
				p.echo.sent(req, pathA)
			}
			for range tt.answers {
				p.echo.answered(rep, tt.answerOn, time.Now().Add(20*time.Millisecond).UnixNano())
			}
			if len(got) != tt.want {
				t.Fatalf("%d samples, want %d", len(got), tt.want)
			}
			for _, rtt := range got {
				if rtt < 20*time.Millisecond {
					t.Fatalf("sample %v, want at least the 20 ms between request and answer", rtt)
				}
			}
		})
	}
	t.Run("no receiver", func(t *testing.T) {
		var p Peer
		p.echo.sent(req, pathA)
		for _, s := range p.echo.slots {
			if s.key != 0 {
				t.Fatal("a peer nobody measures keeps requests")
			}
		}
	})
}

// TestEchoAllocations: following requests and answers allocates nothing
// (they pass on the packet path).
func TestEchoAllocations(t *testing.T) {
	me, far := netip.MustParseAddr("10.99.200.7"), netip.MustParseAddr("10.99.0.10")
	path := Path{Local: netip.MustParseAddrPort("198.51.100.2:4500"), Remote: netip.MustParseAddrPort("203.0.113.10:4500")}
	var p Peer
	samples := 0
	p.SetEchoRTT(func(Path, time.Duration) { samples++ })
	pkts := [][2][]byte{
		{icmpEcho(me, far, false, 7, 1), icmpEcho(far, me, true, 7, 1)},
		{tcpPacket(me, far, 0x02, nil, 0), synAck(me, far)},
		{tcpPacket(me, far, 0x10, nil, 1000), tcpPacket(far, me, 0x10, nil, 1000)},
	}
	n := testing.AllocsPerRun(100, func() {
		for _, pair := range pkts {
			p.echo.sent(pair[0], path)
			p.echo.answered(pair[1], path, time.Now().UnixNano())
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per round", n)
	}
	if samples == 0 {
		t.Fatal("no sample measured")
	}
}

// TestEchoThroughDataplanes: a ping from A's TUN device answered behind B
// gives A's peer a round trip, through real sealing, sockets and opening.
func TestEchoThroughDataplanes(t *testing.T) {
	p := newLoopbackPair(t)
	peerOfA, peerOfB := p.peers()
	p.install(t, peerOfA, peerOfB, clientGatewayChild(0xb0b, 0xa11ce, keyMat(36), keyMat(36)))
	var mu sync.Mutex
	var samples []time.Duration
	var paths []Path
	peerOfA.SetEchoRTT(func(path Path, rtt time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		samples, paths = append(samples, rtt), append(paths, path)
	})
	me, far := netip.MustParseAddr("10.99.200.7"), netip.MustParseAddr("10.99.0.10")
	const pings = 3
	for i := range pings {
		p.tunA.in <- icmpEcho(me, far, false, 99, uint16(i))
		recvPacket(t, p.tunB)
		p.tunB.in <- icmpEcho(far, me, true, 99, uint16(i))
		recvPacket(t, p.tunA)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(samples) != pings {
		t.Fatalf("%d samples for %d pings", len(samples), pings)
	}
	for i, path := range paths {
		if path != peerOfA.Path() || samples[i] <= 0 {
			t.Fatalf("sample %d: %v on %v, want a round trip on %v", i, samples[i], path, peerOfA.Path())
		}
	}
}

// FuzzEchoKey: any packet from the network is a request, an answer, or
// neither, without a panic.
func FuzzEchoKey(f *testing.F) {
	me, far := netip.MustParseAddr("10.99.200.7"), netip.MustParseAddr("10.99.0.10")
	f.Add(icmpEcho(far, me, true, 7, 1))
	f.Add(synAck(me, far))
	f.Add(icmpEcho(netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"), true, 1, 1))
	f.Add([]byte{0x45})
	f.Add([]byte{0x60, 0, 0, 0, 0, 8, 6})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		echoKey(pkt, true)
		echoKey(pkt, false)
	})
}
