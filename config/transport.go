package config

import (
	"errors"
	"fmt"
)

// Transports a profile may name (transport = ...).
const (
	TransportAuto = "auto" // UDP, then TCP when IKE_SA_INIT gets no answer
	TransportUDP  = "udp"
	TransportTCP  = "tcp" // RFC 9329 stream to tcp_port
	TransportTLS  = "tls" // the same stream inside TLS 1.3, to tls_port
)

// TLSCASystem (tls_ca = "system") verifies a TLS gateway against the
// system's roots.
const TLSCASystem = "system"

// Transport is how a profile reaches its gateway (docs/transport.md).
type Transport struct {
	// Mode is auto, udp, tcp or tls (default auto).
	Mode string
	// TCPPort (tcp_port, default 4500) and TLSPort (tls_port, default 443)
	// are the gateway's stream ports.
	TCPPort, TLSPort uint16
	// TLSCA (tls_ca) verifies the gateway's TLS certificate: a PEM file,
	// or "system"; empty: the profile's ca.
	TLSCA string
}

type rawTransport struct {
	Transport string `toml:"transport"`
	TCPPort   *int64 `toml:"tcp_port"`
	TLSPort   *int64 `toml:"tls_port"`
	TLSCA     string `toml:"tls_ca"`
}

func portKey(key string, v *int64, def uint16) (uint16, error) {
	if v == nil {
		return def, nil
	}
	if *v < 1 || *v > 65535 {
		return 0, fmt.Errorf("%s: %d is not a port", key, *v)
	}
	return uint16(*v), nil
}

func (r rawTransport) validate(ca string) (Transport, error) {
	t := Transport{Mode: r.Transport, TLSCA: r.TLSCA}
	switch t.Mode {
	case "":
		t.Mode = TransportAuto
	case TransportAuto, TransportUDP, TransportTCP, TransportTLS:
	default:
		return Transport{}, fmt.Errorf("transport: %q is not auto, udp, tcp or tls", r.Transport)
	}
	var err error
	if t.TCPPort, err = portKey("tcp_port", r.TCPPort, 4500); err != nil {
		return Transport{}, err
	}
	if t.TLSPort, err = portKey("tls_port", r.TLSPort, 443); err != nil {
		return Transport{}, err
	}
	if t.Mode == TransportTLS {
		if t.TLSCA == "" {
			t.TLSCA = ca
		}
		if t.TLSCA == "" {
			return Transport{}, errors.New(`tls_ca: missing (transport = "tls" needs a CA file or "system" to check the gateway's TLS certificate)`)
		}
	} else if t.TLSCA != "" {
		return Transport{}, errors.New(`tls_ca: only with transport = "tls"`)
	}
	return t, nil
}

// GatewayTransport are the gateway's stream listeners (docs/transport.md).
type GatewayTransport struct {
	// TCP (tcp = true): accept RFC 9329 streams on TCPPort (tcp_port,
	// default 4500) of every listen address.
	TCP     bool
	TCPPort uint16
	// TLSPort (tls_port): accept the stream inside TLS there too (0: no
	// TLS). TLSCert and TLSKey (tls_cert, tls_key) are the certificate it
	// presents; empty: the IKE cert and key.
	TLSPort         uint16
	TLSCert, TLSKey string
	// StreamsPerSource (tcp_streams_per_source, default 8) bounds the open
	// streams of one source address.
	StreamsPerSource int
}

type rawGatewayTransport struct {
	TCP              *bool  `toml:"tcp"`
	TCPPort          *int64 `toml:"tcp_port"`
	TLSPort          *int64 `toml:"tls_port"`
	TLSCert          string `toml:"tls_cert"`
	TLSKey           string `toml:"tls_key"`
	StreamsPerSource *int64 `toml:"tcp_streams_per_source"`
}

func (r rawGatewayTransport) validate(cert, key string) (GatewayTransport, error) {
	g := GatewayTransport{TCP: boolOr(r.TCP, false), TLSCert: r.TLSCert, TLSKey: r.TLSKey, StreamsPerSource: 8}
	var err error
	if g.TCPPort, err = portKey("tcp_port", r.TCPPort, 4500); err != nil {
		return GatewayTransport{}, err
	}
	if g.TLSPort, err = portKey("tls_port", r.TLSPort, 0); err != nil {
		return GatewayTransport{}, err
	}
	if r.StreamsPerSource != nil {
		if *r.StreamsPerSource < 1 || *r.StreamsPerSource > maxLimit {
			return GatewayTransport{}, fmt.Errorf("tcp_streams_per_source: %d is not between 1 and %d", *r.StreamsPerSource, maxLimit)
		}
		g.StreamsPerSource = int(*r.StreamsPerSource)
	}
	if (g.TLSCert == "") != (g.TLSKey == "") {
		return GatewayTransport{}, errors.New("tls_cert, tls_key: set both or neither")
	}
	if g.TLSPort != 0 {
		if g.TLSCert == "" {
			g.TLSCert, g.TLSKey = cert, key
		}
		if g.TLSCert == "" {
			return GatewayTransport{}, errors.New("tls_port: needs tls_cert and tls_key (or auth = \"pubkey\" with cert and key)")
		}
	} else if g.TLSCert != "" {
		return GatewayTransport{}, errors.New("tls_cert: only with tls_port")
	}
	if !g.TCP && r.TCPPort != nil {
		return GatewayTransport{}, errors.New("tcp_port: needs tcp = true")
	}
	return g, nil
}
