package gateway

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/roam-vpn/roam/report"
)

func TestMatchPeer(t *testing.T) {
	cands := []switchCandidate{
		{ID: "alice@example.com", Remote: netip.MustParseAddrPort("198.51.100.2:4500")},
		{ID: "bob@example.com", Remote: netip.MustParseAddrPort("198.51.100.6:4500")},
		{ID: "carol@example.com", Remote: netip.MustParseAddrPort("198.51.100.6:1025")},
	}
	tests := []struct {
		peer    string
		want    int
		wantErr error
	}{
		{peer: "alice@example.com", want: 0},
		{peer: "198.51.100.2", want: 0},
		{peer: "198.51.100.2:4500", want: 0},
		{peer: "198.51.100.6:1025", want: 2},
		{peer: "198.51.100.6", wantErr: report.ErrAmbiguousPeer},
		{peer: "dave@example.com", wantErr: report.ErrUnknownPeer},
		{peer: "198.51.100.2:500", wantErr: report.ErrUnknownPeer},
		{peer: "::ffff:198.51.100.2", want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.peer, func(t *testing.T) {
			got, err := matchPeer(cands, tt.peer)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.peer) {
					t.Errorf("error %q does not name %q", err, tt.peer)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestCheckSwitchTarget(t *testing.T) {
	listen := []netip.Addr{netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("203.0.113.26"), netip.MustParseAddr("2001:db8:113::10")}
	r1 := netip.MustParseAddr("203.0.113.10")
	tests := []struct {
		name     string
		from, to string
		wantErr  string
	}{
		{name: "ok", from: "203.0.113.10", to: "203.0.113.26"},
		{name: "mapped", from: "203.0.113.10", to: "::ffff:203.0.113.26"},
		{name: "not ours", from: "203.0.113.10", to: "192.0.2.2", wantErr: "192.0.2.2 is not one of the gateway's listen addresses (listen = [203.0.113.10, 203.0.113.26, 2001:db8:113::10])"},
		{name: "already there", from: "203.0.113.26", to: "203.0.113.26", wantErr: "already uses 203.0.113.26"},
		{name: "other family", from: "203.0.113.10", to: "2001:db8:113::10", wantErr: "different IP families"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkSwitchTarget(listen, netip.MustParseAddr(tt.from), netip.MustParseAddr(tt.to))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
	if err := checkSwitchTarget(listen, r1, netip.MustParseAddr("192.0.2.2")); !errors.Is(err, report.ErrNotListenAddress) {
		t.Errorf("not ours: %v is not ErrNotListenAddress", err)
	}
}

func TestSwitchTarget(t *testing.T) {
	r1, r2, r3 := netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("203.0.113.26"), netip.MustParseAddr("203.0.113.42")
	v6 := netip.MustParseAddr("2001:db8:113::10")
	listen := []netip.Addr{r1, r2, v6, r3}
	set := func(as ...netip.Addr) func(netip.Addr) bool {
		return func(a netip.Addr) bool {
			for _, x := range as {
				if x == a {
					return true
				}
			}
			return false
		}
	}
	tests := []struct {
		name   string
		usable func(netip.Addr) bool
		gone   netip.Addr
		want   netip.Addr
	}{
		{name: "next in order", usable: set(r2, v6, r3), gone: r1, want: r2},
		{name: "skips unusable", usable: set(v6, r3), gone: r1, want: r3},
		{name: "back to the first", usable: set(r1, v6), gone: r2, want: r1},
		{name: "same family only", usable: set(v6), gone: r1},
		{name: "none left", usable: set(), gone: r1},
		{name: "v6 has no other", usable: set(r1, r2, r3), gone: v6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := switchTarget(listen, tt.usable, tt.gone)
			if ok != tt.want.IsValid() || got != tt.want {
				t.Errorf("got %v, %v; want %v", got, ok, tt.want)
			}
		})
	}
}
