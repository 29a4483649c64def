// Package ikeesp binds the IKE engine to the ESP dataplane for both roles:
// it turns a negotiated Child SA into the dataplane's ChildConfig (cipher,
// selectors, packet-count rekeys), maps the dataplane's counters and
// activity to a connection's status, and judges from both whether traffic
// flows (HealthTracker). It owns no connection, socket or device, and
// never decides when to connect, move or rekey.
package ikeesp
