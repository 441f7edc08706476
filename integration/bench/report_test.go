package bench

import (
	"bytes"
	"image/png"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(vs ...int) []time.Duration {
		ds := make([]time.Duration, len(vs))
		for i, v := range vs {
			ds[i] = time.Duration(v) * time.Millisecond
		}
		return ds
	}
	tests := []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(5, 1, 4, 2, 3), 50, 3 * time.Millisecond},
		{ms(5, 1, 4, 2, 3), 100, 5 * time.Millisecond},
		{ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), 99, 10 * time.Millisecond},
		{ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), 10, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := Percentile(tt.in, tt.p); got != tt.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", tt.in, tt.p, got, tt.want)
		}
	}
}

func TestSig(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 12345.6: "12346", 123.4: "123", 12.34: "12.3", 1.234: "1.23", 0.1234: "0.123", 0.001234: "0.00123"} {
		if got := Sig(v); got != want {
			t.Errorf("Sig(%v) = %q, want %q", v, got, want)
		}
	}
}

// sampleReport is a run with made-up figures: direct twice as fast as
// tailgate, tailgate four times supergateway.
func sampleReport() *Report {
	f := func(v float64) *float64 { return &v }
	point := func(c int, rate float64) *Throughput {
		return &Throughput{Concurrency: c, Calls: 1000, Seconds: 1000 / rate, CallsPerSec: rate, P50Ms: 1000 / rate, P99Ms: 2000 / rate,
			ProxyCPU: Duration(500 * time.Millisecond), ClientCPU: Duration(100 * time.Millisecond)}
	}
	system := func(key string, rate float64) *SystemResult {
		r := &SystemResult{System: key, Setup1: &Setup{Sessions: 8, P50Ms: 400, MaxMs: 500}, SetupParallel: &Setup{Sessions: 20, P50Ms: 4000, MaxMs: 5000}}
		for _, c := range Concurrencies {
			r.Throughput = append(r.Throughput, point(c, rate*float64(c)))
		}
		if key != Direct {
			r.RSSIdleMB, r.RSSSessionsMB, r.Sessions = f(40), f(100), 100
		}
		return r
	}
	tg := system(Tailnet, 500)
	tg.PoolSetup1, tg.PoolSetupParallel = &Setup{Sessions: 8, P50Ms: 20, MaxMs: 30}, &Setup{Sessions: 20, P50Ms: 200, MaxMs: 250}
	return &Report{
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Machine: "2 cores", Command: "make bench",
		Versions: map[string]string{"go": "go1.26.8"}, PointDuration: Duration(2 * time.Second), Wall: Duration(time.Minute),
		Servers: []*ServerResult{{Server: "demo server (Go)", Tool: "echo", Systems: []*SystemResult{
			system(Direct, 1000), tg, system(Supergateway, 125),
		}}},
	}
}

func TestWriteMarkdown(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"| figure | direct | tailgate-tailnet | supergateway |",
		"| calls/s, c=16 | 16000 | 8000 | 2000 |",
		// Ratios to direct, then to supergateway.
		"| calls/s, c=16 | 1.00 | 0.50 | 0.12 |",
		"| calls/s, c=16 | 8.00 | 4.00 | 1.00 |",
		// A pooled set-up is compared with the reference's cold one.
		"| set-up ms, pool, one at a time (p50) | — | 20.0 | — |",
		"| set-up ms, pool, one at a time (p50) | — | 0.05 | — |",
		"| CPU s/1k calls, proxy (c=16) | — | 0.500 | 0.500 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	// Direct has no proxy: no ratio to it for memory, and no such row.
	ratios := md[strings.Index(md, "Ratio to direct"):strings.Index(md, "Ratio to supergateway")]
	if strings.Contains(ratios, "RSS") {
		t.Errorf("ratio to direct has an RSS row, but direct has no proxy:\n%s", ratios)
	}
}

func TestWriteChart(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteChart(&b); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatalf("chart is not a PNG: %v", err)
	}
	if r := img.Bounds(); r.Dx() < 500 || r.Dy() < 200 {
		t.Errorf("chart is %v", r)
	}
}
