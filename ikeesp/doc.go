// Package ikeesp binds the IKE engine to the ESP dataplane for both roles:
// it turns a negotiated Child SA into the dataplane's ChildConfig (cipher,
// selectors, packet-count rekeys) and installs it, its rekeys, deletes and
// the peer's path updates through Binder, the one install path of the
// client tunnel, the gateway and the in-memory rig. It maps the
// dataplane's counters and activity to a connection's status, and judges
// from both whether traffic flows (HealthTracker). It owns no connection,
// socket or device, and never decides when to connect, move or rekey.
package ikeesp
