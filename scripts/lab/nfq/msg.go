// Package nfq speaks just enough of the netfilter queue protocol
// (nfnetlink_queue over a raw netlink socket) to hold packets that an
// iptables NFQUEUE rule hands to userspace and release them later. The lab
// kernel has no netem, so this is how an uplink gets its one-way delay.
//
// Message layouts follow linux/netfilter/nfnetlink_queue.h: every message is
// a netlink header, a 4-byte nfgenmsg (family, version, queue number in
// network order) and netlink attributes. Attribute payloads of this
// subsystem are big-endian; netlink headers and attribute headers are in
// host order (little-endian on every machine the lab runs on).
package nfq

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Netlink and nfnetlink constants (linux/netlink.h, nfnetlink.h,
// nfnetlink_queue.h). Only what the delay tool uses.
const (
	nlmsgHdrLen = 16
	nfgenLen    = 4
	nlaHdrLen   = 4

	nlmsgNoop    = 1
	nlmsgError   = 2
	nlmsgDone    = 3
	nlmsgOverrun = 4

	nlmFRequest = 0x1
	nlmFAck     = 0x4

	subsysQueue = 3

	msgPacket       = 0
	msgVerdict      = 1
	msgConfig       = 2
	msgVerdictBatch = 3

	// config attributes
	cfgCmd    = 1
	cfgParams = 2
	cfgMaxLen = 3
	cfgMask   = 4
	cfgFlags  = 5

	// config commands
	CmdBind   = 1
	CmdUnbind = 2

	// copy modes
	CopyMeta   = 1
	CopyPacket = 2

	// config flags
	FlagGSO = 0x4

	// packet attributes
	attrPacketHdr  = 1
	attrVerdictHdr = 2
	attrInDev      = 5
	attrOutDev     = 6
	attrPayload    = 10

	nlaTypeMask = 0x3fff

	// Verdicts (linux/netfilter.h).
	Drop   = 0
	Accept = 1
)

var le = binary.LittleEndian
var be = binary.BigEndian

// header builds a netlink + nfgenmsg header for a queue message of type
// typ with room for payloadLen bytes of attributes.
func header(typ uint16, flags uint16, seq uint32, queue uint16, payloadLen int) []byte {
	b := make([]byte, nlmsgHdrLen+nfgenLen, nlmsgHdrLen+nfgenLen+payloadLen)
	le.PutUint16(b[4:], subsysQueue<<8|typ)
	le.PutUint16(b[6:], flags)
	le.PutUint32(b[8:], seq)
	// nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, queue number.
	be.PutUint16(b[18:], queue)
	return b
}

func appendAttr(b []byte, typ uint16, data []byte) []byte {
	n := nlaHdrLen + len(data)
	var h [nlaHdrLen]byte
	le.PutUint16(h[0:], uint16(n))
	le.PutUint16(h[2:], typ)
	b = append(b, h[:]...)
	b = append(b, data...)
	for n%4 != 0 {
		b = append(b, 0)
		n++
	}
	return b
}

func finish(b []byte) []byte {
	le.PutUint32(b[0:], uint32(len(b)))
	return b
}

// ConfigCmd is a config request carrying a command (CmdBind, CmdUnbind)
// for queue, asking the kernel for an acknowledgement.
func ConfigCmd(seq uint32, queue uint16, cmd uint8) []byte {
	b := header(msgConfig, nlmFRequest|nlmFAck, seq, queue, 8)
	// struct nfqnl_msg_config_cmd { u8 command; u8 pad; be16 pf; }
	b = appendAttr(b, cfgCmd, []byte{cmd, 0, 0, 0})
	return finish(b)
}

// ConfigParams sets the copy mode and how many bytes of each packet the
// kernel copies to us.
func ConfigParams(seq uint32, queue uint16, copyRange uint32, mode uint8) []byte {
	b := header(msgConfig, nlmFRequest|nlmFAck, seq, queue, 12)
	// struct nfqnl_msg_config_params { be32 copy_range; u8 copy_mode; } packed
	var p [5]byte
	be.PutUint32(p[0:], copyRange)
	p[4] = mode
	b = appendAttr(b, cfgParams, p[:])
	return finish(b)
}

// ConfigMaxLen sets how many packets the kernel queues for us before it
// drops new ones.
func ConfigMaxLen(seq uint32, queue uint16, n uint32) []byte {
	b := header(msgConfig, nlmFRequest|nlmFAck, seq, queue, 8)
	var p [4]byte
	be.PutUint32(p[:], n)
	b = appendAttr(b, cfgMaxLen, p[:])
	return finish(b)
}

// ConfigFlags sets the queue flags selected by mask.
func ConfigFlags(seq uint32, queue uint16, flags, mask uint32) []byte {
	b := header(msgConfig, nlmFRequest|nlmFAck, seq, queue, 16)
	var f, m [4]byte
	be.PutUint32(f[:], flags)
	be.PutUint32(m[:], mask)
	b = appendAttr(b, cfgFlags, f[:])
	b = appendAttr(b, cfgMask, m[:])
	return finish(b)
}

// Verdict decides the fate of one queued packet.
func Verdict(seq uint32, queue uint16, id uint32, verdict uint32) []byte {
	return verdictMsg(msgVerdict, seq, queue, id, verdict)
}

// VerdictBatch decides every queued packet whose id is at most id. Packet
// ids of a queue only grow, and the delay releases packets in arrival order,
// so one batch verdict releases everything that is due.
func VerdictBatch(seq uint32, queue uint16, id uint32, verdict uint32) []byte {
	return verdictMsg(msgVerdictBatch, seq, queue, id, verdict)
}

func verdictMsg(typ uint16, seq uint32, queue uint16, id, verdict uint32) []byte {
	b := header(typ, nlmFRequest, seq, queue, 12)
	var v [8]byte
	be.PutUint32(v[0:], verdict)
	be.PutUint32(v[4:], id)
	b = appendAttr(b, attrVerdictHdr, v[:])
	return finish(b)
}

// Packet is one queued packet as the kernel announced it.
type Packet struct {
	Queue   uint16
	ID      uint32
	HWProto uint16
	Hook    uint8
	InDev   uint32 // ifindex, 0 when absent
	OutDev  uint32
	Payload []byte // the first copy-range bytes of the IP packet (aliases the read buffer)
}

// Message is one decoded netlink message: a packet, an acknowledgement or
// error (Err, with Errno 0 for an ack), or something the tool ignores.
type Message struct {
	Kind   Kind
	Seq    uint32
	Packet Packet
	Errno  int32 // for KindError: negative errno, 0 = ack
}

// Kind of a decoded message.
type Kind int

// Message kinds.
const (
	KindOther Kind = iota
	KindPacket
	KindError
	KindOverrun
)

// Decode errors. A malformed message is dropped and counted by the caller.
var (
	ErrTruncated = errors.New("nfq: truncated message")
	ErrBadLength = errors.New("nfq: bad length")
	ErrNoHeader  = errors.New("nfq: packet without packet header")
)

// Decode splits one datagram read from the socket into messages. It stops
// at the first malformed message and returns what it decoded so far with the
// error; it never panics on any input.
func Decode(buf []byte) ([]Message, error) {
	var msgs []Message
	for len(buf) > 0 {
		if len(buf) < nlmsgHdrLen {
			return msgs, ErrTruncated
		}
		n := int(le.Uint32(buf[0:]))
		if n < nlmsgHdrLen || n > len(buf) {
			return msgs, fmt.Errorf("%w: message length %d of %d", ErrBadLength, n, len(buf))
		}
		m, err := decodeOne(buf[:n])
		if err != nil {
			return msgs, err
		}
		msgs = append(msgs, m)
		// Messages are aligned to 4 bytes inside a datagram.
		adv := (n + 3) &^ 3
		if adv > len(buf) {
			adv = len(buf)
		}
		buf = buf[adv:]
	}
	return msgs, nil
}

func decodeOne(b []byte) (Message, error) {
	typ := le.Uint16(b[4:])
	m := Message{Seq: le.Uint32(b[8:])}
	body := b[nlmsgHdrLen:]
	switch {
	case typ == nlmsgError:
		if len(body) < 4 {
			return m, ErrTruncated
		}
		m.Kind = KindError
		m.Errno = int32(le.Uint32(body))
		return m, nil
	case typ == nlmsgOverrun:
		m.Kind = KindOverrun
		return m, nil
	case typ == nlmsgNoop || typ == nlmsgDone:
		return m, nil
	case typ == subsysQueue<<8|msgPacket:
	default:
		return m, nil
	}
	if len(body) < nfgenLen {
		return m, ErrTruncated
	}
	m.Kind = KindPacket
	m.Packet.Queue = be.Uint16(body[2:])
	attrs := body[nfgenLen:]
	haveHdr := false
	for len(attrs) > 0 {
		if len(attrs) < nlaHdrLen {
			return m, ErrTruncated
		}
		alen := int(le.Uint16(attrs[0:]))
		atyp := le.Uint16(attrs[2:]) & nlaTypeMask
		if alen < nlaHdrLen || alen > len(attrs) {
			return m, fmt.Errorf("%w: attribute length %d of %d", ErrBadLength, alen, len(attrs))
		}
		data := attrs[nlaHdrLen:alen]
		switch atyp {
		case attrPacketHdr:
			// struct nfqnl_msg_packet_hdr { be32 id; be16 hw_protocol; u8 hook; } packed
			if len(data) < 7 {
				return m, fmt.Errorf("%w: packet header of %d bytes", ErrBadLength, len(data))
			}
			m.Packet.ID = be.Uint32(data[0:])
			m.Packet.HWProto = be.Uint16(data[4:])
			m.Packet.Hook = data[6]
			haveHdr = true
		case attrInDev, attrOutDev:
			if len(data) < 4 {
				return m, fmt.Errorf("%w: ifindex of %d bytes", ErrBadLength, len(data))
			}
			if atyp == attrInDev {
				m.Packet.InDev = be.Uint32(data)
			} else {
				m.Packet.OutDev = be.Uint32(data)
			}
		case attrPayload:
			m.Packet.Payload = data
		}
		adv := (alen + 3) &^ 3
		if adv > len(attrs) {
			adv = len(attrs)
		}
		attrs = attrs[adv:]
	}
	if !haveHdr {
		return m, ErrNoHeader
	}
	return m, nil
}

// Tunnel classifies an IPv4 packet (as much of it as was copied) the way the
// benchmark needs: is it IPsec ESP, either raw (protocol 50) or in UDP on
// port 4500 with a non-zero SPI (RFC 3948: zero marks IKE, a single 0xff
// byte is a NAT keepalive)?
func Tunnel(ip []byte) bool {
	if len(ip) < 20 || ip[0]>>4 != 4 {
		return false
	}
	ihl := int(ip[0]&0x0f) * 4
	if ihl < 20 || len(ip) < ihl {
		return false
	}
	// Later fragments carry no transport header.
	if be.Uint16(ip[6:])&0x1fff != 0 {
		return false
	}
	switch ip[9] {
	case 50:
		return true
	case 17:
	default:
		return false
	}
	udp := ip[ihl:]
	if len(udp) < 8 {
		return false
	}
	sport, dport := be.Uint16(udp[0:]), be.Uint16(udp[2:])
	if sport != 4500 && dport != 4500 {
		return false
	}
	pl := udp[8:]
	if len(pl) < 4 {
		return false // keepalive (one byte) or nothing
	}
	return be.Uint32(pl) != 0
}
