package esp

import (
	"bytes"
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// pipeStream is an in-memory StreamSender: each flush hands the records
// queued since the last one to the far dataplane's StreamInput in one go,
// as a reader gets them from one TCP read.
type pipeStream struct {
	mu      sync.Mutex
	queued  [][]byte
	flushes int
	records int
	to      chan [][]byte
	refuse  bool
}

func (p *pipeStream) QueueRecord(rec []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refuse {
		return false
	}
	p.queued = append(p.queued, append([]byte(nil), rec...))
	p.records++
	return true
}

func (p *pipeStream) FlushRecords() {
	p.mu.Lock()
	recs := p.queued
	p.queued = nil
	if len(recs) > 0 {
		p.flushes++
	}
	p.mu.Unlock()
	if len(recs) > 0 {
		p.to <- recs
	}
}

func (p *pipeStream) counts() (records, flushes int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.records, p.flushes
}

// pump feeds what arrives on ch into in until ctx ends.
func pump(ctx context.Context, ch chan [][]byte, in *StreamInput) {
	for {
		select {
		case <-ctx.Done():
			return
		case recs := <-ch:
			for _, r := range recs {
				in.Record(r, time.Now().UnixNano())
			}
			in.Flush()
		}
	}
}

// TestStreamPath runs two dataplanes joined by a stream instead of UDP: ESP
// both ways, IKE behind the non-ESP marker to the IKE handler with the
// stream path, no NAT keepalives on the stream, and a refused record
// counted as a send error.
func TestStreamPath(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	tunA, tunB := newFakeTUN(), newFakeTUN()
	ikeA, ikeB := &ikeRecorder{}, &ikeRecorder{}
	a, b := NewDataplane(tunA, ikeA.handle, nil), NewDataplane(tunB, ikeB.handle, nil)
	var wg sync.WaitGroup
	for _, d := range []*Dataplane{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); d.Run(ctx) }()
	}
	defer func() { cancel(); tunA.Close(); tunB.Close(); wg.Wait() }()

	client := netip.MustParseAddrPort("192.0.2.7:40000")
	gw := netip.MustParseAddrPort("203.0.113.10:4500")
	pathA := Path{Local: client, Remote: gw, Stream: true}
	pathB := Path{Local: gw, Remote: client, Stream: true}
	ab := &pipeStream{to: make(chan [][]byte, 16)}
	ba := &pipeStream{to: make(chan [][]byte, 16)}
	a.AddStream(gw, ab)
	b.AddStream(client, ba)
	go pump(ctx, ab.to, b.NewStreamInput(pathB))
	go pump(ctx, ba.to, a.NewStreamInput(pathA))

	peerOfA, peerOfB := a.NewPeer(pathA), b.NewPeer(pathB)
	c := clientGatewayChild(0xb0b, 0xa11ce, keyMat(36), keyMat(20))
	c.installA(t, a, peerOfA)
	c.installB(t, b, peerOfB)
	exchange(t, tunA, tunB, 20)
	if recs, flushes := ab.counts(); recs != 20 || flushes != 20 {
		t.Fatalf("A sent %d records in %d flushes, want 20 in 20", recs, flushes)
	}

	if err := a.SendKeepalive(peerOfA); err != nil {
		t.Fatalf("keepalive on a stream: %v", err)
	}
	if err := b.SendIKE([]byte{0x11, 0x22, 0x33}, pathB); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for ikeA.count() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("IKE over the stream did not arrive")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !bytes.Equal(ikeA.msgs[0], []byte{0x11, 0x22, 0x33}) || ikeA.path[0] != pathA {
		t.Fatalf("IKE got %x via %+v", ikeA.msgs[0], ikeA.path[0])
	}
	if recs, _ := ab.counts(); recs != 20 {
		t.Fatalf("the keepalive went onto the stream: %d records", recs)
	}

	ab.mu.Lock()
	ab.refuse = true
	ab.mu.Unlock()
	tunA.in <- ipv4Packet(50)
	for a.Drops().StreamFull == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("refused record not counted: %+v", a.Drops())
		}
		time.Sleep(5 * time.Millisecond)
	}

	// A stream path without a registered stream has no way out.
	a.RemoveStream(gw, ab)
	a.SetPath(peerOfA, pathA)
	tunA.in <- ipv4Packet(51)
	for a.Drops().NoPath == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no stream: not counted as no path: %+v", a.Drops())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
