package mcpstdio

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
)

// User is the account a target's children run as (Target.User), resolved
// from the user database when the config is loaded.
type User struct {
	// Name is how the config named it ("mcp-tools", or "65534").
	Name string
	Uid  uint32
	Gid  uint32
	// Groups are its supplementary groups.
	Groups []uint32
	// Home is its home directory, the child's HOME; "/" if it has none.
	Home string
	// Login is its login name, the child's USER and LOGNAME; Name for a
	// uid the user database does not know.
	Login string
}

// LookupUser resolves name, a user name or a numeric uid, in the user
// database. A uid the database does not know runs with the same number as
// its group, no supplementary groups and HOME=/ (as a DynamicUser-style
// uid would).
func LookupUser(name string) (*User, error) {
	u, err := user.Lookup(name)
	if err != nil {
		id, perr := strconv.ParseUint(name, 10, 32)
		if perr != nil {
			return nil, err
		}
		if u, err = user.LookupId(name); err != nil {
			return &User{Name: name, Uid: uint32(id), Gid: uint32(id), Home: "/", Login: name}, nil
		}
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: gid %q: %w", name, u.Gid, err)
	}
	out := &User{Name: name, Uid: uint32(uid), Gid: uint32(gid), Home: u.HomeDir, Login: u.Username}
	if out.Home == "" {
		out.Home = "/"
	}
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil && uint32(n) != out.Gid {
				out.Groups = append(out.Groups, uint32(n))
			}
		}
	}
	return out, nil
}

// Allowed reports why this process may not start children as u: changing
// uid takes root (tailgate does not look for CAP_SETUID and CAP_SETGID
// one by one).
func (u *User) Allowed() error {
	if euid := os.Geteuid(); euid != 0 && uint32(euid) != u.Uid {
		return fmt.Errorf("stdio.user %q: tailgate runs as uid %d, and only root can start a child as another user", u.Name, euid)
	}
	return nil
}
