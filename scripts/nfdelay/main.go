// Command nfdelay gives a lab link a one-way delay: it binds a netfilter
// queue in its network namespace, holds every packet an iptables NFQUEUE
// rule hands it for -delay and then accepts it. The lab kernel has no
// netem, so this is the lab's delay line (scripts/lab.AddDelay runs it).
//
// It prints "ready" once the queue is bound, so the caller installs the
// NFQUEUE rule only when someone consumes it. With -log it prints one line
// per released tunnel packet (ESP, raw or in UDP 4500):
//
//	esp <in|out> <enter unix ns> <release unix ns> <ip length> <peer>
//
// where "in" means the packet came in through the -wan interface and peer
// is its far end on the internet side: the source address of an "in"
// packet, the destination of an "out" one (which gateway address the
// tunnel uses; "-" when the header is not IPv4). SIGTERM
// or SIGINT release what is held and end it with a counters line on stderr.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/roam-vpn/roam/scripts/lab/nfq"
)

func main() {
	queue := flag.Uint("queue", 0, "netfilter queue number")
	delay := flag.Duration("delay", 10*time.Millisecond, "how long each packet is held")
	wan := flag.String("wan", "", "interface whose incoming packets are logged as \"in\"")
	logESP := flag.Bool("log", false, "print a line per released tunnel packet")
	flag.Parse()
	if err := run(uint16(*queue), *delay, *wan, *logESP); err != nil {
		fmt.Fprintln(os.Stderr, "nfdelay:", err)
		os.Exit(1)
	}
}

func run(num uint16, delay time.Duration, wan string, logESP bool) error {
	if delay < 0 {
		return fmt.Errorf("negative delay %v", delay)
	}
	var wanIdx uint32
	if wan != "" {
		ifi, err := net.InterfaceByName(wan)
		if err != nil {
			return fmt.Errorf("interface %q: %w", wan, err)
		}
		wanIdx = uint32(ifi.Index)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	q, err := nfq.Open(num)
	if err != nil {
		return err
	}
	defer q.Close()
	fmt.Println("ready")
	var onRelease func(nfq.Released)
	if logESP {
		onRelease = func(r nfq.Released) {
			if !r.Tunnel {
				return
			}
			dir := "out"
			if wanIdx != 0 && r.InDev == wanIdx {
				dir = "in"
			}
			peer := "-"
			if a, ok := peerOf(r.Payload, dir == "in"); ok {
				peer = a.String()
			}
			fmt.Printf("esp %s %d %d %d %s\n", dir, r.Enter.UnixNano(), r.Release.UnixNano(), r.Len, peer)
		}
	}
	st, err := q.Run(ctx, delay, onRelease)
	fmt.Fprintf(os.Stderr, "nfdelay: packets=%d malformed=%d overruns=%d verdict_errors=%d\n",
		st.Packets, st.Malformed, st.Overruns, st.VerdictErrors)
	return err
}

// peerOf returns the internet-side address of an IPv4 packet: its source
// when it came in from the internet, else its destination.
func peerOf(ip []byte, in bool) (netip.Addr, bool) {
	if len(ip) < 20 || ip[0]>>4 != 4 {
		return netip.Addr{}, false
	}
	off := 16
	if in {
		off = 12
	}
	return netip.AddrFrom4([4]byte(ip[off : off+4])), true
}
