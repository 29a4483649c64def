package daemon

import (
	"context"
	"sync"
	"time"
)

// subscriberBuffer is how many events a slow `roam events` reader may fall
// behind before it loses events; the tunnels never wait for readers.
const subscriberBuffer = 256

// hub fans events out to the current subscribers.
type hub struct {
	mu   sync.Mutex
	subs map[chan Event]struct{}
	now  func() time.Time
}

func newHub(now func() time.Time) *hub {
	return &hub{subs: make(map[chan Event]struct{}), now: now}
}

// publish stamps ev and hands it to every subscriber that has room.
func (h *hub) publish(ev Event) Event {
	if ev.Time.IsZero() {
		ev.Time = h.now()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- ev:
		default:
		}
	}
	return ev
}

// subscribe returns a channel of events that is closed when ctx ends.
func (h *hub) subscribe(ctx context.Context) <-chan Event {
	ch := make(chan Event, subscriberBuffer)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	context.AfterFunc(ctx, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
		close(ch)
	})
	return ch
}
