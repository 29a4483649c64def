package ha

import (
	"context"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/roam-vpn/roam/internal/poll"
)

// fakeHandler records what a node delivered.
type fakeHandler struct {
	mu       sync.Mutex
	snapshot []State
	imported []State
	dropped  []SAKey
	kept     [][]SAKey
	dead     chan struct{}
	got      chan struct{}
}

func newFake(snap ...State) *fakeHandler {
	return &fakeHandler{snapshot: snap, dead: make(chan struct{}, 1), got: make(chan struct{}, 100)}
}

func (f *fakeHandler) Snapshot() []State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]State(nil), f.snapshot...)
}
func (f *fakeHandler) Import(s State) { f.note(func() { f.imported = append(f.imported, s) }) }
func (f *fakeHandler) Drop(k SAKey)   { f.note(func() { f.dropped = append(f.dropped, k) }) }
func (f *fakeHandler) Keep(k []SAKey) { f.note(func() { f.kept = append(f.kept, k) }) }
func (f *fakeHandler) PeerDead()      { f.dead <- struct{}{} }

func (f *fakeHandler) note(fn func()) {
	f.mu.Lock()
	fn()
	f.mu.Unlock()
	f.got <- struct{}{}
}

// waitFor polls cond until it holds; the timeout is only a hang guard.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, cond)
}

func freePort(t *testing.T, ip string) netip.AddrPort {
	t.Helper()
	return freePorts(t, ip, 1)[0]
}

// freePorts returns n distinct free ports. The listeners stay open until all
// are chosen: a port closed and asked for again can come back the same (about
// once in 10 000 pairs here), and a pair on one port is a node that dials
// itself while its peer cannot listen.
func freePorts(t *testing.T, ip string, n int) []netip.AddrPort {
	t.Helper()
	ports := make([]netip.AddrPort, n)
	for i := range ports {
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports[i] = ln.Addr().(*net.TCPAddr).AddrPort()
	}
	return ports
}

type nodePair struct {
	active, standby   *Node
	ah, sh            *fakeHandler
	cancelA, cancelS  context.CancelFunc
	doneA, doneS      chan struct{}
	activeAt, standAt netip.AddrPort
}

func startPair(t *testing.T, keyA, keyS []byte, roleS Role, snap ...State) *nodePair {
	t.Helper()
	p := &nodePair{ah: newFake(snap...), sh: newFake(), doneA: make(chan struct{}), doneS: make(chan struct{})}
	ports := freePorts(t, "127.0.0.1", 2)
	p.activeAt, p.standAt = ports[0], ports[1]
	var err error
	fast := 20 * time.Millisecond
	if p.active, err = New(Config{Key: keyA, Listen: p.activeAt, Peer: p.standAt, Role: Active, Heartbeat: fast, DeadAfter: 10 * fast}, p.ah); err != nil {
		t.Fatal(err)
	}
	if p.standby, err = New(Config{Key: keyS, Listen: p.standAt, Peer: p.activeAt, Role: roleS, Heartbeat: fast, DeadAfter: 10 * fast}, p.sh); err != nil {
		t.Fatal(err)
	}
	var ctxA, ctxS context.Context
	ctxA, p.cancelA = context.WithCancel(context.Background())
	ctxS, p.cancelS = context.WithCancel(context.Background())
	// A node that cannot listen returns at once; say so rather than let
	// the test wait for a connection that cannot come.
	run := func(n *Node, ctx context.Context, done chan struct{}, role string) {
		defer close(done)
		if err := n.Run(ctx); err != nil {
			t.Errorf("%s node: %v", role, err)
		}
	}
	go run(p.standby, ctxS, p.doneS, "standby")
	go run(p.active, ctxA, p.doneA, "active")
	t.Cleanup(func() {
		p.cancelA()
		p.cancelS()
		<-p.doneA
		<-p.doneS
	})
	return p
}

