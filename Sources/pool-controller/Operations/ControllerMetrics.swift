import CoreMetrics
import Metrics
import Prometheus
import Shared
import Synchronization

/// The controller's metrics, recorded through an injected swift-metrics factory (never the global bootstrap).
///
/// Every series is labelled only with bounded values: `pool` (`namespace/name`), `state`, `phase`, `reason`,
/// `action`, `route` and an HTTP status — never a pod name or a job id. Gauges are set for every state and phase on
/// each ``recordCounts(pool:queued:busy:idle:starting:desired:podsByPhase:)`` (zeros included) so dashboards show no
/// gaps. Handles are created once per series and kept, so ``forget(pool:)`` can destroy what a deleted pool left.
final class ControllerMetrics: Sendable {
    /// Metric names, snake_case with units; the one place dashboards and alerts are written against.
    enum Name {
        /// Gauge: jobs waiting in the Azure DevOps pool `{pool}`.
        static let queuedJobs = "shoal_pool_queued_jobs"
        /// Gauge: agents by `{pool,state}`, state busy|idle|starting.
        static let agents = "shoal_pool_agents"
        /// Gauge: agent pods by `{pool,phase}`, phase Pending|Running|Succeeded|Failed|Terminating.
        static let pods = "shoal_pool_pods"
        /// Gauge: agents the last reconcile wanted `{pool}`.
        static let desiredAgents = "shoal_pool_desired_agents"
        /// Counter: pods created `{pool}`.
        static let podsCreated = "shoal_pods_created_total"
        /// Counter: pods deleted `{pool,reason}`.
        static let podsDeleted = "shoal_pods_deleted_total"
        /// Counter: agent registrations deleted `{pool,reason}`.
        static let registrationsDeleted = "shoal_registrations_deleted_total"
        /// Counter: placeholder registration actions `{pool,action}`.
        static let placeholderRegistrations = "shoal_placeholder_registrations_total"
        /// Histogram: seconds one reconcile of `{pool}` took.
        static let reconcileDuration = "shoal_reconcile_duration_seconds"
        /// Counter: failed reconciles `{pool,reason}`.
        static let reconcileErrors = "shoal_reconcile_errors_total"
        /// Counter: Azure DevOps requests `{route,status}`, status an HTTP code or `error`.
        static let azureDevOpsRequests = "shoal_azure_devops_requests_total"
        /// Histogram: seconds an Azure DevOps request of `{route}` took.
        static let azureDevOpsRequestDuration = "shoal_azure_devops_request_duration_seconds"
        /// Gauge: the last `X-RateLimit-Remaining` Azure DevOps reported for `{pool}`.
        static let rateLimitRemaining = "shoal_azure_devops_rate_limit_remaining"
        /// Histogram: seconds from a job being queued to an agent being assigned `{pool}`.
        static let queueToAssign = "shoal_queue_to_assign_seconds"
        /// Gauge: 1 while this replica holds the leader Lease, else 0.
        static let leader = "shoal_leader"
    }

    /// Agent states of ``Name/agents``, all set on every count.
    static let agentStates = ["busy", "idle", "starting"]

    /// Pod phases of ``Name/pods``, all set on every count (other phases passed in are recorded too).
    static let podPhases = ["Pending", "Running", "Succeeded", "Failed", "Terminating"]

