package gateway

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are a Server's Prometheus metrics, in a registry of its own.
type metrics struct {
	reg *prometheus.Registry

	connections *prometheus.CounterVec   // port, outcome, rule
	unused      *prometheus.CounterVec   // port
	identify    prometheus.Histogram     // WhoIs (cached or not) per connection
	requests    *prometheus.CounterVec   // route, code
	calls       *prometheus.CounterVec   // route, method, target, tool, outcome
	callSeconds *prometheus.HistogramVec // route, method, target
	reloads     *prometheus.CounterVec   // outcome
	refused     *prometheus.CounterVec   // route, reason
	auditErrors prometheus.Counter       // audit records not written
	limited     *prometheus.CounterVec   // route, limit
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailgate_connections_total",
			Help: "Connections accepted or denied by frontendPolicies.networkAuthorization, by the deciding rule.",
		}, []string{"port", "outcome", "rule"}),
		unused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailgate_connections_unused_total",
			Help: "Admitted connections closed before a request came whole on them: headers not read within readHeaderTimeout (10s), or the client left.",
		}, []string{"port"}),
		identify: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tailgate_whois_duration_seconds",
			Help:    "Time to resolve a connection's peer identity (WhoIs, cached per peer until the netmap changes).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5, 1, 5},
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailgate_http_requests_total",
			Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailgate_mcp_calls_total",
			Help: "MCP requests by route, method, target, tool (or prompt) and outcome (ok, error, tool_error, denied, limited, cancelled, client_gone, write_error).",
		}, []string{"route", "method", "target", "tool", "outcome"}),
		callSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tailgate_mcp_call_duration_seconds",
			Help:    "MCP request latency at the gateway, by route, method and target.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14),
		}, []string{"route", "method", "target"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailgate_config_reloads_total",
			Help: "Config reloads by outcome (ok, invalid).",
		}, []string{"outcome"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailgate_messages_refused_total",
			Help: "Client messages refused before forwarding, by route and reason (malformed, batch, envelope, ambiguous, key, encoding, depth, token).",
		}, []string{"route", "reason"}),
		auditErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailgate_audit_write_errors_total",
			Help: "Audit records that could not be written to the trail (config.audit); each is also logged.",
		}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailgate_limited_total",
			Help: "MCP requests refused by a limit (policies.localRateLimit), by route and the limit's config path.",
		}, []string{"route", "limit"}),
	}
	m.reg.MustRegister(m.connections, m.unused, m.identify, m.requests, m.calls, m.callSeconds, m.reloads, m.refused, m.auditErrors, m.limited,
		stateCollector{s},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tailgate_held_bytes", Help: "Bytes of targets' messages the gateway holds: being read, or answers its clients have not taken yet (at most 256 MiB in all, plus one message per target being read)."},
			func() float64 { return float64(s.buffers.Held()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tailgate_build_info", Help: "tailgate's version.", ConstLabels: prometheus.Labels{"version": Version}},
			func() float64 { return 1 }),
	)
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *metrics) observeCall(route, method, target, tool, outcome string, d time.Duration) {
	m.calls.WithLabelValues(route, method, target, tool, outcome).Inc()
	m.callSeconds.WithLabelValues(route, method, target).Observe(d.Seconds())
}

// stateCollector reports what is read from the server at scrape time:
// sessions, children and their exits, pools.
type stateCollector struct{ s *Server }

var (
	sessionsDesc = prometheus.NewDesc("tailgate_mcp_sessions", "Open MCP sessions by route.", []string{"route"}, nil)
	childrenDesc = prometheus.NewDesc("tailgate_children_running", "Child processes not yet reaped, by route.", []string{"route"}, nil)
	startedDesc  = prometheus.NewDesc("tailgate_children_started_total", "Child processes started, by route.", []string{"route"}, nil)
	exitsDesc    = prometheus.NewDesc("tailgate_child_exits_total", "Child processes reaped, by route, target and cause (stopped, exited, failed, signaled).", []string{"route", "target", "cause"}, nil)
	poolDesc     = prometheus.NewDesc("tailgate_pool_ready", "Pooled children started and waiting, by route and target.", []string{"route", "target"}, nil)
	readyDesc    = prometheus.NewDesc("tailgate_ready", "1 when the node is running and the config is loaded.", nil, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sessionsDesc, childrenDesc, startedDesc, exitsDesc, poolDesc, readyDesc} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	// A route may have a live front and fronts a reload replaced that
	// still serve sessions: report their sum.
	type key struct{ route, target, cause string }
	sessions, running, started := map[string]float64{}, map[string]float64{}, map[string]float64{}
	exits, pool := map[key]float64{}, map[key]float64{}
	for _, f := range c.s.allFronts() {
		st := f.backend.Stats()
		sessions[f.name] += float64(st.Sessions)
		running[f.name] += float64(st.ChildrenRunning)
		started[f.name] += float64(st.ChildrenStarted)
		for k, n := range st.Exits {
			exits[key{f.name, k.Target, k.Cause}] += float64(n)
		}
		for target, n := range st.PoolReady {
			pool[key{route: f.name, target: target}] += float64(n)
		}
	}
	for route, n := range sessions {
		ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, n, route)
		ch <- prometheus.MustNewConstMetric(childrenDesc, prometheus.GaugeValue, running[route], route)
		ch <- prometheus.MustNewConstMetric(startedDesc, prometheus.CounterValue, started[route], route)
	}
	for k, n := range exits {
		ch <- prometheus.MustNewConstMetric(exitsDesc, prometheus.CounterValue, n, k.route, k.target, k.cause)
	}
	for k, n := range pool {
		ch <- prometheus.MustNewConstMetric(poolDesc, prometheus.GaugeValue, n, k.route, k.target)
	}
	ready := 0.0
	if c.s.Ready() {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, ready)
}

// statusWriter records a response's status code for the request metric.
// It passes Flush through (event streams need it) and unwraps for
// http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Flush() {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// FlushError is Flush that says whether the client took what was written
// (http.ResponseController prefers it to Flush).
func (w *statusWriter) FlushError() error {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}
