package main

import "github.com/roam-vpn/roam/daemon"

// realEngines are the tunnel and gateway implementations of daemon/conn.go
// and daemon/gateway.go. The gateway engine is wired here once
// daemon.RunGateway (a daemon.GatewayFunc) exists; until then `roam gateway`
// says so instead of running.
func realEngines() engines {
	return engines{dial: daemon.DialTunnel}
}
