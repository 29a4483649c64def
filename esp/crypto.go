package esp

import (
	"context"
	"runtime"
)

// Parallel crypto. A loop with a batch big enough splits its crypto stage
// into parts, hands all but one to idle workers and does the last itself,
// then waits for the parts. Order is kept outside the crypto stage: the
// TUN loop has reserved every packet's sequence number before sealing and
// sends in that order; a receive loop delivers in arrival order after all
// parts are done. The replay window is still checked before and updated
// after decryption, under the SA's lock (InboundSA.open). A handoff never
// blocks: with every worker busy the loop does the part itself.

const (
	// minPartBytes is the least crypto worth handing to another core, in
	// bytes of packet: about 10 µs of AES-GCM on one core. It is counted in
	// bytes, not packets, as a wakeup costs the same for 64-byte and
	// 1400-byte packets. Below two of these a batch stays on its loop, so a
	// lone GRO datagram or GSO read (under 64 KiB) is never split: on a machine
	// whose cores are all busy with the transfer (a 2-CPU lab, where the
	// kernel's side of the tunnel and the TCP ends take the other core) a
	// handoff buys no parallelism and costs a wakeup and a futex. A loop
	// that has fallen behind gets several GRO datagrams in one read and
	// splits them, which is when another core helps it catch up.
	minPartBytes = 32 << 10
	// maxParts bounds the split of one batch.
	maxParts = 8
)

// cryptoPart is one part of a batch's crypto stage: a range of outbound
// jobs to seal or inbound jobs to open. Each has its own scratch, so parts
// share nothing but the batch's disjoint buffers.
type cryptoPart struct {
	sc   cryptoScratch
	done chan struct{}

	// seal: sealed[i] is tx[i]'s ESP packet or nil when it could not be
	// sealed.
	tx     []txJob
	sealed [][]byte

	rx []rxJob // open
}

func (p *cryptoPart) run() {
	for i, j := range p.tx {
		p.sealed[i], _ = j.c.out.sealInPlace(&p.sc, j.buf, tunOffset, j.n, j.seq)
	}
	for i := range p.rx {
		j := &p.rx[i]
		j.inner, j.err = j.c.in.open(&p.sc, j.dst, j.pkt)
	}
}

// cryptoWorkers is how many workers Run starts: one per other core.
func cryptoWorkers() int {
	return min(runtime.GOMAXPROCS(0)-1, maxParts-1)
}

// cryptoWorker runs parts until ctx is done. A part it took it finishes.
func (d *Dataplane) cryptoWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-d.crypto:
			p.run()
			p.done <- struct{}{}
		}
	}
}

// cryptoParts is a loop's preallocated parts.
type cryptoParts [maxParts]*cryptoPart

func newCryptoParts() *cryptoParts {
	var ps cryptoParts
	for i := range ps {
		ps[i] = &cryptoPart{done: make(chan struct{}, 1)}
	}
	return &ps
}

// split says into how many parts n jobs of size bytes in all go.
func (d *Dataplane) split(n, size int) int {
	return max(1, min(size/minPartBytes, n, d.workers+1, maxParts))
}

// runParts runs parts[:k]: parts[1:k] on workers where one is idle, the
// first here, and returns when all are done.
func (d *Dataplane) runParts(ps *cryptoParts, k int) {
	handed := 0
	for i := 1; i < k; i++ {
		select {
		case d.crypto <- ps[i]:
			handed |= 1 << i
		default:
			ps[i].run()
		}
	}
	ps[0].run()
	for i := 1; i < k; i++ {
		if handed&(1<<i) != 0 {
			<-ps[i].done
		}
	}
}

// sealParallel seals jobs, split across parts, and writes each job's ESP
// packet (nil: failed) to sealed.
func (d *Dataplane) sealParallel(ps *cryptoParts, jobs []txJob, sealed [][]byte) {
	size := 0
	for i := range jobs {
		size += jobs[i].n
	}
	k := d.split(len(jobs), size)
	per := (len(jobs) + k - 1) / k
	for i := 0; i < k; i++ {
		lo, hi := min(i*per, len(jobs)), min((i+1)*per, len(jobs))
		p := ps[i]
		p.tx, p.sealed, p.rx = jobs[lo:hi], sealed[lo:hi], nil
	}
	d.runParts(ps, k)
}

// openParallel opens jobs, split across parts; each job gets its inner
// packet or error.
func (d *Dataplane) openParallel(ps *cryptoParts, jobs []rxJob) {
	size := 0
	for i := range jobs {
		size += len(jobs[i].pkt)
	}
	k := d.split(len(jobs), size)
	per := (len(jobs) + k - 1) / k
	for i := 0; i < k; i++ {
		lo, hi := min(i*per, len(jobs)), min((i+1)*per, len(jobs))
		p := ps[i]
		p.tx, p.sealed, p.rx = nil, nil, jobs[lo:hi]
	}
	d.runParts(ps, k)
}
