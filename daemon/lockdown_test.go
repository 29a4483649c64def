package daemon

import (
	"slices"
	"testing"

	"github.com/roam-vpn/roam/config"
)

// TestStreamPorts: the kill switch lets TCP out to the stream port the
// profile's transport may use, and none for UDP only.
func TestStreamPorts(t *testing.T) {
	for _, tc := range []struct {
		mode string
		want []uint16
	}{
		{config.TransportAuto, []uint16{4501}},
		{config.TransportTCP, []uint16{4501}},
		{config.TransportTLS, []uint16{8443}},
		{config.TransportUDP, nil},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			got := streamPorts(config.Transport{Mode: tc.mode, TCPPort: 4501, TLSPort: 8443})
			if !slices.Equal(got, tc.want) {
				t.Errorf("streamPorts = %v, want %v", got, tc.want)
			}
		})
	}
}
