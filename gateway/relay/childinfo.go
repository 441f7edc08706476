package relay

import "time"

// ChildInfo is one of a session's children as a status page shows it:
// which target it serves, its process and how long it has run. It is a
// copy: reading it touches nothing of the child.
type ChildInfo struct {
	// Target is the target's name.
	Target string
	// PID is the child process's id; 0 for a remote target, which has a
	// link and no process.
	PID int
	// Started is when the process started; zero for a remote target.
	Started time.Time
}

// Children are the session's children, in target order: a stdio target's
// process, a remote target's link.
func (s *Session) Children() []ChildInfo {
	out := make([]ChildInfo, 0, len(s.children))
	for _, c := range s.children {
		ci := ChildInfo{Target: c.target.Name}
		if c.proc != nil {
			ci.PID, ci.Started = c.proc.Pid(), c.proc.Started()
		}
		out = append(out, ci)
	}
	return out
}
