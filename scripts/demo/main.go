// Command demo shows roam in the netns lab: it builds the lab, starts a
// strongSwan gateway, connects with roam from behind a NAT, pings the host
// behind the gateway through the tunnel, shows `roam status`, optionally
// moves the client from its wlan to its wwan uplink (-roam), disconnects and
// tears everything down. Run it as root through scripts/demo.sh.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

func main() {
	bin := flag.String("bin", "bin/roam", "roam binary")
	auth := flag.String("auth", "psk", "authentication: psk or pubkey")
	ike := flag.String("ike", "aes256gcm16-prfsha384-ecp384", "IKE proposal (strongSwan spelling)")
	roaming := flag.Bool("roam", true, "move from wlan to wwan and back while a 10 ms pinger runs (-roam=false: connect only)")
	verbose := flag.Bool("v", false, "print every lab command")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *bin, *auth, *ike, *roaming, *verbose); err != nil {
		fmt.Fprintf(os.Stderr, "\nDEMO FAILED: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("\nDEMO PASSED")
}

type stepper struct {
	n, total int
	start    time.Time
}

func (s *stepper) step(title string) {
	s.n++
	s.start = time.Now()
	fmt.Printf("\n[%d/%d] %s\n", s.n, s.total, title)
}

func (s *stepper) ok(detail string) {
	fmt.Printf("      ok (%v) %s\n", time.Since(s.start).Round(time.Millisecond), detail)
}

func indent(out string) string {
	out = strings.TrimRight(out, "\n")
	if out == "" {
		return ""
	}
	return "      | " + strings.ReplaceAll(out, "\n", "\n      | ") + "\n"
}

func run(ctx context.Context, bin, auth, ike string, roaming, verbose bool) (err error) {
	if !lab.Root() {
		return errors.New("the demo needs root (network namespaces); run: sudo ./scripts/demo.sh")
	}
	bin, err = filepath.Abs(bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("roam binary: %w (build it with: make build)", err)
	}
	s := &stepper{total: 7}
	if roaming {
		s.total++
	}

	s.step("building the lab: client (wlan+wwan behind two NATs), internet, gateway, host")
	opts := lab.Options{}
	if verbose {
		opts.Logf = func(f string, a ...any) { fmt.Printf("      . "+f+"\n", a...) }
	}
	l, err := lab.New(opts)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("\n[-] tearing the lab down")
		if cerr := l.Close(); cerr != nil {
			fmt.Printf("      teardown: %v\n", cerr)
			if err == nil {
				err = cerr
			}
		} else {
			fmt.Println("      ok: namespaces and processes removed")
		}
	}()
	// An interrupt ends the demo through the normal teardown path.
	go func() {
		<-ctx.Done()
		l.KillAll(lab.Client)
	}()
	s.ok(fmt.Sprintf("namespaces %s{%s}", l.Prefix, strings.Join(lab.Roles, ",")))

	s.step(fmt.Sprintf("starting strongSwan (charon, kernel-libipsec) as the gateway on %v and %v, auth %s",
		lab.GatewayAddr1.Addr(), lab.GatewayAddr2.Addr(), auth))
	pki, err := lab.NewPKI(filepath.Join(l.Dir, "pki"))
	if err != nil {
		return err
	}
	const psk = "roam-demo-pre-shared-key"
	gw, err := l.StartCharon(lab.Gateway, lab.CharonOptions{
		Conns:            []lab.SwanConn{lab.GatewayConn(auth, psk, []string{ike}, nil)},
		PKI:              pki,
		InterfacesIgnore: []string{"lan"},
	})
	if err != nil {
		return err
	}
	showGWLog := func() { fmt.Printf("      strongSwan gateway log (%s):\n%s", gw.LogFile, indent(tail(gw.Log(), 30))) }
	s.ok("log: " + gw.LogFile)

	s.step("roam connect corp (client behind the wlan NAT)")
	cfgDir := filepath.Join(l.Dir, "roam")
	r, err := lab.NewRoamClient(l, bin, cfgDir, lab.LabProfile(auth, psk, pki, []string{ike}))
	if err != nil {
		return err
	}
	out, err := r.Connect("corp", 20*time.Second)
	fmt.Print(indent(out))
	if err != nil {
		showGWLog()
		return err
	}
	s.ok("")

	s.step(fmt.Sprintf("ping %v (the host behind the gateway) through the tunnel", lab.HostAddr.Addr()))
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		showGWLog()
		return err
	}
	out, err = l.Output(lab.Client, "ping", "-n", "-c", "3", "-i", "0.2", lab.HostAddr.Addr().String())
	fmt.Print(indent(out))
	if err != nil {
		return err
	}
	s.ok("")

	s.step("roam status, and the gateway's view (swanctl --list-sas)")
	out, err = r.Run(10*time.Second, "status")
	fmt.Print(indent(out))
	if err != nil {
		return err
	}
	sas, err := gw.WaitSA(2*time.Second, lab.Established)
	if err != nil {
		return err
	}
	out, _ = gw.Swanctl("--list-sas")
	fmt.Print(indent(out))
	s.ok(fmt.Sprintf("gateway sees roam at %v with virtual IP %v", sas[0].Remote, sas[0].VirtualIPs))

	if roaming {
		s.step("roaming while a 10 ms pinger runs: wlan goes down (roam moves to wwan), then comes back (roam moves back, make-before-break)")
		if err := roam(l, gw); err != nil {
			showGWLog()
			return err
		}
		s.ok("")
	}

	s.step("roam disconnect corp")
	out, err = r.Disconnect("corp")
	fmt.Print(indent(out))
	if err != nil {
		return err
	}
	if _, err := gw.WaitSA(5*time.Second, nil); err != nil {
		return fmt.Errorf("the gateway still has an SA after disconnect: %w", err)
	}
	s.ok("the gateway has no SA left")

	s.step("checking the client is back to its own state")
	// Stop the daemon the connect spawned before the lab goes away.
	l.KillAll(lab.Client)
	if err := l.Exec(lab.Client, "ping", "-n", "-q", "-c", "1", "-W", "1", lab.HostAddr.Addr().String()); err == nil {
		return errors.New("the host is still reachable without the tunnel")
	}
	s.ok("host unreachable without the tunnel, as expected")
	return nil
}

