// Package members caches the member lists of groups, so that a group send,
// a group sync and a group message's fan-out need not query the store
// each.
//
// An entry lives for Config.TTL after its load: a change made through
// another process (another logic replica; logic, for a job) is seen at the
// latest when the entry expires, and at once where the processes share
// change events (RedisEvents). A change made through the process that
// holds the cache takes effect at once when it calls Invalidate after the
// store change. Concurrent misses of one group share one load; a failed
// load is not cached; entries are evicted least recently used beyond
// Config.MaxGroups groups or Config.MaxMembers members in all.
package members

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/hubuim/hubuim/internal/config"
)

// Defaults of Config.
const (
	// DefaultTTL is how long a loaded member list is used: the bound on how
	// late a change made through another process is seen.
	DefaultTTL = 2 * time.Second
	// DefaultMaxGroups bounds the cached groups.
	DefaultMaxGroups = 10000
	// DefaultMaxMembers bounds the cached members of all groups together
	// (8 bytes each: 8 MiB); a larger group is never cached.
	DefaultMaxMembers = 1 << 20
)

// Config configures a Cache. The zero value is the default.
type Config struct {
	// TTL is how long a loaded member list is used. Default DefaultTTL
	// (2s); negative disables the cache (every lookup goes to the store).
	// A member removed through another process may still send, sync and
	// receive for up to TTL; one added through another process receives
	// live pushes at the latest after TTL.
	TTL time.Duration `yaml:"ttl"`
	// MaxGroups bounds the cached groups. Default DefaultMaxGroups (10000).
	MaxGroups int `yaml:"max_groups"`
	// MaxMembers bounds the cached members of all groups together; a group
	// with more members is not cached. Default DefaultMaxMembers (1048576).
	MaxMembers int `yaml:"max_members"`
}

// Enabled reports whether cfg asks for a cache (TTL not negative).
func (cfg Config) Enabled() bool { return cfg.TTL >= 0 }

// Validate checks cfg; errors name the field (prefix, e.g.
// "im.member_cache.", is prepended).
func (cfg Config) Validate(prefix string) error {
	switch {
	case cfg.MaxGroups < 0:
		return config.Errorf(prefix+"max_groups", "must not be negative, got %d", cfg.MaxGroups)
	case cfg.MaxMembers < 0:
		return config.Errorf(prefix+"max_members", "must not be negative, got %d", cfg.MaxMembers)
	}
	return nil
}

// Loader loads the members of a group in ascending order (a store's
// GroupStore.Members). Errors, store.ErrNotFound included, are returned to
// the caller and never cached.
type Loader interface {
	Members(ctx context.Context, groupID int64) ([]int64, error)
}

// ErrDisabled is returned by New for a Config whose TTL is negative.
var ErrDisabled = errors.New("members: cache disabled (negative ttl)")

// Cache is a bounded, expiring cache of member lists in front of a Loader.
// It is safe for concurrent use.
type Cache struct {
	cfg    Config
	loader Loader
	m      *Metrics
	now    func() time.Time

	mu      sync.Mutex
	entries map[int64]*entry
	lru     entry // sentinel: lru.next is the most recently used
	total   int   // members in entries
	flights map[int64]*flight

	onWait func() // test hook: a caller is about to wait on a load
}

type entry struct {
	group      int64
	members    []int64
	expires    time.Time
	prev, next *entry
}

// flight is one load in progress; the callers that missed while it runs
// wait for it.
type flight struct {
	done    chan struct{}
	members []int64
	err     error
	stale   bool // invalidated while loading: not stored
}

// New returns a cache over loader, counted in m (nil: not measured). It
// returns ErrDisabled when cfg disables the cache: the caller then uses
// loader directly.
func New(cfg Config, loader Loader, m *Metrics) (*Cache, error) {
	if loader == nil {
		return nil, errors.New("members: cache needs a loader")
	}
	if err := cfg.Validate(""); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, ErrDisabled
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.MaxGroups == 0 {
		cfg.MaxGroups = DefaultMaxGroups
	}
	if cfg.MaxMembers == 0 {
		cfg.MaxMembers = DefaultMaxMembers
	}
	c := &Cache{cfg: cfg, loader: loader, m: m, now: time.Now, entries: make(map[int64]*entry), flights: make(map[int64]*flight)}
	c.lru.next, c.lru.prev = &c.lru, &c.lru
	return c, nil
}

