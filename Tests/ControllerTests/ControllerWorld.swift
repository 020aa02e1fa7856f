import AsyncHTTPClient
import Foundation
import Kubernetes
import Logging
import Metrics
import Prometheus
import Shared
import Simulators
import Testing

@testable import pool_controller

/// The executables the end-to-end tests run as pods.
enum Executables {
    /// `shoal-sim`, which plays the agent image (`agent-image`) next to `agent-entrypoint` and `agent-standin`.
    static func shoalSim() throws -> String { try BuiltProducts.path("shoal-sim").path }
}

/// One end-to-end world: a namespace on the real local API server with the AgentPool CRD, the Azure DevOps
/// simulator with pool `k8s`, a local node running agent pods as real `agent-entrypoint` processes over the agent
/// stand-in, and the controller itself, in process.
struct ControllerWorld: Sendable {
    /// The image the local node runs as `shoal-sim agent-image`.
    static let agentImage = "shoal.test/agent:1"
    /// The Azure DevOps pool.
    static let poolName = "k8s"
    /// The PAT the simulator accepts.
    static let token = "sim-pat"

    /// Namespace and clients.
    let context: KubeTestContext
    /// The simulator.
    let simulator: AzureDevOpsSimulator
    /// The local node.
    let node: LocalNode

    /// The namespace.
    var namespace: String { context.namespace }
    /// Admin client.
    var kube: KubernetesClient { context.admin }
    /// The simulated organization.
    var organization: SimulatedOrganization { simulator.organization }

    /// Knobs fast enough for tests but safe on a loaded machine.
    static func knobs() -> SimulatorKnobs {
        var knobs = SimulatorKnobs()
        knobs.messageLongPollTimeout = .milliseconds(500)
        knobs.sessionTimeout = .seconds(8)
        knobs.sweepInterval = .milliseconds(100)
        return knobs
    }

