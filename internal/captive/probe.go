// Package captive tells an open network from one behind a captive portal:
// a plain HTTP request that the open Internet answers with 204 No Content,
// and that a portal redirects to its login page or answers with a page of
// its own. The daemon probes when IKE gets no answer on an uplink.
package captive

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Timeout bounds one probe: a portal answers in a round trip or two, and
// an uplink without any upstream must not hold the daemon for long.
const Timeout = 5 * time.Second

// maxBody is as much of an answer as is read: the verdict needs the status
// line and the headers only, and a portal's page can be large.
const maxBody = 4096

// Result is what a probe found.
type Result struct {
	// Portal: the answer was not the open network's 204.
	Portal bool
	// Status is the HTTP status of the answer.
	Status int
	// Location is where the portal sends the browser: the redirect's
	// target, or the probe URL itself when the portal answered in place.
	Location string
	// Addrs are the portal's addresses: the one that answered the probe,
	// and the redirect target's (an address in the URL, or its host name's).
	Addrs []netip.Addr
}

// Prober makes probes from sockets with a mark (SO_MARK), so that a full
// tunnel's policy routing leaves them on the uplink, and lockdown knows
// them (internal/lockdown's ProbeMark).
type Prober struct {
	// URL is the http:// URL fetched.
	URL string
	// Mark is set on the probe's sockets, its name lookups included.
	Mark uint32
}

// Probe fetches p.URL once. An error means no HTTP answer at all (no
// network upstream, or the name does not resolve): that is not a portal.
func (p Prober) Probe(ctx context.Context) (Result, error) {
	base, err := url.Parse(p.URL)
	if err != nil {
		return Result{}, fmt.Errorf("captive probe %q: %w", p.URL, err)
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	dialer := p.dialer()
	client := &http.Client{
		Transport: &http.Transport{
			Proxy:             nil, // a proxy would answer for the network
			DialContext:       dialer.DialContext,
			DisableKeepAlives: true,
		},
		// The redirect is the answer, not something to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	var remote netip.Addr
	trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
		if ap, err := netip.ParseAddrPort(ci.Conn.RemoteAddr().String()); err == nil {
			remote = ap.Addr().Unmap()
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, p.URL, nil)
	if err != nil {
		return Result{}, fmt.Errorf("captive probe %q: %w", p.URL, err)
	}
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := client.Do(req)
	if err != nil {
		return Result{}, fmt.Errorf("captive probe: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	r := Classify(resp.StatusCode, resp.Header.Get("Location"), base)
	if !r.Portal {
		return r, nil
	}
	if remote.IsValid() {
		r.Addrs = append(r.Addrs, remote)
	}
	for _, a := range p.hostAddrs(ctx, dialer.Resolver, r.Location) {
		if !slices.Contains(r.Addrs, a) {
			r.Addrs = append(r.Addrs, a)
		}
	}
	return r, nil
}

// Classify judges an answer to the probe of base: 204 is the open
// network; anything else is a portal, whose login page is the redirect's
// http or https target when there is one (resolved against base), or base.
func Classify(status int, location string, base *url.URL) Result {
	r := Result{Status: status, Portal: status != http.StatusNoContent}
	if !r.Portal {
		return r
	}
	r.Location = base.String()
	if status < 300 || status > 399 || location == "" {
		return r
	}
	loc, err := base.Parse(location)
	if err != nil || (loc.Scheme != "http" && loc.Scheme != "https") || loc.Hostname() == "" {
		return r
	}
	loc.User = nil // credentials have no business in a status line
	// What is shown must read back as the same kind of URL (a bare IPv6
	// host such as "//::" prints unbracketed and would not).
	if again, err := url.Parse(loc.String()); err != nil || again.Hostname() == "" || again.Scheme != loc.Scheme {
		return r
	}
	r.Location = loc.String()
	return r
}

// hostAddrs returns the addresses of location's host: the address itself,
// or what the name resolves to now (none when it does not).
func (p Prober) hostAddrs(ctx context.Context, res *net.Resolver, location string) []netip.Addr {
	u, err := url.Parse(location)
	if err != nil {
		return nil
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}
	}
	ips, err := res.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	out := make([]netip.Addr, 0, len(ips))
	for _, a := range ips {
		out = append(out, a.Unmap())
	}
	return out
}

// dialer makes marked sockets, and resolves names over marked sockets too.
func (p Prober) dialer() *net.Dialer {
	control := func(_, _ string, rc syscall.RawConn) error {
		if p.Mark == 0 {
			return nil
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(p.Mark))
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("SO_MARK: %w", serr)
		}
		return nil
	}
	base := &net.Dialer{Control: control}
	return &net.Dialer{Control: control, Resolver: &net.Resolver{PreferGo: true, Dial: base.DialContext}}
}
