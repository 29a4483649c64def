package config

import (
	"testing"
)

func TestSwitchKeys(t *testing.T) {
	psk := writeFile(t, t.TempDir(), "corp.psk", "s3cret\n", 0o600)
	base := corpProfile + `psk_file = "` + psk + `"
`
	tests := []struct {
		name    string
		keys    string
		sw      bool
		accept  string
		notify  uint16
		rev     string // "" means the default, "00"
		wantErr string
	}{
		{name: "defaults", sw: true, accept: "announced", notify: 41042},
		{name: "off", keys: "switch = false\n", sw: false, accept: "announced", notify: 41042},
		{name: "any", keys: "accept_switch = \"any\"\n", sw: true, accept: "any", notify: 41042},
		{name: "announced", keys: "accept_switch = \"announced\"\n", sw: true, accept: "announced", notify: 41042},
		{name: "own notify", keys: "switch_notify = 40960\n", sw: true, accept: "announced", notify: 40960},
		{name: "top of the range", keys: "switch_notify = 65535\n", sw: true, accept: "announced", notify: 65535},
		{name: "revision 03", keys: "switch_revision = \"03\"\n", sw: true, accept: "announced", notify: 41042, rev: "03"},
		{name: "revision 00", keys: "switch_revision = \"00\"\n", sw: true, accept: "announced", notify: 41042, rev: "00"},
		{name: "unknown revision", keys: "switch_revision = \"3\"\n", wantErr: `switch_revision: "3" is not "00" (drafts -00 to -02) or "03" (drafts -03 to -09)`},
		{name: "bad accept_switch", keys: "accept_switch = \"always\"\n", wantErr: `accept_switch: "always" is not "announced" or "any"`},
		{name: "notify below the range", keys: "switch_notify = 16400\n", wantErr: "switch_notify: 16400 is outside the private-use range 40960-65535"},
		{name: "notify above the range", keys: "switch_notify = 70000\n", wantErr: "switch_notify: 70000 is outside"},
		{name: "negative notify", keys: "switch_notify = -1\n", wantErr: "switch_notify: -1 is outside"},
		{name: "notify as text", keys: "switch_notify = \"41042\"\n", wantErr: "switch_notify"},
		{name: "switch not a bool", keys: "switch = \"yes\"\n", wantErr: "switch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := loadCorp(t, base+tt.keys, tt.wantErr)
			if p == nil {
				return
			}
			if want := tt.rev; p.SwitchRevision != want && !(want == "" && p.SwitchRevision == SwitchRevision00) {
				t.Errorf("switch_revision %q, want %q", p.SwitchRevision, want)
			}
			if p.Switch != tt.sw || p.AcceptSwitch != tt.accept || p.SwitchNotify != tt.notify {
				t.Errorf("switch %v accept_switch %q switch_notify %d, want %v %q %d",
					p.Switch, p.AcceptSwitch, p.SwitchNotify, tt.sw, tt.accept, tt.notify)
			}
		})
	}
}
