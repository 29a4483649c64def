package main

import "testing"

func TestMaxRxQueue(t *testing.T) {
	const head = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"
	for _, tt := range []struct {
		name, text string
		want       int64
	}{
		{"none", head, 0},
		{"largest of two", head +
			" 1: 0A0A0A02:1194 00000000:0000 07 00000000:00000A00 00:00000000 00000000     0        0 1 2 0000000000000000 0\n" +
			" 2: 0A0A0A02:11C8 00000000:0000 07 00000000:006F0000 00:00000000 00000000     0        0 1 2 0000000000000000 3\n", 0x6F0000},
		{"garbage", head + " 1: x y z nocolon\n 2: short\n", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := maxRxQueue([]byte(tt.text)); got != tt.want {
				t.Errorf("maxRxQueue = %d, want %d", got, tt.want)
			}
		})
	}
}
