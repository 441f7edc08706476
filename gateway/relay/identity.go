package relay

import ()

// setIdentity tells c's target, if it is told identities, that its
// requests from now on are identity's.
func (c *child) setIdentity(identity Identity) {
	if l, ok := c.conn.(IdentitySetter); ok {
		l.SetIdentity(identity)
	}
}

// TellsIdentity reports whether any of the session's targets is told its
// caller's identity (remote identity headers): then each request's
// ForwardOptions.Identity matters.
func (s *Session) TellsIdentity() bool {
	for _, c := range s.children {
		if c.target.Remote != nil && c.target.Remote.TellsIdentity {
			return true
		}
	}
	return false
}