    /// Builds the world, runs `body`, and tears everything down (processes killed, namespace deleted).
    static func run(knobs: SimulatorKnobs = knobs(), _ body: @Sendable (ControllerWorld) async throws -> Void) async throws {
        try await KubeTestContext.run { context in
            try await installCRD(context.admin)
            let simulator = try await AzureDevOpsSimulator.start(
                SimulatorConfiguration(personalAccessTokens: [token], pools: [poolName], knobs: knobs),
                logger: quietLogger("simulator"))
            let node = LocalNode(
                api: context.admin,
                configuration: LocalNodeConfiguration(
                    nodeName: "node-\(context.namespace)", namespace: context.namespace, labelSelector: AgentPodLabels.pool,
                    imageCommands: [agentImage: [try Executables.shoalSim(), "agent-image"]],
                    workDirectory: FileManager.default.temporaryDirectory.appendingPathComponent("shoal-node-\(context.namespace)").path),
                logger: quietLogger("local-node"))
            _ = try await context.admin.create(
                Secret(metadata: ObjectMeta(name: "azdo", namespace: context.namespace, labels: [AgentPodLabels.tokenSecret: "true"]), stringData: ["token": token]), .secrets,
                namespace: context.namespace)
            let world = ControllerWorld(context: context, simulator: simulator, node: node)
            var failure: (any Error)?
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await node.run() }
                    try await body(world)
                    group.cancelAll()
                }
            } catch {
                failure = error
            }
            try? await simulator.shutdown()
            try? FileManager.default.removeItem(atPath: node.configuration.workDirectory)
            if let failure { throw failure }
        }
    }

    /// Creates the CRD once per cluster and waits until it is served.
    static func installCRD(_ kube: KubernetesClient) async throws {
        try await ManifestApplier(api: kube).apply([AgentPoolCRD.definition])
    }

    /// The spec of a test pool: the test agent image, fast timings.
    static func poolSpec(
        organizationURL: String, standby: Int, maxAgents: Int, idleDelay: Int = 1, orphanGrace: Int = 2, pendingTimeout: Int = 120,
        capabilities: [String: String] = [:]
    ) -> KubeJSON {
        [
            "organizationUrl": .string(organizationURL), "poolName": .string(poolName), "tokenSecretRef": ["name": "azdo"],
            "standby": .int(Int64(standby)), "maxAgents": .int(Int64(maxAgents)),
            "capabilities": .object(capabilities.mapValues { .string($0) }),
            "template": [
                "spec": [
                    "terminationGracePeriodSeconds": 30,
                    "containers": [[
                        "name": "agent", "image": .string(agentImage),
                        "env": [["name": "AZP_READY_FILE", "value": "ready"], ["name": "AZP_RELAUNCH_DELAY", "value": "0"]],
                    ]],
                ]
            ],
            "timing": [
                "pollIntervalSeconds": 1, "idleScaleDownDelaySeconds": .int(Int64(idleDelay)), "orphanGracePeriodSeconds": .int(Int64(orphanGrace)),
                "pendingTimeoutSeconds": .int(Int64(pendingTimeout)),
            ],
        ]
    }

    /// Creates an AgentPool named `name` with `spec`.
    @discardableResult
    func createPool(_ name: String = "linux", spec: KubeJSON) async throws -> AgentPoolObject {
        try await kube.create(AgentPoolObject(metadata: ObjectMeta(name: name, namespace: namespace), spec: spec), AgentPoolResource.resource, namespace: namespace)
    }

    /// The AgentPool as stored.
    func pool(_ name: String = "linux") async throws -> AgentPoolObject {
        try await kube.get(AgentPoolObject.self, AgentPoolResource.resource, namespace: namespace, name: name)
    }

    /// The pool's pods.
    func pods() async throws -> [Pod] {
        try await kube.listAll(Pod.self, .pods, namespace: namespace, labelSelector: AgentPodLabels.pool).items
    }

    /// Registrations that exist (not deleted) in the Azure DevOps pool.
    func registrations() async -> [SimulatedAgent] {
        await organization.snapshot().agents.filter { $0.deletedOn == nil }
    }

    /// Runs a controller replica (in process, as `settings` says) while `body` runs.
    func withController<T: Sendable>(
        settings: ControllerSettings? = nil, kube controllerKube: (any KubernetesAPI)? = nil, _ body: @Sendable () async throws -> T
    ) async throws -> T {
        let replica = makeController(settings: settings ?? defaultSettings(), kube: controllerKube ?? kube)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await replica.run() }
            let result = try await body()
            group.cancelAll()
            return result
        }
    }

    /// A controller replica; run it with `run()`.
    func makeController(settings: ControllerSettings, kube controllerKube: any KubernetesAPI) -> ControllerService {
        let registry = PrometheusCollectorRegistry()
        let logger = quietLogger("controller-\(settings.identity)")
        let connector = LiveAzureDevOpsConnector(http: .shared, clock: SystemClock(), logger: logger) { _ in }
        return ControllerService(
            settings: settings, kube: controllerKube, connector: connector, metrics: ControllerMetrics(factory: ControllerMetrics.prometheusFactory(registry: registry)),
            clock: SystemClock(), logger: logger)
    }

    /// Settings for one replica watching only this world's namespace, without leader election.
    func defaultSettings(identity: String = "test-controller", leaderElection: Bool = false, legacy: LegacyConfiguration? = nil) -> ControllerSettings {
        ControllerSettings(
            kubeconfig: nil, watchNamespace: namespace, leaderElection: leaderElection, leaderElectionNamespace: namespace,
            leaseName: "shoal-pool-controller", identity: identity, httpHost: "127.0.0.1", httpPort: 0, logLevel: .info, logFormat: .text,
            legacy: legacy, organizationPolicy: Self.testPolicy)
    }

    /// The simulator listens on plain http on loopback: allowed only by the controller's test flag.
    static let testPolicy = OrganizationPolicy(allowedHosts: ["127.0.0.1", "localhost"], allowInsecure: true)

    /// Queues `count` jobs of `seconds` each and returns their request ids.
    func queueJobs(_ count: Int, seconds: Double, demands: [String] = [], name: String = "job") async throws -> [Int] {
        var ids: [Int] = []
        for index in 0..<count {
            ids.append(try await organization.queueJobOrThrow(
                JobSpecification(pool: Self.poolName, name: "\(name)-\(index)", demands: demands, durationSeconds: seconds)))
        }
        return ids
    }

    /// Waits until the controller has read the pool's job requests `count` more times (that many reconciles).
    func waitForReconciles(_ count: Int, timeout: Duration = .seconds(60)) async throws {
        let route = "GET pools/{poolId}/jobrequests"
        let start = await organization.snapshot().requestCounts[route]?.values.reduce(0, +) ?? 0
        try await organization.waitUntil(timeout: timeout) { ($0.requestCounts[route]?.values.reduce(0, +) ?? 0) >= start + count }
    }

    /// Registrations that are ours and not the placeholder, as `name:status` for messages.
    func describeRegistrations() async -> [String] {
        await registrations().map { "\($0.name):\($0.status)\($0.assignedRequestId.map { ":job\($0)" } ?? "")" }
    }

    /// The pool's pods as `name:phase` for messages.
    func describePods() async throws -> [String] {
        try await pods().map { "\($0.metadata.name ?? ""):\($0.status?.phase ?? "")\($0.metadata.deletionTimestamp == nil ? "" : ":terminating")" }
    }

    /// Waits until the pool rests at `standby` idle agents: that many online idle registrations (besides the
    /// placeholder), as many Running pods, and nothing else.
    func waitForStandby(_ standby: Int, timeout: Duration = .seconds(90)) async throws -> Bool {
        try await eventually(timeout: timeout) {
            let registrations = await registrations().filter { !$0.name.hasSuffix("-placeholder") }
            let pods = try await pods()
            return registrations.count == standby && registrations.allSatisfy { $0.status == .online && $0.assignedRequestId == nil }
                && pods.count == standby && pods.allSatisfy { $0.status?.phase == "Running" && $0.metadata.deletionTimestamp == nil }
        }
    }

    /// Kills every process of a pod (as a crashing container would), leaving Kubernetes and Azure DevOps to notice.
    func killPodProcesses(_ pod: Pod) throws -> Int {
        let directory = node.podDirectory(namespace: namespace, name: pod.metadata.name ?? "", uid: pod.metadata.uid ?? "")
        var killed = 0
        for entry in try FileManager.default.contentsOfDirectory(atPath: "/proc") {
            guard let pid = Int32(entry), pid != getpid() else { continue }
            guard let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(entry)/cwd"), cwd.hasPrefix(directory) else { continue }
            if kill(pid, SIGKILL) == 0 { killed += 1 }
        }
        return killed
    }
}

