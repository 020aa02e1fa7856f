import AgentIdentity
import Foundation
import Shared
import Simulators
import Testing

/// The job-request state machine, driven directly with explicit times (no server, no sleeping).
@Suite struct SimulatorStateMachineTests {
    let start = Date(timeIntervalSince1970: 1_700_000_000)

    func at(_ seconds: Double) -> Date { start.addingTimeInterval(seconds) }

    func makeState(_ configure: (inout SimulatorKnobs) -> Void = { _ in }) -> (OrganizationState, Int) {
        var knobs = SimulatorKnobs()
        configure(&knobs)
        var state = OrganizationState(knobs: knobs, personalAccessTokens: ["pat"])
        let pool = state.createPool(name: "pool-a", autoUpdate: false, now: start)
        return (state, pool.id)
    }

    func register(
        _ state: inout OrganizationState, pool: Int, _ name: String, _ capabilities: [String: String] = [:],
        version: String = "4.266.2", enabled: Bool = true
    ) throws -> SimulatedAgent {
        var system = ["Agent.Version": version]
        system.merge(capabilities) { _, new in new }
        return try state.addAgent(
            poolId: pool, .init(name: name, version: version, enabled: enabled, systemCapabilities: system), now: start)
    }

    func online(_ state: inout OrganizationState, _ agent: SimulatedAgent, at time: Date) throws -> String {
        let session = try state.createSession(poolId: agent.poolId, agentId: agent.id, ownerName: "host", now: time)
        state.dispatch(now: time)
        return session.sessionId
    }

    func queue(_ state: inout OrganizationState, _ demands: [String] = [], at time: Date) throws -> SimulatedJobRequest {
        let request = try state.queueJob(JobSpecification(pool: "pool-a", name: "job", demands: demands), now: time).get()
        state.dispatch(now: time)
        return request
    }

    struct DemandCase: Sendable, CustomTestStringConvertible {
        let capabilities: [String: String]
        let userCapabilities: [String: String]
        let demands: [String]
        let agentVersion: String
        let queues: Bool
        var testDescription: String { "\(demands) vs \(capabilities) user \(userCapabilities) v\(agentVersion) → \(queues)" }

        init(_ capabilities: [String: String], _ demands: [String], user: [String: String] = [:], version: String = "4.266.2", queues: Bool) {
            self.capabilities = capabilities
            self.userCapabilities = user
            self.demands = demands
            self.agentVersion = version
            self.queues = queues
        }
    }

    static let demandTable: [DemandCase] = [
        .init(["docker": "/usr/bin/docker"], ["docker"], queues: true),
        .init([:], ["docker"], queues: false),
        .init(["docker": ""], ["DOCKER"], queues: true),
        .init(["Agent.OS": "Linux"], ["Agent.OS -equals linux"], queues: true),
        .init(["Agent.OS": "Linux"], ["Agent.OS -equals Windows_NT"], queues: false),
        .init(["java": "17.0.2"], ["java -gtVersion 17"], queues: true),
        .init(["java": "11.0.22"], ["java -gtVersion 17"], queues: false),
        .init([:], [], version: "2.100.0", queues: false),
        .init([:], [], version: "2.163.1", queues: true),
        .init(["gpu": "none"], ["gpu -equals a100"], user: ["gpu": "a100"], queues: true),
        .init(["docker": "x", "Agent.OS": "Linux"], ["docker", "Agent.OS -equals Linux", "kubectl"], queues: false),
    ]

    @Test("demand matching decides queue-time acceptance and matchedAgents", arguments: demandTable)
    func demandMatching(_ example: DemandCase) throws {
        var (state, pool) = makeState()
        let agent = try register(&state, pool: pool, "agent-1", example.capabilities, version: example.agentVersion)
        if !example.userCapabilities.isEmpty {
            _ = try state.setUserCapabilities(poolId: pool, agentId: agent.id, example.userCapabilities, now: start)
        }
        let outcome = state.queueJob(JobSpecification(pool: "pool-a", demands: example.demands), now: at(1))
        switch outcome {
        case .success(let request):
            #expect(example.queues)
            #expect(request.matchedAgentIds == [agent.id])
            #expect(request.demands == example.demands + ["Agent.Version -gtVersion 2.163.1"])
        case .failure(let failure):
            #expect(!example.queues, "unexpected failure: \(failure.message)")
            #expect(state.queueFailures.count == 1)
            #expect(state.requests.isEmpty)
        }
    }

