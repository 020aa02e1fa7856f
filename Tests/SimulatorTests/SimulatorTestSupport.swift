import AgentIdentity
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Shared
import Simulators
import Testing

/// Knobs that make the expiry paths run in about a second.
func fastKnobs() -> SimulatorKnobs {
    var knobs = SimulatorKnobs()
    knobs.messageLongPollTimeout = .milliseconds(500)
    // Long enough that a busy CI machine never expires a session a test is still using; the expiry tests
    // shorten it themselves.
    knobs.sessionTimeout = .seconds(15)
    knobs.sweepInterval = .milliseconds(50)
    return knobs
}

/// A simulator configuration with one pool `pool-a` and fast knobs.
func testConfiguration(pools: [String] = ["pool-a"], knobs: SimulatorKnobs = fastKnobs()) -> SimulatorConfiguration {
    SimulatorConfiguration(personalAccessTokens: ["sim-pat"], pools: pools, knobs: knobs)
}

/// How a raw test request authenticates.
enum TestAuth {
    case pat(String)
    case bearer(String)
    case none
}

/// A raw HTTP reply.
struct Reply: CustomStringConvertible {
    let status: Int
    let headers: HTTPHeaders
    let bytes: [UInt8]

    var text: String { String(decoding: bytes, as: UTF8.self) }

    var json: JSONValue {
        get throws { try JSONValue.parse(bytes) }
    }

    var description: String { "\(status) \(text.prefix(600))" }
}

/// Raw HTTP access to a running simulator, relative to its organization URL.
struct SimHTTP {
    let simulator: AzureDevOpsSimulator
    var client: HTTPClient = .shared

    func send(
        _ method: HTTPMethod, _ path: String, body: JSONValue? = nil, rawBody: [UInt8]? = nil,
        auth: TestAuth = .pat("sim-pat"), headers: [(String, String)] = [], absolute: Bool = false
    ) async throws -> Reply {
        let url = absolute ? path : "\(simulator.organizationURL)/\(path)"
        var request = HTTPClientRequest(url: url)
        request.method = method
        switch auth {
        case .pat(let token):
            let encoded = Data("anyuser:\(token)".utf8).base64EncodedString()
            request.headers.add(name: "Authorization", value: "Basic \(encoded)")
        case .bearer(let token):
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
        case .none:
            break
        }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body.bytes))
        } else if let rawBody {
            request.body = .bytes(ByteBuffer(bytes: rawBody))
        }
        let response = try await client.execute(request, timeout: .seconds(30))
        let buffer = try await response.body.collect(upTo: 32 * 1024 * 1024)
        return Reply(status: Int(response.status.code), headers: response.headers, bytes: Array(buffer.readableBytesView))
    }

    func get(_ path: String, auth: TestAuth = .pat("sim-pat"), headers: [(String, String)] = []) async throws -> Reply {
        try await send(.GET, path, auth: auth, headers: headers)
    }

    /// The `value` array of a `{count,value}` envelope, checking that `count` matches.
    func list(_ path: String) async throws -> [JSONValue] {
        let reply = try await get(path)
        try #require(reply.status == 200, "\(path): \(reply)")
        let json = try reply.json
        let values = try #require(json["value"]?.arrayValue, "no value array: \(reply)")
        #expect(json["count"]?.intValue == values.count)
        return values
    }
}

/// An agent driven with raw HTTP the way the stand-in drives it: register, token, session, poll, finish.
struct TestAgent {
    let http: SimHTTP
    let poolId: Int
    let agentId: Int
    let name: String
    let clientId: String
    /// The RSA key whose public half was registered.
    let key: AgentKey
    let token: String

    /// Registers `name` with a new RSA key (or `key`) and fetches its first access token.
    static func register(
        _ http: SimHTTP, poolId: Int, name: String, capabilities: [String: String] = [:], version: String = "4.266.2",
        key: AgentKey? = nil
    ) async throws -> TestAgent {
        let key = try key ?? AgentKey.generate()
        var system = ["Agent.Name": name, "Agent.Version": version, "Agent.OS": "Linux"]
        system.merge(capabilities) { _, new in new }
        let reply = try await http.send(
            .POST, "_apis/distributedtask/pools/\(poolId)/agents",
            body: registrationBody(name: name, version: version, capabilities: system, publicKey: key.publicKey))
        try #require(reply.status == 200, "register: \(reply)")
        let agent = try reply.json
        let agentId = try #require(agent["id"]?.intValue)
        let clientId = try #require(agent["authorization"]?["clientId"]?.stringValue)
        let token = try await Self.token(http, clientId: clientId, key: key)
        return TestAgent(
            http: http, poolId: poolId, agentId: agentId, name: name, clientId: clientId, key: key, token: token)
    }

    /// A TaskAgent body as `config.sh` posts it; `publicKey` nil leaves `authorization` out (a keyless agent).
    static func registrationBody(
        name: String, version: String = "4.266.2", capabilities: [String: String] = [:], publicKey: AgentPublicKey?,
        id: Int? = nil
    ) -> JSONValue {
        var object = JSONObject([
            ("name", .string(name)), ("version", .string(version)), ("osDescription", "Linux 6.1"),
            ("enabled", true), ("maxParallelism", 1), ("systemCapabilities", .stringMap(capabilities)),
        ])
        if let id { object["id"] = .int(id) }
        if let publicKey {
            object["authorization"] = .object(JSONObject([
                ("publicKey", .object(JSONObject([
                    ("exponent", .string(publicKey.exponent)), ("modulus", .string(publicKey.modulus)),
                ]))),
            ]))
        }
        return .object(object)
    }

