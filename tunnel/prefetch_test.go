package tunnel

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/roam-vpn/roam/netmon"
	"github.com/roam-vpn/roam/netpath"
)

// listingMonitor answers Usable with one more address on each listing.
type listingMonitor struct {
	mu       *sync.Mutex
	listings *int
}

func (m listingMonitor) Usable() ([]netmon.Address, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	*m.listings++
	var out []netmon.Address
	for i := range *m.listings {
		out = append(out, netmon.Address{Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})})
	}
	return out, nil
}
func (listingMonitor) Addresses() []netmon.Address { return nil }
func (listingMonitor) Run(context.Context) error   { return nil }
func (listingMonitor) Events() <-chan netmon.Event { return nil }
func (listingMonitor) FollowPath(netpath.State)    {}

// TestPrefetchAddresses: IKE_AUTH's first announcement takes the list made
// when the dial began; every later call lists afresh; the tunnel's own
// device is never counted.
func TestPrefetchAddresses(t *testing.T) {
	var mu sync.Mutex
	listings := 0
	var ignored [][]string
	c := newConn(nil, nil, nil)
	c.tunName = "roam-corp"
	c.host.NewMonitor = func(ignore []string) (Monitor, error) {
		mu.Lock()
		ignored = append(ignored, ignore)
		mu.Unlock()
		return listingMonitor{&mu, &listings}, nil
	}
	addrs := c.prefetchAddresses()
	tests := []struct {
		name string
		want int // addresses in the answer
	}{
		{"first call: the prefetched list", 1},
		{"second call: listed afresh", 2},
		{"third call: afresh again", 3},
	}
	for _, tt := range tests {
		if got := addrs(); len(got) != tt.want {
			t.Fatalf("%s: %v, want %d addresses", tt.name, got, tt.want)
		}
	}
	for _, ig := range ignored {
		if !slices.Equal(ig, []string{"roam-corp"}) {
			t.Fatalf("monitor ignoring %v, want the tunnel's device by name", ig)
		}
	}
}
