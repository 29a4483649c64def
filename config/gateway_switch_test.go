package config

import (
	"testing"
)

// TestGatewaySwitchKeys: switch_notify and switch_return_routability are
// read, defaulted and bounded to the private-use range.
func TestGatewaySwitchKeys(t *testing.T) {
	psk := writeFile(t, t.TempDir(), "alice.psk", "s3cret", 0o600)
	tests := []struct {
		name, lines string
		want        GatewaySwitch
		wantErr     string
	}{
		{name: "defaults", want: GatewaySwitch{SwitchNotify: DefaultSwitchNotify, SwitchRevision: "00", AutoSwitch: true}},
		{name: "all set", lines: "switch_notify = 40960\nswitch_return_routability = true\nauto_switch = false\nswitch_revision = \"03\"\n",
			want: GatewaySwitch{SwitchNotify: 40960, SwitchRevision: "03", SwitchReturnRoutability: true}},
		{name: "top of range", lines: "switch_notify = 65535\n", want: GatewaySwitch{SwitchNotify: 65535, SwitchRevision: "00", AutoSwitch: true}},
		{name: "below range", lines: "switch_notify = 16396\n", wantErr: "gateway: switch_notify: 16396 is outside the private-use range 40960-65535"},
		{name: "above range", lines: "switch_notify = 65536\n", wantErr: "switch_notify: 65536 is outside"},
		{name: "negative", lines: "switch_notify = -1\n", wantErr: "switch_notify: -1 is outside"},
		{name: "not a number", lines: "switch_notify = \"41042\"\n", wantErr: "switch_notify"},
		{name: "not a bool", lines: "switch_return_routability = \"yes\"\n", wantErr: "switch_return_routability"},
		{name: "revision 00", lines: "switch_revision = \"00\"\n", want: GatewaySwitch{SwitchNotify: DefaultSwitchNotify, SwitchRevision: "00", AutoSwitch: true}},
		{name: "unknown revision", lines: "switch_revision = \"05\"\n",
			wantErr: `switch_revision: "05" is not "00" (drafts -00 to -02) or "03" (drafts -03 to -09)`},
		{name: "auto_switch not a bool", lines: "auto_switch = 1\n", wantErr: "auto_switch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := loadGatewayText(t, pskGateway(psk, tt.lines), tt.wantErr)
			if g == nil {
				return
			}
			if g.GatewaySwitch != tt.want {
				t.Errorf("got %+v, want %+v", g.GatewaySwitch, tt.want)
			}
		})
	}
	if DefaultSwitchNotify != 0xA052 {
		t.Errorf("DefaultSwitchNotify = %d, documented as 41042 (0xA052)", DefaultSwitchNotify)
	}
}
