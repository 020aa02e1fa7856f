import Foundation
import Kubernetes
import Logging
import Shared
import Synchronization
import Testing

@testable import pool_controller

/// The executor of AgentPool `ci/linux` (prefix `linux`, Azure DevOps pool 7) over the recording fakes, with the
/// invariant every test checks: no pod was deleted while its agent, by the organization's state at that moment,
/// held a job.
private final class ExecutorWorld: Sendable {
    static let agentVersion = "4.266.2"

    let timeline = FakeTimeline()
    let kube: FakeKubernetes
    let ado: FakeAzureDevOps
    let cache: PodCache
    let spec: PoolSpec
    let pool = PoolReference(key: PoolKey(namespace: "ci", name: "linux"), uid: "uid-pool")
    let poolID = 7
    /// Pods deleted while their agent held a job.
    let busyPodDeletions = StringLog()
    private let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    init(agents: [Agent] = [], capabilities: [String: String] = [:]) throws {
        var spec = try PoolSpec.resolve(
            ["organizationUrl": "https://dev.azure.com/contoso", "poolName": "k8s", "tokenSecretRef": ["name": "azdo"], "image": "agent:1"],
            name: "linux")
        spec.capabilities = capabilities
        self.spec = spec
        kube = FakeKubernetes(defaultNamespace: "ci", timeline: timeline)
        ado = FakeAzureDevOps(pool: AgentPool(id: 7, name: "k8s"), agents: agents, timeline: timeline)
        cache = PodCache(api: kube, clock: SystemClock(), logger: logger, onChange: { _ in })
        kube.observe { [ado, busyPodDeletions] call, _ in
            guard call.verb == .delete, call.resource == "pods", let name = call.name else { return }
            let organization = ado.world
            if let agent = organization.agent(named: name), organization.holdsJob(agentID: agent.id) {
                busyPodDeletions.append(name)
            }
        }
    }

    /// Runs the actions through a fresh executor.
    func execute(_ actions: [PoolAction]) async -> ExecutionReport {
        await PoolExecutor(kube: kube, cache: cache, logger: logger)
            .execute(actions, spec: spec, pool: pool, poolID: poolID, api: ado, agentVersion: Self.agentVersion)
    }

    /// A pod of the pool in the cache, and in the cluster unless `inCluster` is false (deleted behind our back).
    /// `node` binds it, which makes its deletion graceful (pending).
    func seedPod(_ name: String, node: String? = nil, inCluster: Bool = true) async throws {
        var json: KubeJSON = [
            "apiVersion": "v1", "kind": "Pod",
            "metadata": ["name": .string(name), "namespace": "ci", "labels": ["shoal.dev/pool": "linux", "app.kubernetes.io/managed-by": "shoal"]],
            "spec": ["containers": [["name": "agent", "image": "agent:1"]], "restartPolicy": "Never"],
        ]
        if let node { json["spec"]?["nodeName"] = .string(node) }
        let pod = try json.decode(as: Pod.self)
        await cache.record(inCluster ? try kube.seed(pod, .pods) : pod)
    }

    /// Names of the pool's pods in the cache, sorted.
    func cachedPodNames() async -> [String] {
        await cache.pods(of: pool.key).compactMap(\.metadata.name).sorted()
    }

    /// Names of the pods in the fake cluster, sorted.
    var clusterPodNames: [String] { kube.names(.pods, namespace: "ci") }

    /// The pod DELETE calls, by name, in order.
    var podDeletes: [String] { kube.calls(.delete, .pods).compactMap(\.name) }

    /// The Azure DevOps calls in order, as `PATCH agent 1 enabled=false`, `GET agent 1`...
    var adoCalls: [String] { ado.calls.map(\.description) }

    /// The invariant: no pod was deleted while its agent held a job.
    func expectNoBusyPodDeleted(sourceLocation: SourceLocation = #_sourceLocation) {
        let deleted = busyPodDeletions.entries
        #expect(deleted.isEmpty, "pods deleted while their agent held a job: \(deleted)", sourceLocation: sourceLocation)
    }
}

