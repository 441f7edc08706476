package mcpstdio

// HearWaits makes b tell ch of each reader that starts to wait for room.
func HearWaits(b *Buffers, ch chan<- struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.waiting = ch
}
