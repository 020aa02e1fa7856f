import AgentIdentity
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// Why a call to the server failed, classified the way the listener reacts to it.
enum ServerError: Error, CustomStringConvertible {
    /// 401, or the 203/HTML sign-in page the service answers bad credentials with.
    case unauthorized(organizationURL: String)
    /// A JSON error from the service (WrappedException): status, `typeKey` and message.
    case service(status: Int, typeKey: String?, message: String)
    /// The server could not be reached or the connection broke.
    case network(String)
    /// A 2xx answer whose body was not what the route returns.
    case invalidResponse(route: String, detail: String)
    /// The token endpoint refused the client assertion (400/401 with an OAuth `error`): the key is not (or no
    /// longer) registered, or the assertion is invalid. Retrying does not help.
    case tokenRefused(status: Int, error: String, description: String)

    /// The message the real agent prints for this failure.
    var description: String {
        switch self {
        case .unauthorized(let url): "VS30063: You are not authorized to access \(url)."
        case .service(_, _, let message): message
        case .network(let detail): detail
        case .invalidResponse(let route, let detail): "Unexpected response from \(route): \(detail)"
        case .tokenRefused(let status, let error, let description):
            "The agent could not get an access token (\(status) \(error)): \(description)"
        }
    }

    /// Whether retrying later can help (network trouble, 5xx, 429).
    var isTransient: Bool {
        switch self {
        case .network: true
        case .service(let status, _, _): status >= 500 || status == 429
        case .unauthorized, .invalidResponse, .tokenRefused: false
        }
    }

    /// The service's `typeKey`, if this is a service error.
    var typeKey: String? {
        if case .service(_, let key, _) = self { return key }
        return nil
    }

    /// The HTTP status, if this is a service error.
    var status: Int? {
        if case .service(let status, _, _) = self { return status }
        return nil
    }
}

/// How a request authenticates: the admin's PAT (registration routes) or the agent's own bearer token.
enum ServerCredential: Sendable {
    /// HTTP Basic with an empty user name and the PAT as password.
    case personalAccessToken(String)
    /// `Authorization: Bearer` with the agent's OAuth access token.
    case bearer(String)
    /// No `Authorization` header (the token endpoint).
    case none
}

/// The stand-in's HTTP calls to the (simulated) Azure DevOps organization, one method per route it uses.
///
/// Kept small and explicit: the stand-in must speak the real wire protocol by itself, independent of the
/// Shared client it is used to test.
struct AgentServer: Sendable {
    /// The organization URL without a trailing slash, e.g. `http://127.0.0.1:8080/shoal-sim`.
    let organizationURL: String
    /// The API version sent on every call.
    static let apiVersion = "7.1-preview.1"
    /// Deadline for ordinary calls.
    static let requestTimeout: TimeAmount = .seconds(30)
    /// Deadline for the message long poll (the server holds it open; the real service holds ~50 s).
    static let longPollTimeout: TimeAmount = .seconds(90)

    /// Creates a client for the organization at `organizationURL`.
    init(organizationURL: String) {
        var url = organizationURL
        while url.hasSuffix("/") { url.removeLast() }
        self.organizationURL = url
    }

    // MARK: Registration routes (PAT)

    /// `GET pools?poolName=&poolType=automation` → the matching pools.
    func pools(named name: String, credential: ServerCredential) async throws -> [PoolRecord] {
        try await send(
            .GET, "_apis/distributedtask/pools", query: ["poolName": name, "poolType": "automation"],
            credential: credential, as: Envelope<PoolRecord>.self
        ).value
    }

    /// `GET pools/{id}/agents?agentName=` → the agents with that name.
    func agents(named name: String, poolId: Int, credential: ServerCredential) async throws -> [AgentRecord] {
        try await send(
            .GET, "_apis/distributedtask/pools/\(poolId)/agents",
            query: ["agentName": name, "includeCapabilities": "false"],
            credential: credential, as: Envelope<AgentRecord>.self
        ).value
    }

    /// `POST pools/{id}/agents` → the created agent (with its OAuth client).
    func addAgent(_ agent: AgentRegistration, poolId: Int, credential: ServerCredential) async throws -> AgentRecord {
        try await send(
            .POST, "_apis/distributedtask/pools/\(poolId)/agents", body: agent, credential: credential,
            as: AgentRecord.self
        )
    }

