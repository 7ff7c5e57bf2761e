package store

// A small cache of event payloads, so that a fan-out to many webhooks reads
// the payload once.

type cachedEvent struct {
	seq     int64
	id, typ string
	payload []byte
}

type payloadCache struct {
	max, size int
	m         map[int64]*cachedEvent
	order     []int64 // insertion order, for eviction
}

func newPayloadCache(max int) *payloadCache {
	return &payloadCache{max: max, m: make(map[int64]*cachedEvent)}
}

func (c *payloadCache) get(seq int64) *cachedEvent { return c.m[seq] }

func (c *payloadCache) put(ev *cachedEvent) {
	c.m[ev.seq] = ev
	c.order = append(c.order, ev.seq)
	c.size += len(ev.payload) + len(ev.id) + 64
	for c.size > c.max && len(c.order) > 0 {
		old := c.order[0]
		c.order = c.order[1:]
		if e := c.m[old]; e != nil {
			c.size -= len(e.payload) + len(e.id) + 64
			delete(c.m, old)
		}
	}
	if len(c.order) > 4096 && cap(c.order) > 2*len(c.order) {
		c.order = append([]int64(nil), c.order...)
	}
}

func (c *payloadCache) reset() {
	c.m = make(map[int64]*cachedEvent)
	c.order = nil
	c.size = 0
}
