import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Why the controller deletes a pod; a metric label and part of the Event.
enum PodDeletionReason: String, Sendable, Hashable, CaseIterable {
    /// The pod's container ended (Succeeded or Failed): the entrypoint's one job is over.
    case completed
    /// The pod stayed Pending (or unregistered) longer than the pending timeout.
    case stuck
    /// Its agent was idle above the standby and Azure DevOps confirmed it idle after disabling it.
    case scaleDown = "scale-down"
    /// Its agent is disabled in Azure DevOps and holds no job, so it can never serve one.
    case disabled
}

/// Why the controller deletes a registration.
enum RegistrationDeletionReason: String, Sendable, Hashable, CaseIterable {
    /// The pod completed and the entrypoint could not unregister.
    case podCompleted = "pod-completed"
    /// Offline, named like our pods, no pod for longer than the orphan grace period.
    case orphan
    /// The controller registered it and is deleting its pod (stuck, disabled or scaled down): no entrypoint
    /// will unregister an agent whose pod holds no credential.
    case podRemoved = "pod-removed"
}

/// An idle agent chosen for removal: disabled first, re-read, and only then its pod deleted.
struct ScaleDownCandidate: Sendable, Hashable {
    /// The agent's id.
    var agentID: Int
    /// Its pod (= agent name).
    var podName: String
    /// Whether the controller registered the agent: then it deletes the registration (refused while a job runs)
    /// before the pod, instead of leaving that to the entrypoint.
    var registeredByController = false
}

/// One thing the executor should do for a pool.
enum PoolAction: Sendable, Hashable {
    /// Create this many pods from the template.
    case createPods(count: Int)
    /// Delete a pod; `detail` says why in words (for the Event).
    case deletePod(name: String, reason: PodDeletionReason, detail: String)
    /// Delete a registration that no pod will remove.
    case deleteRegistration(agentID: Int, name: String, reason: RegistrationDeletionReason)
    /// Disable these idle agents, re-read them, delete the pods of those still without a job, re-enable the rest.
    case scaleDown([ScaleDownCandidate])
    /// Register the offline placeholder so jobs queue while the pool has no agent.
    case registerPlaceholder
    /// Remove the placeholder registration (no longer needed, or the AgentPool is going away).
    case removePlaceholder(agentID: Int)
}

/// The result of one decision: what to do, the counts behind it, and the memory for the next reconcile.
struct PoolDecisionResult: Sendable, Hashable {
    /// The counts the decision was made on.
    var counts: PoolCounts
    /// What to do, in order.
    var actions: [PoolAction]
    /// What to remember until the next reconcile.
    var memory: PoolMemory
    /// Whether the placeholder is needed (kept or about to be registered).
    var placeholderNeeded: Bool
}

/// Shoal's scaling and collection rules as pure functions of spec, observation and memory (no I/O, no clock).
enum PoolDecision {
    /// The name of a pool's placeholder registration: `<prefix>-placeholder`, which can never be a pod's name
    /// (pods are `<prefix>-` plus 5 characters).
    static func placeholderName(prefix: String) -> String { "\(prefix)-placeholder" }