    /// `PUT pools/{id}/agents/{agentId}` → the replaced agent (with a new OAuth client).
    func replaceAgent(_ agent: AgentRegistration, poolId: Int, credential: ServerCredential) async throws
        -> AgentRecord
    {
        try await send(
            .PUT, "_apis/distributedtask/pools/\(poolId)/agents/\(agent.id ?? 0)", body: agent,
            credential: credential, as: AgentRecord.self
        )
    }

    /// `DELETE pools/{id}/agents/{agentId}`.
    func deleteAgent(id: Int, poolId: Int, credential: ServerCredential) async throws {
        try await sendExpectingNoContent(
            .DELETE, "_apis/distributedtask/pools/\(poolId)/agents/\(id)", credential: credential
        )
    }

    // MARK: Agent credential

    /// `POST {oauthEndpointUrl}` with the signed client assertion (OAuth client-credentials grant, RFC 7523)
    /// → the bearer access token. No `client_id` and no other credential is sent, as `VssOAuthTokenHttpClient`.
    func accessToken(assertion: String, tokenEndpoint: String) async throws -> AccessToken {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion),
        ].map { "\($0)=\(Self.formEncoded($1))" }.joined(separator: "&")
        var request = HTTPClientRequest(url: tokenEndpoint)
        request.method = .POST
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "VSServices/agent-standin")
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.body = .bytes(ByteBuffer(bytes: Array(form.utf8)))
        let response = try await execute(request, timeout: Self.requestTimeout)
        if response.status == 400 || response.status == 401,
            let refusal = try? JSONDecoder().decode(TokenErrorResponse.self, from: response.body), let error = refusal.error
        {
            throw ServerError.tokenRefused(
                status: response.status, error: error, description: refusal.errordescription ?? "")
        }
        try classify(response)
        let token = try decode(TokenResponse.self, from: response, route: "oauth2/token")
        return AccessToken(value: token.accessToken, expiresIn: token.expiresIn)
    }

    /// `application/x-www-form-urlencoded` encoding of one value.
    private static func formEncoded(_ value: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value
    }

    // MARK: Agent-internal routes (bearer)

    /// `POST pools/{id}/sessions` → the new session's id.
    func createSession(_ session: SessionRequest, poolId: Int, token: String) async throws -> String {
        try await send(
            .POST, "_apis/distributedtask/pools/\(poolId)/sessions", body: session, credential: .bearer(token),
            as: SessionResponse.self
        ).sessionId
    }

    /// `DELETE pools/{id}/sessions/{sessionId}`.
    func deleteSession(_ sessionId: String, poolId: Int, token: String) async throws {
        try await sendExpectingNoContent(
            .DELETE, "_apis/distributedtask/pools/\(poolId)/sessions/\(sessionId)", credential: .bearer(token)
        )
    }

    /// `GET pools/{id}/messages?sessionId=&lastMessageId=` (long poll) → a message, or `nil` on 204.
    func nextMessage(sessionId: String, lastMessageId: Int64?, poolId: Int, token: String) async throws
        -> AgentMessage?
    {
        var query = ["sessionId": sessionId]
        if let lastMessageId { query["lastMessageId"] = String(lastMessageId) }
        let response = try await perform(
            .GET, url: url("_apis/distributedtask/pools/\(poolId)/messages", query: query), body: nil,
            credential: .bearer(token), timeout: Self.longPollTimeout
        )
        if response.status == 204 || response.body.isEmpty { return nil }
        return try decode(AgentMessage.self, from: response, route: "messages")
    }

    /// `DELETE pools/{id}/messages/{messageId}?sessionId=` (acknowledge).
    func deleteMessage(_ messageId: Int64, sessionId: String, poolId: Int, token: String) async throws {
        try await sendExpectingNoContent(
            .DELETE, "_apis/distributedtask/pools/\(poolId)/messages/\(messageId)",
            query: ["sessionId": sessionId], credential: .bearer(token)
        )
    }

    /// `PATCH pools/{id}/jobrequests/{requestId}?lockToken=` with only the id → renews the lock.
    func renewJobRequest(_ requestId: Int64, lockToken: String, poolId: Int, token: String) async throws
        -> JobRequestRecord
    {
        try await send(
            .PATCH, "_apis/distributedtask/pools/\(poolId)/jobrequests/\(requestId)",
            query: ["lockToken": lockToken], body: JobRequestUpdate(requestId: requestId),
            credential: .bearer(token), as: JobRequestRecord.self
        )
    }

    /// `PATCH pools/{id}/jobrequests/{requestId}?lockToken=` with `finishTime` and `result` → finishes the job.
    func finishJobRequest(
        _ requestId: Int64, result: String, finishTime: String, lockToken: String, poolId: Int, token: String
    ) async throws {
        _ = try await send(
            .PATCH, "_apis/distributedtask/pools/\(poolId)/jobrequests/\(requestId)",
            query: ["lockToken": lockToken],
            body: JobRequestUpdate(requestId: requestId, finishTime: finishTime, result: result),
            credential: .bearer(token), as: JobRequestRecord.self
        )
    }

    // MARK: Plumbing

    private struct RawResponse {
        let status: Int
        let contentType: String
        let body: Data
    }

    private func url(_ path: String, query: [String: String] = [:]) -> String {
        var components = URLComponents()
        components.queryItems = query.sorted { $0.key < $1.key }.map { URLQueryItem(name: $0.key, value: $0.value) }
        let queryText = components.percentEncodedQuery.map { $0 + "&" } ?? ""
        return "\(organizationURL)/\(path)?\(queryText)api-version=\(Self.apiVersion)"
    }

    private func send<Response: Decodable>(
        _ method: HTTPMethod, _ path: String, query: [String: String] = [:], body: (any Encodable)? = nil,
        credential: ServerCredential, as type: Response.Type
    ) async throws -> Response {
        let data = try body.map { try JSONEncoder().encode($0) }
        let response = try await perform(
            method, url: url(path, query: query), body: data, credential: credential, timeout: Self.requestTimeout
        )
        return try decode(type, from: response, route: path)
    }

    private func sendExpectingNoContent(
        _ method: HTTPMethod, _ path: String, query: [String: String] = [:], credential: ServerCredential
    ) async throws {
        _ = try await perform(
            method, url: url(path, query: query), body: nil, credential: credential, timeout: Self.requestTimeout
        )
    }

    private func decode<Response: Decodable>(_ type: Response.Type, from response: RawResponse, route: String) throws
        -> Response
    {
        do {
            return try JSONDecoder().decode(type, from: response.body)
        } catch {
            let excerpt = String(decoding: response.body.prefix(200), as: UTF8.self)
            throw ServerError.invalidResponse(route: route, detail: "\(error) in \(excerpt)")
        }
    }

    private func perform(
        _ method: HTTPMethod, url: String, body: Data?, credential: ServerCredential, timeout: TimeAmount
    ) async throws -> RawResponse {
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "VSServices/agent-standin")
        switch credential {
        case .personalAccessToken(let pat):
            let basic = Data(":\(pat)".utf8).base64EncodedString()
            request.headers.add(name: "Authorization", value: "Basic \(basic)")
        case .bearer(let token):
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
        case .none:
            break
        }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response = try await execute(request, timeout: timeout)
        try classify(response)
        return response
    }

    /// Sends a request and collects the answer; only connection trouble throws.
    private func execute(_ request: HTTPClientRequest, timeout: TimeAmount) async throws -> RawResponse {
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: timeout)
            let buffer = try await response.body.collect(upTo: 16 * 1024 * 1024)
            return RawResponse(
                status: Int(response.status.code), contentType: response.headers.first(name: "Content-Type") ?? "",
                body: Data(buffer.readableBytesView))
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            if Task.isCancelled { throw CancellationError() }
            throw ServerError.network(Self.describe(error))
        }
    }

    /// Throws the `ServerError` a non-2xx (or sign-in page) answer stands for.
    private func classify(_ response: RawResponse) throws {
        let status = response.status
        if status == 401 || status == 203 || response.contentType.lowercased().contains("text/html") {
            throw ServerError.unauthorized(organizationURL: organizationURL)
        }
        guard (200..<300).contains(status) else {
            let wrapped = try? JSONDecoder().decode(WrappedException.self, from: response.body)
            let message = wrapped?.message
                ?? "Response status code does not indicate success: \(status). \(String(decoding: response.body.prefix(200), as: UTF8.self))"
            throw ServerError.service(status: status, typeKey: wrapped?.typeKey, message: message)
        }
    }

    private static func describe(_ error: any Error) -> String {
        let text = String(describing: error)
        if text.contains("connectTimeout") || text.contains("Connection refused") || text.contains("connect") {
            return "Failed to connect to the server (\(text))"
        }
        return text
    }
}

