import Kubernetes
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Reads one pool's state from Azure DevOps and the pod cache and reduces it to a ``PoolObservation``.
///
/// Reads agents before job requests; the decision tolerates a job being assigned between the two reads in either
/// order. Capabilities of registrations we don't manage are fetched once per agent id and cached (a pool's agent list
/// is read every tick; capabilities would make it many times larger).
actor PoolObserver {
    /// The agent version assumed when the organization lists no agent package.
    static let fallbackAgentVersion = "4.266.2"
    /// How long the newest agent version is cached.
    static let agentVersionLifetime: Duration = .seconds(3600)

    private let clock: any ShoalClock
    private var foreignCapabilities: [Int: [String: String]] = [:]
    private var agentVersion: (value: String, fetchedAt: Duration)?
    /// The placeholder's capabilities by its agent id (a registration's capabilities only change by re-registering).
    private var placeholderCache: (id: Int, capabilities: [String: String])?

    /// An observer using `clock` for cache lifetimes.
    init(clock: any ShoalClock) { self.clock = clock }

    /// Observes the pool: `pods` from the cache, agents and unfinished job requests from Azure DevOps.
    func observe(
        spec: PoolSpec, poolID: Int, api: any AzureDevOpsAPI, pods: [Pod], deleting: Bool
    ) async throws(AzureDevOpsError) -> (observation: PoolObservation, agents: [Agent], jobs: [JobRequest]) {
        let agents = try await api.agents(poolID: poolID, options: AgentQueryOptions(includeAssignedRequest: true))
        let jobs = try await api.unfinishedJobRequests(poolID: poolID)
        let version = try await currentAgentVersion(api)

        let own = Set([PoolDecision.placeholderName(prefix: spec.prefix)])
        let podNames = Set(pods.compactMap(\.metadata.name))
        let foreign = agents.filter { !own.contains($0.name) && !podNames.contains($0.name) && !PoolDecision.isPodName($0.name, prefix: spec.prefix) }
        let foreignIDs = Set(foreign.map(\.id))
        foreignCapabilities = foreignCapabilities.filter { foreignIDs.contains($0.key) }
        for agent in foreign where foreignCapabilities[agent.id] == nil {
            do {
                let detailed = try await api.agent(poolID: poolID, agentID: agent.id, options: AgentQueryOptions(includeCapabilities: true, includeAssignedRequest: false))
                foreignCapabilities[agent.id] = detailed.capabilities
            } catch .notFound {
                continue
            }
        }

        var placeholderCapabilities: [String: String]?
        if let placeholder = agents.first(where: { own.contains($0.name) }) {
            if placeholderCache?.id != placeholder.id {
                do {
                    let detailed = try await api.agent(poolID: poolID, agentID: placeholder.id, options: AgentQueryOptions(includeCapabilities: true, includeAssignedRequest: false))
                    placeholderCache = (placeholder.id, detailed.capabilities)
                } catch .notFound {
                    placeholderCache = nil
                }
            }
            placeholderCapabilities = placeholderCache?.capabilities
        }

        var observation = PoolObservation(
            now: clock.wallNow(), pods: pods.map(PodFacts.init), agents: agents.map(AgentFacts.init), jobs: jobs.map(JobFacts.init),
            foreignCapabilities: foreignCapabilities, agentVersion: version, deleting: deleting)
        observation.placeholderCapabilities = placeholderCapabilities
        return (observation, agents, jobs)
    }

    /// The newest agent version for Linux x64 (for `Agent.Version` demands and the placeholder), cached for an hour.
    func currentAgentVersion(_ api: any AzureDevOpsAPI) async throws(AzureDevOpsError) -> String {
        let now = clock.monotonicNow()
        if let cached = agentVersion, now - cached.fetchedAt < Self.agentVersionLifetime { return cached.value }
        let newest = try await api.newestAgentPackage(platform: "linux-x64")
        let value = newest?.version.description ?? Self.fallbackAgentVersion
        agentVersion = (value, now)
        return value
    }
}

extension PodFacts {
    /// Reduces a pod to what the decision needs.
    init(_ pod: Pod) {
        var phase = PodFacts.Phase(rawValue: pod.status?.phase ?? "Pending") ?? .unknown
        var termination: TerminationMessage?
        var waiting: String?
        // The agent container (named `agent`, else the first, as the pod factory chose it) decides when the pod is
        // done: once it has terminated, the pod's one job is over, whatever sidecars (a Docker daemon, a proxy) still
        // run. Without this a pod with a classic sidecar stays Running and holds a slot until the pending timeout.
        let containers = pod.spec?.containers ?? []
        let agentName = containers.first { $0.name == "agent" }?.name ?? containers.first?.name
        var sidecarsRunning = false
        if phase == .running || phase == .pending, let agentName,
            let ended = pod.status?.containerStatuses?.first(where: { $0.name == agentName })?.state?.terminated
        {
            phase = ended.exitCode == 0 ? .succeeded : .failed
            sidecarsRunning = true
        }
        for status in pod.status?.containerStatuses ?? [] {
            if agentName == nil || status.name == agentName, let message = status.state?.terminated?.message,
                let parsed = try? TerminationMessage.parse(message)
            {
                termination = parsed
            }
            if let state = status.state?.waiting, let reason = state.reason {
                waiting = state.message.map { "\(reason): \($0)" } ?? reason
            }
        }
        if waiting == nil, let scheduled = pod.status?.conditions?.first(where: { $0.type == "PodScheduled" && $0.status == "False" }) {
            waiting = [scheduled.reason, scheduled.message].compactMap { $0 }.joined(separator: ": ")
        }
        self.init(
            name: pod.metadata.name ?? "", phase: phase, createdAt: pod.metadata.creationTimestamp ?? .distantPast,
            terminating: pod.metadata.deletionTimestamp != nil, waitingReason: waiting, termination: termination,
            registeredByController: pod.metadata.labels?[AgentPodLabels.registration] == RegistrationMode.controller.rawValue,
            sidecarsRunning: sidecarsRunning)
    }
}
