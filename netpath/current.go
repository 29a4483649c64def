package netpath

import (
	"sync"
	"sync/atomic"
)

// Current owns the path a connection uses now. One party decides it (the
// client's mobility.Mover, which RFC 4555 makes the initiator); the IKE SA
// holds it too, and writes it (Confirm) where the protocol moves the SA;
// everyone else reads a snapshot with Load, which takes no lock and does
// not allocate, or follows it: a Follower is told of every change, in order,
// before Set or Try returns, so the dataplane's send path and the interface
// monitor's watched address never lag behind a decision.
type Current struct {
	state atomic.Pointer[State]
	// mu orders changes and their notifications: followers see them in
	// the order they were made, and one at a time.
	mu        sync.Mutex
	followers []Follower
	// unnamed: the last change was a Confirm of the path Try had already
	// moved ESP to (an early move's answer); the Set that follows it
	// only names the uplink.
	unnamed bool
}

// State is one snapshot of the current path.
type State struct {
	// Path is the path the SA last confirmed (an update's answer came
	// over it), and IfName its uplink's name ("" when not known).
	Path   Path
	IfName string
	// Sending is where the dataplane sends: Path, except while an update
	// moves away from a lost path, when ESP goes ahead on the first path
	// that update tries (Try) before its answer arrives.
	Sending Path
	// Kept: this change left Sending as the change before it had it (Set
	// confirmed the path Try had already moved ESP to), so the dataplane
	// need not derive its send state again.
	Kept bool
}

// Follower acts on changes of a Current: it must not block, and must not
// call back into the Current it follows.
type Follower interface {
	FollowPath(State)
}

// NewCurrent makes the owner of a connection's path, starting on p over the
// uplink named ifname.
func NewCurrent(p Path, ifname string) *Current {
	c := &Current{}
	c.state.Store(&State{Path: p, IfName: ifname, Sending: p})
	return c
}

// Load returns the current state.
func (c *Current) Load() State { return *c.state.Load() }

// Follow adds f to the followers and tells it the state now, with Kept
// set: a follower made on the current path (the dataplane's peer) has
// nothing to redo, one that watches it (the interface monitor) starts in
// step.
func (c *Current) Follow(f Follower) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.followers = append(c.followers, f)
	s := *c.state.Load()
	s.Kept = true
	f.FollowPath(s)
}

// Set makes p, over the uplink ifname, the confirmed path, and sends on it.
// After a Try and a Confirm of p it only names the uplink (Kept). Any
// other Set of the path already sent on is not Kept: the dataplane may
// have stopped sending meanwhile (esp.Dataplane.Suspend), and resumes.
func (c *Current) Set(p Path, ifname string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.state.Load()
	naming := c.unnamed && prev.Path == p && prev.Sending == p
	c.unnamed = false
	c.publish(&State{Path: p, IfName: ifname, Sending: p, Kept: naming || (prev.Sending == p && prev.Sending != prev.Path)})
}

// Confirm makes p the confirmed path and sends on it, where the IKE
// protocol itself moved the SA: an update's answer arrived over p, the
// peer moved there with UPDATE_SA_ADDRESSES or its NAT mapping changed,
// the SA floated to port 4500. The uplink's name stays when p leaves by
// the same interface; otherwise it is unknown ("") until a Set names it.
func (c *Current) Confirm(p Path) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.state.Load()
	ifname := prev.IfName
	if p.IfIndex != prev.Path.IfIndex {
		ifname = ""
	}
	kept := prev.Sending == p && prev.Sending != prev.Path
	c.unnamed = kept
	c.publish(&State{Path: p, IfName: ifname, Sending: p, Kept: kept})
}

// Try sends on p ahead of confirmation; the confirmed path stays as it is
// until Set.
func (c *Current) Try(p Path) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.state.Load()
	c.unnamed = false
	c.publish(&State{Path: prev.Path, IfName: prev.IfName, Sending: p})
}

// publish stores s and tells the followers; c.mu is held.
func (c *Current) publish(s *State) {
	c.state.Store(s)
	for _, f := range c.followers {
		f.FollowPath(*s)
	}
}