func TestReplication(t *testing.T) {
	snap := []State{{SA: SAKey{1, 1}, Seqs: []ChildSeq{{10, 100, 90}}, Blob: []byte("sa1")}}
	p := startPair(t, testKey(t, 9), testKey(t, 9), Standby, snap...)
	waitFor(t, "snapshot and inventory", func() bool {
		p.sh.mu.Lock()
		defer p.sh.mu.Unlock()
		return len(p.sh.kept) == 1
	})
	p.sh.mu.Lock()
	if !reflect.DeepEqual(p.sh.imported, snap) || !reflect.DeepEqual(p.sh.kept[0], []SAKey{{1, 1}}) {
		t.Fatalf("after connect: imported %+v kept %+v", p.sh.imported, p.sh.kept)
	}
	p.sh.mu.Unlock()

	second := State{SA: SAKey{2, 2}, Seqs: []ChildSeq{{20, 5, 6}}, Blob: []byte("sa2")}
	p.active.Push(second)
	p.active.Delete(SAKey{1, 1})
	waitFor(t, "push and delete", func() bool {
		p.sh.mu.Lock()
		defer p.sh.mu.Unlock()
		return len(p.sh.dropped) == 1 && len(p.sh.imported) == 2
	})
	p.sh.mu.Lock()
	if !reflect.DeepEqual(p.sh.imported[1], second) || p.sh.dropped[0] != (SAKey{1, 1}) {
		t.Fatalf("imported %+v dropped %+v", p.sh.imported, p.sh.dropped)
	}
	p.sh.mu.Unlock()
	if !p.standby.Connected() || !p.active.Connected() {
		t.Fatal("a connected pair reports no connection")
	}
	if st := p.standby.Stats(); st.Connections != 1 || st.HandshakeFailures != 0 || st.BadRecords != 0 {
		t.Fatalf("standby stats %+v", st)
	}
	select {
	case <-p.sh.dead:
		t.Fatal("standby declared a live active dead")
	default:
	}
}

func TestActiveSilentPromotesStandby(t *testing.T) {
	p := startPair(t, testKey(t, 9), testKey(t, 9), Standby)
	waitFor(t, "connection", func() bool { return p.standby.Stats().Connections == 1 })
	p.cancelA()
	<-p.doneA
	select {
	case <-p.sh.dead:
	case <-time.After(10 * time.Second):
		t.Fatal("standby never declared the active dead")
	}
	if p.standby.Role() != Active || p.standby.Stats().Failovers != 1 {
		t.Fatalf("after failover: role %v stats %+v", p.standby.Role(), p.standby.Stats())
	}
}

func TestRefusedPeers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		keyS  []byte
		roleS Role
	}{
		{"wrong key", testKey(t, 2), Standby},
		{"both active", testKey(t, 1), Active},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startPair(t, testKey(t, 1), tc.keyS, tc.roleS, State{SA: SAKey{1, 1}, Blob: []byte("x")})
			waitFor(t, "refused handshakes on both nodes", func() bool {
				return p.standby.Stats().HandshakeFailures > 0 && p.active.Stats().HandshakeFailures > 0
			})
			if p.standby.Stats().Connections != 0 || p.active.Stats().Connections != 0 {
				t.Fatalf("a connection was accepted: %+v / %+v", p.active.Stats(), p.standby.Stats())
			}
			p.sh.mu.Lock()
			defer p.sh.mu.Unlock()
			if len(p.sh.imported) != 0 {
				t.Fatalf("imported %+v over a refused channel", p.sh.imported)
			}
		})
	}
}

// A connection from an address other than the configured peer's is closed
// before the handshake.
func TestForeignAddressRefused(t *testing.T) {
	sh := newFake()
	at := freePort(t, "127.0.0.1")
	n, err := New(Config{Key: testKey(t, 1), Listen: at, Peer: netip.MustParseAddrPort("127.0.0.2:1"), Role: Standby}, sh)
	if err != nil {
		t.Fatal(err)
	}
	runUntilEnd(t, n)
	waitFor(t, "a refused connection", func() bool {
		if c, err := net.Dial("tcp", at.String()); err == nil {
			c.Close()
		}
		return n.Stats().RefusedAddress > 0
	})
}

func TestNewChecks(t *testing.T) {
	ok := Config{Key: testKey(t, 1), Listen: netip.MustParseAddrPort("127.0.0.1:1"), Peer: netip.MustParseAddrPort("127.0.0.1:2"), Role: Active}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"short key", func(c *Config) { c.Key = c.Key[:5] }},
		{"no peer", func(c *Config) { c.Peer = netip.AddrPort{} }},
		{"no role", func(c *Config) { c.Role = 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			if _, err := New(c, newFake()); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := New(ok, newFake()); err != nil {
		t.Fatal(err)
	}
}

// TestAcceptedConnectionsCapped: connections from the peer's address that
// never finish the handshake take at most maxAccepted slots; the rest are
// refused at once.
func TestAcceptedConnectionsCapped(t *testing.T) {
	at := freePort(t, "127.0.0.1")
	n, err := New(Config{Key: testKey(t, 1), Listen: at, Peer: netip.MustParseAddrPort("127.0.0.1:1"), Role: Standby}, newFake())
	if err != nil {
		t.Fatal(err)
	}
	runUntilEnd(t, n)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	waitFor(t, "a connection refused for the cap", func() bool {
		if c, err := net.Dial("tcp", at.String()); err == nil {
			conns = append(conns, c) // silent: the handshake never ends
		}
		return n.Stats().RefusedBusy > 0
	})
	if len(conns) <= maxAccepted {
		t.Fatalf("refused after %d connections, cap %d", len(conns), maxAccepted)
	}
}

// runUntilEnd runs n until the test ends, and waits for Run to return.
func runUntilEnd(t *testing.T, n *Node) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}
