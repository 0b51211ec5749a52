package group

import (
	"context"
	"sync"
	"time"
)

// MemberCache answers membership for grabs from a per-group member set
// loaded once (and again after a while); a user not in it is asked of the
// group shard directly, so a new member is never refused.
type MemberCache struct {
	groups *Store
	mu     sync.RWMutex
	sets   map[int64]*memberSet
}

type memberSet struct {
	mu      sync.RWMutex
	loaded  time.Time
	users   map[int64]bool
	loading sync.Mutex // one reload at a time; the others wait for it
}

// reload reads the group's members again unless another caller just did,
// and reports whether user is among them.
func (ms *memberSet) reload(ctx context.Context, groups *Store, groupID, user int64) (bool, error) {
	ms.loading.Lock()
	defer ms.loading.Unlock()
	ms.mu.RLock()
	fresh := time.Since(ms.loaded) < 30*time.Second
	in := ms.users[user]
	ms.mu.RUnlock()
	if fresh {
		return in, nil
	}
	users := map[int64]bool{}
	after := int64(0)
	for {
		page, err := groups.Members(ctx, groupID, after, 1000)
		if err != nil {
			return false, err
		}
		for _, mb := range page {
			users[mb.User] = true
		}
		if len(page) < 1000 {
			break
		}
		after = page[len(page)-1].User
	}
	ms.mu.Lock()
	ms.users, ms.loaded = users, time.Now()
	ms.mu.Unlock()
	return users[user], nil
}

// Evict forgets member sets loaded longer ago than maxAge.
func (m *MemberCache) Evict(maxAge time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, ms := range m.sets {
		ms.mu.RLock()
		old := time.Since(ms.loaded) > maxAge
		ms.mu.RUnlock()
		if old {
			delete(m.sets, id)
		}
	}
}

// NewMemberCache answers membership from g, caching each group's members.
func NewMemberCache(g *Store) *MemberCache {
	return &MemberCache{groups: g, sets: map[int64]*memberSet{}}
}

// IsMember reports whether user is a member of the group, from the cache
// when it knows the user, else from the store.
func (m *MemberCache) IsMember(ctx context.Context, groupID, user int64) (bool, error) {
	m.mu.RLock()
	ms, ok := m.sets[groupID]
	m.mu.RUnlock()
	if !ok {
		m.mu.Lock()
		if ms, ok = m.sets[groupID]; !ok {
			ms = &memberSet{}
			m.sets[groupID] = ms
		}
		m.mu.Unlock()
	}
	ms.mu.RLock()
	fresh := time.Since(ms.loaded) < 30*time.Second
	in := ms.users[user]
	ms.mu.RUnlock()
	if in && fresh {
		return true, nil
	}
	if !fresh {
		in, err := ms.reload(ctx, m.groups, groupID, user)
		if err != nil || in {
			return in, err
		}
	}
	in, err := m.groups.IsMember(ctx, groupID, user)
	if in {
		ms.mu.Lock()
		ms.users[user] = true
		ms.mu.Unlock()
	}
	return in, err
}