/// Strings appended from `@Sendable` closures (a `Mutex` itself cannot be captured).
private final class StringLog: Sendable {
    private let storage = Mutex<[String]>([])
    var entries: [String] { storage.withLock { $0 } }
    func append(_ entry: String) { storage.withLock { $0.append(entry) } }
}

/// An online, enabled, idle agent named like a pod of `ci/linux`.
private func idleAgent(_ id: Int, _ name: String) -> Agent {
    Agent(id: id, name: name, version: ExecutorWorld.agentVersion, enabled: true, status: .online)
}

extension ExecutionReport {
    /// Each failure as `action: Reason` (the typed error's stable reason).
    fileprivate var failureSummaries: [String] {
        failures.map { failure in
            let reason = (failure.error as? AzureDevOpsError)?.reason ?? (failure.error as? KubernetesError)?.reason ?? "\(failure.error)"
            return "\(failure.action): \(reason)"
        }
    }

    /// Deleted pods as `name (reason)`.
    fileprivate var deletedPodSummaries: [String] { deletedPods.map { "\($0.name) (\($0.reason.rawValue))" } }
}

@Suite("PoolExecutor over recording fakes")
struct PoolExecutorTests {
    // MARK: Creating pods

    @Test("a throttled 3rd create defers the rest; the two created pods are cached with the pool label")
    func throttledCreateDefersTheRest() async throws {
        let world = try ExecutorWorld()
        world.kube.fail(.fake(429, reason: "TooManyRequests"), on: .create, .pods, occurrence: 3)

        let report = await world.execute([.createPods(count: 5)])

        #expect(report.createdPods == ["linux-aaaaa", "linux-aaaab"])
        #expect(report.creationsDeferred == 3)
        #expect(report.failures.isEmpty, "throttling is a deferral, not a failure: \(report.failureSummaries)")
        // Three attempts, none after the throttled one; every body asked for a generated name in the pool's namespace.
        let creates = world.kube.calls(.create, .pods)
        #expect(creates.count == 3)
        #expect(creates.allSatisfy { $0.namespace == "ci" && $0.body?["metadata"]?["generateName"] == "linux-" })
        #expect(world.clusterPodNames == ["linux-aaaaa", "linux-aaaab"])
        // Write-through: the cache has them before any watch event, under the pool's label.
        let cached = await world.cache.pods(of: world.pool.key)
        #expect(cached.compactMap(\.metadata.name).sorted() == ["linux-aaaaa", "linux-aaaab"])
        #expect(cached.allSatisfy { $0.metadata.labels?[AgentPodLabels.pool] == "linux" && $0.metadata.uid != nil })
        world.expectNoBusyPodDeleted()
    }

    @Test("a forbidden create is a failure with isForbidden, and creation stops", arguments: [1, 3])
    func forbiddenCreateStops(failingCall: Int) async throws {
        let world = try ExecutorWorld()
        world.kube.fail(.fake(403, reason: "Forbidden", message: "pods is forbidden: cannot create"), on: .create, .pods, occurrence: failingCall)

        let report = await world.execute([.createPods(count: 4)])

        #expect(report.createdPods.count == failingCall - 1)
        #expect(report.failures.count == 1)
        #expect(report.failures.first?.isForbidden == true)
        #expect(report.failureSummaries == ["create pod: Forbidden"])
        #expect(world.kube.calls(.create, .pods).count == failingCall, "no create after the refused one")
        #expect(report.creationsDeferred == 0, "only throttling defers; a refusal is a failure")
        #expect(await world.cachedPodNames() == world.clusterPodNames)
        world.expectNoBusyPodDeleted()
    }

    @Test("a create failing otherwise (5xx) is reported, not forbidden, and creation stops")
    func serverFailureStopsCreation() async throws {
        let world = try ExecutorWorld()
        world.kube.fail(.fake(500), on: .create, .pods, occurrence: 2)

        let report = await world.execute([.createPods(count: 3)])

        #expect(report.createdPods == ["linux-aaaaa"])
        #expect(report.failureSummaries == ["create pod: ServerError"])
        #expect(report.failures.first?.isForbidden == false)
        #expect(world.kube.calls(.create, .pods).count == 2)
        world.expectNoBusyPodDeleted()
    }

