import Kubernetes
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What one reconcile saw of a pool, reduced to the facts the decision needs; built by ``PoolObserver``.
///
/// Plain values only, so ``PoolDecision/decide(spec:observation:memory:)`` stays a pure function that tests (and a
/// future trace-driven simulation) can drive with made-up observations on a virtual clock.
struct PoolObservation: Sendable, Equatable {
    /// When the observation was made (wall clock; compared with pod creation times).
    var now: Date
    /// Every pod labelled for this pool, completed ones included.
    var pods: [PodFacts]
    /// Every registration in the Azure DevOps pool.
    var agents: [AgentFacts]
    /// Every unfinished job request of the Azure DevOps pool.
    var jobs: [JobFacts]
    /// Capabilities of registrations that are neither our pods' agents nor our placeholder, by agent id. Ids missing
    /// here are treated as not able to run our jobs.
    var foreignCapabilities: [Int: [String: String]] = [:]
    /// The placeholder registration's capabilities, when known; a placeholder that no longer carries the template's
    /// capabilities (the spec changed) is replaced.
    var placeholderCapabilities: [String: String]? = nil
    /// The agent version our agents report (`Agent.Version`), for demands such as `Agent.Version -gtVersion 2.x`.
    var agentVersion: String
    /// Whether the AgentPool is being deleted (its finalizer runs instead of scaling).
    var deleting = false
}

/// One pod of the pool.
struct PodFacts: Sendable, Equatable {
    /// The pod's lifecycle phase as the decision sees it.
    enum Phase: String, Sendable, Hashable {
        case pending = "Pending", running = "Running", succeeded = "Succeeded", failed = "Failed", unknown = "Unknown"

        /// Whether the pod's containers have ended for good.
        var isCompleted: Bool { self == .succeeded || self == .failed }
    }

    /// Pod name = agent name.
    var name: String
    /// `status.phase`.
    var phase: Phase
    /// `metadata.creationTimestamp`.
    var createdAt: Date
    /// Whether `metadata.deletionTimestamp` is set.
    var terminating = false
    /// Why the pod is not running yet (unschedulable, image pull errors), from its conditions and container states.
    var waitingReason: String? = nil
    /// The entrypoint's termination message, when the container ended and wrote one.
    var termination: TerminationMessage? = nil
    /// Whether the controller registered this pod's agent (label `shoal.dev/registration: controller`): its
    /// registration is the controller's to delete whenever the pod goes, since the pod holds no credential.
    var registeredByController = false
    /// Whether the agent container has ended (so ``phase`` says completed) while other containers of the pod still
    /// run: the pod is done as an agent but still holds its resources, so it counts against `maxAgents` until it
    /// is gone.
    var sidecarsRunning = false

    init(
        name: String, phase: Phase, createdAt: Date, terminating: Bool = false, waitingReason: String? = nil,
        termination: TerminationMessage? = nil, registeredByController: Bool = false, sidecarsRunning: Bool = false
    ) {
        self.sidecarsRunning = sidecarsRunning
        self.name = name
        self.phase = phase
        self.createdAt = createdAt
        self.terminating = terminating
        self.waitingReason = waitingReason
        self.termination = termination
        self.registeredByController = registeredByController
    }
}

/// One registration in the Azure DevOps pool.
struct AgentFacts: Sendable, Hashable {
    /// Agent id.
    var id: Int
    /// Agent name (= pod name for ours).
    var name: String
    /// Whether the agent's listener is connected.
    var online: Bool
    /// Whether the agent may receive jobs.
    var enabled: Bool
    /// The job it holds, if any.
    var assignedRequestID: Int64?

    init(id: Int, name: String, online: Bool, enabled: Bool = true, assignedRequestID: Int64? = nil) {
        self.id = id
        self.name = name
        self.online = online
        self.enabled = enabled
        self.assignedRequestID = assignedRequestID
    }

    /// Builds the facts from a REST agent (listed with `includeAssignedRequest`).
    init(_ agent: Agent) {
        self.init(
            id: agent.id, name: agent.name, online: agent.status == .online, enabled: agent.enabled != false,
            assignedRequestID: agent.assignedRequest?.requestId)
    }
}

/// One unfinished job request.
struct JobFacts: Sendable, Hashable {
    /// `requestId`.
    var requestID: Int64
    /// Whether the service already gave it to an agent (reserved, assigned, received or finished).
    var assigned: Bool
    /// The agent it is reserved for, if any.
    var reservedAgentID: Int?
    /// Agents the service says can run it; nil when the service did not say.
    var matchedAgentIDs: [Int]?
    /// Its demands.
    var demands: [Demand]
    /// When it was queued.
    var queueTime: Date?
    /// When it was assigned, if it was.
    var assignTime: Date?

    init(requestID: Int64, assigned: Bool = false, reservedAgentID: Int? = nil, matchedAgentIDs: [Int]? = nil, demands: [Demand] = [], queueTime: Date? = nil, assignTime: Date? = nil) {
        self.requestID = requestID
        self.assigned = assigned
        self.reservedAgentID = reservedAgentID
        self.matchedAgentIDs = matchedAgentIDs
        self.demands = demands
        self.queueTime = queueTime
        self.assignTime = assignTime
    }

    /// Builds the facts from a REST job request.
    init(_ request: JobRequest) {
        self.init(
            requestID: request.requestId, assigned: request.phase != .queued, reservedAgentID: request.reservedAgent?.id,
            matchedAgentIDs: request.matchedAgents?.map(\.id), demands: request.parsedDemands, queueTime: request.queueTime,
            assignTime: request.assignTime)
    }
}

/// What the controller remembers about a pool between reconciles; owned by the reconciler, updated only by
/// ``PoolDecision/decide(spec:observation:memory:)``. Losing it (a restart) only delays collection and scale-down.
struct PoolMemory: Sendable, Hashable {
    /// Offline registrations named like our pods without a pod: when each was first seen so.
    var orphansFirstSeen: [Int: Date] = [:]
    /// Since when idle agents have exceeded what the pool needs.
    var surplusSince: Date?
}

/// The counts a reconcile derived; written to status and metrics.
struct PoolCounts: Sendable, Hashable {
    /// Unassigned job requests our agents could run.
    var queued = 0
    /// Our agents holding a job.
    var busy = 0
    /// Our agents online, enabled and without a job.
    var idle = 0
    /// Our pods not yet registered and online.
    var starting = 0
    /// Live pods (not Succeeded/Failed, or whose agent ended while a sidecar still runs), terminating ones included.
    var pods = 0
    /// min(maxAgents, busy + queued + standby).
    var desired = 0
}
