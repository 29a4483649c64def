package esp

import "github.com/roam-vpn/roam/netpath"

// Path is the dataplane's name for a network path. It is netpath's type, not
// a copy, so that packages that only speak of paths (the engine, mobility,
// the simulated network) need not import the dataplane and the TUN and
// socket code behind it.
type Path = netpath.Path