    @Test func emptyPoolFailsAtQueueTimeWithTheServiceMessage() {
        var (state, _) = makeState()
        let outcome = state.queueJob(JobSpecification(pool: "POOL-A", demands: ["docker", "Agent.OS -equals Linux"]), now: start)
        guard case .failure(let failure) = outcome else {
            Issue.record("expected a queue-time failure")
            return
        }
        #expect(failure.message == "No agent found in pool pool-a which satisfies the specified demands: docker, Agent.OS -equals Linux, Agent.Version -gtVersion 2.163.1")
        #expect(state.queueFailures == [failure])
        #expect(state.events.contains { $0.kind == .jobQueueFailed })
    }

    @Test func offlineCapableAgentKeepsTheJobQueuedWithMatchedAgents() throws {
        var (state, pool) = makeState()
        let placeholder = try register(&state, pool: pool, "placeholder", ["docker": "x"])
        let request = try queue(&state, ["docker"], at: at(1))
        #expect(state.requests[request.requestId]?.phase == .queued)
        #expect(state.requests[request.requestId]?.matchedAgentIds == [placeholder.id])
    }

    @Test func disabledAgentsMatchOnlyWithTheKnob() throws {
        var (state, pool) = makeState()
        _ = try register(&state, pool: pool, "disabled", enabled: false)
        #expect(throws: QueueFailure.self) { try state.queueJob(JobSpecification(pool: "pool-a"), now: at(1)).get() }
        state.knobs.disabledAgentsMatch = true
        let request = try state.queueJob(JobSpecification(pool: "pool-a"), now: at(2)).get()
        #expect(request.matchedAgentIds.count == 1)
    }

    @Test func assignsOnlyToOnlineEnabledIdleCapableAgents() throws {
        var (state, pool) = makeState()
        _ = try register(&state, pool: pool, "offline", ["docker": "x"])
        let disabled = try register(&state, pool: pool, "disabled", ["docker": "x"], enabled: false)
        let incapable = try register(&state, pool: pool, "incapable")
        let busy = try register(&state, pool: pool, "busy", ["docker": "x"])
        let good = try register(&state, pool: pool, "good", ["docker": "x"])
        _ = try online(&state, disabled, at: at(1))
        _ = try online(&state, incapable, at: at(1))
        _ = try online(&state, busy, at: at(1))
        let first = try queue(&state, ["docker"], at: at(2))
        #expect(state.requests[first.requestId]?.reservedAgentId == busy.id)
        _ = try online(&state, good, at: at(3))
        #expect(state.requests[first.requestId]?.reservedAgentId == busy.id, "an assignment never moves")
        let second = try queue(&state, ["docker"], at: at(4))
        let assigned = try #require(state.requests[second.requestId])
        #expect(assigned.reservedAgentId == good.id)
        #expect(assigned.assignTime == at(4))
        #expect(assigned.phase == .assigned)
    }

    @Test func queuedJobsAreAssignedFirstInFirstOut() throws {
        var (state, pool) = makeState()
        let agent = try register(&state, pool: pool, "agent")
        let older = try queue(&state, at: at(1))
        let newer = try queue(&state, at: at(2))
        _ = try online(&state, agent, at: at(3))
        #expect(state.requests[older.requestId]?.phase == .assigned)
        #expect(state.requests[newer.requestId]?.phase == .queued)
    }

    /// Delivers the next message and acknowledges it, as a listener that takes the job does.
    @discardableResult
    func take(_ state: inout OrganizationState, _ session: String, agent: SimulatedAgent, at time: Date) throws -> AgentMessage {
        let message = try #require(try state.takeMessage(sessionId: session, lastMessageId: nil, now: time))
        try state.deleteMessage(poolId: agent.poolId, agentId: agent.id, sessionId: session, messageId: message.messageId, now: time)
        return message
    }

    @Test func aDeliveredButUnacknowledgedJobGoesBackToTheQueueWhenTheSessionEnds() throws {
        var (state, pool) = makeState()
        let first = try register(&state, pool: pool, "first")
        let second = try register(&state, pool: pool, "second")
        let session = try online(&state, first, at: at(0))
        let request = try queue(&state, at: at(1))
        _ = try #require(try state.takeMessage(sessionId: session, lastMessageId: nil, now: at(2)))
        #expect(state.requests[request.requestId]?.phase == .assigned, "delivery alone does not start the job")
        try state.deleteSession(poolId: pool, agentId: first.id, sessionId: session, now: at(3))
        #expect(state.requests[request.requestId]?.phase == .queued)
        _ = try online(&state, second, at: at(4))
        #expect(state.requests[request.requestId]?.reservedAgentId == second.id)
    }

