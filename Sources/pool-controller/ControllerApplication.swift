import AsyncHTTPClient
import NIOCore
import Kubernetes
import Logging
import Prometheus
import ServiceLifecycle
import Shared
import Synchronization
import UnixSignals

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The controller could not start (no cluster configuration, bad kubeconfig).
struct ControllerStartupError: Error, CustomStringConvertible {
    /// What is wrong.
    var description: String
}

/// The composition root: real clients, metrics registry, the controller and the operations endpoint in one
/// ServiceGroup that stops on SIGTERM/SIGINT.
struct ControllerApplication {
    /// The settings.
    var settings: ControllerSettings
    /// The root logger.
    var logger: Logger

    /// Runs until a shutdown signal.
    func run() async throws {
        let configuration: KubernetesConfiguration
        let kube: KubernetesClient
        do {
            configuration = try KubernetesConfiguration.resolve(kubeconfigPath: settings.kubeconfig)
            kube = try KubernetesClient(configuration: configuration, logger: logger)
        } catch {
            throw ControllerStartupError(description: "no usable Kubernetes configuration: \(error)")
        }
        let registry = PrometheusCollectorRegistry()
        let metrics = ControllerMetrics(factory: ControllerMetrics.prometheusFactory(registry: registry))
        // One HTTP client for every organization, with the Azure DevOps client's timeouts (10 s connect, 60 s read).
        var httpConfiguration = HTTPClient.Configuration()
        httpConfiguration.timeout.connect = .seconds(10)
        httpConfiguration.timeout.read = .seconds(60)
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfiguration)
        let clock = SystemClock()
        let connector = LiveAzureDevOpsConnector(http: http, clock: clock, logger: logger) { record in
            metrics.azureDevOpsRequest(route: record.route, status: record.status, duration: record.duration)
        }
        if let legacy = settings.legacy {
            logger.notice(
                "managing one pool from the original project's environment variables",
                metadata: ["pool": "\(legacy.poolName)", "namespace": "\(legacy.namespace)", "standby": "\(legacy.standby)", "max": "\(legacy.maxAgents)"])
            if legacy.applicationInsightsRequested {
                logger.warning("APPINSIGHT_CONN_STR is set but Application Insights is not supported yet; use /metrics (Prometheus) and the logs")
            }
        }

        let controller = ControllerService(
            settings: settings, kube: kube, connector: connector, metrics: metrics, clock: clock, logger: logger)
        let operations = OperationsServer(
            host: settings.httpHost, port: settings.httpPort, registry: registry, liveness: { controller.isAlive() },
            readiness: { controller.readiness() }, logger: logger)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: operations), .init(service: controller, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        var failure: (any Error)?
        do { try await group.run() } catch { failure = error }
        try? await kube.shutdown()
        try? await http.shutdown()
        if let failure { throw failure }
    }
}

/// Leader election around the controller's work; only the Lease holder watches and acts.
final class ControllerService: Service {
    private let settings: ControllerSettings
    private let kube: any KubernetesAPI
    private let connector: any AzureDevOpsConnector
    private let metrics: ControllerMetrics
    private let clock: any ShoalClock
    private let logger: Logger
    /// Monotonic time of the last loop iteration while leading.
    private let progress = Heartbeat()
    private let elector: LeaderElector?

    /// A controller over real or fake edges.
    init(settings: ControllerSettings, kube: any KubernetesAPI, connector: any AzureDevOpsConnector, metrics: ControllerMetrics, clock: any ShoalClock, logger: Logger) {
        self.settings = settings
        self.kube = kube
        self.connector = connector
        self.metrics = metrics
        self.clock = clock
        self.logger = logger
        if settings.leaderElection {
            elector = LeaderElector(
                api: kube,
                configuration: LeaderElectionConfiguration(namespace: settings.leaderElectionNamespace, leaseName: settings.leaseName, identity: settings.identity),
                clock: clock, logger: logger, onLeadershipChange: { metrics.setLeader($0) })
        } else {
            elector = nil
        }
    }

    /// False when the loop has not moved for a minute while leading (the kubelet restarts the pod).
    func isAlive() -> Bool {
        guard let last = progress.last else { return true }
        return clock.monotonicNow() - last < .seconds(60)
    }

    /// Ready once running; the reason says whether this replica leads.
    func readiness() -> (ready: Bool, reason: String) {
        if let elector, !elector.isLeader {
            return (true, "standby: another replica holds lease \(settings.leaderElectionNamespace)/\(settings.leaseName)")
        }
        return (true, "leading")
    }

    func run() async throws {
        let elector = self.elector
        try await cancelWhenGracefulShutdown {
            if let elector {
                try await elector.run(whileLeading: { try await self.lead() })
            } else {
                self.metrics.setLeader(true)
                try await self.lead()
            }
        }
    }

    /// The controller's work for one leadership term: watches, the reconcile loop.
    private func lead() async throws {
        defer { progress.stop() }
        progress.beat(clock.monotonicNow())
        let schedule = PoolSchedule(clock: clock)
        let events = EventRecorder(api: kube, clock: clock, identity: settings.identity, logger: logger)
        let pods = PodCache(api: kube, clock: clock, logger: logger) { key in await schedule.wake(key) }
        let reconciler = PoolReconciler(
            .init(
                kube: kube, connector: connector, pods: pods, events: events, metrics: metrics, clock: clock, logger: logger,
                organizationPolicy: settings.organizationPolicy))
        let registry = PoolRegistry()
        let namespace = settings.legacy?.namespace ?? settings.watchNamespace
        let watcher = AgentPoolWatcher(
            kube: kube, namespace: namespace, registry: registry, schedule: schedule, pods: pods, reconciler: reconciler, clock: clock, logger: logger)
        let clock = self.clock
        let loop = ReconcileLoop(
            registry: registry, schedule: schedule, reconciler: reconciler, clock: clock, legacy: settings.legacy, kube: kube,
            onProgress: { [progress] in progress.beat(clock.monotonicNow()) })
        if let legacy = settings.legacy { await pods.watch(namespace: legacy.namespace) }
        logger.info("controller started", metadata: ["namespace": "\(namespace ?? "*")", "identity": "\(settings.identity)"])
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await pods.run() }
            group.addTask { try await watcher.run() }
            group.addTask { try await loop.run() }
        }
    }
}

/// The last time the reconcile loop moved; nil while not leading. A Mutex because the operations endpoint reads it
/// from its own tasks while the loop writes it.
final class Heartbeat: Sendable {
    private let value = Mutex<Duration?>(nil)

    /// Records progress at `now`.
    func beat(_ now: Duration) { value.withLock { $0 = now } }
    /// The loop stopped (leadership ended).
    func stop() { value.withLock { $0 = nil } }
    /// The last progress, if the loop runs.
    var last: Duration? { value.withLock { $0 } }
}

extension ControllerMetrics: PoolMetricsSink {
    func poolObserved(pool: String, counts: PoolCounts, podsByPhase: [String: Int]) {
        recordCounts(pool: pool, queued: counts.queued, busy: counts.busy, idle: counts.idle, starting: counts.starting, desired: counts.desired, podsByPhase: podsByPhase)
    }

    func placeholderChanged(pool: String, action: String) { placeholder(pool: pool, action: action) }

    func reconciled(pool: String, duration: Duration, errorReason: String?) { reconciled(pool: pool, duration: duration, error: errorReason) }

    func rateLimitRemaining(pool: String, value: Double) { rateLimitRemaining(pool: pool, value: Int(value)) }
}
