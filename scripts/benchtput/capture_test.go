package main

import (
	"strings"
	"testing"
)

func TestTCPOrder(t *testing.T) {
	seg := func(flow, seq string) string {
		return "07:50:52.814806 IP " + flow + ": Flags [P.], seq " + seq + ", ack 1, win 64, length 10"
	}
	const a, b = "10.99.0.10.5201 > 10.99.200.1.52134", "10.99.0.10.5201 > 10.99.200.1.52130"
	for _, tc := range []struct {
		name  string
		lines []string
		want  order // counts only
	}{
		{"in order", []string{seg(a, "100:200"), seg(a, "200:300"), seg(a, "300:400")}, order{packets: 3}},
		{"swapped", []string{seg(a, "100:200"), seg(a, "300:400"), seg(a, "200:300")}, order{packets: 3, late: 1, lateBytes: 100}},
		{"retransmission", []string{seg(a, "100:200"), seg(a, "200:300"), seg(a, "100:200")}, order{packets: 3, again: 1}},
		{"partly new", []string{seg(a, "100:200"), seg(a, "300:400"), seg(a, "150:250")}, order{packets: 3, late: 1, lateBytes: 50}},
		{"gap filled from both sides", []string{seg(a, "100:200"), seg(a, "300:400"), seg(a, "500:600"), seg(a, "150:550")},
			order{packets: 4, late: 1, lateBytes: 200}},
		// iperf3's control connection shares the server's port.
		{"flows apart", []string{seg(a, "5000:6000"), seg(b, "100:200"), seg(a, "6000:7000"), seg(b, "200:300")}, order{packets: 4}},
		{"wrap", []string{seg(a, "4294967200:4294967290"), seg(a, "4294967290:84")}, order{packets: 2}},
		{"not data", []string{"07:50:52.8 IP " + a + ": Flags [.], ack 5, win 64, length 0", seg(a, "100:100"), "garbage"}, order{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tcpOrder(strings.NewReader(strings.Join(tc.lines, "\n")))
			if orderCounts(got) != orderCounts(tc.want) {
				t.Errorf("tcpOrder = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestESPOrder(t *testing.T) {
	pkt := func(spi string, seq string) string {
		return "07:50:52.814896 IP 203.0.113.10.4500 > 198.51.100.2.1024: UDP-encap: ESP(spi=" + spi + ",seq=" + seq + "), length 1444"
	}
	for _, tc := range []struct {
		name  string
		lines []string
		want  order
	}{
		{"in order", []string{pkt("0x1", "0x1"), pkt("0x1", "0x2"), pkt("0x1", "0xa")}, order{packets: 3}},
		{"swapped", []string{pkt("0x1", "0x1"), pkt("0x1", "0x3"), pkt("0x1", "0x2")}, order{packets: 3, late: 1}},
		{"repeated", []string{pkt("0x1", "0x1"), pkt("0x1", "0x2"), pkt("0x1", "0x2")}, order{packets: 3, again: 1}},
		{"SAs apart", []string{pkt("0x1", "0x9"), pkt("0x2", "0x1"), pkt("0x1", "0xa")}, order{packets: 3}},
		{"not ESP", []string{"07:50 IP 1.2.3.4.500 > 5.6.7.8.500: isakmp: child_sa", pkt("0x1", "zz")}, order{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := espOrder(strings.NewReader(strings.Join(tc.lines, "\n")))
			if orderCounts(got) != orderCounts(tc.want) {
				t.Errorf("espOrder = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func orderCounts(o order) [4]int64 {
	return [4]int64{int64(o.packets), int64(o.late), o.lateBytes, int64(o.again)}
}
