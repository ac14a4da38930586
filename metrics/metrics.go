// Package metrics owns matrxd's Prometheus metrics: their names, labels and
// buckets, the registry they live in, and the HTTP handler that exposes
// them. Every metric is named matrx_*; they live on the Metrics value's own
// registry (never prometheus.DefaultRegisterer), so two daemons in one test
// binary do not collide.
//
// It must not know about HTTP routes beyond the label it is handed, about
// sandboxes beyond counts, nor import any other matrx package: the
// lifecycle, the API and storage call into it, never the other way round.
//
// Label cardinality is bounded by construction: no sandbox id, user id or
// raw URL path is ever a label. Routes are mux patterns ("POST
// /sandboxes/{id}/exec"), directions and drivers are folded onto small
// fixed sets, and status codes are numbers below 600.
//
// A nil *Metrics is valid: every method is a no-op, so packages run and
// test without metrics.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Label values used for bounded labels.
const (
	ResultOK      = "ok"
	ResultError   = "error"
	ResultTimeout = "timeout"

	// RouteUnmatched is the route label of requests no route matched
	// (unknown path, wrong method, or rejected before routing).
	RouteUnmatched = "unmatched"
	// Other stands for a direction or driver outside the known set.
	Other = "other"
)

// direction and driver fold label values onto the known sets; anything else
// is recorded as Other.
func direction(d string) string {
	switch d {
	case "up", "down":
		return d
	}
	return Other
}

// repairKind folds a repair kind onto the known set.
func repairKind(k string) string {
	switch k {
	case "record", "container", "snapshot", "control_dir", "network", "hot_dir", "cold_mount":
		return k
	}
	return Other
}

func driver(d string) string {
	switch d {
	case "mount-s3", "s3fs", "local":
		return d
	}
	return Other
}

// Snapshot is what the registry says at scrape time.
type Snapshot struct {
	// ByStatus counts sandboxes by status ("running" → 3).
	ByStatus map[string]int
	// HotSyncPending counts stopped sandboxes whose hot files are still
	// only on the host (a failed final sync, retried in the background).
	// Alert when it stays above zero: those files are not in S3 yet.
	HotSyncPending int
}

// ColdSparesFunc reports the cold storage's spare daemons: how many are
// ready now and how many new users have taken one since the daemon
// started (mounts/cold "Spare daemons").
type ColdSparesFunc func() (ready int, taken uint64)

// StatusFunc takes a Snapshot. It is called once per scrape with the
// scrape request's context.
type StatusFunc func(ctx context.Context) (Snapshot, error)

// Metrics is matrxd's set of metrics. It is safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry
	log *slog.Logger

	create, exec, destroy *prometheus.HistogramVec
	requests              *prometheus.CounterVec
	requestDuration       *prometheus.HistogramVec
	syncBytes, syncFiles  *prometheus.CounterVec
	syncConflicts         *prometheus.CounterVec
	syncErrors            *prometheus.CounterVec
	fuseRemounts          *prometheus.CounterVec
	repairs               *prometheus.CounterVec

	status      atomic.Pointer[StatusFunc]
	coldSpares  atomic.Pointer[ColdSparesFunc]
	statusDesc  *prometheus.Desc
	pendingDesc *prometheus.Desc
}

// Option configures optional knobs of New.
type Option func(*Metrics)

// WithLogger sets where scrape errors are logged (default: discarded).
func WithLogger(l *slog.Logger) Option { return func(m *Metrics) { m.log = l } }

// WithSandboxStatus sets the sandboxes-by-status source at construction;
// see SetSandboxStatus.
func WithSandboxStatus(fn StatusFunc) Option {
	return func(m *Metrics) { m.SetSandboxStatus(fn) }
}