    @Test func receiveFinishAndNextAssignment() throws {
        var (state, pool) = makeState()
        let agent = try register(&state, pool: pool, "agent")
        let session = try online(&state, agent, at: at(1))
        let first = try queue(&state, at: at(2))
        let second = try queue(&state, at: at(2.5))
        let message = try take(&state, session, agent: agent, at: at(3))
        #expect(message.messageType == "PipelineAgentJobRequest")
        let running = try #require(state.requests[first.requestId])
        #expect(running.receiveTime == at(3))
        #expect(running.lockedUntil == at(303))
        let lockToken = try #require(running.lockToken)
        #expect(throws: SimulatorFailure.invalidLockToken(first.requestId)) {
            try state.finishJob(poolId: pool, requestId: first.requestId, lockToken: "wrong", result: .succeeded, finishTime: nil, now: at(4))
        }
        let finished = try state.finishJob(
            poolId: pool, requestId: first.requestId, lockToken: lockToken, result: .succeeded, finishTime: at(5), now: at(5))
        #expect(finished.result == .succeeded)
        #expect(finished.finishTime == at(5))
        state.dispatch(now: at(5))
        #expect(state.requests[second.requestId]?.reservedAgentId == agent.id)
        #expect(state.agents[agent.id]?.lastCompletedRequestId == first.requestId)
        #expect(throws: SimulatorFailure.jobNotFound(first.requestId, status: 409)) {
            try state.renewLock(poolId: pool, requestId: first.requestId, lockToken: lockToken, now: at(6))
        }
    }

    @Test func cancelQueuedFinishesWithoutAssignment() throws {
        var (state, pool) = makeState()
        _ = try register(&state, pool: pool, "agent")
        let request = try queue(&state, at: at(1))
        try state.cancelJob(request.requestId, now: at(2))
        let canceled = try #require(state.requests[request.requestId])
        #expect(canceled.result == .canceled)
        #expect(canceled.finishTime == at(2))
        #expect(canceled.assignTime == nil)
    }

    @Test func cancelRunningSendsJobCancelAndForcesAfterTimeout() throws {
        var (state, pool) = makeState { $0.cancelTimeout = .seconds(30); $0.sessionTimeout = .seconds(3600) }
        let agent = try register(&state, pool: pool, "agent")
        let session = try online(&state, agent, at: at(1))
        let request = try queue(&state, at: at(2))
        let job = try take(&state, session, agent: agent, at: at(3))
        try state.cancelJob(request.requestId, now: at(4))
        let cancel = try #require(try state.takeMessage(sessionId: session, lastMessageId: job.messageId, now: at(4)))
        #expect(cancel.messageType == "JobCancel")
        #expect(try JSONValue.parse(Array(cancel.body.utf8))["requestId"]?.intValue == request.requestId)
        state.sweep(now: at(30))
        #expect(state.requests[request.requestId]?.isFinished == false)
        state.sweep(now: at(35))
        #expect(state.requests[request.requestId]?.result == .canceled)
        #expect(state.agents[agent.id]?.assignedRequestId == nil)
    }

    @Test func sessionEndAbandonsTheHeldJob() throws {
        var (state, pool) = makeState()
        let agent = try register(&state, pool: pool, "agent")
        let session = try online(&state, agent, at: at(1))
        let request = try queue(&state, at: at(2))
        try take(&state, session, agent: agent, at: at(3))
        try state.deleteSession(poolId: pool, agentId: agent.id, sessionId: session, now: at(4))
        #expect(state.requests[request.requestId]?.result == .abandoned)
        #expect(state.agents[agent.id]?.status == .offline)
        #expect(state.agents[agent.id]?.statusChangedOn == at(4))
    }

    @Test func anAgentLeavingBeforeTakingItsJobPutsTheJobBackInTheQueue() throws {
        var (state, pool) = makeState()
        let first = try register(&state, pool: pool, "first")
        let second = try register(&state, pool: pool, "second")
        let session = try online(&state, first, at: at(0))
        let request = try queue(&state, at: at(1))
        #expect(state.requests[request.requestId]?.reservedAgentId == first.id)
        try state.deleteSession(poolId: pool, agentId: first.id, sessionId: session, now: at(2))
        let requeued = try #require(state.requests[request.requestId])
        #expect(requeued.phase == .queued)
        #expect(requeued.assignTime == nil)
        #expect(requeued.reservedAgentId == nil)
        #expect(state.agents[first.id]?.assignedRequestId == nil)
        _ = try online(&state, second, at: at(3))
        #expect(state.requests[request.requestId]?.reservedAgentId == second.id)
        #expect(state.events.contains { $0.kind == .jobRequeued })
    }

    @Test func heartbeatTimeoutDropsTheSessionButAnOpenPollKeepsItAlive() throws {
        var (state, pool) = makeState { $0.sessionTimeout = .seconds(15) }
        let agent = try register(&state, pool: pool, "agent")
        let session = try online(&state, agent, at: at(0))
        try state.beginPoll(poolId: pool, agentId: agent.id, sessionId: session, now: at(1))
        state.sweep(now: at(30))
        #expect(state.sessions[session] != nil)
        state.endPoll(sessionId: session, now: at(31))
        let request = try queue(&state, at: at(32))
        try take(&state, session, agent: agent, at: at(32))   // the acknowledgement is the last heartbeat
        state.sweep(now: at(46.5))
        #expect(state.sessions[session] != nil, "less than 15 s since the last heartbeat is not yet a timeout")
        state.sweep(now: at(47.5))
        #expect(state.sessions[session] == nil)
        #expect(state.requests[request.requestId]?.result == .abandoned)
        #expect(state.events.contains { $0.kind == .sessionExpired })
    }

    @Test func lockExpiryAbandons() throws {
        var (state, pool) = makeState { $0.lockDuration = .seconds(60); $0.sessionTimeout = .seconds(3600) }
        let agent = try register(&state, pool: pool, "agent")
        let session = try online(&state, agent, at: at(0))
        let request = try queue(&state, at: at(1))
        try take(&state, session, agent: agent, at: at(2))
        let lockToken = try #require(state.requests[request.requestId]?.lockToken)
        _ = try state.renewLock(poolId: pool, requestId: request.requestId, lockToken: lockToken, now: at(50))
        state.sweep(now: at(100))
        #expect(state.requests[request.requestId]?.isFinished == false)
        state.sweep(now: at(111))
        #expect(state.requests[request.requestId]?.result == .abandoned)
    }

    @Test(arguments: [400, 409])
    func deletingABusyAgentIsRefused(status: Int) throws {
        var (state, pool) = makeState { $0.deleteBusyAgentStatus = status }
        let agent = try register(&state, pool: pool, "agent")
        _ = try online(&state, agent, at: at(0))
        _ = try queue(&state, at: at(1))
        #expect(throws: SimulatorFailure.agentBusy(name: "agent", status: status)) {
            try state.deleteAgent(poolId: pool, agentId: agent.id, now: at(2))
        }
        #expect(state.agents[agent.id]?.isRegistered == true)
    }

    @Test func replacingAnAgentInvalidatesTokensAndAbandonsItsJob() throws {
        var (state, pool) = makeState()
        let key = try AgentKey.generate()
        let agent = try state.addAgent(
            poolId: pool,
            .init(
                name: "agent", systemCapabilities: ["Agent.Version": "4.266.2"],
                publicKeyExponent: key.publicKey.exponent, publicKeyModulus: key.publicKey.modulus),
            now: start)
        let audience = "https://sim.invalid/org/_apis/oauth2/token"
        let assertion = try key.clientAssertion(clientId: agent.clientId, audience: audience, now: at(0))
        let token = try state.issueAccessToken(assertion: assertion, audience: audience, now: at(0)).get().token
        #expect(state.identity(ofAccessToken: token, now: at(0)) == .agent(agent.id))
        let session = try online(&state, agent, at: at(0))
        let request = try queue(&state, at: at(1))
        try take(&state, session, agent: agent, at: at(1))
        let replaced = try state.replaceAgent(poolId: pool, agentId: agent.id, .init(name: "agent"), now: at(2))
        #expect(replaced.clientId != agent.clientId)
        #expect(state.identity(ofAccessToken: token, now: at(2)) == .invalid)
        #expect(state.requests[request.requestId]?.result == .abandoned)
        #expect(state.agents[agent.id]?.status == .offline)
    }

    @Test func refreshGoesToTheNextSessionOnly() throws {
        var (state, pool) = makeState()
        let first = try register(&state, pool: pool, "first")
        let second = try register(&state, pool: pool, "second")
        state.refreshNextSession(targetVersion: "4.300.0", now: start)
        let session = try online(&state, first, at: at(1))
        let message = try #require(try state.takeMessage(sessionId: session, lastMessageId: nil, now: at(1)))
        #expect(message.messageType == "AgentRefresh")
        #expect(try JSONValue.parse(Array(message.body.utf8))["targetVersion"]?.stringValue == "4.300.0")
        let other = try online(&state, second, at: at(2))
        #expect(try state.takeMessage(sessionId: other, lastMessageId: nil, now: at(2)) == nil)
    }

    @Test func packagesAreListedNewestFirst() {
        var (state, _) = makeState()
        for version in ["4.251.0", "4.266.2", "3.248.0"] {
            state.publishPackage(
                PackageSpecification(platform: "linux-x64", version: PackageVersion(version)!, downloadUrl: "u"), now: start)
        }
        state.publishPackage(
            PackageSpecification(platform: "linux-arm64", version: PackageVersion("9.0.0")!, downloadUrl: "u"), now: start)
        #expect(state.packages(type: "agent", platform: "linux-x64").map(\.version.description) == ["4.266.2", "4.251.0", "3.248.0"])
    }
}
