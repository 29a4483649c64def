// Package gateway is roam's responder (RunGateway): every client's IKE SA
// and Child SAs on one TUN device, the sockets on each listen address,
// TCP/TLS streams, the active/standby pair (HA), responder-initiated
// switches (SWITCH_TO_IP_ADDRESS) and client health. It reports through
// package report. It never dials a gateway and never serves the control
// socket (package daemon does).
package gateway
