// EAP-TLS with TLS 1.2 takes its MSK from the RFC 5705 exporter (RFC 5216
// 2.3). strongSwan 5.9.8 does not negotiate the Extended Master Secret,
// and Go refuses the exporter without it unless this setting allows it;
// roam uses TLS for nothing else.

//go:debug tlsunsafeekm=1

package main
