import Kubernetes
import Logging
import Shared

/// When each pool is due; woken early by watch events, never more often than ``minimumInterval``.
actor PoolSchedule {
    /// The shortest time between two reconciles of one pool triggered by events.
    let minimumInterval: Duration
    private let clock: any ShoalClock
    private var due: [PoolKey: Duration] = [:]
    private var lastRun: [PoolKey: Duration] = [:]

    /// A schedule on `clock`.
    init(clock: any ShoalClock, minimumInterval: Duration = .seconds(1)) {
        self.clock = clock
        self.minimumInterval = minimumInterval
    }

    /// Makes a pool due as soon as the minimum interval allows (a change was seen).
    func wake(_ key: PoolKey) {
        let earliest = (lastRun[key].map { $0 + minimumInterval }) ?? clock.monotonicNow()
        due[key] = min(due[key] ?? earliest, max(earliest, clock.monotonicNow()))
    }

    /// Makes a pool due after `delay` unless it is due sooner.
    func schedule(_ key: PoolKey, after delay: Duration) {
        let at = clock.monotonicNow() + delay
        due[key] = min(due[key] ?? at, at)
    }

    /// Whether the pool has a due time.
    func isScheduled(_ key: PoolKey) -> Bool { due[key] != nil }

    /// Drops a pool.
    func remove(_ key: PoolKey) {
        due[key] = nil
        lastRun[key] = nil
    }

    /// The most overdue pool, removed from the schedule; nil when none is due.
    func takeDue() -> PoolKey? {
        let now = clock.monotonicNow()
        guard let next = due.filter({ $0.value <= now }).min(by: { ($0.value, $0.key) < ($1.value, $1.key) })?.key else { return nil }
        due[next] = nil
        lastRun[next] = now
        return next
    }
}

/// The AgentPools the controller manages, as last seen by the watch.
actor PoolRegistry {
    private var pools: [PoolKey: AgentPoolObject] = [:]
    /// Whether the first list arrived (before it, "no AgentPool" is not yet known to be true).
    private(set) var isSynced = false

    /// The pool's latest object.
    func pool(_ key: PoolKey) -> AgentPoolObject? { pools[key] }

    /// Stores an object; returns whether the change needs a reconcile (new, new generation, deletion, finalizers).
    @discardableResult
    func upsert(_ object: AgentPoolObject) -> Bool {
        let previous = pools[object.key]
        pools[object.key] = object
        guard let previous else { return true }
        return previous.metadata.generation != object.metadata.generation
            || previous.metadata.deletionTimestamp != object.metadata.deletionTimestamp
            || previous.metadata.finalizers != object.metadata.finalizers
    }

    /// Replaces everything (a relist); returns the keys that disappeared.
    func replaceAll(_ objects: [AgentPoolObject]) -> [PoolKey] {
        let fresh = Dictionary(objects.map { ($0.key, $0) }, uniquingKeysWith: { _, last in last })
        let gone = pools.keys.filter { fresh[$0] == nil }
        pools = fresh
        isSynced = true
        return gone
    }

    /// Removes a pool.
    func remove(_ key: PoolKey) { pools[key] = nil }

    /// Every known pool.
    var all: [AgentPoolObject] { Array(pools.values) }
}

/// Reconciles due pools one at a time until cancelled.
struct ReconcileLoop: Sendable {
    /// The pools.
    var registry: PoolRegistry
    /// When they are due.
    var schedule: PoolSchedule
    /// Does the work.
    var reconciler: PoolReconciler
    /// Time.
    var clock: any ShoalClock
    /// In legacy mode, the original project's configuration (one pool, token from `AZDO_TOKEN`).
    var legacy: LegacyConfiguration?
    /// Kubernetes API (legacy mode keeps the token Secret).
    var kube: any KubernetesAPI
    /// How long to sleep when nothing is due.
    var idleTick: Duration = .milliseconds(200)
    /// Called after every reconcile (liveness).
    var onProgress: @Sendable () -> Void = {}

    /// Runs until the task is cancelled.
    func run() async throws {
        // Legacy mode: the token Secret is checked once a minute, not on every reconcile.
        var legacySecretCheckedAt: Duration?
        while true {
            try Task.checkCancellation()
            onProgress()
            // Legacy mode picks "the AgentPool in TARGET_NAMESPACE, else a default one": only once the list is in.
            if legacy != nil, await !registry.isSynced {
                try await clock.sleep(for: idleTick)
                continue
            }
            if let legacy {
                let key = legacy.pool(from: await registry.all).key
                if await !schedule.isScheduled(key) { await schedule.wake(key) }
            }
            guard let key = await schedule.takeDue() else {
                try await clock.sleep(for: idleTick)
                continue
            }
            let object: AgentPoolObject?
            if let legacy {
                let chosen = legacy.pool(from: await registry.all)
                object = chosen.key == key ? chosen : nil
                if object != nil, legacySecretCheckedAt.map({ clock.monotonicNow() - $0 >= .seconds(60) }) ?? true {
                    if (try? await legacy.ensureSecret(kube)) != nil { legacySecretCheckedAt = clock.monotonicNow() }
                }
            } else {
                object = await registry.pool(key)
            }
            guard let object else { continue }
            let outcome = await reconciler.reconcile(object, token: legacy?.token)
            if outcome.reason == "Deleted", object.metadata.deletionTimestamp != nil { continue }
            await schedule.schedule(key, after: outcome.requeueAfter)
        }
    }
}

/// Keeps ``PoolRegistry`` in step with the AgentPools in the API and wakes pools that changed.
struct AgentPoolWatcher: Sendable {
    /// Kubernetes API.
    var kube: any KubernetesAPI
    /// The namespace to watch; nil for all.
    var namespace: String?
    /// Where pools go.
    var registry: PoolRegistry
    /// Wakes pools.
    var schedule: PoolSchedule
    /// Pods of watched pools' namespaces.
    var pods: PodCache
    /// Drops deleted pools' memory.
    var reconciler: PoolReconciler
    /// Time.
    var clock: any ShoalClock
    /// Logger.
    var logger: Logger

    /// Watches until cancelled; throws when the watch fails for good (RBAC).
    func run() async throws {
        let watch = ListWatch<AgentPoolObject>(api: kube, resource: AgentPoolResource.resource, namespace: namespace, clock: clock, logger: logger)
        for try await event in watch {
            switch event {
            case .relisted(let objects, _):
                for gone in await registry.replaceAll(objects) {
                    await schedule.remove(gone)
                    await reconciler.forget(gone)
                }
                for object in objects { await track(object, wake: true) }
            case .added(let object), .modified(let object):
                await track(object, wake: await registry.upsert(object))
            case .deleted(let object):
                await registry.remove(object.key)
                await schedule.remove(object.key)
                await reconciler.forget(object.key)
                logger.info("AgentPool deleted", metadata: ["pool": "\(object.key)"])
            }
        }
    }

    private func track(_ object: AgentPoolObject, wake: Bool) async {
        await pods.watch(namespace: object.key.namespace)
        if wake { await schedule.wake(object.key) }
    }
}
