package main

import "testing"

func TestParsePerfCSV(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    counts
		wantErr bool
	}{
		{
			name: "counts",
			in: "12345,,raw_syscalls:sys_enter,100.00,,\n" +
				"10,,syscalls:sys_enter_sendmmsg,100.00,,\n" +
				"<not counted>,,syscalls:sys_enter_recvmmsg,0.00,,\n" +
				"7,,context-switches,100.00,,\n",
			want: counts{"sys_enter": 12345, "sendmmsg": 10, "context-switches": 7},
		},
		{name: "no syscall count", in: "7,,context-switches,100.00,,\n", wantErr: true},
		{name: "perf error", in: "Error: No permissions\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePerfCSV(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}