// MARK: Wire types

/// `{"count","value":[...]}` collection envelope.
struct Envelope<Element: Decodable>: Decodable {
    /// The elements.
    let value: [Element]
}

/// The fields of a pool the stand-in needs.
struct PoolRecord: Decodable, Sendable {
    /// Pool id.
    let id: Int
    /// Pool name.
    let name: String
}

/// The fields of a TaskAgent the stand-in needs.
struct AgentRecord: Decodable, Sendable {
    /// Agent id.
    let id: Int
    /// Agent name.
    let name: String
    /// The OAuth client handed out at registration (absent on lookups).
    let authorization: Authorization?

    /// `authorization` block of a TaskAgent.
    struct Authorization: Decodable, Sendable {
        /// The agent's OAuth client id.
        let clientId: String?
        /// Where the agent exchanges its client id for a token.
        let authorizationUrl: String?
    }
}

/// The body of POST/PUT agents.
struct AgentRegistration: Encodable, Sendable {
    /// Present only for PUT (replace).
    var id: Int?
    /// Agent name.
    var name: String
    /// Agent version.
    var version: String
    /// `uname`-style OS description.
    var osDescription: String
    /// Always true at registration.
    var enabled = true
    /// Always 1.
    var maxParallelism = 1
    /// The scanned system capabilities.
    var systemCapabilities: [String: String]
    /// The agent's public key, whose private half signs the listener's client assertions.
    var authorization: KeyBlock

