package main

import "github.com/roam-vpn/roam/daemon"

// realEngines are the tunnel and gateway implementations of daemon/conn.go
// and daemon/gateway.go.
func realEngines() engines {
	return engines{dial: daemon.DialTunnel, gateway: daemon.RunGateway}
}
