package esp

import (
	"bytes"
	"net/netip"
	"testing"
)

// TestSocketConn uses a kernel socket only through the Conn interface: a
// batch and a single datagram go out, and a batch read returns them with
// the sender and the local address each one reached.
func TestSocketConn(t *testing.T) {
	tests := []struct {
		name  string
		bind  string // the receiver's bound address
		local string // the address datagrams are sent to
	}{
		{"bound", "127.0.0.1:0", "127.0.0.1"},
		{"unspecified", "0.0.0.0:0", "127.0.0.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rx, tx Conn
			r, s := listenOn(t, tc.bind), listenLoopback(t)
			rx, tx = r, s
			to := Path{Remote: netip.AddrPortFrom(netip.MustParseAddr(tc.local), rx.LocalAddr().Port())}
			want := [][]byte{{1, 2, 3}, {4, 5}, {6}}
			if failed := tx.WriteBatch([]Packet{{Buf: want[0], Path: to}, {Buf: want[1], Path: to}}); failed != 0 {
				t.Fatalf("%d of the batch failed", failed)
			}
			if err := tx.WriteTo(want[2], to); err != nil {
				t.Fatal(err)
			}
			msgs := make([]Message, 4)
			var got []Message
			for len(got) < len(want) {
				n, err := rx.ReadBatch(msgs)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range msgs[:n] {
					m.Buf = bytes.Clone(m.Buf) // the socket's buffer, reused by the next read
					got = append(got, m)
				}
			}
			for i, m := range got {
				if !bytes.Equal(m.Buf, want[i]) || m.From != tx.LocalAddr() || m.Local != netip.MustParseAddr(tc.local) || m.Truncated {
					t.Fatalf("datagram %d: %+v, want %v from %s to %s", i, m, want[i], tx.LocalAddr(), tc.local)
				}
			}
		})
	}
}
