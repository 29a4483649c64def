package nfq

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

func TestEncode(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  []byte
		want []byte
	}{
		{"bind", ConfigCmd(7, 3, CmdBind), []byte{
			28, 0, 0, 0, 2, 3, 5, 0, 7, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr: len, type 3<<8|2, REQUEST|ACK, seq 7
			0, 0, 0, 3, // nfgenmsg: AF_UNSPEC, v0, queue 3 (big-endian)
			8, 0, 1, 0, 1, 0, 0, 0, // NFQA_CFG_CMD {BIND, pad, pf 0}
		}},
		{"params", ConfigParams(1, 0, 96, CopyPacket), []byte{
			32, 0, 0, 0, 2, 3, 5, 0, 1, 0, 0, 0, 0, 0, 0, 0,
			0, 0, 0, 0,
			9, 0, 2, 0, 0, 0, 0, 96, 2, 0, 0, 0, // NFQA_CFG_PARAMS {be32 96, PACKET} padded
		}},
		{"maxlen", ConfigMaxLen(2, 1, 4096), []byte{
			28, 0, 0, 0, 2, 3, 5, 0, 2, 0, 0, 0, 0, 0, 0, 0,
			0, 0, 0, 1,
			8, 0, 3, 0, 0, 0, 0x10, 0,
		}},
		{"flags", ConfigFlags(3, 0, FlagGSO, FlagGSO), []byte{
			36, 0, 0, 0, 2, 3, 5, 0, 3, 0, 0, 0, 0, 0, 0, 0,
			0, 0, 0, 0,
			8, 0, 5, 0, 0, 0, 0, 4,
			8, 0, 4, 0, 0, 0, 0, 4,
		}},
		{"verdict", Verdict(9, 2, 0x01020304, Accept), []byte{
			32, 0, 0, 0, 1, 3, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0,
			0, 0, 0, 2,
			12, 0, 2, 0, 0, 0, 0, 1, 1, 2, 3, 4,
		}},
		{"batch", VerdictBatch(10, 0, 42, Drop), []byte{
			32, 0, 0, 0, 3, 3, 1, 0, 10, 0, 0, 0, 0, 0, 0, 0,
			0, 0, 0, 0,
			12, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 42,
		}},
	} {
		if !bytes.Equal(tc.msg, tc.want) {
			t.Errorf("%s:\n got %v\nwant %v", tc.name, tc.msg, tc.want)
		}
	}
}

// kernelPacket builds an NFQNL_MSG_PACKET the way the kernel sends one.
func kernelPacket(seq uint32, queue uint16, id uint32, in, out uint32, payload []byte) []byte {
	b := header(msgPacket, 0, seq, queue, 0)
	var ph [7]byte
	binary.BigEndian.PutUint32(ph[0:], id)
	binary.BigEndian.PutUint16(ph[4:], 0x0800)
	ph[6] = 2 // NF_INET_FORWARD
	b = appendAttr(b, attrPacketHdr, ph[:])
	if in != 0 {
		b = appendAttr(b, attrInDev|0x4000, be32(in)) // NLA_F_NET_BYTEORDER is masked off
	}
	if out != 0 {
		b = appendAttr(b, attrOutDev, be32(out))
	}
	b = appendAttr(b, 4, make([]byte, 16)) // NFQA_TIMESTAMP: ignored
	if payload != nil {
		b = appendAttr(b, attrPayload, payload)
	}
	return finish(b)
}

func be32(v uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return b[:]
}

func nlError(seq uint32, errno int32) []byte {
	b := make([]byte, nlmsgHdrLen+4+nlmsgHdrLen)
	le.PutUint32(b[0:], uint32(len(b)))
	le.PutUint16(b[4:], nlmsgError)
	le.PutUint32(b[8:], seq)
	le.PutUint32(b[16:], uint32(errno))
	return b
}

