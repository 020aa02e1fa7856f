import Foundation
import Kubernetes
import Shared
import Simulators

/// The workload the demo plays.
struct DemoWorkload: Sendable {
    /// Jobs in the burst.
    var jobs: Int
    /// Jobs queued per second.
    var rate: Double
    /// The typical job's duration; jobs take 0.5×, 1× or 1.5× of it.
    var jobSeconds: Double
    /// The AgentPool's standby and maximum.
    var standby: Int
    var maxAgents: Int
    /// Who registers the agents (`--registration`).
    var registration: RegistrationMode = .controller
    /// The capabilities the AgentPool declares (and its agent container's environment provides).
    static let capabilities = ["docker": "true", "JAVA_VERSION": "17"]
    /// The demands of job `index` (1-based): every third needs docker, every fourth Java 17.
    static func demands(_ index: Int) -> [String] {
        (index % 3 == 0 ? ["docker"] : []) + (index % 4 == 0 ? ["JAVA_VERSION -equals 17"] : [])
    }
    /// How long job `index` (1-based) runs.
    func seconds(_ index: Int) -> Double { jobSeconds * [1.0, 0.5, 1.5][index % 3] }
    /// The job whose pod is killed runs long enough to be killed mid-job.
    var victimSeconds: Double { min(max(jobSeconds * 3, 6), 9) }
}

