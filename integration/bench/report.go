// Package bench compares tailgate with the floor (a client talking to the
// stdio server directly) and with two popular stdio→Streamable HTTP
// bridges, supergateway and mcp-proxy, on the same stdio server in one
// run. TestBench drives it (TAILGATE_BENCH=1, see `make bench`); this file
// holds the figures it collects and how they are reported: a markdown
// table with every figure also as a ratio to direct and to supergateway,
// because the machines it runs on are noisy and ratios from one run are
// what can be compared between runs.
package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Concurrencies are the numbers of tool calls kept in flight, on one
// session, by the throughput runs.
var Concurrencies = []int{1, 16, 64}

// The systems, by key, in the order they are reported.
const (
	Direct       = "direct"
	Tailnet      = "tailgate-tailnet"
	Loopback     = "tailgate-loopback"
	Supergateway = "supergateway"
	MCPProxy     = "mcp-proxy"
)

// Systems lists every system in report order.
var Systems = []string{Direct, Tailnet, Loopback, Supergateway, MCPProxy}

// Report is one bench run.
type Report struct {
	Started time.Time `json:"started"`
	// Machine describes where it ran (cores, CPU model, memory).
	Machine string `json:"machine"`
	// Versions of the runtimes and peers.
	Versions map[string]string `json:"versions"`
	// Command is how to run it again.
	Command string `json:"command"`
	// Wall is how long the whole run took.
	Wall Duration `json:"wall"`
	// PointDuration is how long each round of a throughput point ran,
	// Rounds how many rounds each point had.
	PointDuration Duration        `json:"pointDuration"`
	Rounds        int             `json:"rounds"`
	Servers       []*ServerResult `json:"servers"`
	// Notes are caveats found during the run (e.g. how a peer was run).
	Notes []string `json:"notes,omitempty"`
}

// ServerResult is every system's figures on one stdio server.
type ServerResult struct {
	// Server names the stdio server, Tool the tool the runs call.
	Server  string          `json:"server"`
	Tool    string          `json:"tool"`
	Systems []*SystemResult `json:"systems"`
}

// System returns the result of the system key, or nil.
func (s *ServerResult) System(key string) *SystemResult {
	for _, r := range s.Systems {
		if r.System == key {
			return r
		}
	}
	return nil
}

// SystemResult is one system's figures on one server. Pointers are
// figures that do not apply to every system (a pool, a proxy process).
type SystemResult struct {
	System     string        `json:"system"`
	Throughput []*Throughput `json:"throughput"`
	// Setup is the session set-up time, initialize until the first
	// tools/list answer: one session at a time, and Parallel at once.
	Setup1        *Setup `json:"setup1,omitempty"`
	SetupParallel *Setup `json:"setupParallel,omitempty"`
	// PoolSetup1 and PoolSetupParallel are the same with the target's
	// pool (tailgate only).
	PoolSetup1        *Setup `json:"poolSetup1,omitempty"`
	PoolSetupParallel *Setup `json:"poolSetupParallel,omitempty"`
	// RSSIdleMB and RSSSessionsMB are the proxy process's resident set,
	// its children excluded: idle, and with Sessions sessions open.
	RSSIdleMB     *float64 `json:"rssIdleMB,omitempty"`
	RSSSessionsMB *float64 `json:"rssSessionsMB,omitempty"`
	Sessions      int      `json:"sessions,omitempty"`
}

// Throughput is one throughput point: Concurrency calls in flight on one
// session for a fixed time.
type Throughput struct {
	Concurrency int     `json:"concurrency"`
	Calls       int     `json:"calls"`
	Seconds     float64 `json:"seconds"`
	CallsPerSec float64 `json:"callsPerSec"`
	P50Ms       float64 `json:"p50Ms"`
	P99Ms       float64 `json:"p99Ms"`
	// Rounds is how many times the point was run; it is the round with
	// the median calls/s, and Min and Max are the other rounds' spread.
	Rounds         int     `json:"rounds,omitempty"`
	MinCallsPerSec float64 `json:"minCallsPerSec,omitempty"`
	MaxCallsPerSec float64 `json:"maxCallsPerSec,omitempty"`
	// ProxyCPU is the CPU time (user+system) of the proxy process during
	// the point, its children excluded; 0 for direct. ClientCPU is the
	// bench process's own (the go-sdk client and, over the tailnet, the
	// client's tsnet node).
	ProxyCPU  Duration `json:"proxyCPU"`
	ClientCPU Duration `json:"clientCPU"`
}

