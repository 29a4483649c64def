package config

import (
	"strings"
	"testing"
)

func TestChildrenKey(t *testing.T) {
	psk := writeFile(t, t.TempDir(), "corp.psk", "s3cret\n", 0o600)
	base := corpProfile + `psk_file = "` + psk + `"
remote_ts = ["10.1.0.0/24", "10.2.0.0/24"]
`
	tests := []struct {
		name    string
		keys    string
		want    string
		wantErr string
	}{
		{name: "default", want: ChildrenSingle},
		{name: "single", keys: "children = \"single\"\n", want: ChildrenSingle},
		{name: "per_ts", keys: "children = \"per_ts\"\n", want: ChildrenPerTS},
		{name: "unknown", keys: "children = \"each\"\n", wantErr: `children: "each" is not single or per_ts`},
		{name: "not a string", keys: "children = 2\n", wantErr: "children"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, err := LoadProfiles(writeFile(t, t.TempDir(), "roam.toml", base+tt.keys, 0o644))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("err = %v, want one line containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := ps["corp"].Children; got != tt.want {
				t.Fatalf("children %q, want %q", got, tt.want)
			}
		})
	}
}
