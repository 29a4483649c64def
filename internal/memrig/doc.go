// Package memrig holds the in-memory end-to-end tests: a client and a
// gateway, each a real IKE SA engine (ike) bound to a real dataplane (esp)
// over a TUN device in memory (internal/memtun) and UDP endpoints on the
// simulated network (internal/memconn over internal/netsim), all in one
// test process, without root. Inner packets go in at one TUN device and
// come out at the other, through ESP sealed and opened for real.
//
// The glue between IKE's events and the dataplane lives in the tests
// (rig_test.go): Child SAs, rekeys, deletes and the gateway's path updates
// go in through ikeesp.Binder, as in tunnel and gateway; and the client's path
// moves (mobility's netpath.Current.Set, which the peer follows, after a successful UpdateAddresses; a
// gateway's switch request as tunnel switch.go followSwitch hands it to
// the mover).
//
// tunnel_test.go runs the real client tunnel instead (tunnel.Dial with a
// tunnel.Host in memory: the device, sockets, route lookup and interface
// monitor) against the same gateway: its connect, install and Mover.
package memrig
