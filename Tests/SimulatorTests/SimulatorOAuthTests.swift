import AgentIdentity
import Foundation
import NIOHTTP1
import Shared
import Simulators
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The simulator's token endpoint: the OAuth client-credentials grant with an RS256 client assertion, token
/// lifetime, and what deleting a registration does to its key and tokens; also the stand-in listener on top.
@Suite("Simulator: agent OAuth tokens", .timeLimit(.minutes(1)))
struct SimulatorOAuthTests {
    private let pools = "_apis/distributedtask/pools"

    /// The OAuth error body: exactly `error` and `errordescription`.
    private func expectRefusal(
        _ reply: Reply, status: Int, error: String, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        #expect(reply.status == status, "\(reply)", sourceLocation: sourceLocation)
        let body = try #require(try reply.json.objectValue, "\(reply)", sourceLocation: sourceLocation)
        #expect(body.entries.map(\.key) == ["error", "errordescription"], "\(reply)", sourceLocation: sourceLocation)
        #expect(body["error"]?.stringValue == error, "\(reply)", sourceLocation: sourceLocation)
        #expect(body["errordescription"]?.stringValue?.isEmpty == false, "\(reply)", sourceLocation: sourceLocation)
    }

    @Test("an assertion signed with the registered key gets a bearer token that opens a session")
    func tokenWithTheRightKey() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let poolId = try await simulator.organization.poolId("pool-a")
            let agent = try await TestAgent.register(http, poolId: poolId, name: "agent-1", key: AgentKey.generate())
            let registered = try #require(await simulator.organization.snapshot().agent(named: "agent-1"))
            #expect(registered.publicKeyModulus == agent.key.publicKey.modulus)
            #expect(registered.publicKeyExponent == "AQAB")

