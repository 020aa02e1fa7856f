import Foundation
import Shared
import Simulators
import Synchronization
import Testing

/// A clock whose sleeps return at once but are recorded and advance its monotonic time, so retry and
/// Retry-After behaviour is asserted exactly without waiting.
final class RecordingClock: ShoalClock {
    private let state = Mutex<(now: Duration, sleeps: [Duration])>((.zero, []))

    var sleeps: [Duration] { state.withLock { $0.sleeps } }
    func monotonicNow() -> Duration { state.withLock { $0.now } }
    func wallNow() -> Date { Date() }
    func sleep(for duration: Duration) async throws {
        try Task.checkCancellation()
        state.withLock { state in
            state.sleeps.append(duration)
            state.now += duration
        }
    }
}

/// Builds a client for a simulator with fast, deterministic retries.
func makeClient(
    _ simulator: AzureDevOpsSimulator, token: String = "sim-pat", attempts: Int = 4, clock: any ShoalClock = RecordingClock(),
    readTimeout: Duration = .seconds(30)
) throws -> AzureDevOpsClient {
    let configuration = AzureDevOpsClientConfiguration(
        organization: try OrganizationURL(simulator.organizationURL + "/"), readTimeout: readTimeout,
        retry: RetryPolicy(maxAttempts: attempts, initialBackoff: .milliseconds(100), maxBackoff: .seconds(1)))
    return AzureDevOpsClient(
        configuration: configuration, credentials: try StaticTokenSource(token: token, origin: "test"), clock: clock,
        jitter: { 1.0 })
}