    // MARK: Deleting pods

    @Test("deleting a pod already gone (404) counts as deleted and forgets it in the cache")
    func deletingAGonePod() async throws {
        let world = try ExecutorWorld()
        try await world.seedPod("linux-zzzzz", inCluster: false)
        try await world.seedPod("linux-keepa")

        let report = await world.execute([.deletePod(name: "linux-zzzzz", reason: .completed, detail: "pod linux-zzzzz succeeded")])

        #expect(world.podDeletes == ["linux-zzzzz"])
        #expect(report.deletedPodSummaries == ["linux-zzzzz (completed)"])
        #expect(report.deletedPods.first?.detail == "pod linux-zzzzz succeeded")
        #expect(report.failures.isEmpty)
        #expect(await world.cachedPodNames() == ["linux-keepa"])
        world.expectNoBusyPodDeleted()
    }

    @Test("a pod deleted at once is forgotten; a pending deletion stays cached with its deletionTimestamp")
    func deletedAndPendingPods() async throws {
        let world = try ExecutorWorld()
        try await world.seedPod("linux-gonea")
        try await world.seedPod("linux-bound", node: "node-1")  // bound: graceful deletion, the object stays for now

        let report = await world.execute([
            .deletePod(name: "linux-gonea", reason: .stuck, detail: "stuck"),
            .deletePod(name: "linux-bound", reason: .completed, detail: "done"),
        ])

        #expect(world.podDeletes == ["linux-gonea", "linux-bound"])
        #expect(report.deletedPodSummaries == ["linux-gonea (stuck)", "linux-bound (completed)"])
        #expect(report.failures.isEmpty)
        #expect(world.clusterPodNames == ["linux-bound"])
        let cached = await world.cache.pods(of: world.pool.key)
        #expect(cached.compactMap(\.metadata.name) == ["linux-bound"])
        #expect(cached.first?.metadata.deletionTimestamp != nil, "the cache holds the terminating pod as the server returned it")
        world.expectNoBusyPodDeleted()
    }

    @Test("a pod delete that fails is reported, not counted, and the pod stays cached")
    func failedPodDelete() async throws {
        let world = try ExecutorWorld()
        try await world.seedPod("linux-stays")
        world.kube.fail(.fake(503), on: .delete, .pods, name: "linux-stays")

        let report = await world.execute([.deletePod(name: "linux-stays", reason: .disabled, detail: "disabled")])

        #expect(report.deletedPods.isEmpty)
        #expect(report.failureSummaries == ["delete pod linux-stays: ServerError"])
        #expect(await world.cachedPodNames() == ["linux-stays"])
        #expect(world.clusterPodNames == ["linux-stays"])
        world.expectNoBusyPodDeleted()
    }

    // MARK: Scale-down

    private static let candidates = [
        ScaleDownCandidate(agentID: 1, podName: "linux-aaaaa"), ScaleDownCandidate(agentID: 2, podName: "linux-bbbbb"),
    ]

    /// Two idle agents with their pods, ready for `.scaleDown(candidates)`.
    private func scaleDownWorld() async throws -> ExecutorWorld {
        let world = try ExecutorWorld(agents: [idleAgent(1, "linux-aaaaa"), idleAgent(2, "linux-bbbbb")])
        try await world.seedPod("linux-aaaaa")
        try await world.seedPod("linux-bbbbb")
        return world
    }

