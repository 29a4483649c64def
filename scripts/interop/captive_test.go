package interop

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// The lab's captive portal: an HTTP server on nat-wwan's outside address,
// which the client reaches through its default route over wwan (off-link,
// so only a route outside the full tunnel gets there).
var (
	portalAddr  = lab.PublicWWAN.Addr()
	portalProbe = "http://" + portalAddr.String() + "/generate_204"
	portalLogin = "http://" + portalAddr.String() + "/login"
)

// portal is a hotel network's captive portal in nat-wwan: until someone
// logs in, the router forwards nothing from the client (UDP, TCP 4500,
// IPv6: no IKE at all), and its web server redirects every request to
// the login page; the login lifts the block and the probe gets its 204.
type portal struct {
	l *lab.Lab

	mu       sync.Mutex
	loggedIn bool
	probes   int // probe requests before the login
	liftErr  error
}

func startPortal(t *testing.T, l *lab.Lab) *portal {
	t.Helper()
	p := &portal{l: l}
	if err := l.Exec(lab.NATWWAN, "nft", `add table inet captive; add chain inet captive hold { type filter hook forward priority -10; }; add rule inet captive hold iifname "lan" drop`); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := l.InNS(lab.NATWWAN, func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(portalAddr, 80).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return p
}

func (p *portal) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case r.URL.Path == "/login" && r.URL.Query().Get("user") != "":
		if !p.loggedIn {
			p.loggedIn = true
			p.liftErr = p.l.Exec(lab.NATWWAN, "nft", "delete table inet captive")
		}
		io.WriteString(w, "welcome\n")
	case r.URL.Path == "/login":
		io.WriteString(w, `<form action="/login"><input name="user"></form>`)
	case p.loggedIn && r.URL.Path == "/generate_204":
		w.WriteHeader(http.StatusNoContent)
	case p.loggedIn:
		http.NotFound(w, r)
	default:
		if r.URL.Path == "/generate_204" {
			p.probes++
		}
		http.Redirect(w, r, portalLogin+"?from=probe", http.StatusFound)
	}
}

func (p *portal) state() (probes int, loggedIn bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.probes, p.loggedIn, p.liftErr
}

