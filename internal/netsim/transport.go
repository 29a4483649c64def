package netsim

import (
	"github.com/roam-vpn/roam/netpath"
)

// SendIKE implements ike.Transport: path.Local is the source (an unspecified
// address picks the host's own), path.Remote the destination.
func (h *Host) SendIKE(pkt []byte, path netpath.Path) error {
	return h.SendIKEFrom(path.Local, path.Remote, pkt)
}