    @Test("scale-down: a candidate that took a job as it was disabled keeps its pod and is enabled again")
    func scaleDownLosesToAnAssignment() async throws {
        let world = try await scaleDownWorld()
        let job = try FakeAzureDevOps.job(41, reservedFor: idleAgent(1, "linux-aaaaa"))
        world.ado.change(on: .setAgentEnabled, agentID: 1, occurrence: 1) { $0.assign(job) }

        let report = await world.execute([.scaleDown(Self.candidates)])

        #expect(world.adoCalls == [
            "PATCH agent 1 enabled=false", "PATCH agent 2 enabled=false",
            "GET agent 1", "GET agent 2", "GET jobrequests",
            "PATCH agent 1 enabled=true",
        ])
        #expect(world.podDeletes == ["linux-bbbbb"])
        #expect(report.deletedPodSummaries == ["linux-bbbbb (scale-down)"])
        #expect(report.reEnabled == [1])
        #expect(report.failures.isEmpty)
        // Every disable happened before any re-read, and every re-read before the delete.
        #expect(world.timeline.calls == [
            "azdo PATCH agent 1 enabled=false", "azdo PATCH agent 2 enabled=false",
            "azdo GET agent 1", "azdo GET agent 2", "azdo GET jobrequests",
            "k8s DELETE pods ci/linux-bbbbb", "azdo PATCH agent 1 enabled=true",
        ])
        #expect(world.clusterPodNames == ["linux-aaaaa"])
        #expect(await world.cachedPodNames() == ["linux-aaaaa"])
        #expect(world.ado.world.agents[1]?.enabled == true)
        world.expectNoBusyPodDeleted()
    }

    @Test("scale-down: a request reserved for a candidate in the job list (not yet on its agent) keeps it")
    func scaleDownSeesTheJobList() async throws {
        let world = try await scaleDownWorld()
        let job = try FakeAzureDevOps.job(42, reservedFor: idleAgent(2, "linux-bbbbb"))
        world.ado.change(on: .unfinishedJobRequests) { $0.reserveInListOnly(job) }

        let report = await world.execute([.scaleDown(Self.candidates)])

        #expect(world.adoCalls == [
            "PATCH agent 1 enabled=false", "PATCH agent 2 enabled=false",
            "GET agent 1", "GET agent 2", "GET jobrequests",
            "PATCH agent 2 enabled=true",
        ])
        #expect(world.ado.world.agents[2]?.assignedRequest == nil, "the agent's own read showed no job")
        #expect(world.podDeletes == ["linux-aaaaa"])
        #expect(report.deletedPodSummaries == ["linux-aaaaa (scale-down)"])
        #expect(report.reEnabled == [2])
        #expect(report.failures.isEmpty)
        #expect(world.clusterPodNames == ["linux-bbbbb"])
        world.expectNoBusyPodDeleted()
    }

    @Test("scale-down: an agent whose re-read fails is enabled again, its pod kept, the failure reported")
    func scaleDownUnreadableAgent() async throws {
        let world = try await scaleDownWorld()
        world.ado.fail(.fake(503), on: .agent, agentID: 2)

        let report = await world.execute([.scaleDown(Self.candidates)])

        #expect(world.adoCalls == [
            "PATCH agent 1 enabled=false", "PATCH agent 2 enabled=false",
            "GET agent 1", "GET agent 2", "GET jobrequests",
            "PATCH agent 2 enabled=true",
        ])
        #expect(world.podDeletes == ["linux-aaaaa"])
        #expect(report.deletedPodSummaries == ["linux-aaaaa (scale-down)"])
        #expect(report.reEnabled == [2])
        #expect(report.failureSummaries == ["re-read agent linux-bbbbb: ServerError"])
        #expect(world.ado.world.agents[2]?.enabled == true)
        #expect(world.clusterPodNames == ["linux-bbbbb"])
        world.expectNoBusyPodDeleted()
    }

    @Test("scale-down: when the job list cannot be re-read no pod is deleted and every disabled agent is enabled again")
    func scaleDownUnreadableJobList() async throws {
        let world = try await scaleDownWorld()
        world.ado.fail(.fake(500), on: .unfinishedJobRequests)

        let report = await world.execute([.scaleDown(Self.candidates)])

        #expect(world.podDeletes.isEmpty)
        #expect(report.deletedPods.isEmpty)
        #expect(report.reEnabled.sorted() == [1, 2])
        #expect(report.failureSummaries == ["re-read job requests for scale-down: ServerError"])
        let calls = world.adoCalls
        #expect(Array(calls.prefix(5)) == ["PATCH agent 1 enabled=false", "PATCH agent 2 enabled=false", "GET agent 1", "GET agent 2", "GET jobrequests"])
        #expect(Set(calls.dropFirst(5)) == ["PATCH agent 1 enabled=true", "PATCH agent 2 enabled=true"])
        #expect(calls.count == 7)
        #expect(world.ado.world.agents.values.allSatisfy { $0.enabled == true })
        #expect(world.clusterPodNames == ["linux-aaaaa", "linux-bbbbb"])
        #expect(await world.cachedPodNames() == ["linux-aaaaa", "linux-bbbbb"])
        world.expectNoBusyPodDeleted()
    }

    @Test("scale-down: a candidate that cannot be disabled is neither re-read, deleted nor enabled")
    func scaleDownDisableFails() async throws {
        let world = try await scaleDownWorld()
        world.ado.fail(.fake(500), on: .setAgentEnabled, agentID: 1, occurrence: 1)

        let report = await world.execute([.scaleDown(Self.candidates)])

        #expect(world.adoCalls == ["PATCH agent 1 enabled=false", "PATCH agent 2 enabled=false", "GET agent 2", "GET jobrequests"])
        #expect(world.podDeletes == ["linux-bbbbb"])
        #expect(report.deletedPodSummaries == ["linux-bbbbb (scale-down)"])
        #expect(report.reEnabled.isEmpty)
        #expect(report.failureSummaries == ["disable agent linux-aaaaa: ServerError"])
        #expect(world.ado.world.agents[1]?.enabled == true, "never disabled, so nothing to undo")
        #expect(world.clusterPodNames == ["linux-aaaaa"])
        world.expectNoBusyPodDeleted()
    }

    @Test("scale-down: a candidate whose registration is already gone (404 on disable and re-read) loses its pod")
    func scaleDownRegistrationGone() async throws {
        let world = try ExecutorWorld(agents: [idleAgent(1, "linux-aaaaa")])
        try await world.seedPod("linux-aaaaa")
        try await world.seedPod("linux-bbbbb")

        let report = await world.execute([.scaleDown(Self.candidates)])

        #expect(world.adoCalls == ["PATCH agent 1 enabled=false", "PATCH agent 2 enabled=false", "GET agent 1", "GET agent 2", "GET jobrequests"])
        #expect(world.podDeletes == ["linux-aaaaa", "linux-bbbbb"])
        #expect(report.deletedPodSummaries == ["linux-aaaaa (scale-down)", "linux-bbbbb (scale-down)"])
        #expect(report.reEnabled.isEmpty)
        #expect(report.failures.isEmpty)
        #expect(world.clusterPodNames.isEmpty)
        world.expectNoBusyPodDeleted()
    }

    /// Regression: with the job list unreadable, a candidate whose registration was already gone was "enabled again",
    /// a PATCH that could only fail with 404.
    @Test("scale-down: when the job list cannot be re-read, a candidate whose registration is gone is not enabled again")
    func scaleDownUnreadableJobListWithGoneAgent() async throws {
        let world = try ExecutorWorld(agents: [idleAgent(1, "linux-aaaaa")])
        try await world.seedPod("linux-aaaaa")
        try await world.seedPod("linux-bbbbb")
        world.ado.fail(.fake(500), on: .unfinishedJobRequests)

        let report = await world.execute([.scaleDown(Self.candidates)])

        #expect(world.podDeletes.isEmpty)
        #expect(report.reEnabled == [1])
        #expect(report.failureSummaries == ["re-read job requests for scale-down: ServerError"])
        #expect(!world.adoCalls.contains("PATCH agent 2 enabled=true"))
        world.expectNoBusyPodDeleted()
    }

    // MARK: Placeholder

    @Test("registerPlaceholder sends <prefix>-placeholder with the template's capabilities, the agent version and the marker")
    func registersThePlaceholder() async throws {
        let world = try ExecutorWorld(capabilities: ["docker": "true"])

        let report = await world.execute([.registerPlaceholder])

        #expect(world.adoCalls == ["POST agent linux-placeholder"])
        let sent = try #require(world.ado.calls.first?.newAgent)
        #expect(sent.name == "linux-placeholder")
        #expect(sent.version == ExecutorWorld.agentVersion)
        #expect(sent.maxParallelism == 1)
        var expected = world.spec.templateCapabilities
        expected["Agent.Version"] = ExecutorWorld.agentVersion
        expected["Agent.Name"] = "linux-placeholder"
        expected["shoal.placeholder"] = "true"
        #expect(sent.systemCapabilities == expected)
        #expect(sent.systemCapabilities["docker"] == "true")
        let registered = try #require(world.ado.world.agent(named: "linux-placeholder"))
        #expect(report.placeholderRegistered == registered.id)
        #expect(report.failures.isEmpty)
        #expect(world.kube.calls.isEmpty)
        world.expectNoBusyPodDeleted()
    }

    @Test("removePlaceholder deletes the registration by id")
    func removesThePlaceholder() async throws {
        let world = try ExecutorWorld(agents: [Agent(id: 900, name: "linux-placeholder", status: .offline)])

        let report = await world.execute([.removePlaceholder(agentID: 900)])

        #expect(world.adoCalls == ["DELETE agent 900"])
        #expect(report.placeholderRemoved)
        #expect(report.failures.isEmpty)
        #expect(world.ado.world.agents[900] == nil)
        world.expectNoBusyPodDeleted()
    }

    @Test("placeholder failures are reported, not thrown, and the next action still runs")
    func placeholderFailuresAreReported() async throws {
        let world = try ExecutorWorld(agents: [Agent(id: 900, name: "linux-placeholder", status: .offline)])
        world.ado.fail(.fake(403), on: .addAgent)
        world.ado.fail(.fake(500), on: .deleteAgent, agentID: 900)

        let report = await world.execute([.registerPlaceholder, .removePlaceholder(agentID: 900), .createPods(count: 1)])

        #expect(world.adoCalls == ["POST agent linux-placeholder", "DELETE agent 900"])
        #expect(report.placeholderRegistered == nil)
        #expect(!report.placeholderRemoved)
        #expect(report.failureSummaries == ["register placeholder linux-placeholder: Forbidden", "remove placeholder 900: ServerError"])
        #expect(report.failures.allSatisfy { !$0.isForbidden }, "isForbidden is about Kubernetes RBAC only")
        #expect(report.createdPods == ["linux-aaaaa"])
        #expect(world.ado.world.agents[900] != nil)
        world.expectNoBusyPodDeleted()
    }

    // MARK: Registrations and order

    @Test("a refused registration delete (busy agent, 400) is reported and the other actions still run in order")
    func registrationDeleteFailureKeepsGoing() async throws {
        let busy = Agent(id: 3, name: "linux-ccccc", status: .offline)
        let world = try ExecutorWorld(agents: [busy, Agent(id: 4, name: "linux-ddddd", status: .offline)])
        let job = try FakeAzureDevOps.job(43, reservedFor: busy, received: true)
        world.ado.modify { $0.assign(job) }
        try await world.seedPod("linux-eeeee")

        let report = await world.execute([
            .deleteRegistration(agentID: 3, name: "linux-ccccc", reason: .podCompleted),
            .deletePod(name: "linux-eeeee", reason: .completed, detail: "done"),
            .deleteRegistration(agentID: 4, name: "linux-ddddd", reason: .orphan),
            .createPods(count: 1),
        ])

        #expect(world.timeline.calls == ["azdo DELETE agent 3", "k8s DELETE pods ci/linux-eeeee", "azdo DELETE agent 4", "k8s POST pods ci"])
        #expect(report.failureSummaries == ["delete registration linux-ccccc (pod-completed): BadRequest"])
        #expect(report.deletedRegistrations.map(\.name) == ["linux-ddddd"])
        #expect(report.deletedRegistrations.map(\.reason) == [.orphan])
        #expect(report.deletedPodSummaries == ["linux-eeeee (completed)"])
        #expect(report.createdPods == ["linux-aaaaa"])
        #expect(world.ado.world.agents.keys.sorted() == [3])
        #expect(world.clusterPodNames == ["linux-aaaaa"])
        world.expectNoBusyPodDeleted()
    }

    @Test("a registration already gone counts as deleted")
    func registrationAlreadyGone() async throws {
        let world = try ExecutorWorld()

        let report = await world.execute([.deleteRegistration(agentID: 5, name: "linux-fffff", reason: .orphan)])

        #expect(world.adoCalls == ["DELETE agent 5"])
        #expect(report.deletedRegistrations.map(\.name) == ["linux-fffff"])
        #expect(report.failures.isEmpty)
        world.expectNoBusyPodDeleted()
    }
}