    /// The token request the listener sends: the client-credentials grant with `assertion`.
    static func tokenRequest(_ http: SimHTTP, form: [(String, String)]) async throws -> Reply {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        let body = form.map { "\($0)=\($1.addingPercentEncoding(withAllowedCharacters: allowed) ?? $1)" }
            .joined(separator: "&")
        return try await http.send(
            .POST, "_apis/oauth2/token", rawBody: Array(body.utf8), auth: .none,
            headers: [("Content-Type", "application/x-www-form-urlencoded")])
    }

    /// The three form fields of a well-formed token request.
    static func assertionForm(_ assertion: String) -> [(String, String)] {
        [
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion),
        ]
    }

    /// Posts a client assertion signed by `key` for `clientId` (audience: the simulator's authorizationUrl).
    static func tokenReply(_ http: SimHTTP, clientId: String, key: AgentKey, now: Date = Date()) async throws -> Reply {
        let assertion = try key.clientAssertion(
            clientId: clientId, audience: http.simulator.authorizationURL, now: now)
        return try await tokenRequest(http, form: assertionForm(assertion))
    }

    /// A new access token for the agent, failing the test when refused.
    static func token(_ http: SimHTTP, clientId: String, key: AgentKey) async throws -> String {
        let reply = try await tokenReply(http, clientId: clientId, key: key)
        try #require(reply.status == 200, "token: \(reply)")
        return try #require(try reply.json["access_token"]?.stringValue)
    }

    func openSession() async throws -> String {
        let reply = try await openSessionReply()
        try #require(reply.status == 200, "session: \(reply)")
        return try #require(try reply.json["sessionId"]?.stringValue)
    }

    func openSessionReply() async throws -> Reply {
        let body = JSONValue.object(JSONObject([
            ("ownerName", "test-host"),
            ("agent", .object(JSONObject([("id", .int(agentId)), ("name", .string(name)), ("version", "4.266.2")]))),
        ]))
        return try await http.send(.POST, "_apis/distributedtask/pools/\(poolId)/sessions", body: body, auth: .bearer(token))
    }

    func poll(_ sessionId: String, lastMessageId: Int? = nil) async throws -> Reply {
        var path = "_apis/distributedtask/pools/\(poolId)/messages?sessionId=\(sessionId)"
        if let lastMessageId { path += "&lastMessageId=\(lastMessageId)" }
        return try await http.send(.GET, path, auth: .bearer(token))
    }

    /// Polls until a message of this type arrives (bounded by the deadline) and, like a listener taking it,
    /// acknowledges it unless told not to; returns the message id and its body.
    func nextMessage(
        _ sessionId: String, type: String, lastMessageId: Int? = nil, within: Duration = .seconds(10),
        acknowledge shouldAcknowledge: Bool = true
    ) async throws -> (messageId: Int, body: JSONValue) {
        let deadline = ContinuousClock.now + within
        var last = lastMessageId
        while ContinuousClock.now < deadline {
            let reply = try await poll(sessionId, lastMessageId: last)
            if reply.status == 200 {
                let message = try reply.json
                let id = try #require(message["messageId"]?.intValue)
                if message["messageType"]?.stringValue == type {
                    let body = try JSONValue.parse(Array(try #require(message["body"]?.stringValue).utf8))
                    if shouldAcknowledge {
                        let acknowledged = try await acknowledge(sessionId, messageId: id)
                        try #require(acknowledged.status == 204, "acknowledge: \(acknowledged)")
                    }
                    return (id, body)
                }
                last = id
            } else {
                try #require(reply.status == 204, "poll: \(reply)")
            }
        }
        Issue.record("no \(type) message within \(within)")
        throw CancellationError()
    }

    func acknowledge(_ sessionId: String, messageId: Int) async throws -> Reply {
        try await http.send(
            .DELETE, "_apis/distributedtask/pools/\(poolId)/messages/\(messageId)?sessionId=\(sessionId)",
            auth: .bearer(token))
    }

    func finish(requestId: Int, lockToken: String, result: String) async throws -> Reply {
        let body = JSONValue.object(JSONObject([
            ("requestId", .int(requestId)), ("finishTime", .string(WireTimestamp.format(Date()))),
            ("result", .string(result)),
        ]))
        return try await http.send(
            .PATCH, "_apis/distributedtask/pools/\(poolId)/jobrequests/\(requestId)?lockToken=\(lockToken)",
            body: body, auth: .bearer(token))
    }

    func renew(requestId: Int, lockToken: String) async throws -> Reply {
        try await http.send(
            .PATCH, "_apis/distributedtask/pools/\(poolId)/jobrequests/\(requestId)?lockToken=\(lockToken)",
            body: .object(JSONObject([("requestId", .int(requestId))])), auth: .bearer(token))
    }

    func closeSession(_ sessionId: String) async throws -> Reply {
        try await http.send(.DELETE, "_apis/distributedtask/pools/\(poolId)/sessions/\(sessionId)", auth: .bearer(token))
    }
}

extension SimulatedOrganization {
    /// The id of a pool by name, failing the test when missing.
    func poolId(_ name: String) async throws -> Int {
        try #require(await snapshot().pool(named: name)?.id)
    }
}