/// What happened so far: the current step, the message log, and the job requests the demo queued.
actor DemoBoard {
    let started = ContinuousClock.now
    private(set) var step = "starting"
    private(set) var events: [(time: Double, text: String)] = []
    private(set) var requestIds: [Int] = []
    private(set) var plannedJobs = 0

    var elapsed: Double {
        let duration = ContinuousClock.now - started
        return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// Adds a message.
    func note(_ text: String) { events.append((elapsed, text)) }
    /// Sets the step shown in the header, and notes it.
    func begin(_ step: String) {
        self.step = step
        note("▸ " + step)
    }
    /// Records a queued request.
    func queued(_ id: Int) { requestIds.append(id) }
    /// Sets how many jobs the scenario will queue.
    func plan(_ jobs: Int) { plannedJobs = jobs }
}

/// The scenario's facts the invariants and the summary need.
struct DemoFacts: Sendable {
    var requestIds: [Int] = []
    var victimRequest: Int?
    var victimPod: String?
    var victimAgent: String?
    var orphan: String?
    var refusedMessage: String?
    var settled = false
    var drained = false
    var killedAt: Double?
    var podCollectedAt: Double?
    var registrationRemovedAt: Double?
    var orphanRemovedAt: Double?
    var orphanRegisteredAt: Double?
}

/// Plays the scenario against the running stack: standby, an orphan registration, a refused job, a burst with
/// demands, a pod killed mid-job, and the return to standby.
struct DemoScenario: Sendable {
    let organization: SimulatedOrganization
    let workload: DemoWorkload
    let board: DemoBoard
    let tracker: PodTracker
    let nodeDirectory: String
    let deadline: ContinuousClock.Instant
    /// Fails the wait early when a process the demo needs has died.
    let health: @Sendable () async -> String?

    static let placeholder = "\(DemoNames.pool)-placeholder"

    func play() async throws -> DemoFacts {
        var facts = DemoFacts()
        await board.plan(workload.jobs + 1)

        await board.begin("standby: the controller creates \(workload.standby) agent pods; each registers one agent")
        try await wait("\(workload.standby) idle agents", timeout: 180) { snapshot, _ in
            Self.ours(snapshot).count(where: { $0.status == .online && $0.assignedRequestId == nil }) >= workload.standby
                && snapshot.agent(named: Self.placeholder) != nil
        }
        await board.note("standby reached: \(workload.standby) idle agents online, placeholder registered")

        // An orphan: a registration named like one of the pool's pods, with no pod (as after a node failure).
        let suffix = String((0..<5).map { _ in "abcdefghijklmnopqrstuvwxyz0123456789".randomElement()! })
        let orphan = "\(DemoNames.pool)-\(suffix)"
        _ = try await organization.registerAgent(pool: DemoNames.azurePool, .init(name: orphan))
        facts.orphan = orphan
        facts.orphanRegisteredAt = await board.elapsed
        await board.note("registered orphan agent \(orphan) (offline, no pod): the controller must remove it")

        let refused = await organization.queueJob(JobSpecification(pool: DemoNames.azurePool, name: "needs-a-gpu", demands: ["gpu -equals a100"]))
        if case .failed(let failure) = refused {
            facts.refusedMessage = failure.message
            await board.note("queued a job demanding gpu: refused at queue time, as on the real service: \(failure.message)")
        } else {
            await board.note("queued a job demanding gpu: it was NOT refused")
        }

        await board.begin("burst: \(workload.jobs) jobs at \(Self.format(workload.rate))/s, one long job whose pod gets killed")
        let victim = try await organization.queueJobOrThrow(
            JobSpecification(pool: DemoNames.azurePool, name: "long-build", durationSeconds: workload.victimSeconds))
        await board.queued(victim)
        facts.victimRequest = victim
        for index in 1...workload.jobs {
            try await Task.sleep(for: .seconds(1 / workload.rate))
            let id = try await organization.queueJobOrThrow(
                JobSpecification(pool: DemoNames.azurePool, name: "build-\(index)", demands: DemoWorkload.demands(index), durationSeconds: workload.seconds(index)))
            await board.queued(id)
            if facts.victimPod == nil, let killed = try await killIfRunning(victim) {
                (facts.victimPod, facts.victimAgent) = killed
                facts.killedAt = await board.elapsed
            }
        }
        while facts.victimPod == nil {
            if let killed = try await killIfRunning(victim) {
                (facts.victimPod, facts.victimAgent) = killed
                facts.killedAt = await board.elapsed
            } else if await organization.snapshot().request(victim)?.isFinished == true {
                await board.note("the long job finished before its pod could be killed")
                break
            } else {
                if let crash = await health() { throw DemoFailure(crash) }
                guard ContinuousClock.now < deadline else { throw DemoFailure("timed out waiting for the long job to start") }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        facts.requestIds = await board.requestIds

        await board.begin("draining: every job runs on its own agent; finished pods are collected")
        let ids = facts.requestIds
        try await wait("every job to finish", timeout: nil) { snapshot, _ in
            await noteCleanups(snapshot, facts: &facts)
            return ids.allSatisfy { snapshot.request($0)?.isFinished ?? false }
        }
        facts.drained = true
        await board.note("all \(ids.count) jobs finished")

        await board.begin("settling: back to \(workload.standby) idle agents, nothing left over")
        try await wait("the pool to return to standby", timeout: nil) { snapshot, pods in
            await noteCleanups(snapshot, facts: &facts)
            return Self.isSettled(snapshot, pods: pods, standby: workload.standby, orphan: orphan, victimPod: facts.victimPod)
        }
        facts.settled = true
        await board.note("back to standby")
        return facts
    }

    /// Kills the processes of the pod running `request` (as a crashing container), once it has run for a second.
    private func killIfRunning(_ request: Int) async throws -> (pod: String, agent: String)? {
        let snapshot = await organization.snapshot()
        guard let job = snapshot.request(request), let received = job.receiveTime, !job.isFinished,
            Date().timeIntervalSince(received) > 1, let agentId = job.reservedAgentId,
            let agent = snapshot.agents.first(where: { $0.id == agentId })
        else { return nil }
        guard let pod = await tracker.pods[agent.name] else { return nil }
        let directory = nodeDirectory + "/pods/\(DemoNames.agentNamespace)_\(pod.name)_\(pod.uid)"
        let killed = killProcesses(under: directory)
        guard killed > 0 else { return nil }
        await board.note("killed pod \(pod.name) mid-job (SIGKILL to its \(killed) process\(killed == 1 ? "" : "es")): the container crashed")
        return (pod.name, agent.name)
    }

    /// Notes when the killed pod, its registration and the orphan are gone.
    private func noteCleanups(_ snapshot: OrganizationSnapshot, facts: inout DemoFacts) async {
        let now = await board.elapsed
        if let pod = facts.victimPod, facts.podCollectedAt == nil, await tracker.pods[pod] == nil {
            facts.podCollectedAt = now
            await board.note("killed pod \(pod) collected")
        }
        if let agent = facts.victimAgent, facts.registrationRemovedAt == nil, snapshot.agent(named: agent)?.isRegistered != true {
            facts.registrationRemovedAt = now
            await board.note("registration of the killed pod removed (\(agent))")
        }
        if let orphan = facts.orphan, facts.orphanRemovedAt == nil, snapshot.agent(named: orphan)?.isRegistered != true {
            facts.orphanRemovedAt = now
            await board.note("orphan registration \(orphan) removed")
        }
    }

    /// Standby again: exactly `standby` idle online agents, the placeholder, no other registration; exactly
    /// `standby` Running pods and no finished or terminating one; the orphan and the killed pod gone.
    static func isSettled(_ snapshot: OrganizationSnapshot, pods: [String: PodTracker.Entry], standby: Int, orphan: String, victimPod: String?) -> Bool {
        let agents = ours(snapshot)
        return agents.count == standby && agents.allSatisfy { $0.status == .online && $0.assignedRequestId == nil }
            && pods.count == standby && pods.values.allSatisfy { $0.phase == "Running" && !$0.terminating }
            && snapshot.agent(named: orphan)?.isRegistered != true && victimPod.map { pods[$0] == nil } ?? true
    }

    /// Registered agents of the pool except the placeholder.
    static func ours(_ snapshot: OrganizationSnapshot) -> [SimulatedAgent] {
        snapshot.agents.filter { $0.isRegistered && $0.name != placeholder }
    }

    /// Waits until `condition` holds, checking every 300 ms, until `timeout` or the demo's deadline.
    private func wait(
        _ what: String, timeout: Double?, _ condition: (OrganizationSnapshot, [String: PodTracker.Entry]) async throws -> Bool
    ) async throws {
        let limit = timeout.map { min(deadline, ContinuousClock.now + .seconds($0)) } ?? deadline
        while true {
            if try await condition(organization.snapshot(), await tracker.pods) { return }
            if let crash = await health() { throw DemoFailure(crash) }
            guard ContinuousClock.now < limit else { throw DemoFailure("timed out waiting for \(what)") }
            try await Task.sleep(for: .milliseconds(300))
        }
    }

    static func format(_ value: Double) -> String { value == value.rounded() ? "\(Int(value))" : String(format: "%.1f", value) }
}