    /// Buckets of ``Name/queueToAssign``: from an idle agent picking the job up to a pod cold-starting.
    static let queueToAssignBuckets: [Duration] = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600].map(Duration.fractionalSeconds)

    /// Buckets of ``Name/reconcileDuration`` and ``Name/azureDevOpsRequestDuration``: a few ms to a slow timeout.
    static let requestDurationBuckets: [Duration] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30].map(Duration.fractionalSeconds)

    /// A Prometheus factory writing to `registry` with this type's histogram buckets configured.
    ///
    /// The composition root builds the registry, passes the factory to ``init(factory:)`` and the registry to
    /// ``OperationsServer`` for `/metrics`.
    static func prometheusFactory(registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = requestDurationBuckets
        factory.durationHistogramBuckets = [
            Name.reconcileDuration: requestDurationBuckets,
            Name.azureDevOpsRequestDuration: requestDurationBuckets,
            Name.queueToAssign: queueToAssignBuckets,
        ]
        return factory
    }

    /// One time series: a metric name and its label pairs in a fixed order.
    private struct SeriesKey: Hashable {
        var name: String
        var labels: [String]

        init(_ name: String, _ dimensions: [(String, String)]) {
            self.name = name
            self.labels = dimensions.flatMap { [$0.0, $0.1] }
        }
    }

    /// The handles created so far; guarded by the mutex because recording happens from many tasks.
    private struct Handles {
        var gauges: [SeriesKey: CoreMetrics.Gauge] = [:]
        var counters: [SeriesKey: CoreMetrics.Counter] = [:]
        var timers: [SeriesKey: CoreMetrics.Timer] = [:]
        /// The series keyed by pool, for ``forget(pool:)``.
        var byPool: [String: Set<SeriesKey>] = [:]
    }

    private let factory: any MetricsFactory
    private let handles = Mutex(Handles())

    /// Metrics recorded through `factory` (for Prometheus, one from ``prometheusFactory(registry:)``).
    ///
    /// `shoal_leader` is set to 0 at once, so it is exported before the first election.
    init(factory: any MetricsFactory) {
        self.factory = factory
        setLeader(false)
    }

    // MARK: Pool state

    /// Records one reconcile's view of a pool; every agent state and pod phase is set, absent ones to 0.
    func recordCounts(pool: String, queued: Int, busy: Int, idle: Int, starting: Int, desired: Int, podsByPhase: [String: Int]) {
        gauge(Name.queuedJobs, pool: pool).record(queued)
        gauge(Name.desiredAgents, pool: pool).record(desired)
        for (state, value) in zip(Self.agentStates, [busy, idle, starting]) {
            gauge(Name.agents, pool: pool, [("state", state)]).record(value)
        }
        for phase in Set(Self.podPhases).union(podsByPhase.keys) {
            gauge(Name.pods, pool: pool, [("phase", phase)]).record(podsByPhase[phase] ?? 0)
        }
    }

    /// Counts an agent pod the controller created.
    func podCreated(pool: String) {
        counter(Name.podsCreated, pool: pool).increment()
    }

    /// Counts an agent pod the controller deleted, with why (`idle-surplus`, `orphan`, `finished`...).
    func podDeleted(pool: String, reason: String) {
        counter(Name.podsDeleted, pool: pool, [("reason", reason)]).increment()
    }

    /// Counts an agent registration the controller removed from Azure DevOps, with why.
    func registrationDeleted(pool: String, reason: String) {
        counter(Name.registrationsDeleted, pool: pool, [("reason", reason)]).increment()
    }

    /// Counts a placeholder registration action (`created`, `deleted`, `kept`...).
    func placeholder(pool: String, action: String) {
        counter(Name.placeholderRegistrations, pool: pool, [("action", action)]).increment()
    }

    /// Records one reconcile's duration and, when it failed, its reason (a ``KubernetesError/reason``-like word).
    func reconciled(pool: String, duration: Duration, error reason: String?) {
        timer(Name.reconcileDuration, pool: pool).record(duration: duration)
        if let reason {
            counter(Name.reconcileErrors, pool: pool, [("reason", reason)]).increment()
        }
    }

    /// Records the last `X-RateLimit-Remaining` Azure DevOps sent for a pool's organization.
    func rateLimitRemaining(pool: String, value: Int) {
        gauge(Name.rateLimitRemaining, pool: pool).record(value)
    }

    /// Records how long a job waited between being queued and being assigned an agent.
    func queueToAssign(pool: String, seconds: Double) {
        timer(Name.queueToAssign, pool: pool).record(duration: .fractionalSeconds(seconds))
    }

    /// Destroys every series labelled with `pool` (it was deleted), so it stops being exported.
    ///
    /// A later record for the same pool starts its series again (counters from 0, which Prometheus reads as a reset).
    func forget(pool: String) {
        let removed = handles.withLock { handles -> (gauges: [CoreMetrics.Gauge], counters: [CoreMetrics.Counter], timers: [CoreMetrics.Timer]) in
            let keys = handles.byPool.removeValue(forKey: pool) ?? []
            return (
                keys.compactMap { handles.gauges.removeValue(forKey: $0) },
                keys.compactMap { handles.counters.removeValue(forKey: $0) },
                keys.compactMap { handles.timers.removeValue(forKey: $0) }
            )
        }
        removed.gauges.forEach { $0.destroy() }
        removed.counters.forEach { $0.destroy() }
        removed.timers.forEach { $0.destroy() }
    }

    // MARK: Azure DevOps and leadership

    /// Counts an Azure DevOps request by route template (`jobrequests`, `agents`...) and status, and its duration.
    ///
    /// - Parameter status: the HTTP status code, or nil when no answer came (network error, timeout): `error`.
    func azureDevOpsRequest(route: String, status: Int?, duration: Duration) {
        counter(Name.azureDevOpsRequests, pool: nil, [("route", route), ("status", status.map(String.init) ?? "error")]).increment()
        timer(Name.azureDevOpsRequestDuration, pool: nil, [("route", route)]).record(duration: duration)
    }

    /// Sets `shoal_leader` to 1 while this replica leads, else 0.
    func setLeader(_ leading: Bool) {
        gauge(Name.leader, pool: nil).record(leading ? 1 : 0)
    }

    // MARK: Handles

    private func gauge(_ name: String, pool: String?, _ labels: [(String, String)] = []) -> CoreMetrics.Gauge {
        handle(name, pool: pool, labels, in: \.gauges) { CoreMetrics.Gauge(label: name, dimensions: $0, factory: factory) }
    }

    private func counter(_ name: String, pool: String?, _ labels: [(String, String)] = []) -> CoreMetrics.Counter {
        handle(name, pool: pool, labels, in: \.counters) { CoreMetrics.Counter(label: name, dimensions: $0, factory: factory) }
    }

    private func timer(_ name: String, pool: String?, _ labels: [(String, String)] = []) -> CoreMetrics.Timer {
        handle(name, pool: pool, labels, in: \.timers) { CoreMetrics.Timer(label: name, dimensions: $0, factory: factory) }
    }

    /// The cached handle of a series, created on first use; `pool` (when given) is the first label.
    private func handle<Handle: Sendable>(
        _ name: String, pool: String?, _ labels: [(String, String)], in table: WritableKeyPath<Handles, [SeriesKey: Handle]>,
        make: ([(String, String)]) -> Handle
    ) -> Handle {
        let dimensions = (pool.map { [("pool", $0)] } ?? []) + labels
        let key = SeriesKey(name, dimensions)
        return handles.withLock { handles in
            if let existing = handles[keyPath: table][key] { return existing }
            let created = make(dimensions)
            handles[keyPath: table][key] = created
            if let pool { handles.byPool[pool, default: []].insert(key) }
            return created
        }
    }
}
