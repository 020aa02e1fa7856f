import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Shared
import Simulators
import Testing

/// Authentication behaviour (203 trap, Suppress, anonymous 401, revocation) and every fault knob.
@Suite(.timeLimit(.minutes(1)))
struct SimulatorAuthAndFaultTests {
    let pools = "_apis/distributedtask/pools"

    @Test func authenticationOutcomes() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            #expect(try await http.get(pools).status == 200)
            #expect(try await http.send(.GET, pools, auth: .pat("sim-pat"), headers: [("Authorization-Ignored", "x")]).status == 200)

            let anonymous = try await http.get(pools, auth: .none)
            #expect(anonymous.status == 401)
            #expect(anonymous.headers.first(name: "WWW-Authenticate")?.contains("Basic realm=") == true)
            #expect(anonymous.headers.first(name: "WWW-Authenticate")?.contains("TFS-Federated") == true)

            let signIn = try await http.get(pools, auth: .pat("wrong"))
            #expect(signIn.status == 203)
            #expect(signIn.headers.first(name: "Content-Type")?.hasPrefix("text/html") == true)
            #expect(signIn.text.contains("Sign in"))
            let signInPost = try await http.send(.POST, pools, body: .object(JSONObject([("name", "x")])), auth: .pat("wrong"))
            #expect(signInPost.status == 203)

            let suppressed = try await http.get(pools, auth: .pat("wrong"), headers: [("X-TFS-FedAuthRedirect", "Suppress")])
            #expect(suppressed.status == 401)
            #expect(try suppressed.json["typeKey"] == "UnauthorizedRequestException")
            #expect(try suppressed.json["message"]?.stringValue?.hasPrefix("TF400813") == true)

            let patch = try await http.send(.PATCH, "\(pools)/1", body: .object(JSONObject([("autoUpdate", false)])), auth: .pat("wrong"))
            #expect(patch.status == 401)
            #expect(try await http.send(.DELETE, "\(pools)/1", auth: .pat("wrong")).status == 401)

            let bearerOnPublic = try await http.get(pools, auth: .bearer("anything"))
            #expect(bearerOnPublic.status == 203)

