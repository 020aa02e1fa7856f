import Kubernetes
import Shared
import Testing

@testable import pool_controller

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

// MARK: - Fixtures

/// The fixed instant every decision in this file is made at (no real clock).
private let now = Date(timeIntervalSince1970: 1_800_000_000)
/// The placeholder registration's agent id in these tables.
private let placeholderID = 900
/// A registration we do not manage.
private let foreignID = 500

/// A pool spec as `PoolSpec.resolve` builds it from the `image` shorthand, with the knobs the tables turn.
private func poolSpec(standby: Int = 1, maxAgents: Int = 10, capabilities: [String: String] = [:]) throws -> PoolSpec {
    var spec = try PoolSpec.resolve(
        ["organizationUrl": "https://dev.azure.com/contoso", "poolName": "k8s", "tokenSecretRef": ["name": "azdo"], "image": "agent:1"],
        name: "linux")
    spec.standby = standby
    spec.maxAgents = maxAgents
    spec.capabilities = capabilities
    return spec
}

extension PodFacts {
    /// A pod of the pool created `age` seconds before ``now``.
    fileprivate static func pod(
        _ name: String, _ phase: Phase = .running, age: Double = 60, terminating: Bool = false, waiting: String? = nil,
        termination: TerminationMessage? = nil
    ) -> PodFacts {
        PodFacts(
            name: name, phase: phase, createdAt: now.addingTimeInterval(-age), terminating: terminating, waitingReason: waiting,
            termination: termination)
    }
}

extension AgentFacts {
    /// A registration; `job` is the request it holds according to the agents read.
    fileprivate static func agent(_ id: Int, _ name: String, online: Bool = true, enabled: Bool = true, job: Int64? = nil) -> AgentFacts {
        AgentFacts(id: id, name: name, online: online, enabled: enabled, assignedRequestID: job)
    }

    /// Our placeholder registration, offline as always.
    fileprivate static let placeholder = AgentFacts(id: placeholderID, name: "linux-placeholder", online: false)
}

extension JobFacts {
    /// An unassigned request (as the jobs read sees it).
    fileprivate static func queued(_ id: Int64, matched: [Int]? = nil, demands: [Demand] = []) -> JobFacts {
        JobFacts(requestID: id, assigned: false, matchedAgentIDs: matched, demands: demands, queueTime: now.addingTimeInterval(-5))
    }

    /// A request the service already gave to `agent` (as the jobs read sees it).
    fileprivate static func assigned(_ id: Int64, to agent: Int?) -> JobFacts {
        JobFacts(
            requestID: id, assigned: true, reservedAgentID: agent, queueTime: now.addingTimeInterval(-30), assignTime: now.addingTimeInterval(-20))
    }
}

/// A scale-down candidate.
private func candidate(_ id: Int, _ pod: String) -> ScaleDownCandidate { ScaleDownCandidate(agentID: id, podName: pod) }

/// The termination message the entrypoint writes.
private func termination(_ code: EntrypointExitCode, _ reason: EntrypointExitReason, job: String? = nil, result: String? = nil, unregistered: Bool) -> TerminationMessage {
    TerminationMessage(
        exitCode: code, reason: reason, agentName: "linux-aaaaa", pool: "k8s", jobName: job, jobResult: result, unregistered: unregistered,
        durations: .init(total: 42), startedAt: "2027-01-15T08:00:00.000Z", finishedAt: "2027-01-15T08:00:42.000Z")
}

/// One row of a decision table: the situation, and exactly what the decision must do about it.
private struct Row: Sendable, CustomTestStringConvertible {
    var name: String
    var standby = 1
    var maxAgents = 10
    var capabilities: [String: String] = [:]
    var pods: [PodFacts] = []
    var agents: [AgentFacts] = []
    var jobs: [JobFacts] = []
    /// Whether the placeholder registration is in the agents read (it is in most rows, so it adds no action).
    var placeholder = true
    var foreign: [Int: [String: String]] = [:]
    var deleting = false
    var memory = PoolMemory()
    /// The exact actions, in order.
    var actions: [PoolAction]
    /// The exact counts.
    var counts: PoolCounts
    /// The memory for the next reconcile, when the row is about it.
    var memoryAfter: PoolMemory? = nil
    /// Whether the placeholder is needed, when the row is about it.
    var placeholderNeeded: Bool? = nil
    /// The placeholder's capabilities as the observer read them (nil: unknown).
    var placeholderCapabilities: [String: String]? = nil

    var testDescription: String { name }

    func observation() -> PoolObservation {
        var observation = PoolObservation(
            now: now, pods: pods, agents: agents + (placeholder ? [.placeholder] : []), jobs: jobs, foreignCapabilities: foreign,
            agentVersion: "4.264.2", deleting: deleting)
        observation.placeholderCapabilities = placeholderCapabilities
        return observation
    }

    func spec() throws -> PoolSpec { try poolSpec(standby: standby, maxAgents: maxAgents, capabilities: capabilities) }
}

/// Shorthand for the counts of a row (every count is stated, so a wrong one anywhere fails the row).
private func counts(queued: Int = 0, busy: Int = 0, idle: Int = 0, starting: Int = 0, pods: Int = 0, desired: Int) -> PoolCounts {
    PoolCounts(queued: queued, busy: busy, idle: idle, starting: starting, pods: pods, desired: desired)
}

// MARK: - Invariants

