package esp

import (
	"errors"
	"net/netip"
	"os/exec"
	"syscall"
	"testing"

	"github.com/roam-vpn/roam/internal/nstest"
)

// TestSendFromForeignAddress: an HA standby sends its takeover request from
// the failed node's address, which it does not have. ListenUDP's
// IP_FREEBIND binds to it, but the kernel routes packets from it only once
// the socket is transparent.
func TestSendFromForeignAddress(t *testing.T) {
	if !nstest.InNamespace(t) {
		return
	}
	for _, c := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", "va", "type", "veth", "peer", "name", "vb"},
		{"ip", "addr", "add", "192.0.2.2/24", "dev", "va"},
		{"ip", "link", "set", "va", "up"},
		{"ip", "link", "set", "vb", "up"},
		{"ip", "route", "add", "default", "via", "192.0.2.1"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", c, err, out)
		}
	}
	foreign := netip.MustParseAddrPort("203.0.113.10:4500")
	to := Path{Local: foreign, Remote: netip.MustParseAddrPort("198.51.100.2:4500")}
	for _, tc := range []struct {
		name        string
		transparent bool
		wantErr     error
	}{
		{"freebind only", false, syscall.ENETUNREACH},
		{"transparent", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ListenUDP(foreign, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if tc.transparent {
				if err := s.SetTransparent(); err != nil {
					t.Fatal(err)
				}
			}
			d := &Dataplane{}
			socks := []Conn{s}
			d.sockets.Store(&socks)
			err = d.SendIKE([]byte{0, 0, 0, 0, 1, 2, 3}, to)
			if tc.wantErr == nil && err != nil {
				t.Fatalf("send from %v: %v", foreign, err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("send from %v: err %v, want %v", foreign, err, tc.wantErr)
			}
		})
	}
}
