import Kubernetes
import Logging
import Shared

/// A watch-backed cache of the pods Shoal manages, per namespace, filled by one list-watch per namespace that has
/// AgentPools (so the controller needs pod permissions only where agents run).
///
/// A namespace counts as synced once its first list arrived; until then the reconciler must not act on it (an empty
/// cache would look like "no pods" and create `maxAgents` of them). Pods the controller creates are added at once
/// (write-through), so a watch that lags behind never causes a second pod for the same shortfall.
actor PodCache {
    /// What went wrong watching one namespace (RBAC, usually); cleared when the watch recovers.
    struct NamespaceFailure: Sendable, Equatable {
        /// The error's description (names the verb and resource for a 403).
        var message: String
        /// Whether it was a 403.
        var forbidden: Bool
    }

    private var pods: [String: [String: Pod]] = [:]
    private var synced: Set<String> = []
    private var failures: [String: NamespaceFailure] = [:]
    private var wanted: Set<String> = []
    private var started: Set<String> = []
    private let namespacesChanged: AsyncStream<Void>.Continuation
    private let namespacesStream: AsyncStream<Void>
    private let api: any KubernetesAPI
    private let clock: any ShoalClock
    private let logger: Logger
    /// Called with the namespace and the pod's `shoal.dev/pool` label on every change, to wake that pool.
    private let onChange: @Sendable (PoolKey) async -> Void

    /// A cache that lists and watches through `api`; nothing is watched until ``watch(namespace:)`` and ``run()``.
    init(api: any KubernetesAPI, clock: any ShoalClock, logger: Logger, onChange: @escaping @Sendable (PoolKey) async -> Void) {
        self.api = api
        self.clock = clock
        self.logger = logger
        self.onChange = onChange
        (namespacesStream, namespacesChanged) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Asks for a namespace to be watched (idempotent).
    func watch(namespace: String) {
        guard wanted.insert(namespace).inserted else { return }
        namespacesChanged.yield()
    }

    /// Whether the namespace's first list has arrived.
    func isSynced(_ namespace: String) -> Bool { synced.contains(namespace) }

    /// Why the namespace cannot be watched, if it cannot.
    func failure(in namespace: String) -> NamespaceFailure? { failures[namespace] }

    /// The pods of one AgentPool.
    func pods(of pool: PoolKey) -> [Pod] {
        (pods[pool.namespace] ?? [:]).values.filter { $0.metadata.labels?[AgentPodLabels.pool] == pool.name }
    }

    /// Records a pod the controller just created or deleted, ahead of the watch.
    func record(_ pod: Pod) {
        guard let namespace = pod.metadata.namespace, let name = pod.metadata.name else { return }
        pods[namespace, default: [:]][name] = pod
    }

    /// Forgets a pod the controller just deleted for good.
    func forget(namespace: String, name: String) {
        pods[namespace]?[name] = nil
    }

    /// Watches every wanted namespace until cancelled; a namespace whose watch fails for good (403) is retried every
    /// 30 seconds and its failure reported through ``failure(in:)``.
    func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            for await _ in namespacesStream {
                for namespace in wanted.subtracting(started) {
                    started.insert(namespace)
                    group.addTask { await self.watchLoop(namespace: namespace) }
                }
            }
        }
    }

    private func watchLoop(namespace: String) async {
        while !Task.isCancelled {
            let watch = ListWatch<Pod>(
                api: api, resource: .pods, namespace: namespace, labelSelector: AgentPodLabels.pool, clock: clock, logger: logger)
            do {
                for try await event in watch { await apply(event, namespace: namespace) }
                return
            } catch is CancellationError {
                return
            } catch {
                let forbidden: Bool
                if case .forbidden = error as? KubernetesError { forbidden = true } else { forbidden = false }
                setFailure(NamespaceFailure(message: "\(error)", forbidden: forbidden), namespace: namespace)
                logger.error("cannot watch pods", metadata: ["namespace": "\(namespace)", "error": "\(error)"])
                try? await clock.sleep(for: .seconds(30))
            }
        }
    }

    private func setFailure(_ failure: NamespaceFailure?, namespace: String) {
        failures[namespace] = failure
    }

    private func apply(_ event: ListWatchEvent<Pod>, namespace: String) async {
        var touched: Set<String> = []
        switch event {
        case .relisted(let list, _):
            let old = pods[namespace] ?? [:]
            var fresh: [String: Pod] = [:]
            for pod in list { if let name = pod.metadata.name { fresh[name] = pod } }
            pods[namespace] = fresh
            synced.insert(namespace)
            failures[namespace] = nil
            for pod in old.values { touched.insert(pod.metadata.labels?[AgentPodLabels.pool] ?? "") }
            for pod in fresh.values { touched.insert(pod.metadata.labels?[AgentPodLabels.pool] ?? "") }
        case .added(let pod), .modified(let pod):
            guard let name = pod.metadata.name else { return }
            pods[namespace, default: [:]][name] = pod
            touched.insert(pod.metadata.labels?[AgentPodLabels.pool] ?? "")
        case .deleted(let pod):
            guard let name = pod.metadata.name else { return }
            pods[namespace]?[name] = nil
            touched.insert(pod.metadata.labels?[AgentPodLabels.pool] ?? "")
        }
        for pool in touched where !pool.isEmpty { await onChange(PoolKey(namespace: namespace, name: pool)) }
    }
}
