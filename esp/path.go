package esp

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
	// registered for Remote (AddStream).
	Stream bool
}