    /// `{"publicKey":{"exponent","modulus"}}`.
    struct KeyBlock: Encodable, Sendable {
        /// The RSA public key (base64 exponent and modulus).
        var publicKey: AgentPublicKey
    }
}

/// `oauth2/token` answer (`VssOAuthTokenResponse`).
struct TokenResponse: Decodable, Sendable {
    /// The bearer token.
    let accessToken: String
    /// Seconds until it expires, when the service says.
    let expiresIn: Int?

    enum CodingKeys: String, CodingKey {
        case accessToken = "access_token"
        case expiresIn = "expires_in"
    }
}

/// `oauth2/token` refusal: the OAuth error code and its description (spelled `errordescription`).
struct TokenErrorResponse: Decodable, Sendable {
    /// `invalid_client`, `invalid_grant`, ...
    let error: String?
    /// Why.
    let errordescription: String?
}

/// An agent access token as the token endpoint returned it.
struct AccessToken: Sendable, Equatable {
    /// The bearer token.
    let value: String
    /// Seconds until it expires, if known.
    let expiresIn: Int?
}

/// The body of POST sessions.
struct SessionRequest: Encodable, Sendable {
    /// The host running the listener.
    var ownerName: String
    /// The agent opening the session.
    var agent: SessionAgent

    /// The agent reference inside a session.
    struct SessionAgent: Encodable, Sendable {
        /// Agent id.
        var id: Int
        /// Agent name.
        var name: String
        /// Agent version.
        var version: String
        /// OS description.
        var osDescription: String
    }
}

/// POST sessions answer.
struct SessionResponse: Decodable, Sendable {
    /// The new session id.
    let sessionId: String
}

/// One message from the message queue.
struct AgentMessage: Decodable, Sendable {
    /// Monotonic message id, acknowledged by DELETE.
    let messageId: Int64
    /// `PipelineAgentJobRequest`, `JobCancel`, `AgentRefresh`, ...
    let messageType: String
    /// The message's JSON body, as a string.
    let body: String
}

/// The body of PATCH jobrequests.
struct JobRequestUpdate: Encodable, Sendable {
    /// The request being renewed or finished.
    var requestId: Int64
    /// Set only when finishing.
    var finishTime: String?
    /// Set only when finishing (`succeeded`, `failed`, `canceled`).
    var result: String?
}

/// The fields of a job request the stand-in reads back.
struct JobRequestRecord: Decodable, Sendable {
    /// The request id.
    let requestId: Int64?
    /// Until when the lock holds.
    let lockedUntil: String?
}

/// The service's JSON error body.
struct WrappedException: Decodable, Sendable {
    /// Human-readable message.
    let message: String?
    /// Short exception type, e.g. `TaskAgentSessionConflictException`.
    let typeKey: String?
}
