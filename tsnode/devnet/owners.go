package devnet

import (
	"slices"
	"strings"
	"sync"

	"tailscale.com/tailcfg"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/key"
)

// owners makes testcontrol's nodes belong to whom Tailscale would have
// them belong: a tagged node to tagged-devices, a node named in
// Config.Logins to that login. testcontrol gives every node a user of its
// own and has no hook for choosing it, so owners
//
//   - adds the profiles of tagged-devices and of each login to the first
//     map response of every map stream (a node keeps every profile it was
//     ever sent, and the set is fixed when the tailnet starts), and
//   - when a node asks for its map, points the node at the right user
//     (Server.UpdateNode, which also tells every other node).
//
// UpdateNode writes the whole node back, so it must not race the control
// server's own writes of the node (endpoints, disco key), which happen
// while it handles a non-streaming map request: owners holds its lock
// across those requests.
type owners struct {
	ctl      *testcontrol.Server
	profiles []tailcfg.UserProfile
	byHost   map[string]tailcfg.UserID

	mu  sync.Mutex
	own map[key.NodePublic]tailcfg.UserID // a node's own testcontrol user
}

func (o *owners) init(ctl *testcontrol.Server, logins map[string]string) {
	o.ctl = ctl
	o.own = map[key.NodePublic]tailcfg.UserID{}
	o.byHost = map[string]tailcfg.UserID{}
	o.profiles = []tailcfg.UserProfile{{ID: taggedDevicesID, LoginName: TaggedDevices, DisplayName: "Tagged Devices"}}
	ids := map[string]tailcfg.UserID{}
	hosts := make([]string, 0, len(logins))
	for h := range logins {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	for _, h := range hosts {
		login := logins[h]
		id, ok := ids[login]
		if !ok {
			id = firstLoginID + tailcfg.UserID(len(ids))
			ids[login] = id
			o.profiles = append(o.profiles, tailcfg.UserProfile{ID: id, LoginName: login, DisplayName: displayName(login)})
		}
		o.byHost[h] = id
	}

	prevFirst := ctl.ModifyFirstMapResponse
	ctl.ModifyFirstMapResponse = func(res *tailcfg.MapResponse, req *tailcfg.MapRequest) {
		if prevFirst != nil {
			prevFirst(res, req)
		}
		res.UserProfiles = append(res.UserProfiles, o.profiles...)
	}
	prevHold := ctl.HoldMapRequest
	ctl.HoldMapRequest = func(req *tailcfg.MapRequest) func() {
		var done func()
		if prevHold != nil {
			done = prevHold(req)
		}
		o.mu.Lock()
		o.assign(req)
		if req.Stream && req.Version >= 68 {
			// A modern streaming poll writes nothing of the node.
			o.mu.Unlock()
			return done
		}
		return func() {
			o.mu.Unlock()
			if done != nil {
				done()
			}
		}
	}
}

// assign points the requesting node at its user. o.mu is held.
func (o *owners) assign(req *tailcfg.MapRequest) {
	n := o.ctl.Node(req.NodeKey)
	if n == nil {
		return
	}
	own, ok := o.own[n.Key]
	if !ok {
		own = n.User
		o.own[n.Key] = own
	}
	want := own
	hostname := ""
	if n.Hostinfo.Valid() {
		hostname = n.Hostinfo.Hostname()
	}
	if req.Hostinfo != nil && req.Hostinfo.Hostname != "" {
		hostname = req.Hostinfo.Hostname
	}
	if id, ok := o.byHost[hostname]; ok {
		want = id
	}
	if len(n.Tags) > 0 {
		want = taggedDevicesID
	}
	if n.User != want {
		n.User = want
		o.ctl.UpdateNode(n)
	}
}

// displayName is the part of a login before the "@", as a stand-in for a
// person's name.
func displayName(login string) string {
	name, _, _ := strings.Cut(login, "@")
	return name
}
