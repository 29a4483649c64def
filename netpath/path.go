// Package netpath owns the description of one network path between two IKE
// peers: our address and port, the peer's, the interface to leave by, and
// whether the path is a TCP stream. It is a leaf: the engine (ike),
// mobility, the simulated network and the dataplane (esp) all speak of paths
// without depending on each other, and it never sends or receives anything.
package netpath

import "net/netip"

// Path is where a peer's packets currently go: our address and port, the
// peer's, and the interface to leave by (0: let routing decide). Local's
// address may be unspecified before the first packet tells us which one the
// kernel chose.
type Path struct {
	Local, Remote netip.AddrPort
	IfIndex       int
	// Stream: the path is a TCP (or TLS) stream carrying records (RFC
	// 9329) to Remote, not UDP; the dataplane sends through the stream
	// registered for Remote (AddStream in esp).
	Stream bool
}