    /// Whether `name` is one of our pods' names: `<prefix>-` followed by the 5 characters `generateName` adds.
    static func isPodName(_ name: String, prefix: String) -> Bool {
        guard name.hasPrefix(prefix + "-") else { return false }
        let suffix = name.dropFirst(prefix.count + 1)
        return suffix.count == 5 && suffix.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) }
    }

    /// Decides what to do for one pool. See docs/pool-controller.md for the rules in prose.
    static func decide(spec: PoolSpec, observation: PoolObservation, memory: PoolMemory) -> PoolDecisionResult {
        let now = observation.now
        let placeholderName = placeholderName(prefix: spec.prefix)
        let placeholder = observation.agents.first { $0.name == placeholderName }
        let podNames = Set(observation.pods.map(\.name))
        // Ours: named like our pods, or named like one of the pool's pods whatever its prefix (pods created before a
        // prefix change keep their agents, and a busy one must still be recognised as busy).
        let ourAgents = observation.agents.filter { isPodName($0.name, prefix: spec.prefix) || podNames.contains($0.name) }
        let agentsByName = Dictionary(ourAgents.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })

        // Busy: holding a job by the agents list, or reserved for it by the job list (whichever read saw it first).
        let assignedRequestIDs = Set(observation.agents.compactMap(\.assignedRequestID))
        let reservedAgentIDs = Set(observation.jobs.filter(\.assigned).compactMap(\.reservedAgentID))
        func isBusy(_ agent: AgentFacts) -> Bool { agent.assignedRequestID != nil || reservedAgentIDs.contains(agent.id) }

        var actions: [PoolAction] = []
        var counts = PoolCounts()
        var idleCandidates: [(agent: AgentFacts, pod: PodFacts)] = []

        for pod in observation.pods.sorted(by: { ($0.createdAt, $0.name) < ($1.createdAt, $1.name) }) {
            let agent = agentsByName[pod.name]
            if pod.phase.isCompleted {
                // A pod whose agent ended while a sidecar still runs holds resources until it is gone: it counts
                // against maxAgents (never as supply).
                if pod.sidecarsRunning { counts.pods += 1 }
                if !pod.terminating {
                    actions.append(.deletePod(name: pod.name, reason: .completed, detail: completionDetail(pod)))
                }
                if let agent, !isBusy(agent), !agent.online {
                    actions.append(.deleteRegistration(agentID: agent.id, name: agent.name, reason: .podCompleted))
                }
                continue
            }
            counts.pods += 1
            if pod.terminating {
                if let agent, isBusy(agent) { counts.busy += 1 }
                continue
            }
            guard let agent else {
                if now.timeIntervalSince(pod.createdAt) >= spec.timing.pendingTimeout.seconds {
                    actions.append(.deletePod(name: pod.name, reason: .stuck, detail: stuckDetail(pod, timeout: spec.timing.pendingTimeout)))
                } else {
                    counts.starting += 1
                }
                continue
            }
            if isBusy(agent) {
                counts.busy += 1
            } else if !agent.enabled {
                actions.append(.deletePod(name: pod.name, reason: .disabled, detail: "agent \(agent.name) is disabled in Azure DevOps and holds no job"))
                if pod.registeredByController {
                    actions.append(.deleteRegistration(agentID: agent.id, name: agent.name, reason: .podRemoved))
                }
            } else if agent.online {
                counts.idle += 1
                idleCandidates.append((agent, pod))
            } else if now.timeIntervalSince(pod.createdAt) >= spec.timing.pendingTimeout.seconds {
                // Registered but never (or no longer) online and without a job: its listener cannot connect.
                actions.append(.deletePod(name: pod.name, reason: .stuck, detail: "pod \(pod.name): agent registered but offline for more than \(Int(spec.timing.pendingTimeout.seconds)) s"))
                if pod.registeredByController {
                    actions.append(.deleteRegistration(agentID: agent.id, name: agent.name, reason: .podRemoved))
                }
            } else {
                counts.starting += 1
            }
        }

        // Queued: not given to any agent yet (by either read), and runnable by our agents.
        let ourIDs = Set(ourAgents.map(\.id)).union(placeholder.map { [$0.id] } ?? [])
        var capabilities = spec.templateCapabilities
        capabilities["Agent.Version"] = observation.agentVersion
        counts.queued = observation.jobs.count { job in
            guard !job.assigned, !assignedRequestIDs.contains(job.requestID) else { return false }
            if let matched = job.matchedAgentIDs, matched.contains(where: ourIDs.contains) { return true }
            return Demand.allSatisfied(job.demands, by: capabilities.merging(["Agent.Name": "\(spec.prefix)-xxxxx"]) { current, _ in current })
        }

        var memory = memory
        if observation.deleting {
            counts.desired = 0
            memory.surplusSince = nil
        } else {
            counts.desired = min(spec.maxAgents, counts.busy + counts.queued + spec.standby)
            let supply = counts.busy + counts.idle + counts.starting
            let shortfall = min(counts.desired - supply, spec.maxAgents - counts.pods)
            if shortfall > 0 { actions.append(.createPods(count: shortfall)) }

            // Only idle agents beyond what the pool needs ready (queued + standby) are surplus: pods still starting
            // never make a ready agent surplus (they may never start).
            let surplus = min(counts.idle - max(0, counts.desired - counts.busy), idleCandidates.count)
            if surplus > 0 {
                let since = memory.surplusSince ?? now
                memory.surplusSince = since
                if now.timeIntervalSince(since) >= spec.timing.idleScaleDownDelay.seconds {
                    let chosen = idleCandidates.prefix(surplus).map {
                        ScaleDownCandidate(agentID: $0.agent.id, podName: $0.pod.name, registeredByController: $0.pod.registeredByController)
                    }
                    actions.append(.scaleDown(Array(chosen)))
                    memory.surplusSince = nil
                }
            } else {
                memory.surplusSince = nil
            }
        }

        // Orphans: our names, offline, no job, no pod, seen so on two observations at least the grace period apart.
        var orphans: [Int: Date] = [:]
        for agent in ourAgents where !podNames.contains(agent.name) && !agent.online && !isBusy(agent) {
            let firstSeen = memory.orphansFirstSeen[agent.id] ?? now
            orphans[agent.id] = firstSeen
            if firstSeen < now, now.timeIntervalSince(firstSeen) >= spec.timing.orphanGracePeriod.seconds {
                actions.append(.deleteRegistration(agentID: agent.id, name: agent.name, reason: .orphan))
            }
        }
        memory.orphansFirstSeen = orphans

        // Placeholder: needed unless a lasting registration we don't manage could run whatever our agents run. Other
        // pools' placeholders and anything named like a pod do not count: they come and go (or would flap with ours).
        let ownNames = Set(ourAgents.map(\.name)).union([placeholderName])
        let foreignCanServe = observation.agents.contains { agent in
            guard !ownNames.contains(agent.name), !isEphemeralName(agent.name), let theirs = observation.foreignCapabilities[agent.id] else { return false }
            return covers(theirs, spec.templateCapabilities)
        }
        let needed = !observation.deleting && !foreignCanServe
        if needed, placeholder == nil {
            actions.append(.registerPlaceholder)
        } else if !needed, let placeholder, !isBusy(placeholder) {
            actions.append(.removePlaceholder(agentID: placeholder.id))
        } else if needed, let placeholder, !isBusy(placeholder), let theirs = observation.placeholderCapabilities,
            !covers(theirs, spec.templateCapabilities)
        {
            // The spec's capabilities changed: replace the placeholder (removed now, registered on the next reconcile).
            actions.append(.removePlaceholder(agentID: placeholder.id))
        }

        return PoolDecisionResult(counts: counts, actions: actions, memory: memory, placeholderNeeded: needed)
    }

    /// Whether a registration's name looks like a Shoal pod's (`*-` plus 5 characters) or placeholder: not a lasting
    /// agent another pool's user manages.
    static func isEphemeralName(_ name: String) -> Bool {
        if name.hasSuffix("-placeholder") { return true }
        guard let dash = name.lastIndex(of: "-") else { return false }
        return isPodName(name, prefix: String(name[..<dash]))
    }

    /// After disabling candidates and re-reading them (and the pool's job requests): the pods to delete (agent still
    /// without a job by both reads, or gone) and the agents to enable again (they took a job before the disable
    /// landed).
    static func resolveScaleDown(
        _ candidates: [ScaleDownCandidate], reRead: [Int: AgentFacts], reservedAgentIDs: Set<Int> = []
    ) -> (deletePods: [ScaleDownCandidate], reEnable: [Int]) {
        var deletions: [ScaleDownCandidate] = []
        var reEnable: [Int] = []
        for candidate in candidates {
            if reservedAgentIDs.contains(candidate.agentID) || (reRead[candidate.agentID]?.assignedRequestID != nil) {
                reEnable.append(candidate.agentID)
            } else {
                deletions.append(candidate)
            }
        }
        return (deletions, reEnable)
    }

    /// Whether `capabilities` include every one of `required` with an equal value (names and values ignoring case).
    static func covers(_ capabilities: [String: String], _ required: [String: String]) -> Bool {
        let lowered = Dictionary(capabilities.map { ($0.key.lowercased(), $0.value.lowercased()) }, uniquingKeysWith: { first, _ in first })
        return required.allSatisfy { lowered[$0.key.lowercased()] == $0.value.lowercased() }
    }

    private static func completionDetail(_ pod: PodFacts) -> String {
        guard let termination = pod.termination else { return "pod \(pod.name) \(pod.phase.rawValue.lowercased())" }
        var text = "pod \(pod.name) \(pod.phase.rawValue.lowercased()): \(termination.reason.rawValue) (exit \(termination.exitCode))"
        if let job = termination.jobName { text += ", job '\(job)' \(termination.jobResult ?? "ended")" }
        if !termination.unregistered { text += "; the entrypoint could not unregister" }
        return text
    }

    private static func stuckDetail(_ pod: PodFacts, timeout: Duration) -> String {
        let state = pod.phase == .pending ? "Pending" : "\(pod.phase.rawValue) without an online agent"
        let why = pod.waitingReason.map { ": \($0)" } ?? ""
        return "pod \(pod.name) was \(state) for more than \(Int(timeout.seconds)) s\(why)"
    }
}
