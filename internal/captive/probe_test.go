package captive

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"testing"
)

func TestClassify(t *testing.T) {
	base, _ := url.Parse("http://check.example/generate_204")
	for _, tc := range []struct {
		name     string
		status   int
		location string
		want     Result
	}{
		{"open", 204, "", Result{Status: 204}},
		{"redirect", 302, "http://10.1.2.3/login?next=x", Result{Portal: true, Status: 302, Location: "http://10.1.2.3/login?next=x"}},
		{"https redirect", 307, "https://portal.example/", Result{Portal: true, Status: 307, Location: "https://portal.example/"}},
		{"relative redirect", 301, "/login", Result{Portal: true, Status: 301, Location: "http://check.example/login"}},
		{"redirect without location", 302, "", Result{Portal: true, Status: 302, Location: base.String()}},
		{"redirect elsewhere", 302, "javascript:alert(1)", Result{Portal: true, Status: 302, Location: base.String()}},
		{"redirect no host", 302, "http:///x", Result{Portal: true, Status: 302, Location: base.String()}},
		{"credentials dropped", 302, "http://user:pw@10.1.2.3/", Result{Portal: true, Status: 302, Location: "http://10.1.2.3/"}},
		{"page in place", 200, "", Result{Portal: true, Status: 200, Location: base.String()}},
		{"location on a 200", 200, "http://10.9.9.9/", Result{Portal: true, Status: 200, Location: base.String()}},
		{"error", 511, "", Result{Portal: true, Status: 511, Location: base.String()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Classify(tc.status, tc.location, base)
			if got.Portal != tc.want.Portal || got.Status != tc.want.Status || got.Location != tc.want.Location {
				t.Fatalf("Classify(%d, %q) = %+v, want %+v", tc.status, tc.location, got, tc.want)
			}
		})
	}
}

// FuzzClassify: a Location header is network input; whatever it holds, the
// verdict is a portal with an http(s) location or the probe URL.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{"", "/login", "http://10.0.0.1/", "https://[::1]:8443/x?y", "%zz", "http://a b/", "//host/p", "ftp://x/"} {
		f.Add(302, s)
	}
	base, _ := url.Parse("http://check.example/generate_204")
	f.Fuzz(func(t *testing.T, status int, location string) {
		r := Classify(status, location, base)
		if r.Portal != (status != 204) {
			t.Fatalf("status %d: portal %v", status, r.Portal)
		}
		if !r.Portal {
			return
		}
		u, err := url.Parse(r.Location)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil {
			t.Fatalf("location %q from %q", r.Location, location)
		}
	})
}

// TestProbe runs probes against real HTTP servers on loopback: an open
// network's 204, a portal's redirect, a portal's own page, and nothing.
func TestProbe(t *testing.T) {
	open := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer open.Close()
	portal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/login" {
			w.Write([]byte("<html>log in</html>"))
			return
		}
		http.Redirect(w, r, "http://127.0.0.2:1/login", http.StatusFound)
	}))
	defer portal.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	var mark uint32
	if os.Geteuid() == 0 {
		mark = 0x526f616d // SO_MARK needs CAP_NET_ADMIN
	}
	loop := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		name    string
		url     string
		portal  bool
		loc     string
		addrs   []netip.Addr
		wantErr bool
	}{
		{name: "open", url: open.URL + "/generate_204"},
		{name: "redirect", url: portal.URL + "/generate_204", portal: true, loc: "http://127.0.0.2:1/login",
			addrs: []netip.Addr{loop, netip.MustParseAddr("127.0.0.2")}},
		{name: "page in place", url: portal.URL + "/login", portal: true, loc: portal.URL + "/login", addrs: []netip.Addr{loop}},
		{name: "no answer", url: deadURL + "/", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Prober{URL: tc.url, Mark: mark}.Probe(context.Background())
			if tc.wantErr {
				if err == nil {
					t.Fatalf("probe of a closed port: %+v, want an error", r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Portal != tc.portal || r.Location != tc.loc || !slices.Equal(r.Addrs, tc.addrs) {
				t.Fatalf("got %+v, want portal %v at %q from %v", r, tc.portal, tc.loc, tc.addrs)
			}
		})
	}
}
