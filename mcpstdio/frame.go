package mcpstdio

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"time"

	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"
)

// lineReader reads a stdio child's output a line at a time, charging
// each line to the link's share of the gateway's buffers (readLine); a
// line is at most maxMsg bytes.
type lineReader struct {
	mem      *buffers.Share
	patience time.Duration
	maxMsg   int
}

// readLines reads stdout until it closes, handing each line to handle.
// It returns why it stopped: nil at the end of the output, else a line
// too long or held back past patience.
func (c lineReader) readLines(stdout io.Reader, exited <-chan struct{}, handle func([]byte, *buffers.Charge)) error {
	br := bufio.NewReaderSize(stdout, 64<<10)
	var err error
	for {
		var line []byte
		held := c.mem.Charge(0, false)
		line, err = c.readLine(br, exited, &held)
		if len(line) > 0 && (err == nil || errors.Is(err, io.EOF)) {
			handle(bytes.TrimSpace(line), &held)
		}
		held.ReaderDone()
		if err != nil {
			break
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// readLine reads one line of the child's, charging its bytes to the
// link's share of the gateway's buffers as it grows (takeWaiting). While
// there is no room (the clients have not taken what the child said
// before), the line is not read on: the child waits on its own output,
// for no longer than the link's patience. A line longer than the read
// buffer is read into a buffer of its own, which the answer made of it
// keeps.
func (c lineReader) readLine(br *bufio.Reader, exited <-chan struct{}, held *buffers.Charge) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	var lr buffers.LineRead
	if !errors.Is(err, bufio.ErrBufferFull) {
		if c.tooLong(line) {
			return nil, &buffers.TooLargeError{Limit: c.maxMsg}
		}
		if werr := c.mem.TakeWaiting(int64(len(line)), &lr, c.patience, exited); werr != nil {
			return nil, werr
		}
		held.Grow(int64(len(line)))
		return line, err
	}
	lr.Seq = c.mem.StartLine()
	defer c.mem.EndLine(lr.Seq)
	var long []byte
	for {
		if len(long)+len(line) > cap(long) {
			grow := max(len(long)+len(line), 2*cap(long)) - cap(long)
			grow = min(grow, c.maxMsg+1-cap(long))
			// maxMsg bytes and a newline fit; tooLong checks the end.
			if len(long)+len(line) > c.maxMsg+1 || grow <= 0 {
				return nil, &buffers.TooLargeError{Limit: c.maxMsg}
			}
			if werr := c.mem.TakeWaiting(int64(grow), &lr, c.patience, exited); werr != nil {
				return nil, werr
			}
			held.Grow(int64(grow))
			nb := make([]byte, len(long), cap(long)+grow)
			copy(nb, long)
			long = nb
		}
		long = append(long, line...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			if c.tooLong(long) {
				return nil, &buffers.TooLargeError{Limit: c.maxMsg}
			}
			held.Owns = true
			return long, err
		}
		line, err = br.ReadSlice('\n')
	}
}

// tooLong reports whether line, its newline aside, is longer than a
// message may be.
func (c lineReader) tooLong(line []byte) bool {
	n := len(line)
	if n > 0 && line[n-1] == '\n' {
		n--
	}
	return n > c.maxMsg
}