// Config returns the configuration in use, defaults filled in.
func (c *Cache) Config() Config { return c.cfg }

// Members returns the members of a group in ascending order, from the
// cache when a fresh entry is there. The slice is shared: callers must not
// modify it.
func (c *Cache) Members(ctx context.Context, groupID int64) ([]int64, error) {
	for {
		c.mu.Lock()
		if e := c.entries[groupID]; e != nil {
			if c.now().Before(e.expires) {
				c.unlink(e)
				c.pushFront(e)
				m := e.members
				c.mu.Unlock()
				c.m.hit()
				return m, nil
			}
			c.remove(e)
		}
		if f := c.flights[groupID]; f != nil {
			c.mu.Unlock()
			if c.onWait != nil {
				c.onWait()
			}
			c.m.wait()
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			// The loading caller's context ended, not ours: load again.
			if isContextErr(f.err) && ctx.Err() == nil {
				continue
			}
			return f.members, f.err
		}
		f := &flight{done: make(chan struct{})}
		c.flights[groupID] = f
		c.mu.Unlock()
		c.m.load()
		return c.load(ctx, groupID, f)
	}
}

// IsMember reports whether user is a member of a group, from the cached
// member list. It returns the Loader's error (store.ErrNotFound for a
// group that does not exist).
func (c *Cache) IsMember(ctx context.Context, groupID, user int64) (bool, error) {
	m, err := c.Members(ctx, groupID)
	if err != nil {
		return false, err
	}
	_, ok := slices.BinarySearch(m, user)
	return ok, nil
}

// Invalidate drops the entry of a group, and makes a load in progress not
// store its result (it may have read the store before the change). Call it
// after every change of the group's members made through this process.
func (c *Cache) Invalidate(groupID int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[groupID]; e != nil {
		c.remove(e)
	}
	if f := c.flights[groupID]; f != nil {
		f.stale = true
		delete(c.flights, groupID)
	}
}

// InvalidateAll drops every entry and makes the loads in progress not
// store their results: for when changes may have been missed (a process
// that lost its subscription to change events).
func (c *Cache) InvalidateAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries {
		c.remove(e)
	}
	for id, f := range c.flights {
		f.stale = true
		delete(c.flights, id)
	}
}

// Len returns the number of cached groups and of their members.
func (c *Cache) Len() (groups, members int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries), c.total
}

func (c *Cache) load(ctx context.Context, groupID int64, f *flight) ([]int64, error) {
	m, err := c.loader.Members(ctx, groupID)
	if err == nil && !slices.IsSorted(m) {
		m = slices.Clone(m)
		slices.Sort(m)
	}
	c.mu.Lock()
	f.members, f.err = m, err
	if c.flights[groupID] == f {
		delete(c.flights, groupID)
	}
	if err == nil && !f.stale {
		c.insert(groupID, m)
	}
	c.mu.Unlock()
	close(f.done)
	return m, err
}

// insert caches m, evicting the least recently used entries beyond the
// bounds. c.mu is held.
func (c *Cache) insert(groupID int64, m []int64) {
	if len(m) > c.cfg.MaxMembers {
		return
	}
	if e := c.entries[groupID]; e != nil {
		c.remove(e)
	}
	for len(c.entries) >= c.cfg.MaxGroups || c.total+len(m) > c.cfg.MaxMembers {
		c.remove(c.lru.prev)
	}
	e := &entry{group: groupID, members: m, expires: c.now().Add(c.cfg.TTL)}
	c.entries[groupID] = e
	c.total += len(m)
	c.pushFront(e)
}

func (c *Cache) remove(e *entry) {
	c.unlink(e)
	delete(c.entries, e.group)
	c.total -= len(e.members)
}

func (c *Cache) unlink(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (c *Cache) pushFront(e *entry) {
	e.prev, e.next = &c.lru, c.lru.next
	c.lru.next.prev = e
	c.lru.next = e
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
