import AsyncHTTPClient
import Foundation
import NIOHTTP1
import Shared
import Simulators
import Testing

/// Job-request lifecycle driven by raw agent HTTP calls (register, token, session, messages, finish).
@Suite(.timeLimit(.minutes(1)))
struct SimulatorLifecycleTests {
    @Test func queuedAssignedReceivedFinished() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let organization = simulator.organization
            let poolId = try await organization.poolId("pool-a")
            let agent = try await TestAgent.register(http, poolId: poolId, name: "agent-1", capabilities: ["docker": "x"])
            let requestId = try await organization.queueJobOrThrow(JobSpecification(
                pool: "pool-a", name: "Build", demands: ["docker"], durationSeconds: 1.5, script: "echo hi",
                variables: ["FOO": "bar"]))
            #expect(await organization.snapshot().request(requestId)?.phase == .queued)

            let session = try await agent.openSession()
            #expect(await organization.snapshot().agent(named: "agent-1")?.status == .online)
            let assigned = try await organization.waitUntil { $0.request(requestId)?.phase == .assigned }
            #expect(assigned.request(requestId)?.reservedAgentId == agent.agentId)
            let wireAssigned = try await http.get("_apis/distributedtask/pools/\(poolId)/jobrequests/\(requestId)").json
            #expect(wireAssigned["assignTime"] != nil)
            #expect(wireAssigned["receiveTime"] == nil)
            #expect(wireAssigned["reservedAgent"]?["name"] == "agent-1")

            let (messageId, job) = try await agent.nextMessage(session, type: "PipelineAgentJobRequest")
            #expect(job["requestId"]?.intValue == requestId)
            #expect(job["jobDisplayName"] == "Build")
            #expect(job["script"] == "echo hi")
            #expect(job["durationSeconds"]?.doubleValue == 1.5)
            #expect(job["variables"]?["FOO"] == "bar")
            let lockToken = try #require(job["lockToken"]?.stringValue)
            #expect(try await agent.acknowledge(session, messageId: messageId).status == 204)

            let running = try await http.get("_apis/distributedtask/pools/\(poolId)/jobrequests/\(requestId)").json
            #expect(running["receiveTime"] != nil)
            #expect(running["lockedUntil"] != nil)
            #expect(running["result"] == nil)

            let renewed = try await agent.renew(requestId: requestId, lockToken: lockToken)
            #expect(renewed.status == 200)
            #expect(try await agent.renew(requestId: requestId, lockToken: "wrong").status == 400)

            let finished = try await agent.finish(requestId: requestId, lockToken: lockToken, result: "succeeded")
            #expect(finished.status == 200)
            #expect(try finished.json["result"] == "succeeded")
            let again = try await agent.finish(requestId: requestId, lockToken: lockToken, result: "succeeded")
            #expect(again.status == 409)
            #expect(try again.json["typeKey"] == "TaskAgentJobNotFoundException")

            let withAgent = try await http.list(
                "_apis/distributedtask/pools/\(poolId)/agents?includeAssignedRequest=true&includeLastCompletedRequest=true")
            #expect(withAgent.first?["assignedRequest"] == nil)
            #expect(withAgent.first?["lastCompletedRequest"]?["requestId"]?.intValue == requestId)
            #expect(try await http.list("_apis/distributedtask/pools/\(poolId)/jobrequests?agentId=\(agent.agentId)").count == 1)
            #expect(try await http.list("_apis/distributedtask/pools/\(poolId)/jobrequests?agentIds=\(agent.agentId),99").count == 1)