// ProxyCPUPer1k is the proxy's CPU seconds per 1000 calls.
func (t *Throughput) ProxyCPUPer1k() float64 {
	return time.Duration(t.ProxyCPU).Seconds() * 1000 / float64(t.Calls)
}

// StackCPUPer1k is the CPU seconds per 1000 calls of everything but the
// stdio server: client and proxy.
func (t *Throughput) StackCPUPer1k() float64 {
	return (time.Duration(t.ProxyCPU) + time.Duration(t.ClientCPU)).Seconds() * 1000 / float64(t.Calls)
}

// At returns the point at concurrency c, or nil.
func (r *SystemResult) At(c int) *Throughput {
	for _, t := range r.Throughput {
		if t.Concurrency == c {
			return t
		}
	}
	return nil
}

// Setup is a set of session set-up times.
type Setup struct {
	Sessions int     `json:"sessions"`
	P50Ms    float64 `json:"p50Ms"`
	// MaxMs is the slowest; for sessions opened at once, the time until
	// the last was ready.
	MaxMs float64 `json:"maxMs"`
}

// NewSetup summarizes set-up times.
func NewSetup(times []time.Duration) *Setup {
	return &Setup{Sessions: len(times), P50Ms: ms(Percentile(times, 50)), MaxMs: ms(Percentile(times, 100))}
}

