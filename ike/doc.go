// Package ike is roam's IKEv2 engine (RFC 7296), both roles.
//
// Each IKE SA is owned by one goroutine (SA.run) that reads an inbox of
// received messages and a queue of control functions; nothing else touches
// its state, so exchanges need no locks. Exchanges we start are requests
// with a response callback, sent one at a time (Message ID window 1) and
// retransmitted on the SA's Clock with the Retransmit schedule; requests
// from the peer are answered in order and the last response is cached for
// retransmitted requests (RFC 7296 2.1). The SA reports to its owner through
// Events (Established, ChildDeleted, Deleted).
//
// Dial starts an initiator; a Responder demultiplexes datagrams by SPI to
// its SAs, answers IKE_SA_INIT statelessly where it can (COOKIE,
// INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN) and holds the address Pool.
//
// The SA addresses its peer through an netpath.Path (local and remote address
// and port, interface); a Transport sends along it. MOBIKE and the
// responder-initiated switch change the path; the engine itself only follows
// the port float of RFC 7296 2.23 and NAT traversal before MOBIKE.
//
// Authentication (auth*.go) signs and verifies the AUTH payload for PSK and
// certificate methods.
package ike
