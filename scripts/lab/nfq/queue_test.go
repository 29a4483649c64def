package nfq

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestRelease drives the verdict side with packets that entered at known
// times and checks what it sends: batch verdicts in order, covering every
// packet exactly once, none released before it was held for the delay.
func TestRelease(t *testing.T) {
	const delay = 20 * time.Millisecond
	for _, tc := range []struct {
		name   string
		offset []time.Duration // enter time of each packet relative to now
	}{
		{"one", []time.Duration{0}},
		{"burst", []time.Duration{0, 0, 0, 0}},
		{"spread", []time.Duration{0, 5 * time.Millisecond, 30 * time.Millisecond, 31 * time.Millisecond}},
		{"already due", []time.Duration{-time.Second, -time.Second, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := &Queue{fd: -1, num: 4}
			pending := make(chan held, len(tc.offset))
			base := time.Now()
			var enters []time.Time
			for i, off := range tc.offset {
				enters = append(enters, base.Add(off))
				pending <- held{p: Packet{ID: uint32(100 + i), Payload: udp4(4500, 4500, []byte{0, 0, 0, 1})}, enter: base.Add(off)}
			}
			close(pending)
			var batches []uint32
			var sentAt []time.Time
			send := func(b []byte) error {
				msgs, err := decodeVerdict(b)
				if err != nil {
					return err
				}
				batches = append(batches, msgs)
				sentAt = append(sentAt, time.Now())
				return nil
			}
			var rel []Released
			if err := q.release(context.Background(), delay, pending, send, func(r Released) { rel = append(rel, r) }); err != nil {
				t.Fatal(err)
			}
			if len(rel) != len(tc.offset) {
				t.Fatalf("released %d of %d", len(rel), len(tc.offset))
			}
			for i, r := range rel {
				if r.ID != uint32(100+i) {
					t.Errorf("release %d has id %d", i, r.ID)
				}
				if r.Release.Before(enters[i].Add(delay)) {
					t.Errorf("packet %d released %v after entering, before the delay %v", i, r.Release.Sub(enters[i]), delay)
				}
				if !r.Tunnel || r.Len != 32 {
					t.Errorf("packet %d described as %+v", i, r)
				}
			}
			// Batches cover increasing ids, the last one all packets.
			for i := 1; i < len(batches); i++ {
				if batches[i] <= batches[i-1] {
					t.Errorf("batch ids %v not increasing", batches)
				}
			}
			if batches[len(batches)-1] != uint32(100+len(tc.offset)-1) {
				t.Errorf("last batch id %d", batches[len(batches)-1])
			}
			if q.stats.Packets != uint64(len(tc.offset)) {
				t.Errorf("stats %+v", q.stats)
			}
		})
	}
}

// TestReleaseStops checks that cancellation releases what is held at once.
func TestReleaseStops(t *testing.T) {
	q := &Queue{fd: -1}
	pending := make(chan held, 2)
	pending <- held{p: Packet{ID: 1}, enter: time.Now()}
	pending <- held{p: Packet{ID: 2}, enter: time.Now()}
	close(pending)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var ids []uint32
	err := q.release(ctx, time.Hour, pending, func(b []byte) error {
		id, err := decodeVerdict(b)
		ids = append(ids, id)
		return err
	}, nil)
	if err != nil || len(ids) == 0 || ids[len(ids)-1] != 2 {
		t.Errorf("ids %v, err %v", ids, err)
	}
}

func TestReleaseSendError(t *testing.T) {
	q := &Queue{fd: -1}
	pending := make(chan held, 1)
	pending <- held{p: Packet{ID: 1}, enter: time.Now().Add(-time.Second)}
	boom := errors.New("boom")
	if err := q.release(context.Background(), time.Millisecond, pending, func([]byte) error { return boom }, nil); !errors.Is(err, boom) {
		t.Errorf("err %v", err)
	}
}

// decodeVerdict checks a batch ACCEPT verdict and returns its id.
func decodeVerdict(b []byte) (uint32, error) {
	if len(b) != 32 || le.Uint16(b[4:]) != subsysQueue<<8|msgVerdictBatch || le.Uint16(b[22:]) != attrVerdictHdr {
		return 0, errors.New("not a batch verdict")
	}
	if be.Uint32(b[24:]) != Accept {
		return 0, errors.New("not ACCEPT")
	}
	return be.Uint32(b[28:]), nil
}
