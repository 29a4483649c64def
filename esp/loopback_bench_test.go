package esp

import (
	"testing"
)

// BenchmarkLoopback drives one dataplane over a loopback UDP socket in
// bursts of 32 packets of 1200 octets, as TestZeroAllocsPerPacket does:
// outbound is TUN read, seal and sendmmsg (a plain socket of the test's
// reads), inbound is recvmmsg, open and TUN write (the test's own batch
// writer sends). It measures the whole packet path with its system calls,
// which is where a change to the dataplane's network side would show.
func BenchmarkLoopback(b *testing.B) {
	const burst = 32
	inner := ipv4Packet(1200)
	copy(inner[12:16], []byte{10, 99, 0, 10})
	copy(inner[16:20], []byte{10, 99, 200, 7})
	outPkt := ipv4Packet(1200)

	r := startCountRig(b, outPkt)
	tun, sock, peerConn, peerSock, peerOut := r.tun, r.sock, r.peerConn, r.peerSock, r.peerOut

	b.Run("outbound", func(b *testing.B) {
		rbuf := make([]byte, maxPacket)
		b.SetBytes(burst * int64(len(outPkt)))
		b.ReportAllocs()
		for b.Loop() {
			tun.in <- burst
			for range burst {
				if _, _, err := peerConn.ReadFromUDPAddrPort(rbuf); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("inbound", func(b *testing.B) {
		toUs := &peerPath{Path: Path{Remote: sock.LocalAddr()}, sock: peerSock}
		pkts := make([]outPacket, burst)
		sb := newSendBatch(burst)
		sealed := make([][]byte, burst)
		for i := range sealed {
			sealed[i] = make([]byte, 0, 1400)
		}
		b.SetBytes(burst * int64(len(inner)))
		b.ReportAllocs()
		for b.Loop() {
			for i := range pkts {
				s, err := peerOut.Seal(sealed[i][:0], inner)
				if err != nil {
					b.Fatal(err)
				}
				pkts[i] = outPacket{buf: s, pp: toUs}
			}
			if n := peerSock.writeBatch(sb, pkts); n != 0 {
				b.Fatal("the peer's send failed")
			}
			for range burst {
				tun.free <- <-tun.out
			}
		}
	})
}