/// What must hold after any decision, whatever the situation; computed from the observation, not from the counts.
private func expectInvariants(spec: PoolSpec, observation: PoolObservation, result: PoolDecisionResult, sourceLocation: SourceLocation = #_sourceLocation) {
    let reserved = Set(observation.jobs.filter(\.assigned).compactMap(\.reservedAgentID))
    func busy(_ agent: AgentFacts) -> Bool { agent.assignedRequestID != nil || reserved.contains(agent.id) }
    let agentsByName = Dictionary(observation.agents.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    let agentsByID = Dictionary(observation.agents.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
    let podsByName = Dictionary(observation.pods.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    let livePods = observation.pods.count { !$0.phase.isCompleted }

    var deletedPods: [String] = []
    var created = 0
    for action in result.actions {
        switch action {
        case .createPods(let count):
            #expect(count > 0, "createPods(\(count))", sourceLocation: sourceLocation)
            created += count
        case .deletePod(let name, let reason, _):
            deletedPods.append(name)
            // A completed pod's containers have ended: deleting it cannot stop a job, whatever a stale agents read says.
            if let pod = podsByName[name], !pod.phase.isCompleted, let agent = agentsByName[name] {
                #expect(!busy(agent), "deletePod(\(name), \(reason)) but its agent is busy", sourceLocation: sourceLocation)
            }
            #expect(podsByName[name] != nil, "deletePod(\(name)) of a pod that was not observed", sourceLocation: sourceLocation)
        case .scaleDown(let candidates):
            #expect(!candidates.isEmpty, sourceLocation: sourceLocation)
            #expect(!observation.deleting, "scale-down while deleting", sourceLocation: sourceLocation)
            for candidate in candidates {
                deletedPods.append(candidate.podName)
                let agent = agentsByID[candidate.agentID]
                #expect(agent?.name == candidate.podName, sourceLocation: sourceLocation)
                #expect(agent.map { !busy($0) && $0.online && $0.enabled } == true, "scale-down candidate \(candidate) is not idle", sourceLocation: sourceLocation)
                let pod = podsByName[candidate.podName]
                #expect(pod.map { !$0.phase.isCompleted && !$0.terminating } == true, "scale-down of a pod that is not live", sourceLocation: sourceLocation)
            }
        case .deleteRegistration(let id, let name, let reason):
            let agent = agentsByID[id]
            #expect(agent?.name == name, sourceLocation: sourceLocation)
            #expect(agent.map { !busy($0) && !$0.online } == true, "deleteRegistration(\(name), \(reason)) of a busy or online agent", sourceLocation: sourceLocation)
            #expect(name != PoolDecision.placeholderName(prefix: spec.prefix), "the placeholder collected", sourceLocation: sourceLocation)
        case .registerPlaceholder:
            #expect(!observation.deleting, "placeholder registered while deleting", sourceLocation: sourceLocation)
            #expect(!observation.agents.contains { $0.name == PoolDecision.placeholderName(prefix: spec.prefix) }, sourceLocation: sourceLocation)
        case .removePlaceholder(let id):
            #expect(agentsByID[id]?.name == PoolDecision.placeholderName(prefix: spec.prefix), sourceLocation: sourceLocation)
        }
    }
    #expect(Set(deletedPods).count == deletedPods.count, "a pod in two deletions: \(deletedPods)", sourceLocation: sourceLocation)
    #expect(created == 0 || livePods + created <= spec.maxAgents, "\(livePods) live pods + \(created) created > maxAgents \(spec.maxAgents)", sourceLocation: sourceLocation)
    #expect(!(observation.deleting && created > 0), "pods created while deleting", sourceLocation: sourceLocation)
    #expect(result.counts.desired <= spec.maxAgents, sourceLocation: sourceLocation)
    #expect(result.counts.pods == livePods, sourceLocation: sourceLocation)
    #expect(result.counts.busy + result.counts.idle + result.counts.starting <= livePods, "a pod counted twice", sourceLocation: sourceLocation)
    #expect(result.actions.count { if case .createPods = $0 { true } else { false } } <= 1, sourceLocation: sourceLocation)
}

// MARK: - Tables

@Suite("Pool decision")
struct PoolDecisionTests {
    private func check(_ row: Row) throws {
        let spec = try row.spec()
        let observation = row.observation()
        let result = PoolDecision.decide(spec: spec, observation: observation, memory: row.memory)
        #expect(result.actions == row.actions)
        #expect(result.counts == row.counts)
        if let memoryAfter = row.memoryAfter { #expect(result.memory == memoryAfter) }
        if let needed = row.placeholderNeeded { #expect(result.placeholderNeeded == needed) }
        expectInvariants(spec: spec, observation: observation, result: result)
    }

    fileprivate static let scaling: [Row] = [
        Row(name: "an empty pool creates its standby", actions: [.createPods(count: 1)], counts: counts(desired: 1)),
        Row(name: "standby 0 and nothing queued: nothing to do", standby: 0, actions: [], counts: counts(desired: 0)),
        Row(
            name: "a queued job and standby 1 create two pods", jobs: [.queued(7)], actions: [.createPods(count: 2)],
            counts: counts(queued: 1, desired: 2)),
        Row(
            name: "a burst is capped at maxAgents", maxAgents: 3, jobs: (1...5).map { .queued($0) }, actions: [.createPods(count: 3)],
            counts: counts(queued: 5, desired: 3)),
        Row(
            name: "starting pods already cover the queued jobs", standby: 0,
            pods: [.pod("linux-aaaaa", .pending, age: 30), .pod("linux-bbbbb", .pending, age: 20)], jobs: [.queued(7), .queued(8)],
            actions: [], counts: counts(queued: 2, starting: 2, pods: 2, desired: 2)),
        Row(
            name: "a third queued job gets exactly one more pod", standby: 0,
            pods: [.pod("linux-aaaaa", .pending, age: 30), .pod("linux-bbbbb", .pending, age: 20)], jobs: [.queued(7), .queued(8), .queued(9)],
            actions: [.createPods(count: 1)], counts: counts(queued: 3, starting: 2, pods: 2, desired: 3)),
        Row(
            name: "an idle agent is the standby", pods: [.pod("linux-aaaaa")], agents: [.agent(1, "linux-aaaaa")], actions: [],
            counts: counts(idle: 1, pods: 1, desired: 1)),
        Row(
            name: "a busy agent plus the standby", pods: [.pod("linux-aaaaa")], agents: [.agent(1, "linux-aaaaa", job: 7)],
            jobs: [.assigned(7, to: 1)], actions: [.createPods(count: 1)], counts: counts(busy: 1, pods: 1, desired: 2)),
        Row(
            name: "live pods at maxAgents, terminating ones included, block creation", maxAgents: 3,
            pods: [.pod("linux-aaaaa", terminating: true), .pod("linux-bbbbb", terminating: true), .pod("linux-ccccc")],
            agents: [.agent(3, "linux-ccccc", job: 7)], jobs: [.assigned(7, to: 3), .queued(8), .queued(9), .queued(10), .queued(11)],
            actions: [], counts: counts(queued: 4, busy: 1, pods: 3, desired: 3)),
        Row(
            name: "a completed pod frees its slot", maxAgents: 1, pods: [.pod("linux-aaaaa", .succeeded)],
            actions: [.deletePod(name: "linux-aaaaa", reason: .completed, detail: "pod linux-aaaaa succeeded"), .createPods(count: 1)],
            counts: counts(desired: 1)),
        Row(
            name: "a draining busy pod counts as busy", standby: 0, pods: [.pod("linux-aaaaa", terminating: true)],
            agents: [.agent(1, "linux-aaaaa", job: 7)], jobs: [.assigned(7, to: 1)], actions: [], counts: counts(busy: 1, pods: 1, desired: 1)),
        Row(
            name: "a terminating idle pod is not supply, its replacement fits under maxAgents", maxAgents: 2,
            pods: [.pod("linux-aaaaa", terminating: true)], agents: [.agent(1, "linux-aaaaa")], actions: [.createPods(count: 1)],
            counts: counts(pods: 1, desired: 1)),
        Row(
            name: "maxAgents lowered below the busy pods: no creation, no scale-down", standby: 1, maxAgents: 1,
            pods: [.pod("linux-aaaaa"), .pod("linux-bbbbb")], agents: [.agent(1, "linux-aaaaa", job: 7), .agent(2, "linux-bbbbb", job: 8)],
            jobs: [.assigned(7, to: 1), .assigned(8, to: 2), .queued(9)], actions: [], counts: counts(queued: 1, busy: 2, pods: 2, desired: 1)),
        Row(
            name: "a job given to a foreign agent is neither queued nor busy", standby: 0, agents: [.agent(foreignID, "build-01", job: 7)],
            jobs: [.assigned(7, to: foreignID)], actions: [], counts: counts(desired: 0)),
        Row(
            name: "an unknown phase counts as a live pod", standby: 0, pods: [.pod("linux-aaaaa", .unknown)],
            agents: [.agent(1, "linux-aaaaa", online: false)], actions: [], counts: counts(starting: 1, pods: 1, desired: 0)),
    ]

    @Test("scaling up: desired = min(maxAgents, busy + queued + standby) against busy + idle + starting", arguments: scaling)
    fileprivate func scalingRows(_ row: Row) throws { try check(row) }

    fileprivate static let races: [Row] = [
        Row(
            name: "job assigned between the reads: agents see it busy, jobs still queued (no standby)", standby: 0,
            pods: [.pod("linux-aaaaa")], agents: [.agent(1, "linux-aaaaa", job: 7)], jobs: [.queued(7, matched: [1])], actions: [],
            counts: counts(busy: 1, pods: 1, desired: 1)),
        Row(
            name: "job assigned between the reads: only the standby is created, not a pod for the job",
            pods: [.pod("linux-aaaaa")], agents: [.agent(1, "linux-aaaaa", job: 7)], jobs: [.queued(7)], actions: [.createPods(count: 1)],
            counts: counts(busy: 1, pods: 1, desired: 2)),
        Row(
            name: "reverse: jobs show it reserved, agents still show the agent idle", standby: 0, pods: [.pod("linux-aaaaa")],
            agents: [.agent(1, "linux-aaaaa")], jobs: [.assigned(7, to: 1)], actions: [], counts: counts(busy: 1, pods: 1, desired: 1)),
        Row(
            name: "reverse with a stale surplus: the reserved agent is not a scale-down candidate", standby: 0,
            pods: [.pod("linux-aaaaa", age: 300), .pod("linux-bbbbb", age: 200)], agents: [.agent(1, "linux-aaaaa"), .agent(2, "linux-bbbbb")],
            jobs: [.assigned(7, to: 1)], memory: PoolMemory(surplusSince: now.addingTimeInterval(-1000)),
            actions: [.scaleDown([candidate(2, "linux-bbbbb")])], counts: counts(busy: 1, idle: 1, pods: 2, desired: 1),
            memoryAfter: PoolMemory()),
        Row(
            name: "an agent registering (offline) counts once, as starting", pods: [.pod("linux-aaaaa", age: 30)],
            agents: [.agent(1, "linux-aaaaa", online: false)], actions: [], counts: counts(starting: 1, pods: 1, desired: 1)),
        Row(
            name: "one pod registered, one not, two queued jobs: no extra pod", standby: 0,
            pods: [.pod("linux-aaaaa", age: 30), .pod("linux-bbbbb", .pending, age: 20)], agents: [.agent(1, "linux-aaaaa", online: false)],
            jobs: [.queued(7), .queued(8)], actions: [], counts: counts(queued: 2, starting: 2, pods: 2, desired: 2)),
        Row(
            name: "a queued job matched to the agent that just came online: counted once", standby: 0, pods: [.pod("linux-aaaaa", age: 30)],
            agents: [.agent(1, "linux-aaaaa")], jobs: [.queued(7, matched: [1, placeholderID])], actions: [],
            counts: counts(queued: 1, idle: 1, pods: 1, desired: 1)),
        Row(
            name: "a disable that lost to an assignment: busy, pod kept", standby: 0, pods: [.pod("linux-aaaaa")],
            agents: [.agent(1, "linux-aaaaa", enabled: false, job: 7)], jobs: [.assigned(7, to: 1)], actions: [],
            counts: counts(busy: 1, pods: 1, desired: 1)),
        Row(
            name: "a disabled agent whose job only the jobs read shows: pod kept", standby: 0, pods: [.pod("linux-aaaaa")],
            agents: [.agent(1, "linux-aaaaa", enabled: false)], jobs: [.assigned(7, to: 1)], actions: [],
            counts: counts(busy: 1, pods: 1, desired: 1)),
        Row(
            name: "a disabled agent without a job: pod deleted and the standby replaced", pods: [.pod("linux-aaaaa")],
            agents: [.agent(1, "linux-aaaaa", enabled: false)],
            actions: [
                .deletePod(name: "linux-aaaaa", reason: .disabled, detail: "agent linux-aaaaa is disabled in Azure DevOps and holds no job"),
                .createPods(count: 1),
            ],
            counts: counts(pods: 1, desired: 1)),
    ]

    @Test("races between the agents read and the jobs read", arguments: races)
    fileprivate func raceRows(_ row: Row) throws { try check(row) }

    fileprivate static let collection: [Row] = [
        Row(
            name: "a busy agent of a pod made before a prefix change is busy, and its old pod is never deleted as stuck", standby: 0,
            pods: [.pod("old-abcde", age: 3600)], agents: [.agent(1, "old-abcde", job: 7)], jobs: [.assigned(7, to: 1)], actions: [],
            counts: counts(busy: 1, pods: 1, desired: 1)),
        Row(
            name: "registered but offline longer than the pending timeout, without a job: deleted as stuck", standby: 0,
            pods: [.pod("linux-aaaaa", age: 601)], agents: [.agent(1, "linux-aaaaa", online: false)],
            actions: [.deletePod(name: "linux-aaaaa", reason: .stuck, detail: "pod linux-aaaaa: agent registered but offline for more than 600 s")],
            counts: counts(pods: 1, desired: 0)),
        Row(
            name: "registered, offline and young: still starting", standby: 1, pods: [.pod("linux-aaaaa", age: 30)],
            agents: [.agent(1, "linux-aaaaa", online: false)], actions: [], counts: counts(starting: 1, pods: 1, desired: 1)),
        Row(
            name: "completed pod whose entrypoint could not unregister: pod and registration deleted", standby: 0,
            pods: [.pod("linux-aaaaa", .succeeded, termination: termination(.success, .jobCompleted, job: "Build", result: "Succeeded", unregistered: false))],
            agents: [.agent(1, "linux-aaaaa", online: false)],
            actions: [
                .deletePod(
                    name: "linux-aaaaa", reason: .completed,
                    detail: "pod linux-aaaaa succeeded: job-completed (exit 0), job 'Build' Succeeded; the entrypoint could not unregister"),
                .deleteRegistration(agentID: 1, name: "linux-aaaaa", reason: .podCompleted),
            ],
            counts: counts(desired: 0)),
        Row(
            name: "failed pod whose registration is already gone: only the pod", standby: 0,
            pods: [.pod("linux-aaaaa", .failed, termination: termination(.listenerFailed, .listenerFailed, unregistered: true))],
            actions: [.deletePod(name: "linux-aaaaa", reason: .completed, detail: "pod linux-aaaaa failed: listener-failed (exit 5)")],
            counts: counts(desired: 0)),
        Row(
            name: "completed pod whose agent still shows online: registration kept", standby: 0, pods: [.pod("linux-aaaaa", .succeeded)],
            agents: [.agent(1, "linux-aaaaa")], actions: [.deletePod(name: "linux-aaaaa", reason: .completed, detail: "pod linux-aaaaa succeeded")],
            counts: counts(desired: 0)),
        Row(
            name: "completed pod whose agent still holds a job: registration kept", standby: 0, pods: [.pod("linux-aaaaa", .failed)],
            agents: [.agent(1, "linux-aaaaa", online: false, job: 7)], jobs: [.assigned(7, to: 1)],
            actions: [.deletePod(name: "linux-aaaaa", reason: .completed, detail: "pod linux-aaaaa failed")], counts: counts(desired: 0)),
        Row(
            name: "completed pod already terminating: only its registration", standby: 0, pods: [.pod("linux-aaaaa", .succeeded, terminating: true)],
            agents: [.agent(1, "linux-aaaaa", online: false)], actions: [.deleteRegistration(agentID: 1, name: "linux-aaaaa", reason: .podCompleted)],
            counts: counts(desired: 0)),
        Row(
            name: "a pod Pending for the pending timeout is deleted with its reason, then replaced",
            pods: [.pod("linux-aaaaa", .pending, age: 600, waiting: "Unschedulable: 0/3 nodes are available")],
            actions: [
                .deletePod(
                    name: "linux-aaaaa", reason: .stuck, detail: "pod linux-aaaaa was Pending for more than 600 s: Unschedulable: 0/3 nodes are available"),
                .createPods(count: 1),
            ],
            counts: counts(pods: 1, desired: 1)),
        Row(
            name: "a pod Pending for less than the timeout is starting", pods: [.pod("linux-aaaaa", .pending, age: 599)], actions: [],
            counts: counts(starting: 1, pods: 1, desired: 1)),
        Row(
            name: "a running pod that never registered is stuck too", standby: 0, pods: [.pod("linux-aaaaa", .running, age: 900)],
            actions: [.deletePod(name: "linux-aaaaa", reason: .stuck, detail: "pod linux-aaaaa was Running without an online agent for more than 600 s")],
            counts: counts(pods: 1, desired: 0)),
        Row(
            name: "an orphan seen for the first time is remembered, not deleted", standby: 0, agents: [.agent(7, "linux-zzzzz", online: false)],
            actions: [], counts: counts(desired: 0), memoryAfter: PoolMemory(orphansFirstSeen: [7: now])),
        Row(
            name: "an orphan past the grace period is deleted", standby: 0, agents: [.agent(7, "linux-zzzzz", online: false)],
            memory: PoolMemory(orphansFirstSeen: [7: now.addingTimeInterval(-300)]),
            actions: [.deleteRegistration(agentID: 7, name: "linux-zzzzz", reason: .orphan)], counts: counts(desired: 0),
            memoryAfter: PoolMemory(orphansFirstSeen: [7: now.addingTimeInterval(-300)])),
        Row(
            name: "an orphan within the grace period is kept", standby: 0, agents: [.agent(7, "linux-zzzzz", online: false)],
            memory: PoolMemory(orphansFirstSeen: [7: now.addingTimeInterval(-299)]), actions: [], counts: counts(desired: 0),
            memoryAfter: PoolMemory(orphansFirstSeen: [7: now.addingTimeInterval(-299)])),
        Row(
            name: "online or busy registrations without a pod are never orphans", standby: 0,
            agents: [.agent(7, "linux-zzzzz"), .agent(8, "linux-yyyyy", online: false, job: 9), .agent(6, "linux-xxxxx", online: false)],
            jobs: [.assigned(9, to: 8), .assigned(10, to: 6)],
            memory: PoolMemory(orphansFirstSeen: [6: now.addingTimeInterval(-1000), 7: now.addingTimeInterval(-1000), 8: now.addingTimeInterval(-1000)]),
            actions: [], counts: counts(desired: 0), memoryAfter: PoolMemory()),
        Row(
            name: "a registration whose pod exists is not an orphan", standby: 0, pods: [.pod("linux-aaaaa", .pending, age: 10)],
            agents: [.agent(1, "linux-aaaaa", online: false)], memory: PoolMemory(orphansFirstSeen: [1: now.addingTimeInterval(-1000)]),
            actions: [], counts: counts(starting: 1, pods: 1, desired: 0), memoryAfter: PoolMemory()),
        Row(
            name: "foreign names and the placeholder are never orphans", standby: 0,
            agents: [.agent(foreignID, "build-01", online: false), .agent(501, "linux-abcd", online: false), .agent(502, "linux-abcdef", online: false)],
            memory: PoolMemory(orphansFirstSeen: [foreignID: now.addingTimeInterval(-1000), 501: now.addingTimeInterval(-1000), placeholderID: now.addingTimeInterval(-1000)]),
            actions: [], counts: counts(desired: 0), memoryAfter: PoolMemory()),
        Row(
            name: "orphans that went away are forgotten", standby: 0, memory: PoolMemory(orphansFirstSeen: [42: now.addingTimeInterval(-1000)]),
            actions: [], counts: counts(desired: 0), memoryAfter: PoolMemory()),
    ]

    @Test("collection: completed pods, stuck pods, orphan registrations", arguments: collection)
    fileprivate func collectionRows(_ row: Row) throws { try check(row) }

    private static let threeIdle: (pods: [PodFacts], agents: [AgentFacts]) = (
        [.pod("linux-aaaaa", age: 300), .pod("linux-bbbbb", age: 200), .pod("linux-ccccc", age: 100)],
        [.agent(1, "linux-aaaaa"), .agent(2, "linux-bbbbb"), .agent(3, "linux-ccccc")]
    )

    fileprivate static let scaleDown: [Row] = [
        Row(
            name: "a surplus first seen is remembered", pods: threeIdle.pods, agents: threeIdle.agents, actions: [],
            counts: counts(idle: 3, pods: 3, desired: 1), memoryAfter: PoolMemory(surplusSince: now)),
        Row(
            name: "a surplus for the idle delay: the oldest idle agents are candidates", pods: threeIdle.pods, agents: threeIdle.agents,
            memory: PoolMemory(surplusSince: now.addingTimeInterval(-180)),
            actions: [.scaleDown([candidate(1, "linux-aaaaa"), candidate(2, "linux-bbbbb")])], counts: counts(idle: 3, pods: 3, desired: 1),
            memoryAfter: PoolMemory()),
        Row(
            name: "a surplus shorter than the idle delay waits", pods: threeIdle.pods, agents: threeIdle.agents,
            memory: PoolMemory(surplusSince: now.addingTimeInterval(-179)), actions: [], counts: counts(idle: 3, pods: 3, desired: 1),
            memoryAfter: PoolMemory(surplusSince: now.addingTimeInterval(-179))),
        Row(
            name: "no surplus any more: forgotten", pods: [.pod("linux-aaaaa")], agents: [.agent(1, "linux-aaaaa")],
            memory: PoolMemory(surplusSince: now.addingTimeInterval(-1000)), actions: [], counts: counts(idle: 1, pods: 1, desired: 1),
            memoryAfter: PoolMemory()),
        Row(
            name: "busy agents are never candidates, even the oldest",
            pods: [.pod("linux-aaaaa", age: 400), .pod("linux-bbbbb", age: 300), .pod("linux-ccccc", age: 200), .pod("linux-ddddd", age: 100)],
            agents: [.agent(1, "linux-aaaaa", job: 7), .agent(2, "linux-bbbbb"), .agent(3, "linux-ccccc"), .agent(4, "linux-ddddd")],
            jobs: [.assigned(7, to: 1), .assigned(8, to: 2)], memory: PoolMemory(surplusSince: now.addingTimeInterval(-1000)),
            actions: [.scaleDown([candidate(3, "linux-ccccc")])], counts: counts(busy: 2, idle: 2, pods: 4, desired: 3),
            memoryAfter: PoolMemory()),
        Row(
            name: "queued jobs keep idle agents", pods: [.pod("linux-aaaaa"), .pod("linux-bbbbb")],
            agents: [.agent(1, "linux-aaaaa"), .agent(2, "linux-bbbbb")], jobs: [.queued(7)],
            memory: PoolMemory(surplusSince: now.addingTimeInterval(-1000)), actions: [], counts: counts(queued: 1, idle: 2, pods: 2, desired: 2),
            memoryAfter: PoolMemory()),
        // Bug fixed: the surplus was supply - desired, so pods still starting made the only ready agent a candidate.
        Row(
            name: "starting pods do not make the ready standby agent surplus",
            pods: [.pod("linux-aaaaa", age: 400), .pod("linux-bbbbb", .pending, age: 200), .pod("linux-ccccc", .pending, age: 200)],
            agents: [.agent(1, "linux-aaaaa")], memory: PoolMemory(surplusSince: now.addingTimeInterval(-1000)), actions: [],
            counts: counts(idle: 1, starting: 2, pods: 3, desired: 1), memoryAfter: PoolMemory()),
        Row(
            name: "idle agents beyond the standby are surplus while others start", standby: 1,
            pods: [.pod("linux-aaaaa", age: 400), .pod("linux-bbbbb", age: 300), .pod("linux-ccccc", .pending, age: 200)],
            agents: [.agent(1, "linux-aaaaa"), .agent(2, "linux-bbbbb")], memory: PoolMemory(surplusSince: now.addingTimeInterval(-1000)),
            actions: [.scaleDown([candidate(1, "linux-aaaaa")])], counts: counts(idle: 2, starting: 1, pods: 3, desired: 1),
            memoryAfter: PoolMemory()),
        Row(
            name: "a deleting pool neither scales down nor creates", pods: threeIdle.pods, agents: threeIdle.agents, deleting: true,
            memory: PoolMemory(surplusSince: now.addingTimeInterval(-1000)), actions: [.removePlaceholder(agentID: placeholderID)],
            counts: counts(idle: 3, pods: 3, desired: 0), memoryAfter: PoolMemory(), placeholderNeeded: false),
    ]

    @Test("busy-safe scale-down candidates", arguments: scaleDown)
    fileprivate func scaleDownRows(_ row: Row) throws { try check(row) }

    private static let coveringCapabilities = ["agent.os": "linux", "Agent.OSArchitecture": "x64", "java": "17"]

    fileprivate static let placeholderRows: [Row] = [
        Row(
            name: "registered when missing", standby: 0, placeholder: false, actions: [.registerPlaceholder], counts: counts(desired: 0),
            placeholderNeeded: true),
        Row(
            name: "registered when missing, even with agents of ours online", standby: 1, pods: [.pod("linux-aaaaa")], agents: [.agent(1, "linux-aaaaa")],
            placeholder: false, actions: [.registerPlaceholder], counts: counts(idle: 1, pods: 1, desired: 1), placeholderNeeded: true),
        Row(name: "kept when present", standby: 0, actions: [], counts: counts(desired: 0), placeholderNeeded: true),
        Row(
            name: "not registered when a foreign registration covers the template", standby: 0,
            agents: [.agent(foreignID, "build-01", online: false)], placeholder: false, foreign: [foreignID: coveringCapabilities], actions: [],
            counts: counts(desired: 0), placeholderNeeded: false),
        Row(
            name: "removed when a foreign registration covers the template", standby: 0, agents: [.agent(foreignID, "build-01")],
            foreign: [foreignID: coveringCapabilities], actions: [.removePlaceholder(agentID: placeholderID)], counts: counts(desired: 0),
            placeholderNeeded: false),
        Row(
            name: "registered when the foreign registration lacks one of our capabilities", standby: 0, capabilities: ["docker": "true"],
            agents: [.agent(foreignID, "build-01")], placeholder: false, foreign: [foreignID: coveringCapabilities], actions: [.registerPlaceholder],
            counts: counts(desired: 0), placeholderNeeded: true),
        Row(
            name: "registered when a foreign registration's capabilities are unknown", standby: 0, agents: [.agent(foreignID, "build-01")],
            placeholder: false, actions: [.registerPlaceholder], counts: counts(desired: 0), placeholderNeeded: true),
        Row(
            name: "our own agents' capabilities never count as foreign", standby: 0, pods: [.pod("linux-aaaaa")], agents: [.agent(1, "linux-aaaaa")],
            placeholder: false, foreign: [1: coveringCapabilities, placeholderID: coveringCapabilities], actions: [.registerPlaceholder],
            counts: counts(idle: 1, pods: 1, desired: 0), placeholderNeeded: true),
        Row(
            name: "replaced when it no longer carries the template's capabilities (the spec changed)", standby: 0, capabilities: ["buildkit": "true"],
            actions: [.removePlaceholder(agentID: placeholderID)], counts: counts(desired: 0), placeholderNeeded: true,
            placeholderCapabilities: ["Agent.OS": "Linux", "Agent.OSArchitecture": "X64"]),
        Row(
            name: "kept when it carries the template's capabilities", standby: 0, capabilities: ["buildkit": "true"],
            actions: [], counts: counts(desired: 0), placeholderNeeded: true,
            placeholderCapabilities: ["Agent.OS": "Linux", "Agent.OSArchitecture": "X64", "buildkit": "true", "Agent.Version": "4.264.2"]),
        Row(
            name: "another pool's placeholder never replaces ours (no flapping between pools)", standby: 0,
            agents: [.agent(foreignID, "windows-placeholder", online: false)], placeholder: false, foreign: [foreignID: coveringCapabilities],
            actions: [.registerPlaceholder], counts: counts(desired: 0), placeholderNeeded: true),
        Row(
            name: "another pool's pod agent never replaces ours (it comes and goes)", standby: 0,
            agents: [.agent(foreignID, "windows-abcde")], placeholder: false, foreign: [foreignID: coveringCapabilities],
            actions: [.registerPlaceholder], counts: counts(desired: 0), placeholderNeeded: true),
        Row(
            name: "removed when the pool is deleted", standby: 0, deleting: true, actions: [.removePlaceholder(agentID: placeholderID)],
            counts: counts(desired: 0), placeholderNeeded: false),
        Row(
            name: "not registered while the pool is deleted", standby: 2, jobs: [.queued(7)], placeholder: false, deleting: true, actions: [],
            counts: counts(queued: 1, desired: 0), placeholderNeeded: false),
    ]

    @Test("placeholder registration", arguments: placeholderRows)
    fileprivate func placeholderRowsTest(_ row: Row) throws { try check(row) }

    // MARK: Queued: which requests our agents could run

    /// A demand from its wire form.
    private static func demand(_ text: String) throws -> Demand { try Demand(parsing: text) }

    @Test(
        "a queued request counts when matched to ours or the placeholder, or when the template satisfies its demands",
        arguments: [
            ([], nil, true),
            (["docker"], nil, true),
            (["DOCKER -equals TRUE"], nil, true),
            (["maven"], nil, false),
            (["maven"], [1], true),
            (["maven"], [placeholderID], true),
            (["maven"], [foreignID], false),
            (["maven"], [], false),
            ([], [foreignID], true),
            (["Agent.Version -gtVersion 2.163.1"], nil, true),
            (["Agent.Version -gtVersion 5.0"], nil, false),
            (["Agent.OS -equals linux", "Agent.OSArchitecture -equals X64"], nil, true),
            (["Agent.OS -equals Windows_NT"], nil, false),
            (["Agent.Name"], nil, true),
            (["Agent.Name -equals build-01"], nil, false),
            (["docker -contains tr"], nil, false),
        ] as [([String], [Int]?, Bool)])
    func queuedMatching(demands: [String], matched: [Int]?, expected: Bool) throws {
        let spec = try poolSpec(standby: 0, capabilities: ["docker": "true"])
        let parsed = try demands.map(Self.demand)
        let observation = PoolObservation(
            now: now, pods: [], agents: [.agent(1, "linux-aaaaa", online: false), .placeholder, .agent(foreignID, "build-01")],
            jobs: [.queued(7, matched: matched, demands: parsed)], agentVersion: "4.264.2")
        let result = PoolDecision.decide(spec: spec, observation: observation, memory: PoolMemory())
        #expect(result.counts.queued == (expected ? 1 : 0))
        #expect(result.actions == (expected ? [.createPods(count: 1)] : []))
    }

    // MARK: Sequences over several reconciles

    @Test("with a zero grace period an orphan still needs two observations")
    func orphanNeedsTwoObservations() throws {
        var spec = try poolSpec(standby: 0)
        spec.timing.orphanGracePeriod = .zero
        var observation = PoolObservation(
            now: now, pods: [], agents: [.agent(7, "linux-zzzzz", online: false), .placeholder], jobs: [], agentVersion: "4.264.2")

        let first = PoolDecision.decide(spec: spec, observation: observation, memory: PoolMemory())
        #expect(first.actions == [])
        #expect(first.memory.orphansFirstSeen == [7: now])

        let sameInstant = PoolDecision.decide(spec: spec, observation: observation, memory: first.memory)
        #expect(sameInstant.actions == [])

        observation.now = now.addingTimeInterval(5)
        let second = PoolDecision.decide(spec: spec, observation: observation, memory: first.memory)
        #expect(second.actions == [.deleteRegistration(agentID: 7, name: "linux-zzzzz", reason: .orphan)])
    }

    @Test("an orphan that comes back online starts its grace period again")
    func orphanBackOnline() throws {
        let spec = try poolSpec(standby: 0)
        let old = PoolMemory(orphansFirstSeen: [7: now.addingTimeInterval(-1000)])
        let online = PoolObservation(now: now, pods: [], agents: [.agent(7, "linux-zzzzz"), .placeholder], jobs: [], agentVersion: "4.264.2")
        let afterOnline = PoolDecision.decide(spec: spec, observation: online, memory: old)
        #expect(afterOnline.actions == [])
        #expect(afterOnline.memory.orphansFirstSeen == [:])

        var offline = online
        offline.agents = [.agent(7, "linux-zzzzz", online: false), .placeholder]
        offline.now = now.addingTimeInterval(10)
        let afterOffline = PoolDecision.decide(spec: spec, observation: offline, memory: afterOnline.memory)
        #expect(afterOffline.actions == [])
        #expect(afterOffline.memory.orphansFirstSeen == [7: now.addingTimeInterval(10)])
    }

    @Test("scale-down end to end: the agent that took a job is re-enabled and keeps its pod")
    func scaleDownLosingToAnAssignment() throws {
        let spec = try poolSpec(standby: 0)
        let pods: [PodFacts] = [.pod("linux-aaaaa", age: 300), .pod("linux-bbbbb", age: 200)]
        let observation = PoolObservation(
            now: now, pods: pods, agents: [.agent(1, "linux-aaaaa"), .agent(2, "linux-bbbbb"), .placeholder], jobs: [], agentVersion: "4.264.2")
        let first = PoolDecision.decide(spec: spec, observation: observation, memory: PoolMemory(surplusSince: now.addingTimeInterval(-180)))
        #expect(first.actions == [.scaleDown([candidate(1, "linux-aaaaa"), candidate(2, "linux-bbbbb")])])

        // The executor disabled both; agent 1 took job 7 before its disable landed.
        let reRead: [Int: AgentFacts] = [1: .agent(1, "linux-aaaaa", enabled: false, job: 7), 2: .agent(2, "linux-bbbbb", enabled: false)]
        let resolved = PoolDecision.resolveScaleDown([candidate(1, "linux-aaaaa"), candidate(2, "linux-bbbbb")], reRead: reRead)
        #expect(resolved.deletePods == [candidate(2, "linux-bbbbb")])
        #expect(resolved.reEnable == [1])

        // Next reconcile, before the re-enable is seen: agent 1 is busy and disabled, its pod is not touched.
        var next = observation
        next.now = now.addingTimeInterval(5)
        next.pods = [.pod("linux-aaaaa", age: 305), .pod("linux-bbbbb", age: 205, terminating: true)]
        next.agents = [.agent(1, "linux-aaaaa", enabled: false, job: 7), .agent(2, "linux-bbbbb", enabled: false), .placeholder]
        next.jobs = [.assigned(7, to: 1)]
        let second = PoolDecision.decide(spec: spec, observation: next, memory: first.memory)
        #expect(second.actions == [])
        #expect(second.counts == counts(busy: 1, pods: 2, desired: 1))
        expectInvariants(spec: spec, observation: next, result: second)
    }

    @Test("a scale-down that was disabled but never deleted (controller restarted) is finished by the disabled rule")
    func disabledLeftoverIsCollected() throws {
        let spec = try poolSpec(standby: 1)
        let observation = PoolObservation(
            now: now, pods: [.pod("linux-aaaaa", age: 300), .pod("linux-bbbbb", age: 200)],
            agents: [.agent(1, "linux-aaaaa"), .agent(2, "linux-bbbbb", enabled: false), .placeholder], jobs: [], agentVersion: "4.264.2")
        let result = PoolDecision.decide(spec: spec, observation: observation, memory: PoolMemory())
        #expect(result.actions == [.deletePod(name: "linux-bbbbb", reason: .disabled, detail: "agent linux-bbbbb is disabled in Azure DevOps and holds no job")])
        #expect(result.counts == counts(idle: 1, pods: 2, desired: 1))
    }

    // MARK: resolveScaleDown

    @Test(
        "resolveScaleDown deletes only candidates still without a job after the re-read",
        arguments: [
            ("all still idle", [1: AgentFacts.agent(1, "linux-aaaaa", enabled: false), 2: .agent(2, "linux-bbbbb", enabled: false)], [1, 2], []),
            ("one took a job", [1: .agent(1, "linux-aaaaa", enabled: false, job: 7), 2: .agent(2, "linux-bbbbb", enabled: false)], [2], [1]),
            ("both took a job", [1: .agent(1, "linux-aaaaa", enabled: false, job: 7), 2: .agent(2, "linux-bbbbb", enabled: false, job: 8)], [], [1, 2]),
            ("one gone from the re-read", [2: .agent(2, "linux-bbbbb", enabled: false)], [1, 2], []),
            ("one went offline without a job", [1: .agent(1, "linux-aaaaa", online: false, enabled: false), 2: .agent(2, "linux-bbbbb", enabled: false, job: 8)], [1], [2]),
        ] as [(String, [Int: AgentFacts], [Int], [Int])])
    func resolveScaleDown(_ name: String, reRead: [Int: AgentFacts], deleted: [Int], reEnabled: [Int]) {
        let candidates = [candidate(1, "linux-aaaaa"), candidate(2, "linux-bbbbb")]
        let result = PoolDecision.resolveScaleDown(candidates, reRead: reRead)
        #expect(result.deletePods.map(\.agentID) == deleted)
        #expect(result.reEnable == reEnabled)
        #expect(Set(result.deletePods.map(\.agentID)).isDisjoint(with: result.reEnable))
        #expect(result.deletePods.count + result.reEnable.count == candidates.count)
        for deletion in result.deletePods { #expect(reRead[deletion.agentID]?.assignedRequestID == nil) }
    }

    @Test("resolveScaleDown keeps a candidate the fresh job list shows reserved, even when its agent read shows no job")
    func resolveKeepsReservedByJobRead() {
        let reRead: [Int: AgentFacts] = [1: .agent(1, "linux-aaaaa", enabled: false), 2: .agent(2, "linux-bbbbb", enabled: false)]
        let result = PoolDecision.resolveScaleDown([candidate(1, "linux-aaaaa"), candidate(2, "linux-bbbbb")], reRead: reRead, reservedAgentIDs: [1])
        #expect(result.deletePods.map(\.agentID) == [2])
        #expect(result.reEnable == [1])
    }

    @Test("resolveScaleDown of no candidates does nothing")
    func resolveNothing() {
        let result = PoolDecision.resolveScaleDown([], reRead: [1: .agent(1, "linux-aaaaa", job: 7)])
        #expect(result.deletePods.isEmpty)
        #expect(result.reEnable.isEmpty)
    }

    // MARK: Names and capabilities

    @Test(
        "isPodName accepts exactly <prefix>- plus 5 lowercase alphanumerics",
        arguments: [
            ("linux", "linux-abcde", true),
            ("linux", "linux-b2x9z", true),
            ("linux", "linux-00000", true),
            ("linux", "linux-abcd", false),
            ("linux", "linux-abcdef", false),
            ("linux", "linux-ABCDE", false),
            ("linux", "linux-ab-de", false),
            ("linux", "linux-ab.de", false),
            ("linux", "linux-placeholder", false),
            ("linux", "linuxx-abcde", false),
            ("linux", "linux", false),
            ("linux", "linux-", false),
            ("linux", "other-abcde", false),
            ("linux", "Linux-abcde", false),
            ("a-b", "a-b-abcde", true),
            ("a", "a-b-abcde", false),
            ("a-b", "a-abcde", false),
        ])
    func isPodName(prefix: String, name: String, expected: Bool) {
        #expect(PoolDecision.isPodName(name, prefix: prefix) == expected)
    }

    @Test("the placeholder name is <prefix>-placeholder and can never be a pod's name", arguments: ["linux", "a", "gpu-pool", String(repeating: "x", count: 57)])
    func placeholderName(prefix: String) {
        let name = PoolDecision.placeholderName(prefix: prefix)
        #expect(name == prefix + "-placeholder")
        #expect(!PoolDecision.isPodName(name, prefix: prefix))
    }

    @Test(
        "covers: every required capability present with an equal value, ignoring case",
        arguments: [
            ([:], [:], true),
            (["Agent.OS": "Linux"], [:], true),
            ([:], ["Agent.OS": "Linux"], false),
            (["agent.os": "linux"], ["Agent.OS": "Linux"], true),
            (["Agent.OS": "Linux", "java": "17"], ["Agent.OS": "Linux"], true),
            (["Agent.OS": "Windows_NT"], ["Agent.OS": "Linux"], false),
            (["Agent.OS": "Linux"], ["Agent.OS": "Linux", "docker": "true"], false),
            (["docker": ""], ["docker": "true"], false),
        ] as [([String: String], [String: String], Bool)])
    func covers(capabilities: [String: String], required: [String: String], expected: Bool) {
        #expect(PoolDecision.covers(capabilities, required) == expected)
    }

    // MARK: Invariants over generated situations

    /// A small deterministic generator (SplitMix64), so every run sees the same situations.
    private struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    @Test("invariants hold over generated situations, races included", arguments: 0..<8)
    func generatedInvariants(seed: Int) throws {
        var random = SplitMix(state: UInt64(seed) &* 7919 &+ 1)
        let names = ["linux-aaaaa", "linux-bbbbb", "linux-ccccc", "linux-ddddd", "linux-eeeee", "linux-fffff", "linux-ggggg", "linux-hhhhh"]
        let ages: [Double] = [0, 30, 179, 180, 599, 600, 1000]
        let phases: [PodFacts.Phase] = [.pending, .running, .running, .running, .succeeded, .failed, .unknown]
        func pick<T>(_ choices: [T]) -> T { choices[Int.random(in: 0..<choices.count, using: &random)] }
        for _ in 0..<400 {
            let spec = try poolSpec(standby: Int.random(in: 0...3, using: &random), maxAgents: Int.random(in: 3...6, using: &random))
            var pods: [PodFacts] = []
            var agents: [AgentFacts] = []
            var jobs: [JobFacts] = []
            var memory = PoolMemory()
            for (index, name) in names.shuffled(using: &random).enumerated() {
                let id = index + 1
                let hasPod = Double.random(in: 0..<1, using: &random) < 0.7
                if hasPod {
                    pods.append(
                        .pod(name, pick(phases), age: pick(ages), terminating: Double.random(in: 0..<1, using: &random) < 0.2))
                }
                guard Double.random(in: 0..<1, using: &random) < 0.75 else { continue }
                let jobID = Int64(100 + id)
                // Which read shows the assignment: 0 none, 1 both, 2 agents only (jobs still queued), 3 jobs only (reserved).
                let view = Int.random(in: 0...3, using: &random)
                agents.append(
                    .agent(id, name, online: Bool.random(using: &random), enabled: Double.random(in: 0..<1, using: &random) < 0.8, job: view == 1 || view == 2 ? jobID : nil))
                switch view {
                case 1, 3: jobs.append(.assigned(jobID, to: id))
                case 2: jobs.append(.queued(jobID, matched: [id]))
                default: break
                }
                if !hasPod, Bool.random(using: &random) { memory.orphansFirstSeen[id] = now.addingTimeInterval(-pick(ages) * 2) }
            }
            for extra in 0..<Int.random(in: 0...4, using: &random) { jobs.append(.queued(Int64(200 + extra))) }
            if Bool.random(using: &random) { agents.append(.placeholder) }
            if Bool.random(using: &random) { memory.surplusSince = now.addingTimeInterval(-pick(ages)) }
            let observation = PoolObservation(
                now: now, pods: pods, agents: agents.shuffled(using: &random), jobs: jobs.shuffled(using: &random), agentVersion: "4.264.2",
                deleting: Double.random(in: 0..<1, using: &random) < 0.1)
            let result = PoolDecision.decide(spec: spec, observation: observation, memory: memory)
            expectInvariants(spec: spec, observation: observation, result: result)
        }
    }
}
