package memtun

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"testing"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

func TestReadBatches(t *testing.T) {
	tests := []struct {
		name      string
		batch     int
		bufs      int
		bufSize   int
		inject    []int // packet sizes
		wantReads []int // packets per Read
		tooBig    uint64
	}{
		{"one per read", 1, 4, 100, []int{10, 20, 30}, []int{1, 1, 1}, 0},
		{"batched", 8, 8, 100, []int{10, 20, 30}, []int{3}, 0},
		{"bounded by batch", 2, 8, 100, []int{10, 20, 30}, []int{2, 1}, 0},
		{"bounded by bufs", 8, 2, 100, []int{10, 20, 30}, []int{2, 1}, 0},
		{"too big dropped", 8, 8, 100, []int{10, 200, 30}, []int{2}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := New(Config{BatchSize: tc.batch})
			defer d.Close()
			ctx := context.Background()
			for i, n := range tc.inject {
				if err := d.Inject(ctx, bytes.Repeat([]byte{byte(i + 1)}, n)); err != nil {
					t.Fatal(err)
				}
			}
			const offset = 16
			bufs := make([][]byte, tc.bufs)
			for i := range bufs {
				bufs[i] = make([]byte, offset+tc.bufSize)
			}
			sizes := make([]int, tc.bufs)
			var got []int
			for range tc.wantReads {
				n, err := d.Read(bufs, sizes, offset)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, n)
				for i := range n {
					if b := bufs[i][offset : offset+sizes[i]]; len(b) == 0 || bytes.Count(b, b[:1]) != len(b) {
						t.Fatalf("packet %d of the read is %v", i, b)
					}
				}
			}
			if !slices.Equal(got, tc.wantReads) {
				t.Fatalf("packets per read %v, want %v", got, tc.wantReads)
			}
			if _, _, tooBig := d.Stats(); tooBig != tc.tooBig {
				t.Fatalf("too big %d, want %d", tooBig, tc.tooBig)
			}
		})
	}
}

func TestWriteAndClose(t *testing.T) {
	d := New(Config{Name: "t0", MTU: 1280, Queue: 2})
	if ev := <-d.Events(); ev != wgtun.EventUp {
		t.Fatalf("first event %v, want up", ev)
	}
	if m, _ := d.MTU(); m != 1280 {
		t.Fatalf("MTU %d", m)
	}
	if n, _ := d.Name(); n != "t0" {
		t.Fatalf("name %q", n)
	}
	bufs := [][]byte{append(make([]byte, 4), 1, 2, 3), append(make([]byte, 4), 4, 5)}
	if n, err := d.Write(bufs, 4); n != 2 || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	bufs[0][4] = 9 // the device kept copies
	for _, want := range [][]byte{{1, 2, 3}, {4, 5}} {
		if got := <-d.Written(); !bytes.Equal(got, want) {
			t.Fatalf("written %v, want %v", got, want)
		}
	}
	// A write on a full queue waits, and Close ends it; so it does a read.
	d.Write(bufs, 4)
	wrote := make(chan error, 1)
	go func() { _, err := d.Write(bufs, 4); wrote <- err }()
	read := make(chan error, 1)
	go func() { _, err := d.Read([][]byte{make([]byte, 64)}, []int{0}, 0); read <- err }()
	d.Close()
	for _, ch := range []chan error{wrote, read} {
		if err := <-ch; !errors.Is(err, os.ErrClosed) {
			t.Fatalf("after close: %v", err)
		}
	}
	if _, ok := <-d.Events(); ok {
		t.Fatal("events still open after close")
	}
	if err := d.Inject(context.Background(), []byte{1}); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("inject after close: %v", err)
	}
}
