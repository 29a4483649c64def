package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/roam-vpn/roam/ha"
)

// Defaults and bounds of [gateway.ha].
const (
	DefaultHADeadAfter = time.Second
	minHADeadAfter     = 100 * time.Millisecond
)

// HA is the [gateway.ha] table: this node's half of an active/standby pair
// (issue 5, draft-smyslov-ipsecme-ikev2-r-mobike 4.2.1).
type HA struct {
	// Role at start: "active" serves clients and replicates their SAs to
	// the peer; "standby" keeps them parked and takes over when the active
	// node falls silent for DeadAfter.
	Role   string
	Listen netip.AddrPort // our replication address
	Peer   netip.AddrPort // the other node's replication address
	Key    []byte         // key_file: ha.KeySize bytes, the same on both nodes
	// TakeoverAddress is the other node's public (IKE) address: when it
	// fails while active, this node sends the switch request from there.
	TakeoverAddress netip.Addr
	DeadAfter       time.Duration
}

type rawHA struct {
	Role            string `toml:"role"`
	Listen          string `toml:"listen"`
	Peer            string `toml:"peer"`
	KeyFile         string `toml:"key_file"`
	TakeoverAddress string `toml:"takeover_address"`
	DeadAfter       string `toml:"dead_after"`
}

// validate checks the table against the gateway's own listen addresses.
func (r *rawHA) validate(listen []netip.Addr) (*HA, error) {
	h := &HA{Role: r.Role}
	switch r.Role {
	case "active", "standby":
	case "":
		return nil, errors.New("ha.role: missing (\"active\" or \"standby\")")
	default:
		return nil, fmt.Errorf("ha.role: %q is not \"active\" or \"standby\"", r.Role)
	}
	var err error
	if h.Listen, err = haAddrPort("ha.listen", r.Listen); err != nil {
		return nil, err
	}
	if h.Peer, err = haAddrPort("ha.peer", r.Peer); err != nil {
		return nil, err
	}
	if h.Listen == h.Peer {
		return nil, fmt.Errorf("ha.peer: %v is our own ha.listen", h.Peer)
	}
	if r.KeyFile == "" {
		return nil, errors.New("ha.key_file: missing (32 random bytes, hex or base64: head -c 32 /dev/urandom | base64)")
	}
	if err := checkPrivate(r.KeyFile); err != nil {
		return nil, fmt.Errorf("ha.key_file: %w", err)
	}
	b, err := os.ReadFile(r.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("ha.key_file: %w", err)
	}
	if h.Key, err = ha.ParseKey(b); err != nil {
		return nil, fmt.Errorf("ha.key_file: %s: %w", r.KeyFile, err)
	}
	if r.TakeoverAddress == "" {
		return nil, errors.New("ha.takeover_address: missing (the other node's public address)")
	}
	a, err := netip.ParseAddr(r.TakeoverAddress)
	if err != nil {
		return nil, fmt.Errorf("ha.takeover_address: %q is not an IP address", r.TakeoverAddress)
	}
	h.TakeoverAddress = a.Unmap()
	if slices.Contains(listen, h.TakeoverAddress) {
		return nil, fmt.Errorf("ha.takeover_address: %v is one of our own listen addresses; it names the other node's", h.TakeoverAddress)
	}
	if !slices.ContainsFunc(listen, func(l netip.Addr) bool { return l.Is4() == h.TakeoverAddress.Is4() }) {
		return nil, fmt.Errorf("ha.takeover_address: %v: no listen address of its family to move clients to", h.TakeoverAddress)
	}
	if h.DeadAfter, err = durationKey("ha.dead_after", r.DeadAfter, DefaultHADeadAfter, minHADeadAfter); err != nil {
		return nil, err
	}
	return h, nil
}

func haAddrPort(key, s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, fmt.Errorf("%s: missing (address:port)", key)
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%s: %q is not an address:port like \"10.98.0.1:4510\"", key, s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}