// New builds the metrics on a fresh registry, with the Go runtime and
// process collectors alongside matrx's own.
func New(opts ...Option) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		log: slog.New(slog.DiscardHandler),
		create: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "matrx_sandbox_create_duration_seconds",
			Help:    "Time from a create request to a ready sandbox (or its failure), by result.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"result"}),
		exec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "matrx_sandbox_exec_duration_seconds",
			Help:    "Duration of commands run in sandboxes, by result (ok or timeout).",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}, []string{"result"}),
		destroy: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "matrx_sandbox_destroy_duration_seconds",
			Help:    "Time to stop and remove a sandbox, including its grace period, by result.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "matrx_http_requests_total",
			Help: "API requests by route pattern and status code.",
		}, []string{"route", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "matrx_http_request_duration_seconds",
			Help:    "API request latency by route pattern.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 600},
		}, []string{"route"}),
		syncBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "matrx_hotsync_bytes_total",
			Help: "Bytes moved by hot storage sync, by direction (up: to S3, down: from S3).",
		}, []string{"direction"}),
		syncFiles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "matrx_hotsync_files_total",
			Help: "Files moved by hot storage sync, by direction.",
		}, []string{"direction"}),
		syncConflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "matrx_hotsync_conflicts_total",
			Help: "Hot storage sync conflicts (the remote copy changed underneath), by direction.",
		}, []string{"direction"}),
		syncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "matrx_hotsync_errors_total",
			Help: "Hot storage sync errors, by direction.",
		}, []string{"direction"}),
		fuseRemounts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "matrx_fuse_remounts_total",
			Help: "FUSE cold storage mounts restarted after their process died, by driver.",
		}, []string{"driver"}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "matrx_reconcile_repairs_total",
			Help: "Differences between the registry and the host that supervision repaired, by kind (record, container, snapshot, control_dir, network, hot_dir, cold_mount).",
		}, []string{"kind"}),
		statusDesc: prometheus.NewDesc("matrx_sandboxes",
			"Sandboxes by status, as recorded in the registry at scrape time.", []string{"status"}, nil),
		pendingDesc: prometheus.NewDesc("matrx_hotsync_pending_sandboxes",
			"Stopped sandboxes whose hot files are only on the host: their final sync failed and is retried. Not yet in S3.", nil, nil),
	}
	spares := func() (int, uint64) {
		if fn := m.coldSpares.Load(); fn != nil {
			return (*fn)()
		}
		return 0, 0
	}
	m.reg.MustRegister(
		m.create, m.exec, m.destroy, m.requests, m.requestDuration,
		m.syncBytes, m.syncFiles, m.syncConflicts, m.syncErrors, m.fuseRemounts, m.repairs,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "matrx_cold_spares_ready",
			Help: "FUSE daemons started ahead and waiting for a new user's first sandbox (--cold-spares).",
		}, func() float64 { n, _ := spares(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "matrx_cold_spares_taken_total",
			Help: "New users whose cold storage a spare FUSE daemon served (the others waited for a daemon start).",
		}, func() float64 { _, n := spares(); return float64(n) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	for _, o := range opts {
		o(m)
	}
	return m
}

// SetColdSpares sets (or, with nil, removes) the source of
// matrx_cold_spares_ready and matrx_cold_spares_taken_total, read at
// scrape time (zero without one).
func (m *Metrics) SetColdSpares(fn ColdSparesFunc) {
	if m == nil {
		return
	}
	if fn == nil {
		m.coldSpares.Store(nil)
		return
	}
	m.coldSpares.Store(&fn)
}

// SetSandboxStatus sets (or, with nil, removes) the function matrx_sandboxes
// is computed from at scrape time. The daemon calls it once its registry is
// open; calling it again replaces the previous source (a restarted daemon
// reusing the same Metrics).
func (m *Metrics) SetSandboxStatus(fn StatusFunc) {
	if m == nil {
		return
	}
	if fn == nil {
		m.status.Store(nil)
		return
	}
	m.status.Store(&fn)
}

func result(ok bool, failed string) string {
	if ok {
		return ResultOK
	}
	return failed
}

// ObserveCreate records one sandbox create: how long it took and whether
// the sandbox became ready.
func (m *Metrics) ObserveCreate(d time.Duration, ok bool) {
	if m == nil {
		return
	}
	m.create.WithLabelValues(result(ok, ResultError)).Observe(d.Seconds())
}

// ObserveExec records one command run in a sandbox.
func (m *Metrics) ObserveExec(d time.Duration, timedOut bool) {
	if m == nil {
		return
	}
	m.exec.WithLabelValues(result(!timedOut, ResultTimeout)).Observe(d.Seconds())
}

// ObserveDestroy records one sandbox stop and removal.
func (m *Metrics) ObserveDestroy(d time.Duration, ok bool) {
	if m == nil {
		return
	}
	m.destroy.WithLabelValues(result(ok, ResultError)).Observe(d.Seconds())
}

// AddHotSync adds one hot sync pass's totals. direction is "up" (to S3) or
// "down" (from S3); negative values are ignored.
func (m *Metrics) AddHotSync(dir string, bytes, files int64, conflicts, errors int) {
	if m == nil {
		return
	}
	d := direction(dir)
	if bytes > 0 {
		m.syncBytes.WithLabelValues(d).Add(float64(bytes))
	}
	if files > 0 {
		m.syncFiles.WithLabelValues(d).Add(float64(files))
	}
	if conflicts > 0 {
		m.syncConflicts.WithLabelValues(d).Add(float64(conflicts))
	}
	if errors > 0 {
		m.syncErrors.WithLabelValues(d).Add(float64(errors))
	}
}

// IncReconcileRepair counts one repair of supervision's reconcile loop.
func (m *Metrics) IncReconcileRepair(kind string) {
	if m == nil {
		return
	}
	m.repairs.WithLabelValues(repairKind(kind)).Inc()
}

// IncFUSERemount counts one restart of a FUSE mount ("mount-s3", "s3fs").
func (m *Metrics) IncFUSERemount(drv string) {
	if m == nil {
		return
	}
	m.fuseRemounts.WithLabelValues(driver(drv)).Inc()
}

// ObserveRequest records one API request. route must be the mux pattern
// that served it (http.Request.Pattern), never the raw path; an empty route
// is recorded as RouteUnmatched.
func (m *Metrics) ObserveRequest(route string, code int, d time.Duration) {
	if m == nil {
		return
	}
	if route == "" {
		route = RouteUnmatched
	}
	if code < 100 || code > 599 {
		code = 0
	}
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.requestDuration.WithLabelValues(route).Observe(d.Seconds())
}

// Handler serves the metrics in the Prometheus exposition format. The
// sandboxes-by-status gauge is computed on each scrape with the request's
// context; if that fails, the other metrics are still served and the error
// is logged. A nil Metrics serves 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	errLog := slog.NewLogLogger(m.log.Handler(), slog.LevelWarn)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g := prometheus.Gatherers{m.reg}
		if fn := m.status.Load(); fn != nil {
			per := prometheus.NewRegistry()
			per.MustRegister(&statusCollector{ctx: r.Context(), fn: *fn, desc: m.statusDesc, pending: m.pendingDesc})
			g = append(g, per)
		}
		promhttp.HandlerFor(g, promhttp.HandlerOpts{
			ErrorLog:      errLog,
			ErrorHandling: promhttp.ContinueOnError,
		}).ServeHTTP(w, r)
	})
}

// statusCollector reports matrx_sandboxes and
// matrx_hotsync_pending_sandboxes for one scrape.
type statusCollector struct {
	ctx           context.Context
	fn            StatusFunc
	desc, pending *prometheus.Desc
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	ch <- c.pending
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	snap, err := c.fn(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for status, n := range snap.ByStatus {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), status)
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(snap.HotSyncPending))
}
