// Package tunnel is the client side of roam: one connection per profile
// (DialTunnel) that wires ike, esp, tun, netmon and mobility together and
// keeps them going: reconnect and reauthentication with one backoff,
// MOBIKE moves and the liveness checks around them, gateway switches,
// captive portals, health, the kill switch (lockdown) and the TCP/TLS
// transport. It reports through package report and records what it
// changes on the machine for the process to undo. It never serves a
// control socket and never answers as a gateway.
package tunnel