@Suite("Azure DevOps client against the simulator", .timeLimit(.minutes(1)))
struct ClientAgainstSimulatorTests {
    @Test("pools resolve by name ignoring case, URL-encoded; missing ones are typed errors")
    func pools() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration(pools: ["Linux Pool/1 & co", "other"])) { simulator in
            let client = try makeClient(simulator)
            let pool = try await client.resolvePool(named: "linux pool/1 & CO")
            #expect(pool.name == "Linux Pool/1 & co")
            #expect(pool.poolType == .automation)
            #expect(try await client.pool(id: pool.id) == pool)
            await #expect { try await client.resolvePool(named: "missing") } throws: { error in
                guard case AzureDevOpsError.poolNotFound(let name) = error else { return false }
                return name == "missing"
            }
            await #expect { try await client.pool(id: 9999) } throws: { error in
                guard case AzureDevOpsError.notFound(let server) = error else { return false }
                return server.status == 404 && server.typeKey == "TaskAgentPoolNotFoundException"
                    && server.route == "GET pools/{poolId}" && server.message?.isEmpty == false
            }
        }
    }

    @Test("agents: list with and without capabilities, by name, get, disable, delete")
    func agents() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let client = try makeClient(simulator)
            let organization = simulator.organization
            let poolId = try await organization.poolId("pool-a")
            for name in ["agent-1", "agent-2"] {
                _ = try await organization.registerAgent(
                    pool: "pool-a", .init(name: name, systemCapabilities: ["docker": "/usr/bin/docker", "Agent.OS": "Linux"]))
            }
            let plain = try await client.agents(poolID: poolId, options: AgentQueryOptions())
            #expect(plain.map(\.name).sorted() == ["agent-1", "agent-2"])
            #expect(plain.allSatisfy { $0.systemCapabilities == nil && $0.status == .offline })

            let detailed = try await client.agents(poolID: poolId, options: AgentQueryOptions(agentName: "agent-2", includeCapabilities: true))
            let agent = try #require(detailed.first)
            #expect(detailed.count == 1)
            #expect(agent.capabilities["docker"] == "/usr/bin/docker")
            #expect(try await client.agent(poolID: poolId, agentID: agent.id, options: .init()).name == "agent-2")

            let disabled = try await client.setAgentEnabled(poolID: poolId, agentID: agent.id, enabled: false)
            #expect(disabled.enabled == false)
            #expect(await organization.snapshot().agent(named: "agent-2")?.enabled == false)
            #expect(try await client.setAgentEnabled(poolID: poolId, agentID: agent.id, enabled: true).enabled == true)

            #expect(try await client.deleteAgent(poolID: poolId, agentID: agent.id) == .deleted)
            #expect(try await client.deleteAgent(poolID: poolId, agentID: agent.id) == .alreadyGone)
            #expect(await organization.snapshot().agent(named: "agent-2") == nil)
            await #expect(throws: AzureDevOpsError.self) {
                try await client.agent(poolID: poolId, agentID: agent.id, options: .init())
            }
        }
    }

    @Test("a REST registration (the placeholder) lets jobs queue in an otherwise empty pool; a duplicate is a conflict")
    func placeholder() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let client = try makeClient(simulator)
            let organization = simulator.organization
            let poolId = try await organization.poolId("pool-a")
            guard case .failed(let failure) = await organization.queueJob(.init(pool: "pool-a", name: "early")) else {
                Issue.record("a job in an empty pool must fail at queue time")
                return
            }
            #expect(failure.message.hasPrefix("No agent found in pool pool-a which satisfies the specified demands:"))

            let body = NewAgent(name: "shoal-placeholder", version: "4.266.2", systemCapabilities: ["Agent.OS": "Linux", "Agent.Version": "4.266.2", "docker": "yes"])
            let placeholder = try await client.addAgent(poolID: poolId, body)
            #expect(placeholder.name == "shoal-placeholder")
            #expect(placeholder.status == .offline)
            #expect(await organization.snapshot().agent(named: "shoal-placeholder")?.systemCapabilities["docker"] == "yes")
            await #expect { try await client.addAgent(poolID: poolId, body) } throws: { error in
                guard case AzureDevOpsError.conflict(let server) = error else { return false }
                return server.message?.contains("already contains an agent with name shoal-placeholder") == true
            }

            let requestId = try await organization.queueJobOrThrow(.init(pool: "pool-a", name: "build", demands: ["docker"]))
            let requests = try await client.unfinishedJobRequests(poolID: poolId)
            let request = try #require(requests.first)
            #expect(requests.count == 1)
            #expect(request.requestId == Int64(requestId))
            #expect(request.phase == .queued)
            #expect(request.matchedAgents?.map(\.name) == ["shoal-placeholder"])
            #expect(request.demands?.contains("docker") == true)
            #expect(request.demands?.contains { $0.hasPrefix("Agent.Version -gtVersion") } == true)
        }
    }

    @Test("unfinished job requests: queued and running are listed, finished and canceled are not; a busy agent cannot be deleted")
    func jobRequests() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let client = try makeClient(simulator)
            let organization = simulator.organization
            let poolId = try await organization.poolId("pool-a")
            let agent = try await TestAgent.register(SimHTTP(simulator: simulator), poolId: poolId, name: "runner")
            let session = try await agent.openSession()
            let running = try await organization.queueJobOrThrow(.init(pool: "pool-a", name: "running"))
            let (messageId, message) = try await agent.nextMessage(session, type: "PipelineAgentJobRequest")
            _ = try await agent.acknowledge(session, messageId: messageId)
            let waiting = try await organization.queueJobOrThrow(.init(pool: "pool-a", name: "waiting"))
            let canceled = try await organization.queueJobOrThrow(.init(pool: "pool-a", name: "canceled"))
            try await organization.cancelJob(requestId: canceled)

            let requests = try await client.unfinishedJobRequests(poolID: poolId)
            #expect(Dictionary(uniqueKeysWithValues: requests.map { ($0.requestId, $0.phase) })
                == [Int64(running): .running, Int64(waiting): .queued])
            let agents = try await client.agents(poolID: poolId, options: AgentQueryOptions(includeAssignedRequest: true))
            #expect(agents.first?.assignedRequest?.requestId == Int64(running))
            #expect(agents.first?.isIdle == false)

            await #expect { try await client.deleteAgent(poolID: poolId, agentID: agent.agentId) } throws: { error in
                guard case AzureDevOpsError.badRequest(let server) = error else { return false }
                return server.typeKey == "TaskAgentJobStillRunningException" && server.message?.contains("running a job") == true
            }
            #expect(await organization.snapshot().agent(named: "runner") != nil)

            let lockToken = try #require(message["lockToken"]?.stringValue)
            _ = try await agent.finish(requestId: running, lockToken: lockToken, result: "succeeded")
            _ = try await agent.closeSession(session)
            let after = try await client.unfinishedJobRequests(poolID: poolId)
            #expect(after.map(\.requestId) == [Int64(waiting)])
        }
    }

    @Test("the newest agent package for a platform")
    func packages() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let client = try makeClient(simulator)
            #expect(try await client.newestAgentPackage(platform: "linux-x64") == nil)
            for (platform, version) in [("linux-x64", "4.250.0"), ("linux-x64", "4.266.2"), ("linux-x64", "4.9.0"), ("linux-arm64", "4.300.0")] {
                await simulator.organization.publishPackage(.init(
                    platform: platform, version: try #require(PackageVersion(version)),
                    downloadUrl: "\(simulator.baseURL)/_sim/downloads/\(platform)-\(version).tar.gz"))
            }
            let newest = try #require(try await client.newestAgentPackage(platform: "linux-x64"))
            #expect(newest.version.description == "4.266.2")
            #expect(newest.platform == "linux-x64")
            #expect(newest.downloadUrl.hasSuffix("linux-x64-4.266.2.tar.gz"))
        }
    }

    @Test("a bad or revoked PAT is an authentication failure that says what to check")
    func authentication() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let bad = try makeClient(simulator, token: "wrong")
            await #expect { try await bad.resolvePool(named: "pool-a") } throws: { error in
                guard case AzureDevOpsError.authentication(_, let status, let credential, _) = error else { return false }
                let message = "\(error)"
                return status == 401 && credential == "PAT from test" && !message.contains("wrong")
                    && message.contains("expired") && message.contains("Agent Pools (Read & manage)")
            }
            await simulator.organization.addPersonalAccessToken("rotating")
            let client = try makeClient(simulator, token: "rotating")
            _ = try await client.resolvePool(named: "pool-a")
            await simulator.organization.revokePersonalAccessToken("rotating")
            await #expect { try await client.resolvePool(named: "pool-a") } throws: { error in
                guard case AzureDevOpsError.authentication = error else { return false }
                return !(error as? AzureDevOpsError)!.isRetryable
            }
            // Authentication failures are not retried: one request each.
            #expect(await simulator.organization.snapshot().requestCounts["GET pools"]?[401] == 2)
        }
    }

    @Test("5xx is retried with backoff until it succeeds")
    func serverErrorsRetried() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let clock = RecordingClock()
            let client = try makeClient(simulator, attempts: 4, clock: clock)
            simulator.organization.addFault(FaultRule(.serverError(status: 503), route: "pools", count: 2))
            #expect(try await client.resolvePool(named: "pool-a").name == "pool-a")
            let counts = await simulator.organization.snapshot().requestCounts["GET pools"]
            #expect(counts?[503] == 2 && counts?[200] == 1)
            #expect(clock.sleeps == [.milliseconds(100), .milliseconds(200)])
        }
    }

    @Test("persistent 5xx gives up after the configured attempts with a typed, retryable error")
    func serverErrorsExhausted() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let client = try makeClient(simulator, attempts: 3)
            simulator.organization.addFault(FaultRule(.serverError(status: 500)))
            await #expect { try await client.resolvePool(named: "pool-a") } throws: { error in
                guard case AzureDevOpsError.serverFailure(let server) = error else { return false }
                return server.status == 500 && (error as? AzureDevOpsError)?.isRetryable == true
            }
            #expect(await simulator.organization.snapshot().count("GET pools") == 3)
        }
    }

    @Test("429 waits at least Retry-After, then succeeds")
    func tooManyRequests() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let clock = RecordingClock()
            let client = try makeClient(simulator, clock: clock)
            simulator.organization.addFault(FaultRule(.tooManyRequests(retryAfterSeconds: 7), count: 1))
            #expect(try await client.resolvePool(named: "pool-a").name == "pool-a")
            #expect(clock.sleeps.reduce(.zero, +) >= .seconds(7))
            #expect(await simulator.organization.snapshot().requestCounts["GET pools"]?[429] == 1)
        }
    }

    @Test("429 that never ends is a throttled error carrying Retry-After and the TF400733 message")
    func throttledExhausted() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let client = try makeClient(simulator, attempts: 2)
            simulator.organization.addFault(FaultRule(.tooManyRequests(retryAfterSeconds: 3)))
            await #expect { try await client.resolvePool(named: "pool-a") } throws: { error in
                guard case AzureDevOpsError.throttled(let server, let retryAfter) = error else { return false }
                return retryAfter == .seconds(3) && server.message?.hasPrefix("TF400733") == true
            }
        }
    }

    @Test("throttling headers on a 200 are exposed and space out the next request")
    func throttleHeaders() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let clock = RecordingClock()
            let client = try makeClient(simulator, clock: clock)
            var headers = ThrottleHeaders()
            headers.retryAfter = 4
            headers.remaining = 0
            headers.limit = 200
            simulator.organization.addFault(FaultRule(.throttleHeaders(headers), count: 1))
            _ = try await client.resolvePool(named: "pool-a")
            #expect(clock.sleeps.isEmpty)
            let status = client.rateLimit
            #expect(status.remaining == 0 && status.limit == 200 && status.resource == "Core")
            #expect(status.retryAfter == .seconds(4))
            #expect(status.delay == .milliseconds(2517))
            _ = try await client.resolvePool(named: "pool-a")
            #expect(clock.sleeps == [.seconds(4)])
        }
    }

    @Test("a dropped connection is retried")
    func droppedConnection() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let clock = RecordingClock()
            let client = try makeClient(simulator, clock: clock)
            simulator.organization.addFault(FaultRule(.dropConnection, count: 1))
            #expect(try await client.resolvePool(named: "pool-a").name == "pool-a")
            #expect(clock.sleeps.count == 1)
            let counts = await simulator.organization.snapshot().requestCounts["GET pools"]
            #expect(counts?[0] == 1 && counts?[200] == 1)
        }
    }

    @Test("a response slower than the read timeout is a transport error after the retries")
    func readTimeout() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let client = try makeClient(simulator, attempts: 2, readTimeout: .seconds(1))
            simulator.organization.addFault(FaultRule(.latency(.seconds(3)), count: 2))
            await #expect { try await client.resolvePool(named: "pool-a") } throws: { error in
                guard case AzureDevOpsError.transport(let route, _) = error else { return false }
                return route == "GET pools"
            }
        }
    }
}

