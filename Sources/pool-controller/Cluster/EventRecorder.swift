import Kubernetes
import Logging
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Records core/v1 Events on AgentPools, so `kubectl describe agentpool` shows what the controller did and why.
///
/// The same reason and message for the same pool is recorded at most once per ``repeatInterval``, so a pool stuck
/// on one error does not flood the namespace. Failing to record an Event never fails a reconcile.
actor EventRecorder {
    /// How often an identical Event may repeat.
    let repeatInterval: Duration
    private let api: any KubernetesAPI
    private let clock: any ShoalClock
    private let identity: String
    private let logger: Logger
    private var lastRecorded: [String: Duration] = [:]

    /// A recorder that creates Events through `api`; `identity` is the reporting instance (the pod name).
    init(api: any KubernetesAPI, clock: any ShoalClock, identity: String, repeatInterval: Duration = .seconds(300), logger: Logger) {
        self.api = api
        self.clock = clock
        self.identity = identity
        self.repeatInterval = repeatInterval
        self.logger = logger
    }

    /// Records a Normal (or, with `warning`, a Warning) Event on the pool.
    func record(_ pool: PoolReference, reason: String, message: String, warning: Bool = false) async {
        let key = "\(pool.key)|\(reason)|\(message)"
        let now = clock.monotonicNow()
        if let last = lastRecorded[key], now - last < repeatInterval { return }
        lastRecorded[key] = now
        if lastRecorded.count > 4096 { lastRecorded = lastRecorded.filter { now - $0.value < repeatInterval } }

        let event = Event(
            metadata: ObjectMeta(generateName: "\(pool.key.name).", namespace: pool.key.namespace),
            involvedObject: ObjectReference(
                apiVersion: AgentPoolResource.apiVersion, kind: AgentPoolResource.kind, name: pool.key.name, namespace: pool.key.namespace,
                uid: pool.uid),
            reason: reason, message: String(message.prefix(1024)), type: warning ? "Warning" : "Normal",
            source: EventSource(component: AgentPoolResource.component), timestamp: clock.wallNow())
        var withInstance = event
        withInstance.reportingComponent = AgentPoolResource.component
        withInstance.reportingInstance = identity
        do {
            _ = try await api.createEvent(withInstance, namespace: pool.key.namespace)
        } catch {
            logger.debug("could not record event", metadata: ["pool": "\(pool.key)", "reason": "\(reason)", "error": "\(error)"])
        }
    }
}

/// An AgentPool as Events refer to it.
struct PoolReference: Sendable, Hashable {
    /// `namespace/name`.
    var key: PoolKey
    /// `metadata.uid`, when the AgentPool exists as an object (not in legacy mode without one).
    var uid: String?
}
