package daemon

import (
	"encoding/json"
	"maps"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/roam-vpn/roam/report"
)

func keys(t *testing.T, raw json.RawMessage) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return slices.Sorted(maps.Keys(m))
}

// The field names are the contract of docs/reference.md; scripts depend on them.
func TestStatusJSONFields(t *testing.T) {
	b, err := json.Marshal((&fakeTunnel{name: "corp"}).Status())
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	want := []string{"children", "drops", "established_at", "gateway", "ike_spi_i", "ike_spi_r", "interface", "local",
		"mobike", "name", "nat", "path_changes", "remote", "state", "virtual_ip"}
	if got := keys(t, b); !slices.Equal(got, want) {
		t.Errorf("status keys\n got %v\nwant %v", got, want)
	}
	var children []json.RawMessage
	if err := json.Unmarshal(top["children"], &children); err != nil || len(children) != 1 {
		t.Fatalf("children %s: %v", top["children"], err)
	}
	wantChild := []string{"bytes_in", "bytes_out", "packets_in", "packets_out", "proposal", "spi_in", "spi_out"}
	if got := keys(t, children[0]); !slices.Equal(got, wantChild) {
		t.Errorf("child keys\n got %v\nwant %v", got, wantChild)
	}
	if got, want := keys(t, top["drops"]), []string{"bad_icv", "malformed", "no_path", "no_route", "outside_selectors", "replayed", "send_errors", "seq_exhausted", "socket_overflow", "stale", "stream_full", "too_big", "too_old", "truncated", "tun_write", "unknown_spi"}; !slices.Equal(got, want) {
		t.Errorf("drops keys\n got %v\nwant %v", got, want)
	}
	if string(top["ike_spi_i"]) != `"0102030405060708"` || string(top["nat"]) != "true" {
		t.Errorf("ike_spi_i %s nat %s", top["ike_spi_i"], top["nat"])
	}
	// Round trip: the CLI decodes what the daemon encodes.
	var back Status
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !back.EstablishedAt.Equal(fakeEstablished) || back.Drops == nil || back.Drops.BadICV != 4 || len(back.Children) != 1 {
		t.Errorf("round trip: %+v", back)
	}
}

func TestStatusJSONBeforeEstablished(t *testing.T) {
	b, err := json.Marshal(Status{Name: "corp", State: "connecting"})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"established_at": "null", "children": "[]", "drops": `{"malformed":0,"unknown_spi":0,"replayed":0,"bad_icv":0,"no_path":0,"too_big":0,"no_route":0,"send_errors":0,"outside_selectors":0,"seq_exhausted":0,"socket_overflow":0,"tun_write":0,"truncated":0,"stream_full":0,"too_old":0,"stale":0}`} {
		if string(m[k]) != want {
			t.Errorf("%s = %s, want %s", k, m[k], want)
		}
	}
	var back Status
	if err := json.Unmarshal(b, &back); err != nil || !back.EstablishedAt.IsZero() {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}

func TestEventJSON(t *testing.T) {
	at := time.Date(2026, 11, 22, 14, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		ev   Event
		keys []string
	}{
		{"minimal", Event{Time: at, Profile: "corp", Event: report.EventDisconnected}, []string{"event", "profile", "time"}},
		{"path", Event{Time: at, Profile: "corp", Event: report.EventPathChanged, From: "192.0.2.1:4500", To: "192.0.2.2:4500", Interface: "wwan0", TookMS: 42},
			[]string{"event", "from", "interface", "profile", "time", "to", "took_ms"}},
		{"error", Event{Time: at, Profile: "corp", Event: report.EventError, Reason: "authentication failed"}, []string{"event", "profile", "reason", "time"}},
	}
	nanos := regexp.MustCompile(`^"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d)"$`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.ev)
			if err != nil {
				t.Fatal(err)
			}
			if got := keys(t, b); !slices.Equal(got, tt.keys) {
				t.Errorf("keys %v, want %v", got, tt.keys)
			}
			var m map[string]json.RawMessage
			json.Unmarshal(b, &m)
			if !nanos.Match(m["time"]) {
				t.Errorf("time %s is not RFC 3339 with nanoseconds", m["time"])
			}
			var back Event
			if err := json.Unmarshal(b, &back); err != nil || back != tt.ev {
				t.Errorf("round trip %+v (%v), want %+v", back, err, tt.ev)
			}
		})
	}
}