@Suite("Azure DevOps client: typed errors and the sign-in page", .timeLimit(.minutes(1)))
struct ClientErrorTests {
    @Test("403 is a typed, terminal error carrying the server's message")
    func forbidden() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let client = try makeClient(simulator)
            let message = "Access denied. Jane needs Manage permissions for pool pool-a to perform the action."
            simulator.organization.addFault(FaultRule(.errorStatus(status: 403, typeKey: "AccessDeniedException", message: message), count: 1))
            await #expect { try await client.resolvePool(named: "pool-a") } throws: { error in
                guard case AzureDevOpsError.forbidden(let server) = error else { return false }
                return server.message == message && server.typeKey == "AccessDeniedException"
                    && "\(error)".contains("Administrator or Service Account role") && !(error as? AzureDevOpsError)!.isRetryable
            }
            #expect(await simulator.organization.snapshot().count("GET pools") == 1)
        }
    }

    @Test("400 is a typed error carrying the server's message")
    func badRequest() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let client = try makeClient(simulator)
            simulator.organization.addFault(FaultRule(.errorStatus(status: 400, typeKey: "ArgumentException", message: "Value cannot be null."), count: 1))
            await #expect { try await client.pool(id: 1) } throws: { error in
                guard case AzureDevOpsError.badRequest(let server) = error else { return false }
                return server.message == "Value cannot be null."
            }
        }
    }

    @Test("when the service ignores Suppress, a bad PAT gets the 203 sign-in page and is still an authentication failure",
          arguments: [true, false])
    func signInPage(honoursSuppress: Bool) async throws {
        var knobs = fastKnobs()
        knobs.honoursFedAuthRedirectSuppress = honoursSuppress
        try await AzureDevOpsSimulator.withSimulator(testConfiguration(knobs: knobs)) { simulator in
            let client = try makeClient(simulator, token: "expired")
            await #expect { try await client.resolvePool(named: "pool-a") } throws: { error in
                guard case AzureDevOpsError.authentication(_, let status, _, _) = error else { return false }
                return status == (honoursSuppress ? 401 : 203) && "\(error)".contains("sign-in page") == !honoursSuppress
            }
            let expected = honoursSuppress ? 401 : 203
            #expect(await simulator.organization.snapshot().requestCounts["GET pools"]?[expected] == 1)
        }
    }
}