// browse is the user's browser in the client namespace: one GET of url,
// its status and the Location it was sent to. Its socket is made on a
// thread inside the namespace (an http.Client would dial elsewhere).
func browse(l *lab.Lab, url string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	var status int
	var location string
	err = l.InNS(lab.Client, func() error {
		c, err := net.DialTimeout("tcp", req.URL.Host+":80", 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		req.Close = true
		if err := req.Write(c); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		status, location = resp.StatusCode, resp.Header.Get("Location")
		return nil
	})
	return status, location, err
}

// refusedOrLetOut opens TCP to dst from the client namespace: a refusal
// (RST) means the SYN got out; lockdown's drop ends in the timeout.
func refusedOrLetOut(l *lab.Lab, dst netip.AddrPort) bool {
	var out bool
	l.InNS(lab.Client, func() error {
		c, err := net.DialTimeout("tcp", dst.String(), 2*time.Second)
		if err == nil {
			c.Close()
			out = true
		}
		out = out || errors.Is(err, syscall.ECONNREFUSED)
		return nil
	})
	return out
}

// captiveProfile is a full tunnel under lockdown whose probe goes to the
// lab's portal, with captive_portal = mode.
func captiveProfile(pki *lab.PKI, mode string) lab.RoamProfile {
	p := lab.LabProfile("psk", goodPSK, pki, nil)
	p.RemoteTS = []string{"0.0.0.0/0"}
	p.DNS = false // the probe and the portal are addresses, no names
	p.Lockdown = true
	p.CaptiveProbe = portalProbe
	p.CaptivePortal = mode
	return p
}

// routeDev is the device the client routes dst over now.
func routeDev(t *testing.T, l *lab.Lab, dst netip.Addr) string {
	t.Helper()
	out, err := l.Output(lab.Client, "ip", "route", "get", dst.String())
	if err != nil {
		t.Fatalf("ip route get %s: %v\n%s", dst, err, out)
	}
	f := strings.Fields(out)
	for i := range f[:len(f)-1] {
		if f[i] == "dev" {
			return f[i+1]
		}
	}
	t.Fatalf("ip route get %s: no device in %q", dst, out)
	return ""
}

// portalSet lists the addresses lockdown lets out to a portal now.
func portalSet(t *testing.T, l *lab.Lab) string {
	t.Helper()
	out, err := l.Output(lab.Client, "nft", "list", "set", "inet", "roam", "portal4")
	if err != nil {
		t.Fatalf("nft list set portal4: %v\n%s", err, out)
	}
	if i := strings.Index(out, "elements = {"); i >= 0 {
		return strings.TrimSpace(strings.Trim(out[i+len("elements = {"):strings.Index(out[i:], "}")+i], " "))
	}
	return ""
}

// TestCaptivePortalRoaming: an established full tunnel under lockdown
// loses its uplink (wlan) and is left with one held by a captive portal
// (wwan: no IKE, HTTP redirected). The client must report the portal
// (event, status, health), step the routes aside so that the browser
// reaches the portal's login page and nothing else, keep retrying IKE, and
// once the user has logged in move back into the tunnel by itself: traffic
// flows, the routes and lockdown are the tunnel's again.
func TestCaptivePortalRoaming(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	_, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki, LocalTS: []string{"0.0.0.0/0"}})
	portal := startPortal(t, l)
	r := roamClient(t, l, bin, captiveProfile(pki, "step-aside"))
	fail := failWith(t, gatewayOutput(gp), commandOutput(l, "client ruleset", "nft", "list", "ruleset"),
		commandOutput(l, "client rules", "ip", "rule"), clientLog(r))
	if err := r.ConnectRetry("corp"); err != nil {
		fail("connect: %v", err)
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		fail("no traffic through the tunnel: %v", err)
	}
	tunDev := routeDev(t, l, lab.InetWLAN.Addr())
	if !strings.HasPrefix(tunDev, "roam-") {
		fail("full tunnel routes 198.51.100.1 over %s, want the tunnel's device", tunDev)
	}
	evp, err := r.StartEvents()
	if err != nil {
		t.Fatal(err)
	}
	defer evp.Stop()

	// wlan goes; only the captive wwan is left.
	if err := l.LinkDown(lab.Client, lab.WLAN); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	var st lab.Status
	for st = connected(t, r, "corp"); st.CaptivePortal == "" || st.Health != "captive-portal"; st = connected(t, r, "corp") {
		if time.Since(lost) > 30*time.Second {
			fail("no captive portal in status 30 s after the move to wwan: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	found := time.Since(lost)
	if !strings.HasPrefix(st.CaptivePortal, portalLogin) || !st.CaptiveStepAside {
		fail("status: captive_portal %q step aside %v, want %s... stepped aside", st.CaptivePortal, st.CaptiveStepAside, portalLogin)
	}
	if probes, _, _ := portal.state(); probes == 0 {
		fail("status shows a portal that the portal never saw probed")
	}

	// The browser gets to the portal, over the uplink, and to nothing else.
	if dev := routeDev(t, l, lab.InetWLAN.Addr()); dev != lab.WWAN {
		fail("stepped aside, 198.51.100.1 is routed over %s, want %s", dev, lab.WWAN)
	}
	if set := portalSet(t, l); set != portalAddr.String() {
		fail("lockdown lets out to the portal %q, want %s", set, portalAddr)
	}
	code, loc, err := browse(l, "http://"+portalAddr.String()+"/")
	if err != nil || code != http.StatusFound || !strings.HasPrefix(loc, portalLogin) {
		fail("browser to the portal: %d %q %v, want its redirect to the login", code, loc, err)
	}
	if refusedOrLetOut(l, netip.AddrPortFrom(portalAddr, 8080)) {
		fail("TCP to the portal's port 8080 got out under lockdown: only 80 and 443 may")
	}
	if refusedOrLetOut(l, netip.AddrPortFrom(lab.RouterWWAN.Addr(), 80)) {
		fail("TCP to the router's inside address got out under lockdown: only the portal may")
	}
	if err := l.Ping(lab.Client, portalAddr, 1); err == nil {
		fail("ping to the portal got through lockdown: only its HTTP and HTTPS may")
	}

	// The user logs in; the tunnel comes back by itself.
	if code, _, err := browse(l, portalLogin+"?user=alice"); err != nil || code != http.StatusOK {
		fail("login: %d %v", code, err)
	}
	if _, in, err := portal.state(); !in || err != nil {
		fail("the portal did not let the client through: logged in %v, %v", in, err)
	}
	login := time.Now()
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 30*time.Second); err != nil {
		fail("no traffic through the tunnel 30 s after the login: %v", err)
	}
	flowing := time.Since(login)
	for st = connected(t, r, "corp"); st.Health != "ok" || st.CaptivePortal != "" || st.Interface != lab.WWAN; st = connected(t, r, "corp") {
		if time.Since(login) > 30*time.Second {
			fail("status 30 s after the login: %+v, want health ok on wwan without a portal", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st.CaptiveStepAside || !st.Lockdown {
		fail("back in the tunnel: step aside %v, lockdown %v", st.CaptiveStepAside, st.Lockdown)
	}
	if dev := routeDev(t, l, lab.InetWLAN.Addr()); dev != tunDev {
		fail("back in the tunnel, 198.51.100.1 is routed over %s, want %s", dev, tunDev)
	}
	if set := portalSet(t, l); set != "" {
		fail("back in the tunnel, lockdown still lets out to the portal: %s", set)
	}
	if refusedOrLetOut(l, netip.AddrPortFrom(lab.RouterWWAN.Addr(), 80)) {
		fail("back in the tunnel, TCP to the router's inside address got out")
	}

	time.Sleep(300 * time.Millisecond)
	var portalEv, healthPortal, healthOK bool
	var kinds []string
	for _, ev := range lab.ParseEvents(evp.Output()) {
		kinds = append(kinds, ev.Event)
		switch ev.Event {
		case "captive-portal":
			portalEv = portalEv || (strings.HasPrefix(ev.To, portalLogin) && ev.Interface == lab.WWAN)
		case "health":
			healthPortal = healthPortal || ev.To == "captive-portal"
			healthOK = healthOK || (healthPortal && ev.To == "ok")
		}
	}
	if !portalEv || !healthPortal || !healthOK {
		fail("events (captive-portal %v, health captive-portal %v then ok %v):\n%s", portalEv, healthPortal, healthOK, evp.Output())
	}
	t.Logf("portal found %v after wlan went; traffic %v after the login; health ok on wwan; events %s",
		found.Round(time.Millisecond), flowing.Round(time.Millisecond), strings.Join(kinds, " "))
}

// TestCaptivePortalConnect: the only uplink is held by the portal when
// `roam connect` starts. The connect reports the portal (progress event,
// status while connecting), lets the browser reach it through lockdown,
// and completes by itself once the user has logged in.
func TestCaptivePortalConnect(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	_, gp := startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki, LocalTS: []string{"0.0.0.0/0"}})
	startPortal(t, l)
	if err := l.LinkDown(lab.Client, lab.WLAN); err != nil {
		t.Fatal(err)
	}
	r := roamClient(t, l, bin, captiveProfile(pki, "step-aside"))
	fail := failWith(t, gatewayOutput(gp), clientLog(r))
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := r.Connect("corp", 90*time.Second)
		done <- result{out, err}
	}()
	start := time.Now()
	var st lab.Status
	for {
		if res, ok := tryResult(done); ok {
			fail("connect ended behind the portal: %v\n%s", res.err, res.out)
		}
		if sts, _, err := r.Status(); err == nil {
			for _, s := range sts {
				if s.Name == "corp" {
					st = s
				}
			}
		}
		if st.CaptivePortal != "" {
			break
		}
		if time.Since(start) > 45*time.Second {
			fail("no captive portal in status 45 s into the connect: %+v", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	found := time.Since(start)
	if st.State != "connecting" || st.Health != "captive-portal" || !strings.HasPrefix(st.CaptivePortal, portalLogin) {
		fail("status behind the portal: %+v", st)
	}
	code, loc, err := browse(l, "http://"+portalAddr.String()+"/")
	if err != nil || code != http.StatusFound || !strings.HasPrefix(loc, portalLogin) {
		fail("browser to the portal: %d %q %v, want its redirect to the login", code, loc, err)
	}
	if refusedOrLetOut(l, netip.AddrPortFrom(lab.RouterWWAN.Addr(), 80)) {
		fail("TCP to the router's inside address got out under lockdown: only the portal may")
	}
	if code, _, err := browse(l, portalLogin+"?user=alice"); err != nil || code != http.StatusOK {
		fail("login: %d %v", code, err)
	}
	login := time.Now()
	var res result
	select {
	case res = <-done:
	case <-time.After(60 * time.Second):
		fail("connect still waiting 60 s after the login")
	}
	if res.err != nil {
		fail("connect after the login: %v\n%s", res.err, res.out)
	}
	up := time.Since(login)
	if !strings.Contains(res.out, "captive") {
		fail("connect's progress did not mention the portal:\n%s", res.out)
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		fail("no traffic through the tunnel after the login: %v", err)
	}
	st = connected(t, r, "corp")
	if st.CaptivePortal != "" || st.CaptiveStepAside || !st.Lockdown {
		fail("connected: captive_portal %q step aside %v lockdown %v", st.CaptivePortal, st.CaptiveStepAside, st.Lockdown)
	}
	if set := portalSet(t, l); set != "" {
		fail("connected, lockdown still lets out to the portal: %s", set)
	}
	if dev := routeDev(t, l, lab.InetWLAN.Addr()); !strings.HasPrefix(dev, "roam-") {
		fail("connected, 198.51.100.1 is routed over %s, want the tunnel", dev)
	}
	t.Logf("portal in status %v into the connect; connected %v after the login", found.Round(time.Millisecond), up.Round(time.Millisecond))
}

func tryResult[T any](c <-chan T) (T, bool) {
	select {
	case v := <-c:
		return v, true
	default:
		var zero T
		return zero, false
	}
}
