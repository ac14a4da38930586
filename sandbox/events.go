package sandbox

import (
	"sync"
	"time"

	"github.com/matrx-dev/matrx/ids"
)

// Event types, as GET /events streams them (docker events style).
const (
	EventCreated  = "created"  // recorded, resources being made
	EventReady    = "ready"    // accepts exec
	EventStopping = "stopping" // a stop began (Reason says why)
	EventStopped  = "stopped"  // Status is the final one: stopped, failed or expired
	EventRepaired = "repaired" // supervision fixed something (Repair says what)
	EventOOM      = "oom"      // the kernel OOM-killed a process of the sandbox
)

// Event is one lifecycle event.
type Event struct {
	Seq       uint64
	Time      time.Time
	Type      string
	SandboxID string
	UserID    ids.UserID
	// Status is the sandbox's status after the event.
	Status string
	// Reason is the stop reason (stopping, stopped) or why a repair ran.
	Reason   string
	ExitCode *int
	// Repair is the kind of thing a repair fixed (see runtime.Leftover*,
	// RepairRecord, RepairHotDir, RepairColdMount).
	Repair string
	Detail string
}

// eventBacklog is how many events the manager keeps for ?since= replays.
const eventBacklog = 4096

// subscriberBuffer is how many events a slow reader may lag before its
// stream is ended (it can reconnect with ?since=).
const subscriberBuffer = 1024

// eventLog keeps the last eventBacklog events and fans new ones out.
type eventLog struct {
	mu   sync.Mutex
	seq  uint64
	ring []Event // oldest first
	subs map[*subscription]bool
}

type subscription struct {
	ch     chan Event
	closed bool
}

func (l *eventLog) publish(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	e.Seq = l.seq
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if len(l.ring) == eventBacklog {
		copy(l.ring, l.ring[1:])
		l.ring = l.ring[:eventBacklog-1]
	}
	l.ring = append(l.ring, e)
	for s := range l.subs {
		select {
		case s.ch <- e:
		default:
			// Too slow: end its stream rather than block the lifecycle.
			s.closed = true
			close(s.ch)
			delete(l.subs, s)
		}
	}
}

// Events subscribes to lifecycle events. With a non-zero since, the
// events kept since then (the last 4096 at most) come first, in order;
// then every new event. The channel closes when cancel is called or when
// the reader falls more than 1024 events behind.
func (m *Manager) Events(since time.Time) (backlog []Event, events <-chan Event, cancel func()) {
	l := &m.events
	l.mu.Lock()
	defer l.mu.Unlock()
	if !since.IsZero() {
		for _, e := range l.ring {
			if !e.Time.Before(since) {
				backlog = append(backlog, e)
			}
		}
	}
	s := &subscription{ch: make(chan Event, subscriberBuffer)}
	if l.subs == nil {
		l.subs = map[*subscription]bool{}
	}
	l.subs[s] = true
	return backlog, s.ch, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if !s.closed {
			s.closed = true
			close(s.ch)
			delete(l.subs, s)
		}
	}
}

func (m *Manager) emit(e Event) { m.events.publish(e) }