@Suite("Recording fakes")
struct FakesTests {
    @Test("the invariant observer sees the organization as it is when the DELETE arrives")
    func invariantObserverCatchesABusyDelete() async throws {
        let agent = idleAgent(1, "linux-aaaaa")
        let world = try ExecutorWorld(agents: [agent])
        try await world.seedPod("linux-aaaaa")
        let job = try FakeAzureDevOps.job(44, reservedFor: agent)
        world.ado.modify { $0.assign(job) }
        let observed = StringLog()
        world.kube.observe { call, _ in observed.append(call.description) }

        _ = try await world.kube.deletePod(named: "linux-aaaaa")

        #expect(observed.entries == ["DELETE pods ci/linux-aaaaa"])
        #expect(world.ado.world.holdsJob(agentID: 1))
        #expect(world.busyPodDeletions.entries == ["linux-aaaaa"], "the invariant check would fail this test")
        #expect(world.clusterPodNames.isEmpty)
    }

    @Test("occurrence rules count only their matching calls; rules without one fire every time")
    func scriptOccurrences() async throws {
        let kube = FakeKubernetes(defaultNamespace: "ns")
        kube.fail(.fake(409, reason: "Conflict"), on: .get, .pods, name: "p-aaaaa", occurrence: 2)
        let pod = DynamicObject(["metadata": ["generateName": "p-"]])
        let a = try await kube.create(pod, .pods, namespace: nil)
        _ = try await kube.create(pod, .pods, namespace: nil)
        #expect(a.metadata.name == "p-aaaaa")
        #expect(kube.names(.pods, namespace: "ns") == ["p-aaaaa", "p-aaaab"])
        _ = try await kube.get(DynamicObject.self, .pods, namespace: nil, name: "p-aaaaa")
        await #expect(throws: KubernetesError.self) { _ = try await kube.get(DynamicObject.self, .pods, namespace: nil, name: "p-aaaaa") }
        _ = try await kube.get(DynamicObject.self, .pods, namespace: nil, name: "p-aaaaa")
        _ = try await kube.get(DynamicObject.self, .pods, namespace: nil, name: "p-aaaab")
        let list = try await kube.list(DynamicObject.self, .pods, namespace: "ns", options: ListOptions(labelSelector: nil))
        #expect(list.items.count == 2)
        #expect(kube.calls.map(\.description) == [
            "POST pods ns", "POST pods ns", "GET pods ns/p-aaaaa", "GET pods ns/p-aaaaa", "GET pods ns/p-aaaaa", "GET pods ns/p-aaaab", "LIST pods ns",
        ])

        let ado = FakeAzureDevOps(agents: [idleAgent(1, "x-aaaaa")])
        ado.fail(.fake(500), on: .agent, occurrence: 2)
        _ = try await ado.agent(poolID: 7, agentID: 1, options: AgentQueryOptions())
        await #expect(throws: AzureDevOpsError.self) { try await ado.agent(poolID: 7, agentID: 1, options: AgentQueryOptions()) }
        _ = try await ado.agent(poolID: 7, agentID: 1, options: AgentQueryOptions())
        await #expect(throws: AzureDevOpsError.self) { try await ado.agents(poolID: 8, options: AgentQueryOptions()) }
        #expect(ado.calls.count == 4)
    }
}
