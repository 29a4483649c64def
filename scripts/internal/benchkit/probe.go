package benchkit

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
	"github.com/roam-vpn/roam/scripts/lab/probe"
)

// ProbePort is the responder's UDP port on the lab's host behind the
// gateway.
const ProbePort = 9000

// probeGrace is how long a stopped Prober still records echoes, so the
// last probes sent can be answered.
const probeGrace = 300 * time.Millisecond

// ServeProbes echoes probes on the lab's host, behind the gateway, at
// ProbePort until ctx ends.
func ServeProbes(ctx context.Context, l *lab.Lab) error {
	var conn *net.UDPConn
	if err := l.InNS(lab.Host, func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: lab.HostAddr.Addr().AsSlice(), Port: ProbePort})
		return err
	}); err != nil {
		return err
	}
	go probe.NewResponder(conn).Serve(ctx)
	return nil
}

// Prober sends a probe every interval from the client namespace, through
// the tunnel, to the responder of ServeProbes, and records the echoes.
type Prober struct {
	*probe.Sender
	stop context.CancelFunc
	done chan struct{}
}

// StartProber starts probing until Stop is called or ctx ends.
func StartProber(ctx context.Context, l *lab.Lab, interval time.Duration) (*Prober, error) {
	var conn *net.UDPConn
	if err := l.InNS(lab.Client, func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{})
		return err
	}); err != nil {
		return nil, err
	}
	p := &Prober{
		Sender: probe.NewSender(conn, netip.AddrPortFrom(lab.HostAddr.Addr(), ProbePort), interval, rand.Uint32()),
		done:   make(chan struct{}),
	}
	sctx, stop := context.WithCancel(ctx)
	p.stop = stop
	go func() {
		p.Sender.Run(sctx, probeGrace)
		close(p.done)
	}()
	return p, nil
}

// Stop stops sending and returns once the last probes have had their
// grace to be answered, so Records is final. It may be called again.
func (p *Prober) Stop() {
	p.stop()
	<-p.done
}

// KeepClientIPv4 removes the client's global IPv6 addresses on wwan. The
// delay lines hold IPv4 only: a client that took the lab's IPv6 path
// would move undelayed and unseen.
func KeepClientIPv4(l *lab.Lab) error {
	return l.Exec(lab.Client, "ip", "-6", "addr", "flush", "dev", lab.WWAN, "scope", "global")
}
