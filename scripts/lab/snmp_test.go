package lab

import "testing"

func TestParseFragCreates(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     int
		err      bool
	}{
		{"both", "Ip: Forwarding DefaultTTL FragOKs FragFails FragCreates\nIp: 1 64 3 0 7\nIcmp: InMsgs\nIcmp: 0\nIp6InReceives 5\nIp6FragCreates 2\n", 9, false},
		{"v4 only", "Ip: FragCreates OutRequests\nIp: 0 12\n", 0, false},
		{"missing", "Icmp: InMsgs\nIcmp: 3\n", 0, true},
		{"garbage value", "Ip: FragCreates\nIp: x\n", 0, true},
	} {
		got, err := parseFragCreates(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("%s: got %d, %v; want %d, error %v", tc.name, got, err, tc.want, tc.err)
		}
	}
}
