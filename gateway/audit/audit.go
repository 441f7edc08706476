// Package audit is tailgate's audit trail: one JSON line per decision
// (a connection admitted or refused, an HTTP request authorized, an MCP
// call judged, a list filtered), each chained to the one before by hash,
// so that a line removed, inserted or edited is found by Verify.
//
// A record is written (to the operating system: a crash of tailgate
// loses none) before the answer it decides leaves. The file is rotated
// by size and age (lumberjack); the chain goes on across files, and
// across restarts (Open reads the last record's hash).
package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"gopkg.in/natefinch/lumberjack.v2"
)

// Record is one decision. Fields a decision does not have are omitted.
type Record struct {
	Time    time.Time `json:"time"`
	Gateway string    `json:"gateway,omitempty"`
	// Event is "connection", "http", "mcp.call" or "mcp.list".
	Event  string `json:"event"`
	Caller Caller `json:"caller"`
	Route  string `json:"route,omitempty"`
	Target string `json:"target,omitempty"`
	Method string `json:"method,omitempty"`
	// Name is the tool, prompt or resource URI the call names; Kind says
	// which.
	Kind string `json:"kind,omitempty"`
	Name string `json:"name,omitempty"`
	// Decision is "allow" or "deny"; Rule the config path of the rule
	// that decided ("" when no rule did: the default).
	Decision string `json:"decision"`
	Rule     string `json:"rule,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Outcome is how the call ended (ok, error, denied, cancelled, …),
	// Duration how long it took, in milliseconds.
	Outcome  string  `json:"outcome,omitempty"`
	Duration float64 `json:"duration_ms,omitempty"`
	Session  string  `json:"session,omitempty"`
	TraceID  string  `json:"trace_id,omitempty"`
	// ArgsDigest is the SHA-256 of the call's arguments as sent; Args the
	// arguments themselves, where the config asks, named fields redacted.
	ArgsDigest string          `json:"args_sha256,omitempty"`
	Args       json.RawMessage `json:"args,omitempty"`
	// Filtered is how many items of a list policy removed.
	Filtered int `json:"filtered,omitempty"`
	// Prev is the hash of the record before (all zeros for the first);
	// Hash is this one's: SHA-256 of Prev and the record without Hash.
	Prev string `json:"prev"`
	Hash string `json:"hash,omitempty"`
}

// Caller is who the decision was about.
type Caller struct {
	Login   string   `json:"login,omitempty"`
	Node    string   `json:"node,omitempty"`
	NodeID  string   `json:"node_id,omitempty"`
	Tags    []string `json:"tags,omitempty"`
	Address string   `json:"address,omitempty"`
}

// genesis is the Prev of a chain's first record.
var genesis = hex.EncodeToString(make([]byte, sha256.Size))

// Options configure a Log.
type Options struct {
	// File is where records go, rotated at MaxSizeMB (default 100),
	// keeping MaxBackups old files (default: all) for MaxAgeDays
	// (default: for ever). "" writes none to a file.
	File       string
	MaxSizeMB  int
	MaxAgeDays int
	MaxBackups int
	// Stdout also writes each record to Stdout (default os.Stdout when
	// set).
	Stdout   bool
	StdoutTo io.Writer
	// Gateway names the gateway node in each record.
	Gateway string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Log is an audit trail being written.
type Log struct {
	mu      sync.Mutex
	opts    Options
	file    io.WriteCloser
	stdout  io.Writer
	prev    string
	gateway string
}

// Open starts the trail opts describe; with a file that has records
// already, the chain goes on from its last.
func Open(opts Options) (*Log, error) {
	l := &Log{opts: opts, prev: genesis, gateway: opts.Gateway}
	if opts.Now == nil {
		l.opts.Now = time.Now
	}
	if opts.File != "" {
		last, err := lastHash(opts.File)
		if err != nil {
			return nil, fmt.Errorf("audit: %s: %w", opts.File, err)
		}
		if last != "" {
			l.prev = last
		}
		size := opts.MaxSizeMB
		if size <= 0 {
			size = 100
		}
		l.file = &lumberjack.Logger{Filename: opts.File, MaxSize: size, MaxAge: opts.MaxAgeDays, MaxBackups: opts.MaxBackups}
		// The first write creates the file 0600 (lumberjack's mode for a
		// new file); check now that it can.
		if _, err := l.file.Write(nil); err != nil {
			return nil, fmt.Errorf("audit: %s: %w", opts.File, err)
		}
	}
	if opts.Stdout {
		l.stdout = opts.StdoutTo
		if l.stdout == nil {
			l.stdout = os.Stdout
		}
	}
	return l, nil
}

// SetGateway names the gateway node in the records from now on.
func (l *Log) SetGateway(name string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gateway = name
}

// Write chains r to the trail and writes it. It returns once the record
// is with the operating system.
func (l *Log) Write(r Record) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.Time.IsZero() {
		r.Time = l.opts.Now().UTC()
	}
	if r.Gateway == "" {
		r.Gateway = l.gateway
	}
	r.Prev, r.Hash = l.prev, ""
	line, err := sealed(&r)
	if err != nil {
		return err
	}
	if l.file != nil {
		if _, err := l.file.Write(line); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	if l.stdout != nil {
		if _, err := l.stdout.Write(line); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	l.prev = r.Hash
	return nil
}

// Close closes the file.
func (l *Log) Close() error {
	if l == nil || l.file == nil {
		return nil
	}
	return l.file.Close()
}

// sealed sets r.Hash and returns r as its line.
func sealed(r *Record) ([]byte, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	r.Hash = digest(r.Prev, body)
	line, err := json.Marshal(r)
	return append(line, '\n'), err
}

// digest is the hash of a record: of its Prev and its JSON without Hash.
func digest(prev string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(prev))
	h.Write([]byte{'\n'})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// lastHash is the hash of the last record in file, "" if it has none.
func lastHash(file string) (string, error) {
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	var last string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			last = sc.Text()
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if last == "" {
		return "", nil
	}
	var r Record
	if err := json.Unmarshal([]byte(last), &r); err != nil || r.Hash == "" {
		return "", fmt.Errorf("its last line is not an audit record; move the file away to start a new trail")
	}
	return r.Hash, nil
}

// maxLine bounds a record's line (a call's arguments, where kept).
const maxLine = 16 << 20

// Result is what Verify found.
type Result struct {
	// Records is how many records were read; First and Last are the
	// Prev of the first and the Hash of the last (to link files).
	Records     int
	First, Last string
}

// Verify reads a trail from r and checks each record's hash, and that
// each follows the one before: a line removed, inserted or edited is an
// error naming its line. prev is the hash the first record must follow
// ("" accepts any, as for the first file of a set).
func Verify(r io.Reader, prev string) (Result, error) {
	var res Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	line := 0
	for sc.Scan() {
		line++
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		var rec Record
		if err := json.Unmarshal(raw, &rec); err != nil {
			return res, fmt.Errorf("line %d: not an audit record: %v", line, err)
		}
		// The hash is the line's last member: the record it seals is the
		// line without it, as written (fields this version does not know
		// included).
		want := rec.Hash
		tail := `,"hash":"` + want + `"}`
		if len(want) != 2*sha256.Size || !bytes.HasSuffix(raw, []byte(tail)) {
			return res, fmt.Errorf("line %d: the record has no hash where it belongs", line)
		}
		body := append(raw[:len(raw)-len(tail):len(raw)-len(tail)], '}')
		switch {
		case digest(rec.Prev, body) != want:
			return res, fmt.Errorf("line %d: the record was changed (its hash does not match)", line)
		case res.Records == 0 && prev != "" && rec.Prev != prev:
			return res, fmt.Errorf("line %d: does not follow the file before (records were removed between them)", line)
		case res.Records > 0 && rec.Prev != res.Last:
			return res, fmt.Errorf("line %d: does not follow line before it (a record was removed or inserted)", line)
		}
		if res.Records == 0 {
			res.First = rec.Prev
		}
		res.Records++
		res.Last = want
	}
	return res, sc.Err()
}