            #expect(try await agent.closeSession(session).status == 204)
            #expect(await organization.snapshot().agent(named: "agent-1")?.status == .offline)
            #expect(try await agent.poll(session).status == 404)
        }
    }

    @Test func noAssignmentToDisabledAgentUntilEnabled() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let organization = simulator.organization
            let poolId = try await organization.poolId("pool-a")
            let agent = try await TestAgent.register(http, poolId: poolId, name: "agent-1")
            _ = try await TestAgent.register(http, poolId: poolId, name: "placeholder")
            let path = "_apis/distributedtask/pools/\(poolId)/agents/\(agent.agentId)"
            _ = try await http.send(.PATCH, path, body: .object(JSONObject([("enabled", false)])))
            let session = try await agent.openSession()
            let requestId = try await organization.queueJobOrThrow(JobSpecification(pool: "pool-a"))
            #expect(try await agent.poll(session).status == 204)
            #expect(await organization.snapshot().request(requestId)?.phase == .queued)
            _ = try await http.send(.PATCH, path, body: .object(JSONObject([("enabled", "true")])))
            let (_, job) = try await agent.nextMessage(session, type: "PipelineAgentJobRequest")
            #expect(job["requestId"]?.intValue == requestId)
        }
    }

    @Test func sessionConflictAndDeletedAgent() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let poolId = try await simulator.organization.poolId("pool-a")
            let agent = try await TestAgent.register(http, poolId: poolId, name: "agent-1")
            let session = try await agent.openSession()
            let conflict = try await agent.openSessionReply()
            #expect(conflict.status == 409)
            #expect(try conflict.json["typeKey"] == "TaskAgentSessionConflictException")
            #expect(try await http.send(.DELETE, "_apis/distributedtask/pools/\(poolId)/agents/\(agent.agentId)").status == 204)
            #expect(try await agent.poll(session).status == 401)
            let gone = try await agent.openSessionReply()
            #expect(gone.status == 404)
            #expect(try gone.json["typeKey"] == "TaskAgentNotFoundException")
        }
    }

    @Test func cancelQueuedAndCancelRunning() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let organization = simulator.organization
            let poolId = try await organization.poolId("pool-a")
            let agent = try await TestAgent.register(http, poolId: poolId, name: "agent-1")
            let queued = try await organization.queueJobOrThrow(JobSpecification(pool: "pool-a", name: "queued"))
            try await organization.cancelJob(requestId: queued)
            let canceled = try await http.get("_apis/distributedtask/pools/\(poolId)/jobrequests/\(queued)").json
            #expect(canceled["result"] == "canceled")
            #expect(canceled["finishTime"] != nil)
            #expect(canceled["assignTime"] == nil)

            let session = try await agent.openSession()
            let running = try await organization.queueJobOrThrow(JobSpecification(pool: "pool-a", name: "running", durationSeconds: 60))
            let (jobMessage, job) = try await agent.nextMessage(session, type: "PipelineAgentJobRequest")
            let lockToken = try #require(job["lockToken"]?.stringValue)
            try await organization.cancelJob(requestId: running)
            let (_, cancel) = try await agent.nextMessage(session, type: "JobCancel", lastMessageId: jobMessage)
            #expect(cancel["requestId"]?.intValue == running)
            #expect(cancel["jobId"]?.stringValue == job["jobId"]?.stringValue)
            #expect(try await agent.finish(requestId: running, lockToken: lockToken, result: "canceled").status == 200)
            #expect(await organization.snapshot().request(running)?.result == .canceled)
        }
    }

    @Test func cancelledJobIsForcedAfterTheCancelTimeout() async throws {
        var knobs = fastKnobs()
        knobs.cancelTimeout = .milliseconds(300)
        try await AzureDevOpsSimulator.withSimulator(testConfiguration(knobs: knobs)) { simulator in
            let http = SimHTTP(simulator: simulator)
            let organization = simulator.organization
            let poolId = try await organization.poolId("pool-a")
            let agent = try await TestAgent.register(http, poolId: poolId, name: "agent-1")
            let session = try await agent.openSession()
            let requestId = try await organization.queueJobOrThrow(JobSpecification(pool: "pool-a"))
            _ = try await agent.nextMessage(session, type: "PipelineAgentJobRequest")
            try await organization.cancelJob(requestId: requestId)
            let done = try await organization.waitUntil(timeout: .seconds(5)) { $0.request(requestId)?.isFinished == true }
            #expect(done.request(requestId)?.result == .canceled)
        }
    }

    @Test func abandonedWhenTheSessionIsDeleted() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let organization = simulator.organization
            let poolId = try await organization.poolId("pool-a")
            let agent = try await TestAgent.register(http, poolId: poolId, name: "agent-1")
            let session = try await agent.openSession()
            let requestId = try await organization.queueJobOrThrow(JobSpecification(pool: "pool-a"))
            let (_, job) = try await agent.nextMessage(session, type: "PipelineAgentJobRequest")
            #expect(try await agent.closeSession(session).status == 204)
            let request = try await http.get("_apis/distributedtask/pools/\(poolId)/jobrequests/\(requestId)").json
            #expect(request["result"] == "abandoned")
            let late = try await agent.finish(
                requestId: requestId, lockToken: try #require(job["lockToken"]?.stringValue), result: "succeeded")
            #expect(late.status == 409)
        }
    }

    /// Regression (flaky under load): with a 2 s timeout from the start, a busy machine could expire the session
    /// between taking the job message and acknowledging it. The timeout is now shortened only once the job is taken.
    @Test func abandonedOnHeartbeatTimeout() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let organization = simulator.organization
            let poolId = try await organization.poolId("pool-a")
            let agent = try await TestAgent.register(http, poolId: poolId, name: "agent-1")
            let session = try await agent.openSession()
            let requestId = try await organization.queueJobOrThrow(JobSpecification(pool: "pool-a"))
            _ = try await agent.nextMessage(session, type: "PipelineAgentJobRequest")
            await organization.updateKnobs { $0.sessionTimeout = .seconds(1) }
            // Stop polling: the 1 s session timeout drops the session.
            let after = try await organization.waitUntil(timeout: .seconds(10)) { $0.request(requestId)?.isFinished == true }
            #expect(after.request(requestId)?.result == .abandoned)
            #expect(after.agent(named: "agent-1")?.status == .offline)
            #expect(after.events.contains { $0.kind == .sessionExpired })
            let poll = try await agent.poll(session)
            #expect(poll.status == 404)
            #expect(try poll.json["typeKey"] == "TaskAgentSessionExpiredException")
        }
    }

    @Test func deletingABusyAgentIsRefusedUntilTheJobEnds() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let organization = simulator.organization
            let poolId = try await organization.poolId("pool-a")
            let agent = try await TestAgent.register(http, poolId: poolId, name: "agent-1")
            let session = try await agent.openSession()
            let requestId = try await organization.queueJobOrThrow(JobSpecification(pool: "pool-a"))
            let (_, job) = try await agent.nextMessage(session, type: "PipelineAgentJobRequest")
            let path = "_apis/distributedtask/pools/\(poolId)/agents/\(agent.agentId)"
            let refused = try await http.send(.DELETE, path)
            #expect(refused.status == 400)
            #expect(try refused.json["typeKey"] == "TaskAgentJobStillRunningException")
            #expect(try refused.json["message"] == "The agent agent-1 is currently running a job and cannot be deleted. Wait for the job to complete, or cancel it, and try again.")
            await organization.updateKnobs { $0.deleteBusyAgentStatus = 409 }
            #expect(try await http.send(.DELETE, path).status == 409)
            let lockToken = try #require(job["lockToken"]?.stringValue)
            #expect(try await agent.finish(requestId: requestId, lockToken: lockToken, result: "failed").status == 200)
            #expect(try await http.send(.DELETE, path).status == 204)
        }
    }

    @Test func refreshNextSessionSendsAgentRefreshFirst() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let poolId = try await simulator.organization.poolId("pool-a")
            let agent = try await TestAgent.register(http, poolId: poolId, name: "agent-1")
            await simulator.organization.refreshNextSession(targetVersion: "4.270.0")
            let session = try await agent.openSession()
            let (_, body) = try await agent.nextMessage(session, type: "AgentRefresh")
            #expect(body["agentId"]?.intValue == agent.agentId)
            #expect(body["targetVersion"] == "4.270.0")
        }
    }

    @Test func emptyPoolAndUnsatisfiableJobsFailAtQueueTime() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let organization = simulator.organization
            let empty = await organization.queueJob(JobSpecification(pool: "pool-a"))
            guard case .failed(let failure) = empty else {
                Issue.record("expected failure, got \(empty)")
                return
            }
            #expect(failure.message == "No agent found in pool pool-a which satisfies the specified demands: Agent.Version -gtVersion 2.163.1")
            let http = SimHTTP(simulator: simulator)
            let poolId = try await organization.poolId("pool-a")
            _ = try await TestAgent.register(http, poolId: poolId, name: "linux", capabilities: ["Agent.OS": "Linux"])
            let windows = await organization.queueJob(JobSpecification(pool: "pool-a", demands: ["Agent.OS -equals Windows_NT"]))
            #expect(windows.requestId == nil)
            let snapshot = await organization.snapshot()
            #expect(snapshot.queueFailures.count == 2)
            #expect(snapshot.requests.isEmpty)
            #expect(try await http.list("_apis/distributedtask/pools/\(poolId)/jobrequests?$top=10").isEmpty)
        }
    }
}
