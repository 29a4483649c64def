package main

import (
	"github.com/roam-vpn/roam/gateway"
	"github.com/roam-vpn/roam/tunnel"
)

// realEngines are the client tunnel (package tunnel) and the responder
// (package gateway).
func realEngines() engines {
	return engines{dial: tunnel.DialTunnel, gateway: gateway.RunGateway}
}
