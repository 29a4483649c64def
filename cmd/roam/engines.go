package main

import (
	"context"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/gateway"
	"github.com/roam-vpn/roam/tunnel"
)

// realEngines are the client tunnel (package tunnel) and the responder
// (package gateway).
func realEngines() engines {
	return engines{dial: tunnel.DialTunnel, gateway: gateway.RunGateway, presend: presend}
}

func presend(ctx context.Context, p *config.Profile) (handoff, error) {
	h, err := tunnel.Presend(ctx, p)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return h, nil
}
