package lab

import "fmt"

// BlockUDP makes a NAT router drop every UDP packet the client sends
// through it, over IPv4 and IPv6, as hotel and guest networks that pass
// only TCP do.
func (l *Lab) BlockUDP(router string) error {
	return l.Exec(router, "nft", `add table inet udpblock; add chain inet udpblock outbound { type filter hook forward priority 0; }; add rule inet udpblock outbound iifname "lan" meta l4proto udp drop`)
}

// OnlyTCPPort makes a NAT router pass nothing from the client but TCP to
// port (a network that allows HTTPS only).
func (l *Lab) OnlyTCPPort(router string, port int) error {
	return l.Exec(router, "nft", fmt.Sprintf(`add table inet onlytcp; add chain inet onlytcp outbound { type filter hook forward priority 0; }; add rule inet onlytcp outbound iifname "lan" tcp dport %d accept; add rule inet onlytcp outbound iifname "lan" drop`, port))
}

// Unfilter removes what BlockUDP and OnlyTCPPort added.
func (l *Lab) Unfilter(router string) {
	l.Exec(router, "nft", "delete table inet udpblock")
	l.Exec(router, "nft", "delete table inet onlytcp")
}
