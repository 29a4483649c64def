package config

import (
	"testing"
)

func i64(v int64) *int64 { return &v }

func TestTransportKeys(t *testing.T) {
	for _, tc := range []struct {
		name    string
		raw     rawTransport
		ca      string
		want    Transport
		wantErr string
	}{
		{"default", rawTransport{}, "", Transport{Mode: "auto", TCPPort: 4500, TLSPort: 443}, ""},
		{"tcp port", rawTransport{Transport: "tcp", TCPPort: i64(8443)}, "", Transport{Mode: "tcp", TCPPort: 8443, TLSPort: 443}, ""},
		{"tls takes ca", rawTransport{Transport: "tls"}, "/ca.pem", Transport{Mode: "tls", TCPPort: 4500, TLSPort: 443, TLSCA: "/ca.pem"}, ""},
		{"tls system", rawTransport{Transport: "tls", TLSCA: "system"}, "", Transport{Mode: "tls", TCPPort: 4500, TLSPort: 443, TLSCA: "system"}, ""},
		{"tls without ca", rawTransport{Transport: "tls"}, "", Transport{}, "tls_ca: missing"},
		{"tls_ca without tls", rawTransport{Transport: "tcp", TLSCA: "x"}, "", Transport{}, "tls_ca: only with"},
		{"bad transport", rawTransport{Transport: "quic"}, "", Transport{}, `transport: "quic" is not auto, udp, tcp or tls`},
		{"bad port", rawTransport{TCPPort: i64(70000)}, "", Transport{}, "tcp_port: 70000 is not a port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.raw.validate(tc.ca)
			if checkErr(t, err, tc.wantErr) {
				return
			}
			if got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestGatewayTransportKeys(t *testing.T) {
	yes := true
	for _, tc := range []struct {
		name      string
		raw       rawGatewayTransport
		cert, key string
		want      GatewayTransport
		wantErr   string
	}{
		{"off", rawGatewayTransport{}, "", "", GatewayTransport{TCPPort: 4500, StreamsPerSource: 8}, ""},
		{"tcp", rawGatewayTransport{TCP: &yes}, "", "", GatewayTransport{TCP: true, TCPPort: 4500, StreamsPerSource: 8}, ""},
		{"tls with IKE cert", rawGatewayTransport{TCP: &yes, TLSPort: i64(443)}, "c.pem", "k.pem",
			GatewayTransport{TCP: true, TCPPort: 4500, TLSPort: 443, TLSCert: "c.pem", TLSKey: "k.pem", StreamsPerSource: 8}, ""},
		{"tls own cert", rawGatewayTransport{TLSPort: i64(443), TLSCert: "t.pem", TLSKey: "t.key", StreamsPerSource: i64(2)}, "c.pem", "k.pem",
			GatewayTransport{TCPPort: 4500, TLSPort: 443, TLSCert: "t.pem", TLSKey: "t.key", StreamsPerSource: 2}, ""},
		{"tls without cert", rawGatewayTransport{TLSPort: i64(443)}, "", "", GatewayTransport{}, "tls_port: needs tls_cert"},
		{"half a cert", rawGatewayTransport{TLSPort: i64(443), TLSCert: "t.pem"}, "", "", GatewayTransport{}, "set both or neither"},
		{"tcp_port without tcp", rawGatewayTransport{TCPPort: i64(4501)}, "", "", GatewayTransport{}, "tcp_port: needs tcp = true"},
		{"streams zero", rawGatewayTransport{StreamsPerSource: i64(0)}, "", "", GatewayTransport{}, "tcp_streams_per_source: 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.raw.validate(tc.cert, tc.key)
			if checkErr(t, err, tc.wantErr) {
				return
			}
			if got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