            let reply = try await TestAgent.tokenReply(http, clientId: agent.clientId, key: agent.key)
            #expect(reply.status == 200, "\(reply)")
            let body = try reply.json
            #expect(body["token_type"]?.stringValue == "Bearer")
            #expect(body["expires_in"]?.intValue == 3600)
            let token = try #require(body["access_token"]?.stringValue)
            #expect(token != agent.token)
            #expect(try await agent.openSessionReply().status == 200)
            let events = await simulator.organization.snapshot().events
            #expect(events.filter { $0.kind == .tokenIssued && $0.agentId == agent.agentId }.count == 2)
        }
    }

    @Test("an assertion for one agent signed with another agent's key is refused: 401 invalid_client")
    func keyOfAnotherAgent() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let poolId = try await simulator.organization.poolId("pool-a")
            let first = try await TestAgent.register(http, poolId: poolId, name: "first", key: AgentKey.generate())
            let second = try await TestAgent.register(http, poolId: poolId, name: "second", key: AgentKey.generate())
            let reply = try await TestAgent.tokenReply(http, clientId: first.clientId, key: second.key)
            try expectRefusal(reply, status: 401, error: "invalid_client")
            let refused = await simulator.organization.snapshot().events.filter { $0.kind == .tokenRefused }
            #expect(refused.count == 1)
            #expect(refused.first?.agentId == first.agentId)
        }
    }

    /// Token requests refused before or while the assertion is looked at.
    enum BadRequest: String, CaseIterable, Sendable {
        case noAssertion, noGrantType, passwordGrant, wrongAssertionType, jsonBody, clientIdOnly
        case wrongAudience, expiredAssertion, garbageAssertion
    }

    @Test("malformed token requests get the token service's error body", arguments: BadRequest.allCases)
    func malformedTokenRequests(_ bad: BadRequest) async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let poolId = try await simulator.organization.poolId("pool-a")
            let agent = try await TestAgent.register(http, poolId: poolId, name: "agent-1")
            let valid = try agent.key.clientAssertion(
                clientId: agent.clientId, audience: simulator.authorizationURL, now: Date())
            var form = TestAgent.assertionForm(valid)
            let reply: Reply
            switch bad {
            case .noAssertion:
                form.removeLast()
                reply = try await TestAgent.tokenRequest(http, form: form)
                try expectRefusal(reply, status: 400, error: "invalid_request")
            case .noGrantType:
                form.removeFirst()
                reply = try await TestAgent.tokenRequest(http, form: form)
                try expectRefusal(reply, status: 400, error: "invalid_request")
            case .passwordGrant:
                form[0].1 = "password"
                reply = try await TestAgent.tokenRequest(http, form: form)
                try expectRefusal(reply, status: 400, error: "unsupported_grant_type")
            case .wrongAssertionType:
                form[1].1 = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"
                reply = try await TestAgent.tokenRequest(http, form: form)
                try expectRefusal(reply, status: 400, error: "invalid_request")
            case .jsonBody:
                reply = try await http.send(
                    .POST, "_apis/oauth2/token",
                    body: .object(JSONObject([("grant_type", "client_credentials"), ("client_assertion", .string(valid))])),
                    auth: .none)
                try expectRefusal(reply, status: 400, error: "invalid_request")
            case .clientIdOnly:
                reply = try await TestAgent.tokenRequest(
                    http, form: [("grant_type", "client_credentials"), ("client_id", agent.clientId)])
                try expectRefusal(reply, status: 400, error: "invalid_request")
            case .wrongAudience:
                form[2].1 = try agent.key.clientAssertion(
                    clientId: agent.clientId, audience: "\(simulator.organizationURL)/_apis/oauth2/other", now: Date())
                reply = try await TestAgent.tokenRequest(http, form: form)
                try expectRefusal(reply, status: 401, error: "invalid_client")
            case .expiredAssertion:
                form[2].1 = try agent.key.clientAssertion(
                    clientId: agent.clientId, audience: simulator.authorizationURL, now: Date().addingTimeInterval(-3600))
                reply = try await TestAgent.tokenRequest(http, form: form)
                try expectRefusal(reply, status: 400, error: "invalid_grant")
                #expect(try reply.json["errordescription"]?.stringValue?.contains("Current server time is") == true)
            case .garbageAssertion:
                form[2].1 = "garbage"
                reply = try await TestAgent.tokenRequest(http, form: form)
                try expectRefusal(reply, status: 401, error: "invalid_client")
            }
            let snapshot = await simulator.organization.snapshot()
            #expect(snapshot.events.contains { $0.kind == .tokenRefused }, "a refusal is logged")
            #expect(snapshot.count("POST oauth2/token") == 2)
        }
    }

    @Test("an agent registered without a public key is kept but can never get a token")
    func keylessAgent() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let poolId = try await simulator.organization.poolId("pool-a")
            let reply = try await http.send(
                .POST, "\(pools)/\(poolId)/agents", body: TestAgent.registrationBody(name: "placeholder", publicKey: nil))
            #expect(reply.status == 200, "\(reply)")
            let clientId = try #require(try reply.json["authorization"]?["clientId"]?.stringValue)
            let refused = try await TestAgent.tokenReply(http, clientId: clientId, key: AgentKey.generate())
            try expectRefusal(refused, status: 401, error: "invalid_client")
            #expect(try refused.json["errordescription"]?.stringValue?.contains("no public key") == true)
            #expect(await simulator.organization.snapshot().agent(named: "placeholder") != nil)
        }
    }

    @Test("a copied key works until the registration is deleted; then neither it nor its tokens do")
    func copiedKeyDiesWithTheRegistration() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let http = SimHTTP(simulator: simulator)
            let poolId = try await simulator.organization.poolId("pool-a")
            let agent = try await TestAgent.register(http, poolId: poolId, name: "agent-1")
            // Whoever holds the three files can mint assertions: a second listener's copy gets its own token.
            let copied = try await TestAgent.token(http, clientId: agent.clientId, key: agent.key)
            #expect(copied != agent.token)

            let deleted = try await http.send(.DELETE, "\(pools)/\(poolId)/agents/\(agent.agentId)")
            #expect(deleted.status == 204, "\(deleted)")
            let afterDelete = try await TestAgent.tokenReply(http, clientId: agent.clientId, key: agent.key)
            try expectRefusal(afterDelete, status: 401, error: "invalid_client")
            #expect(try afterDelete.json["errordescription"]?.stringValue?.contains("deleted") == true)

            let session = try await agent.openSessionReply()
            #expect(session.status == 404, "\(session)")
            #expect(try session.json["typeKey"]?.stringValue == "TaskAgentNotFoundException")
            let copy = TestAgent(
                http: http, poolId: poolId, agentId: agent.agentId, name: agent.name, clientId: agent.clientId,
                key: agent.key, token: copied)
            #expect(try await copy.poll("any-session").status == 401)
        }
    }

    @Test("access tokens expire after the accessTokenLifetime knob; a fresh assertion gets a new one")
    func tokensExpire() async throws {
        var knobs = fastKnobs()
        knobs.accessTokenLifetime = .seconds(60)
        try await AzureDevOpsSimulator.withSimulator(testConfiguration(knobs: knobs)) { simulator in
            let http = SimHTTP(simulator: simulator)
            let poolId = try await simulator.organization.poolId("pool-a")
            let agent = try await TestAgent.register(http, poolId: poolId, name: "agent-1")
            let session = try await agent.openSession()
            let first = try await TestAgent.tokenReply(http, clientId: agent.clientId, key: agent.key)
            #expect(try first.json["expires_in"]?.intValue == 60)

            await simulator.organization.advanceTime(by: .seconds(61))
            let stale = try await agent.poll(session)
            #expect(stale.status == 401, "\(stale)")
            #expect(stale.headers.first(name: "WWW-Authenticate")?.contains("invalid_token") == true)
            #expect(try await agent.openSessionReply().status == 401)

            let fresh = try await TestAgent.token(http, clientId: agent.clientId, key: agent.key)
            let renewed = TestAgent(
                http: http, poolId: poolId, agentId: agent.agentId, name: agent.name, clientId: agent.clientId,
                key: agent.key, token: fresh)
            // The advanced clock also dropped the silent session; the new token opens a new one.
            #expect(try await renewed.openSessionReply().status == 200)
        }
    }

    @Test("the lifetime knob is settable through PATCH /_sim/knobs")
    func lifetimeKnobOverHTTP() async throws {
        try await AzureDevOpsSimulator.withSimulator(testConfiguration()) { simulator in
            let reply = try await SimHTTP(simulator: simulator).send(
                .PATCH, "\(simulator.baseURL)/_sim/knobs", body: .object(JSONObject([("accessTokenLifetimeSeconds", 90)])),
                auth: .none, absolute: true)
            #expect(reply.status == 200, "\(reply)")
            #expect(try reply.json["accessTokenLifetimeSeconds"]?.doubleValue == 90)
            #expect(await simulator.organization.knobs.accessTokenLifetime == .seconds(90))
        }
    }

    @Test("the stand-in listener fetches a new token whenever its token expires, and still completes its job")
    func standInRecoversFromExpiredTokens() async throws {
        var knobs = SimulatorKnobs()
        knobs.messageLongPollTimeout = .milliseconds(300)
        knobs.accessTokenLifetime = .seconds(2)
        try await withStandInSimulator(knobs: knobs) { simulator in
            let agent = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { agent.removeDirectory() }
            let configured = try await agent.run("config.sh", agent.configureArguments(pool: "pool-a", agent: "expiring"))
            try #require(configured.exitCode == 0, "\(configured.output)")
            let (outcome, requestId) = try await agent.start("run.sh", ["--once"]) { _, log in
                try await log.waitFor("Listening for Jobs")
                try await simulator.organization.waitUntil { $0.agent(named: "expiring")?.status == .online }
                let requestId = try await simulator.organization.queueJobOrThrow(
                    JobSpecification(pool: "pool-a", name: "Outlives", durationSeconds: 5))
                // Wait for (not sleep until) two expiries to have been noticed and answered while the job runs.
                try await simulator.organization.waitUntil(timeout: .seconds(20)) { snapshot in
                    snapshot.events.filter { $0.kind == .tokenIssued }.count >= 4
                        && snapshot.request(requestId)?.receiveTime != nil
                }
                return requestId
            }
            #expect(outcome.exitCode == 0, "\(outcome.output)")
            #expect(outcome.output.contains("Job Outlives completed with result: Succeeded"), "\(outcome.output)")
            let snapshot = await simulator.organization.snapshot()
            #expect(snapshot.request(requestId)?.result == .succeeded)
            #expect(snapshot.events.contains { $0.kind == .tokenRefused } == false)
            let rejected = snapshot.requestCounts.filter { $0.key.hasPrefix("GET pools") || $0.key.hasPrefix("PATCH") || $0.key.hasPrefix("DELETE") }
                .reduce(0) { $0 + ($1.value[401] ?? 0) }
            #expect(rejected >= 1, "an expired token was refused at least once: \(snapshot.requestCounts)")
        }
    }

    @Test("deleting the registration makes a running stand-in listener exit 1: its key gets no new token")
    func standInExitsWhenDeleted() async throws {
        var knobs = SimulatorKnobs()
        knobs.messageLongPollTimeout = .milliseconds(300)
        try await withStandInSimulator(knobs: knobs) { simulator in
            let agent = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { agent.removeDirectory() }
            let configured = try await agent.run("config.sh", agent.configureArguments(pool: "pool-a", agent: "doomed"))
            try #require(configured.exitCode == 0, "\(configured.output)")
            let (outcome, _) = try await agent.start("run.sh") { _, log in
                try await log.waitFor("Listening for Jobs")
                let online = try await simulator.organization.waitUntil { $0.agent(named: "doomed")?.status == .online }
                let registered = try #require(online.agent(named: "doomed"))
                let deleted = try await SimHTTP(simulator: simulator).send(
                    .DELETE, "\(pools)/\(registered.poolId)/agents/\(registered.id)")
                #expect(deleted.status == 204, "\(deleted)")
            }
            #expect(outcome.exitCode == 1, "\(outcome.output)")
            // Depending on which call noticed first: the session's 404 and then TaskAgentNotFound, or the stale
            // token's 401 and then the token endpoint's invalid_client.
            #expect(
                outcome.output.contains("The agent no longer exists on the server")
                    || outcome.output.contains("invalid_client"), "\(outcome.output)")
            // The key and client id left on disk can no longer get a token.
            let key = try AgentKey(parameters: RSAParametersFile.decode(
                Data(contentsOf: agent.root.appendingPathComponent(AgentRegistrationFiles.rsaParametersFileName))))
            let credentials = try CredentialsFile.decode(
                Data(contentsOf: agent.root.appendingPathComponent(AgentRegistrationFiles.credentialsFileName)))
            let refused = try await TestAgent.tokenReply(
                SimHTTP(simulator: simulator), clientId: try #require(credentials.clientId), key: key)
            try expectRefusal(refused, status: 401, error: "invalid_client")
        }
    }

    @Test("an agent registered over REST with AgentRegistrationFiles written for it runs `run --once` and its job")
    func restRegisteredAgentRuns() async throws {
        try await withStandInSimulator { simulator in
            let http = SimHTTP(simulator: simulator)
            let poolId = try await simulator.organization.poolId("pool-a")
            let key = try AgentKey.generate()
            let reply = try await http.send(
                .POST, "\(pools)/\(poolId)/agents",
                body: TestAgent.registrationBody(
                    name: "pod-x", capabilities: ["Agent.Version": "4.266.2"], publicKey: key.publicKey))
            try #require(reply.status == 200, "\(reply)")
            let body = try reply.json
            let files = AgentRegistrationFiles(
                agentId: try #require(body["id"]?.intValue), agentName: "pod-x", poolId: poolId, poolName: "pool-a",
                serverUrl: simulator.organizationURL, workFolder: "_work",
                clientId: try #require(body["authorization"]?["clientId"]?.stringValue),
                authorizationUrl: try #require(body["authorization"]?["authorizationUrl"]?.stringValue), key: key)

            let agent = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { agent.removeDirectory() }
            for file in files.files {
                try file.contents.write(to: agent.root.appendingPathComponent(file.name))
            }
            let (outcome, requestId) = try await agent.start("run.sh", ["--once"]) { _, log in
                try await log.waitFor("Listening for Jobs")
                try await simulator.organization.waitUntil { $0.agent(named: "pod-x")?.status == .online }
                return try await simulator.organization.queueJobOrThrow(
                    JobSpecification(pool: "pool-a", name: "FromREST", script: "echo rest-registered"))
            }
            #expect(outcome.exitCode == 0, "\(outcome.output)")
            #expect(outcome.output.contains("rest-registered"))
            let snapshot = await simulator.organization.snapshot()
            #expect(snapshot.request(requestId)?.result == .succeeded)
            #expect(snapshot.events.contains { $0.kind == .tokenIssued && $0.agentId == body["id"]?.intValue })
        }
    }
}