// Duration is a time.Duration that reads well in JSON.
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// Percentile returns the p-th percentile (nearest rank) of ds, which it
// sorts; 0 for none.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	rank := int(math.Ceil(p / 100 * float64(len(ds))))
	return ds[min(max(rank, 1), len(ds))-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// figure is one row of the report: how to read it from a system's
// result, and from the reference system's result when the ratio compares
// with a different figure (a pooled set-up is compared with the
// reference's cold one).
type figure struct {
	name string
	get  func(*SystemResult) (float64, bool)
	ref  func(*SystemResult) (float64, bool)
}

func figures() []figure {
	var fs []figure
	for _, c := range Concurrencies {
		fs = append(fs,
			figure{name: fmt.Sprintf("calls/s, c=%d", c), get: point(c, func(t *Throughput) float64 { return t.CallsPerSec })},
			figure{name: fmt.Sprintf("p50 ms, c=%d", c), get: point(c, func(t *Throughput) float64 { return t.P50Ms })},
			figure{name: fmt.Sprintf("p99 ms, c=%d", c), get: point(c, func(t *Throughput) float64 { return t.P99Ms })},
		)
	}
	setup1 := setup(func(r *SystemResult) *Setup { return r.Setup1 }, func(s *Setup) float64 { return s.P50Ms })
	setupN := setup(func(r *SystemResult) *Setup { return r.SetupParallel }, func(s *Setup) float64 { return s.P50Ms })
	setupNMax := setup(func(r *SystemResult) *Setup { return r.SetupParallel }, func(s *Setup) float64 { return s.MaxMs })
	fs = append(fs,
		figure{name: "set-up ms, one at a time (p50)", get: setup1},
		figure{name: "set-up ms, 20 at once (p50)", get: setupN},
		figure{name: "set-up ms, 20 at once (last)", get: setupNMax},
		figure{name: "set-up ms, pool, one at a time (p50)", get: setup(func(r *SystemResult) *Setup { return r.PoolSetup1 }, func(s *Setup) float64 { return s.P50Ms }), ref: setup1},
		figure{name: "set-up ms, pool, 20 at once (p50)", get: setup(func(r *SystemResult) *Setup { return r.PoolSetupParallel }, func(s *Setup) float64 { return s.P50Ms }), ref: setupN},
		figure{name: "set-up ms, pool, 20 at once (last)", get: setup(func(r *SystemResult) *Setup { return r.PoolSetupParallel }, func(s *Setup) float64 { return s.MaxMs }), ref: setupNMax},
		figure{name: "RSS MB, idle", get: optional(func(r *SystemResult) *float64 { return r.RSSIdleMB })},
		figure{name: "RSS MB, 100 sessions", get: optional(func(r *SystemResult) *float64 { return r.RSSSessionsMB })},
		figure{name: "CPU s/1k calls, proxy (c=16)", get: func(r *SystemResult) (float64, bool) {
			t := r.At(16)
			if t == nil || r.System == Direct {
				return 0, false
			}
			return t.ProxyCPUPer1k(), true
		}},
		figure{name: "CPU s/1k calls, client+proxy (c=16)", get: point(16, (*Throughput).StackCPUPer1k)},
	)
	return fs
}

func point(c int, f func(*Throughput) float64) func(*SystemResult) (float64, bool) {
	return func(r *SystemResult) (float64, bool) {
		if t := r.At(c); t != nil {
			return f(t), true
		}
		return 0, false
	}
}

func setup(which func(*SystemResult) *Setup, f func(*Setup) float64) func(*SystemResult) (float64, bool) {
	return func(r *SystemResult) (float64, bool) {
		if s := which(r); s != nil {
			return f(s), true
		}
		return 0, false
	}
}

func optional(f func(*SystemResult) *float64) func(*SystemResult) (float64, bool) {
	return func(r *SystemResult) (float64, bool) {
		if v := f(r); v != nil {
			return *v, true
		}
		return 0, false
	}
}

// WriteMarkdown writes the report: for each server, the figures, then
// the same figures divided by direct's and by supergateway's.
func (rep *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Run %s on %s.\n\n", rep.Started.UTC().Format(time.RFC3339), rep.Machine)
	if len(rep.Versions) > 0 {
		keys := make([]string, 0, len(rep.Versions))
		for k := range rep.Versions {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var vs []string
		for _, k := range keys {
			vs = append(vs, k+" "+rep.Versions[k])
		}
		fmt.Fprintf(&b, "Versions: %s.\n\n", strings.Join(vs, ", "))
	}
	fmt.Fprintf(&b, "Command: `%s` (%v in all); each throughput point is the median of %d rounds of %v on one session.\n\n", rep.Command, time.Duration(rep.Wall).Round(time.Second), rep.Rounds, time.Duration(rep.PointDuration))
	for _, s := range rep.Servers {
		fmt.Fprintf(&b, "### %s (tool %s)\n\n", s.Server, s.Tool)
		writeTable(&b, s, nil)
		for _, ref := range []string{Direct, Supergateway} {
			if r := s.System(ref); r != nil {
				fmt.Fprintf(&b, "\nRatio to %s (system ÷ %s; above 1 is more calls/s, or more time, memory or CPU):\n\n", ref, ref)
				writeTable(&b, s, r)
			}
		}
		b.WriteString("\n")
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeTable writes the figures of s, or, with a reference system, each
// figure divided by the reference's.
func writeTable(b *strings.Builder, s *ServerResult, ref *SystemResult) {
	b.WriteString("| figure |")
	for _, r := range s.Systems {
		fmt.Fprintf(b, " %s |", r.System)
	}
	b.WriteString("\n|---|")
	for range s.Systems {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, f := range figures() {
		var cells []string
		some := false
		for _, r := range s.Systems {
			v, ok := f.get(r)
			if !ok {
				cells = append(cells, "—")
				continue
			}
			if ref == nil {
				cells = append(cells, Sig(v))
				some = true
				continue
			}
			refGet := f.get
			if f.ref != nil {
				refGet = f.ref
			}
			rv, ok := refGet(ref)
			if !ok || rv == 0 {
				cells = append(cells, "—")
				continue
			}
			cells = append(cells, fmt.Sprintf("%.2f", v/rv))
			some = true
		}
		if some {
			fmt.Fprintf(b, "| %s | %s |\n", f.name, strings.Join(cells, " | "))
		}
	}
}

// Sig formats v with three significant digits, without exponent.
func Sig(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		digits := 2 - int(math.Floor(math.Log10(a)))
		return strconv.FormatFloat(v, 'f', digits, 64)
	}
}