// roam takes the client's wlan uplink down while a pinger sends every 10 ms,
// waits for traffic to flow again and for the gateway to see the client at
// the wwan NAT's address, then reports the gap and restores wlan.
func roam(l *lab.Lab, gw *lab.Charon) error {
	pinger, err := l.Start(lab.Client, "ping", "-n", "-D", "-i", "0.01", "-W", "1", lab.HostAddr.Addr().String())
	if err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	fmt.Println("      taking wlan down")
	down := time.Now()
	if err := l.LinkDown(lab.Client, lab.WLAN); err != nil {
		return err
	}
	if err := waitClientAt(gw, lab.PublicWWAN.Addr()); err != nil {
		return fmt.Errorf("the gateway never saw the client on wwan (%v): %w", lab.PublicWWAN.Addr(), err)
	}
	fmt.Printf("      gateway sees the client at the wwan NAT after %v\n", time.Since(down).Round(time.Millisecond))
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		return fmt.Errorf("no traffic through the tunnel after the move: %w", err)
	}
	time.Sleep(time.Second)
	// What a laptop's network manager does when Wi-Fi returns: link up,
	// then the default route it learnt from DHCP.
	fmt.Println("      wlan comes back")
	back := time.Now()
	if err := l.LinkUp(lab.Client, lab.WLAN); err != nil {
		return err
	}
	if err := l.Exec(lab.Client, "ip", "route", "replace", "default", "via", lab.RouterWLAN.Addr().String(), "dev", lab.WLAN, "metric", "100"); err != nil {
		return err
	}
	if err := waitClientAt(gw, lab.PublicWLAN.Addr()); err != nil {
		return fmt.Errorf("the gateway never saw the client back on wlan (%v): %w", lab.PublicWLAN.Addr(), err)
	}
	fmt.Printf("      gateway sees the client at the wlan NAT again after %v\n", time.Since(back).Round(time.Millisecond))
	time.Sleep(time.Second)
	_ = pinger.Signal(syscall.SIGINT) // ping prints its loss summary on SIGINT
	_ = pinger.Wait(3 * time.Second)
	fmt.Print(indent(tail(pinger.Output(), 3)))
	return nil
}

// waitClientAt waits until the gateway's IKE SA is established with the
// client at addr, the public address of the NAT it came through.
func waitClientAt(gw *lab.Charon, addr netip.Addr) error {
	_, err := gw.WaitSA(15*time.Second, func(sa lab.IKESA) bool {
		return lab.Established(sa) && sa.Remote.Addr() == addr
	})
	return err
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}
