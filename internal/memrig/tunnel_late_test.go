package memrig

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/internal/netsim"
	"github.com/roam-vpn/roam/report"
	"github.com/roam-vpn/roam/tun"
	"github.com/roam-vpn/roam/tunnel"
)

// countingConn counts the datagrams sent one by one (IKE messages; ESP
// goes in batches).
type countingConn struct {
	esp.Conn
	sent *atomic.Int32
}

func (c countingConn) WriteTo(b []byte, path esp.Path) error {
	c.sent.Add(1)
	return c.Conn.WriteTo(b, path)
}

// routeRefusingDevice is a TUN device whose routes cannot be added.
type routeRefusingDevice struct{ tunnel.Device }

func (routeRefusingDevice) AddRoutes([]netip.Prefix, uint32, int) error {
	return errors.New("routes refused by the test")
}

// TestTunnelDeviceBesideIKE: the real tunnel makes its TUN device only once
// the first IKE message is on the wire (so making it never delays that
// message) and installs into it after IKE; the connect budget reports the
// device's time apart from the sequence. When installing fails, the device
// made during IKE is closed like any other.
func TestTunnelDeviceBesideIKE(t *testing.T) {
	tests := []struct {
		name         string
		refuseRoutes bool
		wantErr      string
	}{
		{"connects", false, ""},
		{"install fails", true, "routes refused by the test"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			r := &rig{net: netsim.New(int64(40 + i)), ctx: ctx, cancel: cancel}
			t.Cleanup(func() {
				cancel()
				r.net.Close()
			})
			gAddrs := []netip.Addr{gwAddr}
			r.gw = newEnd(t, r.net, "gw", []netip.Addr{gwInner}, false, gAddrs...)
			r.client = newEnd(t, r.net, "client", nil, false, clientAddr, clientAddr2)
			r.startGateway(t, gAddrs)
			m := newMachine(t, r.client)
			h := m.tunnelHost()
			var sent atomic.Int32
			listen := h.ListenUDP
			h.ListenUDP = func(local netip.AddrPort, mark uint32) (esp.Conn, error) {
				c, err := listen(local, mark)
				if err != nil {
					return nil, err
				}
				return countingConn{Conn: c, sent: &sent}, nil
			}
			var sentBeforeDevice int32 = -1
			create := h.CreateTUN
			h.CreateTUN = func(name string, mtu int, journal func(tun.State) error) (tunnel.Device, error) {
				sentBeforeDevice = sent.Load()
				d, err := create(name, mtu, journal)
				if err != nil || !tc.refuseRoutes {
					return d, err
				}
				return routeRefusingDevice{d}, nil
			}
			dctx, dcancel := context.WithTimeout(report.WithLogger(ctx, testLogger(t)), wait)
			defer dcancel()
			tu, err := tunnel.Dial(dctx, loadProfile(t, ""), func(report.Event) {}, tunnel.Options{Host: h})
			if err == nil {
				t.Cleanup(func() {
					cctx, ccancel := context.WithTimeout(context.Background(), wait)
					defer ccancel()
					tu.Close(cctx)
					<-tu.Done()
				})
			}
			// Dial returned: the device's maker ran before it.
			if sentBeforeDevice < 1 {
				t.Fatalf("the device was made after %d IKE messages, want it made after the first", sentBeforeDevice)
			}
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr || strings.Contains(err.Error(), "\n") {
					t.Fatalf("dial: %v, want %q", err, tc.wantErr)
				}
				if err := r.client.tun.Inject(ctx, echo(clientAddr, gwInner, 8, 1, 1)); !errors.Is(err, os.ErrClosed) {
					t.Fatalf("the device after a failed install: inject gives %v, want it closed", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			b := tu.Status().ConnectBudget
			if b == nil || b.TUNMS <= 0 || b.TUNWaitMS < 0 || b.IKEMS <= 0 {
				t.Fatalf("connect budget %+v: want the device's own time and the wait after IKE", b)
			}
			if sum := b.ResolveMS + b.RouteLookupMS + b.CredentialsMS + b.LockdownMS + b.SocketsMS + b.IKEMS + b.TUNWaitMS + b.InstallMS; sum > b.TotalMS+0.01 {
				t.Fatalf("connect budget %+v: the sequence's steps add up to %.3f ms, more than the total", b, sum)
			}
		})
	}
}
