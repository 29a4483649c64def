package esp

import "net/netip"

// Path is where a peer's packets currently go: our address and port, the
// peer's, and the interface to leave by (0: let routing decide). Local's
// address may be unspecified before the first packet tells us which one the
// kernel chose.
type Path struct {
	Local, Remote netip.AddrPort
	IfIndex       int
}