/// Records an issue with a message that takes async work to build (the state of the world when a wait failed).
func expect(_ condition: Bool, sourceLocation: SourceLocation = #_sourceLocation, _ message: () async throws -> String) async throws {
    guard !condition else { return }
    Issue.record(Comment(rawValue: try await message()), sourceLocation: sourceLocation)
}

/// A logger that only reports warnings and errors, so test output stays readable.
func quietLogger(_ label: String) -> Logger {
    var logger = Logger(label: label, factory: { StreamLogHandler.standardError(label: $0) })
    logger.logLevel = ProcessInfo.processInfo.environment["SHOAL_TEST_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
    return logger
}

/// Records the largest number of live pods (not Succeeded/Failed) seen at once in a namespace, from a watch.
actor PodHighWaterMark {
    private var live: Set<String> = []
    /// The largest number of live pods seen at once.
    private(set) var maximum = 0

    /// Watches until cancelled.
    func watch(_ kube: any KubernetesAPI, namespace: String) async throws {
        for try await event in ListWatch<Pod>(api: kube, resource: .pods, namespace: namespace, labelSelector: AgentPodLabels.pool) {
            switch event {
            case .relisted(let pods, _): live = Set(pods.filter(Self.isLive).compactMap(\.metadata.name))
            case .added(let pod), .modified(let pod):
                if Self.isLive(pod) { live.insert(pod.metadata.name ?? "") } else { live.remove(pod.metadata.name ?? "") }
            case .deleted(let pod): live.remove(pod.metadata.name ?? "")
            }
            maximum = max(maximum, live.count)
        }
    }

    private static func isLive(_ pod: Pod) -> Bool { pod.status?.phase != "Succeeded" && pod.status?.phase != "Failed" }
}
