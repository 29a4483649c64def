package esp

import (
	"iter"
	"math/rand/v2"
	"sync/atomic"
)

// lfMap is a hash map with lock-free, allocation-free reads for one writer
// at a time (the caller serialises writers). A write replaces only the
// chain of one bucket, and the bucket array is rebuilt only when it doubles
// or halves, so n inserts cost O(n) in total: a gateway that adds its
// clients one by one does not copy the whole table per client, as a map
// replaced whole on every change would. Nodes are never modified once
// published, so a reader always walks a consistent chain.
type lfMap[K comparable, V any] struct {
	hash func(k K, seed uint64) uint64
	tab  atomic.Pointer[lfTable[K, V]]
	n    int // entries; writer only
}

type lfTable[K comparable, V any] struct {
	seed    uint64
	buckets []atomic.Pointer[lfNode[K, V]] // a power of two
}

type lfNode[K comparable, V any] struct {
	key  K
	val  V
	next *lfNode[K, V]
}

const lfMinBuckets = 8

func newLFMap[K comparable, V any](hash func(K, uint64) uint64) *lfMap[K, V] {
	m := &lfMap[K, V]{hash: hash}
	// A per-map seed keeps chains short whatever keys the peers choose.
	m.tab.Store(&lfTable[K, V]{seed: rand.Uint64(), buckets: make([]atomic.Pointer[lfNode[K, V]], lfMinBuckets)})
	return m
}

func (t *lfTable[K, V]) bucket(m *lfMap[K, V], k K) *atomic.Pointer[lfNode[K, V]] {
	return &t.buckets[m.hash(k, t.seed)&uint64(len(t.buckets)-1)]
}

// get returns the value stored for k.
func (m *lfMap[K, V]) get(k K) (V, bool) {
	t := m.tab.Load()
	for n := t.bucket(m, k).Load(); n != nil; n = n.next {
		if n.key == k {
			return n.val, true
		}
	}
	var zero V
	return zero, false
}

// set stores v for k.
func (m *lfMap[K, V]) set(k K, v V) {
	t := m.tab.Load()
	b := t.bucket(m, k)
	head := b.Load()
	if rest, ok := without(head, k); ok {
		b.Store(&lfNode[K, V]{key: k, val: v, next: rest})
		return
	}
	b.Store(&lfNode[K, V]{key: k, val: v, next: head})
	m.n++
	if m.n > len(t.buckets) {
		m.resize(2 * len(t.buckets))
	}
}

// delete removes k.
func (m *lfMap[K, V]) delete(k K) {
	t := m.tab.Load()
	b := t.bucket(m, k)
	rest, ok := without(b.Load(), k)
	if !ok {
		return
	}
	b.Store(rest)
	m.n--
	if len(t.buckets) > lfMinBuckets && m.n < len(t.buckets)/4 {
		m.resize(len(t.buckets) / 2)
	}
}

// len is the number of entries (writer only).
func (m *lfMap[K, V]) len() int { return m.n }

// without returns the chain from head without k, copying the nodes in
// front of k (readers may be on them), and whether k was there.
func without[K comparable, V any](head *lfNode[K, V], k K) (*lfNode[K, V], bool) {
	if head == nil {
		return nil, false
	}
	if head.key == k {
		return head.next, true
	}
	rest, ok := without(head.next, k)
	if !ok {
		return head, false
	}
	return &lfNode[K, V]{key: head.key, val: head.val, next: rest}, true
}

// resize rehashes into size buckets and publishes the new array at once.
func (m *lfMap[K, V]) resize(size int) {
	old := m.tab.Load()
	t := &lfTable[K, V]{seed: old.seed, buckets: make([]atomic.Pointer[lfNode[K, V]], size)}
	for i := range old.buckets {
		for n := old.buckets[i].Load(); n != nil; n = n.next {
			b := t.bucket(m, n.key)
			b.Store(&lfNode[K, V]{key: n.key, val: n.val, next: b.Load()})
		}
	}
	m.tab.Store(t)
}

// all yields every entry of the table current when it is called; safe
// concurrently with a writer.
func (m *lfMap[K, V]) all() iter.Seq2[K, V] {
	t := m.tab.Load()
	return func(yield func(K, V) bool) {
		for i := range t.buckets {
			for n := t.buckets[i].Load(); n != nil; n = n.next {
				if !yield(n.key, n.val) {
					return
				}
			}
		}
	}
}

// mix64 is a 64-bit finaliser (from MurmurHash3): every input bit affects
// every output bit, so masked bucket indexes spread well.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

func hashSPI(spi uint32, seed uint64) uint64 { return mix64(uint64(spi) ^ seed) }
