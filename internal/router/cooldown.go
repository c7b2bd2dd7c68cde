package router

import (
	"sync"
	"time"
)

// cooldowns tracks consecutive failures per provider+key+model and the time
// until which such a combination rests.
type cooldowns struct {
	mu sync.Mutex
	m  map[string]*coolState
}

type coolState struct {
	fails int
	until time.Time
}

func newCooldowns() *cooldowns { return &cooldowns{m: make(map[string]*coolState)} }

func coolKey(t Target, keyID string) string { return t.Provider + "\x00" + keyID + "\x00" + t.Model }

// cooling reports whether k rests at now, and until when.
func (c *cooldowns) cooling(k string, now time.Time) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.m[k]
	if !ok || !now.Before(s.until) {
		return time.Time{}, false
	}
	return s.until, true
}

// failure counts a failure of k. After `after` consecutive failures k rests
// for cool; a Retry-After rests it at least that long. It reports whether
// a cooldown started.
func (c *cooldowns) failure(k string, now time.Time, after int, cool, retryAfter time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.m[k]
	if !ok {
		s = &coolState{}
		c.m[k] = s
	}
	s.fails++
	started := false
	if s.fails >= after {
		s.fails = 0
		s.until = now.Add(cool)
		started = true
	}
	if retryAfter > 0 && now.Add(retryAfter).After(s.until) {
		s.until = now.Add(retryAfter)
	}
	return started
}

// success resets k's failure count.
func (c *cooldowns) success(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.m[k]; ok {
		s.fails = 0
	}
}
