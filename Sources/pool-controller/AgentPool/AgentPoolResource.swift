import Kubernetes
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The `AgentPool` custom resource's coordinates and the names Shoal gives the things it manages for one.
enum AgentPoolResource {
    /// API group of the custom resource.
    static let group = "shoal.dev"
    /// The only served version.
    static let version = "v1alpha1"
    /// Kind of the custom resource.
    static let kind = "AgentPool"
    /// `apiVersion` of the custom resource.
    static let apiVersion = "\(group)/\(version)"
    /// Where AgentPools live in the API.
    static let resource = KubernetesResource(group: group, version: version, plural: "agentpools", namespaced: true)
    /// The finalizer that keeps an AgentPool until its placeholder registration is removed.
    static let finalizer = "shoal.dev/placeholder"
    /// Field manager / Event source name.
    static let component = "shoal-pool-controller"
}

/// An `AgentPool` as read from the API: metadata, the raw spec (decoded into ``AgentPoolSpec``) and status.
struct AgentPoolObject: KubernetesObject, Hashable {
    /// `shoal.dev/v1alpha1`.
    var apiVersion: String?
    /// `AgentPool`.
    var kind: String?
    /// Standard metadata.
    var metadata: ObjectMeta
    /// The spec exactly as stored; decoded and validated by ``AgentPoolSpec/resolve(from:)``.
    var spec: KubeJSON?
    /// The status as last written.
    var status: AgentPoolStatus?

    /// Builds an object (tests, legacy mode).
    init(metadata: ObjectMeta, spec: KubeJSON?, status: AgentPoolStatus? = nil) {
        self.apiVersion = AgentPoolResource.apiVersion
        self.kind = AgentPoolResource.kind
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }

    /// `namespace/name`, the key pools are scheduled and logged by.
    var key: PoolKey { PoolKey(namespace: metadata.namespace ?? "", name: metadata.name ?? "") }
}

/// Identifies one AgentPool: `namespace/name`.
struct PoolKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The AgentPool's namespace.
    var namespace: String
    /// The AgentPool's name.
    var name: String
    var description: String { "\(namespace)/\(name)" }
    static func < (lhs: PoolKey, rhs: PoolKey) -> Bool { (lhs.namespace, lhs.name) < (rhs.namespace, rhs.name) }
}

/// `status` of an AgentPool: what the controller last observed and decided.
struct AgentPoolStatus: Codable, Sendable, Hashable {
    /// The `metadata.generation` this status describes.
    var observedGeneration: Int64?
    /// The Azure DevOps pool id resolved from `spec.poolName`.
    var poolId: Int?
    /// Queued job requests our agents could run.
    var queued: Int?
    /// Our agents running a job.
    var busy: Int?
    /// Our agents online, enabled and without a job.
    var idle: Int?
    /// Pods created but not yet registered and online.
    var starting: Int?
    /// Live pods of the pool (not Succeeded/Failed), terminating ones included.
    var pods: Int?
    /// The agents the controller wants (min(maxAgents, busy + queued + standby)).
    var desired: Int?
    /// The placeholder registration's agent id, while one is kept.
    var placeholderAgentId: Int?
    /// When the last reconcile finished.
    var lastReconcileTime: Date?
    /// `Ready` and `Degraded`.
    var conditions: [PoolCondition]?

    init() {}
}

/// A status condition (the shape of `metav1.Condition`).
struct PoolCondition: Codable, Sendable, Hashable {
    /// `Ready` or `Degraded`.
    var type: String
    /// `True`, `False` or `Unknown`.
    var status: String
    /// A CamelCase reason, stable for alerting.
    var reason: String
    /// What happened and what to do about it.
    var message: String
    /// When `status` last changed.
    var lastTransitionTime: Date?
    /// The generation the condition was computed for.
    var observedGeneration: Int64?

    init(type: String, status: Bool, reason: String, message: String, lastTransitionTime: Date? = nil, observedGeneration: Int64? = nil) {
        self.type = type
        self.status = status ? "True" : "False"
        self.reason = reason
        // Never empty: a merge patch carrying "" reaches the CRD validation of the v1.20 API server as null and is
        // refused (found by the end-to-end test; see AgentPoolStatusTests).
        self.message = message.isEmpty ? reason : message
        self.lastTransitionTime = lastTransitionTime
        self.observedGeneration = observedGeneration
    }
}

extension [PoolCondition] {
    /// Sets a condition, keeping `lastTransitionTime` when its status did not change.
    mutating func set(_ condition: PoolCondition, now: Date) {
        var condition = condition
        if let index = firstIndex(where: { $0.type == condition.type }) {
            condition.lastTransitionTime = self[index].status == condition.status ? self[index].lastTransitionTime ?? now : now
            self[index] = condition
        } else {
            condition.lastTransitionTime = now
            append(condition)
        }
    }

    /// The condition of a type, if set.
    subscript(type: String) -> PoolCondition? { first { $0.type == type } }
}
