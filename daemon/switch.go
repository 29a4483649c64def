package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

func (b managerBackend) switchPeer(context.Context, string, string) (SwitchResult, error) {
	return SwitchResult{}, errors.New("this control socket belongs to a client daemon; switch is `roam gateway switch --socket GATEWAY-SOCKET`")
}

func (b gatewayBackend) switchPeer(ctx context.Context, peer, to string) (SwitchResult, error) {
	peer = strings.TrimSpace(peer)
	if peer == "" {
		return SwitchResult{}, errors.New("switch: no client named (--peer ID|ADDRESS)")
	}
	addr, err := netip.ParseAddr(strings.TrimSpace(to))
	if err != nil {
		return SwitchResult{}, fmt.Errorf("switch: --to %q is not an IP address", to)
	}
	sw, ok := b.handle.(GatewaySwitcher)
	if !ok || b.handle == nil {
		return SwitchResult{}, errors.New("switch: this gateway cannot move clients")
	}
	return sw.Switch(ctx, peer, addr.Unmap())
}