func TestDecode(t *testing.T) {
	ip := udp4(4500, 4500, []byte{0, 0, 0, 9, 1, 2, 3})
	twoPackets := append(kernelPacket(0, 5, 100, 3, 0, ip), kernelPacket(0, 5, 101, 0, 4, []byte{1, 2, 3})...)
	for _, tc := range []struct {
		name    string
		in      []byte
		want    []Message
		wantErr error
	}{
		{"packet", kernelPacket(0, 5, 100, 3, 4, ip), []Message{{Kind: KindPacket, Packet: Packet{
			Queue: 5, ID: 100, HWProto: 0x0800, Hook: 2, InDev: 3, OutDev: 4, Payload: ip}}}, nil},
		{"two in one datagram", twoPackets, []Message{
			{Kind: KindPacket, Packet: Packet{Queue: 5, ID: 100, HWProto: 0x0800, Hook: 2, InDev: 3, Payload: ip}},
			{Kind: KindPacket, Packet: Packet{Queue: 5, ID: 101, HWProto: 0x0800, Hook: 2, OutDev: 4, Payload: []byte{1, 2, 3}}},
		}, nil},
		{"ack", nlError(12, 0), []Message{{Kind: KindError, Seq: 12}}, nil},
		{"error", nlError(13, -1), []Message{{Kind: KindError, Seq: 13, Errno: -1}}, nil},
		{"empty", nil, nil, nil},
		{"short header", []byte{1, 2, 3}, nil, ErrTruncated},
		{"length beyond datagram", func() []byte { b := nlError(1, 0); le.PutUint32(b, 200); return b }(), nil, ErrBadLength},
		{"length below header", func() []byte { b := nlError(1, 0); le.PutUint32(b, 4); return b }(), nil, ErrBadLength},
		{"packet without header attribute", finish(appendAttr(header(msgPacket, 0, 0, 0, 0), attrPayload, []byte{1})), nil, ErrNoHeader},
		{"short packet header", finish(appendAttr(header(msgPacket, 0, 0, 0, 0), attrPacketHdr, []byte{1, 2})), nil, ErrBadLength},
		{"attribute overruns", func() []byte {
			b := kernelPacket(0, 0, 1, 0, 0, nil)
			le.PutUint16(b[nlmsgHdrLen+nfgenLen:], 100)
			return b
		}(), nil, ErrBadLength},
		{"good then bad", append(nlError(1, 0), 9, 9), []Message{{Kind: KindError, Seq: 1}}, ErrTruncated},
		{"other subsystem ignored", func() []byte {
			b := nlError(1, 0)
			le.PutUint16(b[4:], 1<<8|0)
			return b
		}(), []Message{{Kind: KindOther, Seq: 1}}, nil},
	} {
		got, err := Decode(tc.in)
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.wantErr)
		}
		if len(got) != len(tc.want) {
			t.Errorf("%s: %d messages %+v, want %d", tc.name, len(got), got, len(tc.want))
			continue
		}
		for i := range got {
			g, w := got[i], tc.want[i]
			if g.Kind != w.Kind || g.Seq != w.Seq || g.Errno != w.Errno || !bytes.Equal(g.Packet.Payload, w.Packet.Payload) {
				t.Errorf("%s: message %d = %+v, want %+v", tc.name, i, g, w)
			}
			gp, wp := g.Packet, w.Packet
			gp.Payload, wp.Payload = nil, nil
			if !reflect.DeepEqual(gp, wp) {
				t.Errorf("%s: packet %d = %+v, want %+v", tc.name, i, g.Packet, w.Packet)
			}
		}
	}
}

// udp4 builds an IPv4/UDP packet.
func udp4(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 28+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = 17
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(payload)))
	copy(b[28:], payload)
	return b
}

func TestTunnel(t *testing.T) {
	esp := udp4(4500, 34567, []byte{0xc0, 1, 2, 3, 0, 0, 0, 1})
	frag := udp4(4500, 4500, []byte{0, 0, 0, 1})
	binary.BigEndian.PutUint16(frag[6:], 5) // fragment offset 5
	opts := append([]byte{0x46}, esp[1:20]...)
	opts = append(opts, 1, 1, 1, 1) // four bytes of IP options (NOPs)
	opts = append(opts, esp[20:]...)
	raw := udp4(0, 0, nil)
	raw[9] = 50
	tcp := udp4(4500, 4500, []byte{0, 0, 0, 1})
	tcp[9] = 6
	for _, tc := range []struct {
		name string
		ip   []byte
		want bool
	}{
		{"ESP in UDP from the gateway", esp, true},
		{"ESP in UDP to the gateway", udp4(4500, 4500, []byte{0, 0, 1, 0}), true},
		{"ESP after IP options", opts, true},
		{"raw ESP", raw, true},
		{"IKE (non-ESP marker)", udp4(4500, 4500, []byte{0, 0, 0, 0, 0x21, 0x20}), false},
		{"IKE on 500", udp4(500, 500, []byte{1, 2, 3, 4}), false},
		{"NAT keepalive", udp4(4500, 4500, []byte{0xff}), false},
		{"other UDP", udp4(53, 4000, []byte{1, 2, 3, 4}), false},
		{"TCP to 4500", tcp, false},
		{"later fragment", frag, false},
		{"truncated UDP", esp[:24], false},
		{"IPv6", append([]byte{0x60}, esp[1:]...), false},
		{"bad IHL", append([]byte{0x43}, esp[1:]...), false},
		{"empty", nil, false},
	} {
		if got := Tunnel(tc.ip); got != tc.want {
			t.Errorf("%s: Tunnel = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(kernelPacket(0, 5, 100, 3, 4, udp4(4500, 4500, []byte{0, 0, 0, 9})))
	f.Add(nlError(1, -22))
	f.Add(append(nlError(1, 0), kernelPacket(0, 0, 1, 0, 0, nil)...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, err := Decode(b)
		for _, m := range msgs {
			if m.Kind == KindPacket {
				Tunnel(m.Packet.Payload)
			}
		}
		if err == nil && len(b) > 0 && len(msgs) == 0 {
			t.Fatalf("no error and no message for %d bytes", len(b))
		}
	})
}