            await simulator.organization.addPersonalAccessToken("second")
            #expect(try await http.get(pools, auth: .pat("second")).status == 200)
            await simulator.organization.revokePersonalAccessToken("sim-pat")
            #expect(try await http.get(pools).status == 203)
            let counts = await simulator.organization.snapshot().requestCounts["GET pools"] ?? [:]
            #expect(counts[203] == 3)
            #expect(counts[401] == 2)
        }
    }

    @Test func agentRoutesNeedTheAgentBearerToken() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let poolId = try await simulator.organization.poolId("pool-a")
            let agent = try await TestAgent.register(http, poolId: poolId, name: "agent-1")
            let body = JSONValue.object(JSONObject([("ownerName", "h"), ("agent", .object(JSONObject([("id", .int(agent.agentId))])))]))
            let withPat = try await http.send(.POST, "\(pools)/\(poolId)/sessions", body: body)
            #expect(withPat.status == 401)
            let withJunk = try await http.send(.POST, "\(pools)/\(poolId)/sessions", body: body, auth: .bearer("junk"))
            #expect(withJunk.status == 401)
            #expect(try await agent.openSessionReply().status == 200)
            let badClient = try await TestAgent.tokenReply(http, clientId: "nope", key: agent.key)
            #expect(badClient.status == 401)
            #expect(try badClient.json["error"]?.stringValue == "invalid_client")
        }
    }

    @Test func throttleHeadersOnSuccess() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            simulator.organization.addFault(FaultRule(.throttleHeaders(ThrottleHeaders()), route: "pools", method: "GET", count: 1))
            let throttled = try await http.get(pools)
            #expect(throttled.status == 200)
            #expect(throttled.headers.first(name: "Retry-After") == "10")
            #expect(throttled.headers.first(name: "X-RateLimit-Resource") == "Core")
            #expect(throttled.headers.first(name: "X-RateLimit-Delay") == "2.517")
            #expect(throttled.headers.first(name: "X-RateLimit-Limit") == "200")
            #expect(throttled.headers.first(name: "X-RateLimit-Remaining") == "0")
            #expect(Int(throttled.headers.first(name: "X-RateLimit-Reset") ?? "") != nil)
            let clean = try await http.get(pools)
            #expect(clean.headers.first(name: "Retry-After") == nil)
        }
    }

    @Test func tooManyRequestsThenSuccess() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            simulator.organization.addFault(FaultRule(.tooManyRequests(retryAfterSeconds: 7), route: "pools", count: 2))
            for _ in 0..<2 {
                let blocked = try await http.get(pools)
                #expect(blocked.status == 429)
                #expect(blocked.headers.first(name: "Retry-After") == "7")
                #expect(try blocked.json["message"]?.stringValue?.hasPrefix(
                    "TF400733: The request has been canceled: Request was blocked due to exceeding usage of resource") == true)
            }
            #expect(try await http.get(pools).status == 200)
            let counts = await simulator.organization.snapshot().requestCounts["GET pools"]
            #expect(counts == [429: 2, 200: 1])
        }
    }

    @Test(arguments: [500, 502, 503])
    func serverErrorsAreScopedToRouteAndMethod(status: Int) async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let poolId = try await simulator.organization.poolId("pool-a")
            simulator.organization.addFault(FaultRule(.serverError(status: status), route: "pools/{poolId}/jobrequests", method: "GET"))
            #expect(try await http.get("\(pools)/\(poolId)/jobrequests").status == status)
            #expect(try await http.get("\(pools)/\(poolId)/jobrequests?$top=1").status == status)
            #expect(try await http.get(pools).status == 200)
            let control = try await http.send(.GET, "\(simulator.baseURL)/_sim/state", auth: .none, absolute: true)
            #expect(control.status == 200, "faults never apply to /_sim")
            simulator.organization.clearFaults()
            #expect(try await http.get("\(pools)/\(poolId)/jobrequests").status == 200)
        }
    }

    @Test func addedLatency() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            simulator.organization.addFault(FaultRule(.latency(.milliseconds(700)), route: "pools", count: 1))
            let started = ContinuousClock.now
            let slow = try await http.get(pools)
            #expect(ContinuousClock.now - started >= .milliseconds(700))
            // A one-shot fault is used up by the first request (no timing upper bound: it would be flaky).
            #expect(simulator.organization.traffic.faults.isEmpty)
            let fast = try await http.get(pools)
            #expect(slow.status == 200 && fast.status == 200)
        }
    }

    @Test func droppedConnectionIsAConnectionError() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            // A private client so no pooled connection is involved.
            let client = HTTPClient(eventLoopGroupProvider: .singleton)
            var http = SimHTTP(simulator: simulator)
            http.client = client
            simulator.organization.addFault(FaultRule(.dropConnection, route: "pools", method: "GET"))
            let dropped: Result<Reply, any Error>
            do {
                dropped = .success(try await http.get(pools))
            } catch {
                dropped = .failure(error)
            }
            simulator.organization.clearFaults()
            let after = try await http.get(pools)
            try await client.shutdown()
            if case .success(let reply) = dropped { Issue.record("expected a connection error, got \(reply)") }
            #expect(after.status == 200)
            let counts = await simulator.organization.snapshot().requestCounts["GET pools"] ?? [:]
            #expect((counts[0] ?? 0) >= 1)
            #expect(counts[200] == 1)
        }
    }

    @Test func faultsOverTheControlAPI() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let added = try await http.send(
                .POST, "\(simulator.baseURL)/_sim/faults",
                body: .object(JSONObject([("kind", "serverError"), ("status", 502), ("count", 1)])), auth: .none, absolute: true)
            #expect(added.status == 201)
            #expect(try await http.get(pools).status == 502)
            #expect(try await http.get(pools).status == 200)
        }
    }
}
