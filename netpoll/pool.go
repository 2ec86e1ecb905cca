package netpoll

import "sync"

// runQueue is a FIFO of connections waiting for a goroutine of a fixed pool.
// A connection is in at most one runQueue at a time (Conn.sched guards it),
// so the queue never holds more entries than there are connections, and push
// never blocks: pollers and the wheel may call it freely.
type runQueue struct {
	mu     sync.Mutex
	cond   sync.Cond
	buf    []*Conn // ring
	head   int
	n      int
	closed bool
}

func newRunQueue() *runQueue {
	q := &runQueue{buf: make([]*Conn, 64)}
	q.cond.L = &q.mu
	return q
}

// push appends c and wakes one waiting goroutine.
func (q *runQueue) push(c *Conn) {
	q.mu.Lock()
	if q.n == len(q.buf) {
		nb := make([]*Conn, 2*len(q.buf))
		for i := range q.n {
			nb[i] = q.buf[(q.head+i)%len(q.buf)]
		}
		q.buf, q.head = nb, 0
	}
	q.buf[(q.head+q.n)%len(q.buf)] = c
	q.n++
	q.mu.Unlock()
	q.cond.Signal()
}

// pop waits for a connection; it returns nil once the queue is closed and
// empty.
func (q *runQueue) pop() *Conn {
	q.mu.Lock()
	for q.n == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.n == 0 {
		q.mu.Unlock()
		return nil
	}
	c := q.buf[q.head]
	q.buf[q.head] = nil
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	q.mu.Unlock()
	return c
}

// close makes pop return nil once the queue is empty.
func (q *runQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}
