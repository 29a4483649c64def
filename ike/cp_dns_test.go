package ike

import (
	"slices"
	"testing"

	"github.com/roam-vpn/roam/ike/wire"
)

func TestParseDNSDomain(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"corp.example", "corp.example", true},
		{"Corp.Example.", "corp.example", true},
		{"a", "a", true},
		{"", "", false},
		{".", "", false},
		{"corp..example", "", false},
		{"*.corp.example", "", false},
		{"corp.example\x00evil", "", false},
		{"corp example", "", false},
		{string(make([]byte, 64)) + ".example", "", false},
	}
	for _, tt := range tests {
		got, ok := parseDNSDomain([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseDNSDomain(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestCPDNSDomainsRoundTrip(t *testing.T) {
	tests := []struct {
		name        string
		wantDomains bool
		domains     []string
		got         []string
	}{
		{"asked", true, []string{"corp.example", "lab.example"}, []string{"corp.example", "lab.example"}},
		{"not asked", false, []string{"corp.example"}, nil},
		{"none configured", true, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := cpRequest(nil)
			_, _, _, _, asked := cpRequested(req)
			if !asked {
				t.Fatal("CFG_REQUEST does not ask for INTERNAL_DNS_DOMAIN")
			}
			reply := cpReply(nil, nil, tt.domains, true, true, tt.wantDomains)
			body, err := encodeDecodeConfig(reply)
			if err != nil {
				t.Fatal(err)
			}
			_, _, domains := parseCPReply(body)
			if !slices.Equal(domains, tt.got) {
				t.Errorf("domains %v, want %v", domains, tt.got)
			}
		})
	}
}

// encodeDecodeConfig puts c through the wire encoding, as a peer sees it.
func encodeDecodeConfig(c *wire.Config) (*wire.Config, error) {
	first, body, err := wire.EncodePayloads([]wire.Payload{c})
	if err != nil {
		return nil, err
	}
	ps, err := wire.DecodePayloads(first, body)
	if err != nil {
		return nil, err
	}
	return ps[0].(*wire.Config), nil
}

func TestParseCPReplyDuplicateDomains(t *testing.T) {
	c := &wire.Config{CfgType: wire.CfgReply, Attributes: []wire.ConfigAttribute{
		{Type: cfgDNSDomain, Value: []byte("corp.example")},
		{Type: cfgDNSDomain, Value: []byte("CORP.example.")},
		{Type: cfgDNSDomain, Value: []byte("bad domain")},
	}}
	if _, _, d := parseCPReply(c); !slices.Equal(d, []string{"corp.example"}) {
		t.Errorf("domains %v", d)
	}
}

func FuzzParseCPReply(f *testing.F) {
	f.Add([]byte("corp.example"))
	f.Add([]byte{0, 1, 2})
	f.Fuzz(func(t *testing.T, v []byte) {
		c := &wire.Config{CfgType: wire.CfgReply, Attributes: []wire.ConfigAttribute{
			{Type: cfgDNSDomain, Value: v}, {Type: cfgIP4DNS, Value: v}, {Type: cfgIP6Address, Value: v}}}
		_, _, domains := parseCPReply(c)
		for _, d := range domains {
			if _, ok := parseDNSDomain([]byte(d)); !ok {
				t.Fatalf("accepted domain %q does not parse again", d)
			}
		}
	})
}
