package esp

import (
	"encoding/binary"
	"os"
	"testing"
	"time"
)

// burstTUN is a fakeTUN whose Read returns a whole burst of packets at
// once, as a TUN with offloads does, so the loops see batches big enough to
// split their crypto.
type burstTUN struct {
	*fakeTUN
	bursts chan [][]byte
}

func newBurstTUN() *burstTUN {
	f := &fakeTUN{tunBase: newTUNBase("burst", 128), out: make(chan []byte, 1024)}
	return &burstTUN{fakeTUN: f, bursts: make(chan [][]byte)}
}

func (f *burstTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case burst := <-f.bursts:
		for i, p := range burst {
			sizes[i] = copy(bufs[i][offset:], p)
		}
		return len(burst), nil
	case <-f.closed:
		return 0, os.ErrClosed
	}
}

// TestBurstOrder sends bursts of up to 128 packets from one dataplane to
// another over loopback, crypto split across workers where there are
// cores: every packet arrives once, intact, and in the order it was read.
func TestBurstOrder(t *testing.T) {
	tests := []struct {
		name         string
		bursts, size int
		cipher       Cipher
		key          int
	}{
		{"AES-GCM full batches", 20, 128, AESGCM16, 20},
		{"AES-GCM odd batches", 20, 37, AESGCM16, 36},
		{"ChaCha20-Poly1305", 10, 128, ChaCha20Poly1305, 36},
		{"small batches stay serial", 50, 3, AESGCM16, 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tunA, tunB := newBurstTUN(), newBurstTUN()
			p := startDataplanePair(t, tunA, tunB, ignoreIKE, ignoreIKE, nil)
			a, b := p.a, p.b
			pa, pb := p.peers()
			k := keyMat(tt.key)
			c := clientGatewayChild(0x77, 0x78, k, k)
			c.cipher = tt.cipher
			p.install(t, pa, pb, c)

			next := uint32(0)
			for range tt.bursts {
				burst := make([][]byte, tt.size)
				for i := range burst {
					p := ipv4Packet(1000 + i%3*100) // runs of equal and unequal lengths
					binary.BigEndian.PutUint32(p[20:], next+uint32(i))
					burst[i] = p
				}
				tunA.bursts <- burst
				for i := range burst {
					select {
					case got := <-tunB.out:
						if string(got) != string(burst[i]) {
							t.Fatalf("packet %d of the burst: got #%d (%d bytes), want #%d", i, binary.BigEndian.Uint32(got[20:]), len(got), next+uint32(i))
						}
					case <-time.After(5 * time.Second):
						t.Fatalf("packet %d of the burst did not arrive; drops A %+v B %+v", i, a.Drops(), b.Drops())
					}
				}
				next += uint32(tt.size)
			}
			st := b.ChildStats(pb)
			if len(st) != 1 || st[0].PacketsIn != uint64(tt.bursts*tt.size) {
				t.Fatalf("B's stats %+v, want %d packets in", st, tt.bursts*tt.size)
			}
		})
	}
}

// TestSplit checks when a batch's crypto is split: by its bytes, so that a
// lone GRO datagram or GSO read (under 64 KiB) and any batch of small
// packets stay on their loop, never into more parts than jobs, workers
// plus the loop itself, or maxParts.
func TestSplit(t *testing.T) {
	tests := []struct {
		name       string
		workers    int
		jobs, size int
		want       int
	}{
		{"one packet", 1, 1, 1400, 1},
		{"full GRO datagram", 1, 45, 65507, 1},
		{"many small packets", 1, 128, 128 * 64, 1},
		{"two GRO datagrams", 1, 90, 2 * 65507, 2},
		{"two GRO datagrams, more cores", 7, 90, 2 * 65507, 3},
		{"no workers", 0, 128, 128 * 1400, 1},
		{"bounded by jobs", 7, 2, 2 * 65535, 2},
		{"bounded by maxParts", 15, 128, 128 * 65535, maxParts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &Dataplane{workers: tt.workers}
			if got := d.split(tt.jobs, tt.size); got != tt.want {
				t.Errorf("split(%d jobs, %d bytes) with %d workers = %d, want %d", tt.jobs, tt.size, tt.workers, got, tt.want)
			}
		})
	}
}
