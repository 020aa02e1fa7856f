import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import Synchronization
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Settings of an ``AzureDevOpsClient``.
package struct AzureDevOpsClientConfiguration: Sendable {
    /// The organization every route hangs off.
    package var organization: OrganizationURL
    /// Time allowed to establish a connection (applies to clients made with `AzureDevOpsClient.makeHTTPClient`).
    package var connectTimeout: Duration
    /// Time allowed for one whole exchange; busy pools answer `jobrequests` slowly, so the default is 60 s.
    package var readTimeout: Duration
    /// Retry behaviour for throttling, 5xx and network failures.
    package var retry: RetryPolicy
    /// Largest response body accepted, so a runaway answer cannot exhaust memory.
    package var maxResponseBytes: Int
    /// Sent as `User-Agent`.
    package var userAgent: String

    /// Builds a configuration with the defaults: 10 s connect, 60 s read, 5 attempts, 64 MiB bodies.
    package init(organization: OrganizationURL, connectTimeout: Duration = .seconds(10), readTimeout: Duration = .seconds(60), retry: RetryPolicy = .init(), maxResponseBytes: Int = 64 << 20, userAgent: String = "shoal") {
        self.organization = organization
        self.connectTimeout = connectTimeout
        self.readTimeout = max(readTimeout, .seconds(1))
        self.retry = retry
        self.maxResponseBytes = maxResponseBytes
        self.userAgent = userAgent
    }
}

/// One finished HTTP exchange, reported to an observer (metrics, demo statistics).
package struct AzureDevOpsRequestRecord: Sendable {
    /// Route template with method, e.g. `GET pools/{poolId}/jobrequests`.
    package let route: String
    /// HTTP status, or nil when no response arrived.
    package let status: Int?
    /// Time from sending to the complete response.
    package let duration: Duration
    /// Which attempt this was (1 = first).
    package let attempt: Int
}

/// The Azure DevOps REST client: AsyncHTTPClient underneath, the service's quirks handled in one place.
///
/// It sends `X-TFS-FedAuthRedirect: Suppress` so a bad token yields 401 rather than a sign-in page, still
/// treats 203 and HTML bodies as authentication failures, honours `Retry-After` and `X-RateLimit-Delay` (also on
/// 200), and retries 429, 5xx, timeouts and dropped connections with capped, jittered exponential backoff.
/// POST is retried too: a duplicate registration is refused by the service with 409, never doubled.
package final class AzureDevOpsClient: AzureDevOpsAPI {
    /// The configuration the client was built with.
    package let configuration: AzureDevOpsClientConfiguration
    private let credentials: any CredentialSource
    private let http: HTTPClient
    private let clock: any ShoalClock
    private let jitter: @Sendable () -> Double
    private let logger: Logger
    private let observer: (@Sendable (AzureDevOpsRequestRecord) -> Void)?
    private let state = Mutex(State())

    private struct State {
        var rateLimit = RateLimitStatus()
        /// Monotonic time before which no request should be sent (from Retry-After / X-RateLimit-Delay).
        var notBefore: Duration = .zero
    }

    /// Creates a client. `http` defaults to the process-wide shared AsyncHTTPClient, which needs no shutdown.
    package init(
        configuration: AzureDevOpsClientConfiguration,
        credentials: any CredentialSource,
        http: HTTPClient = .shared,
        clock: any ShoalClock = SystemClock(),
        jitter: @escaping @Sendable () -> Double = { Double.random(in: 0.5...1.0) },
        logger: Logger = Logger(label: "shoal.azure-devops"),
        observer: (@Sendable (AzureDevOpsRequestRecord) -> Void)? = nil
    ) {
        self.configuration = configuration
        self.credentials = credentials
        self.http = http
        self.clock = clock
        self.jitter = jitter
        self.logger = logger
        self.observer = observer
    }

    /// An HTTP client whose connect timeout is the configuration's; the caller owns it and must shut it down.
    package static func makeHTTPClient(_ configuration: AzureDevOpsClientConfiguration) -> HTTPClient {
        var settings = HTTPClient.Configuration()
        settings.timeout.connect = .nanoseconds(Int64(configuration.connectTimeout.seconds * 1e9))
        settings.timeout.read = .nanoseconds(Int64(configuration.readTimeout.seconds * 1e9))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: settings)
    }

    /// The rate-limit headers as last seen.
    package var rateLimit: RateLimitStatus { state.withLock { $0.rateLimit } }

    // MARK: - Pools

    package func resolvePool(named name: String) async throws(AzureDevOpsError) -> AgentPool {
        let pools: CollectionEnvelope<AgentPool> = try await send(
            .GET, route: "GET pools", path: ["distributedtask", "pools"],
            query: [("poolName", name), ("api-version", "7.1")]
        )
        let matches = pools.value.filter { $0.name.lowercased() == name.lowercased() }
        switch matches.count {
        case 0: throw .poolNotFound(name: name)
        case 1: return matches[0]
        default: throw .ambiguousPool(name: name, ids: matches.map(\.id))
        }
    }

    package func pool(id: Int) async throws(AzureDevOpsError) -> AgentPool {
        try await send(.GET, route: "GET pools/{poolId}", path: ["distributedtask", "pools", String(id)], query: [("api-version", "7.1")])
    }

    // MARK: - Agents

    package func agents(poolID: Int, options: AgentQueryOptions) async throws(AzureDevOpsError) -> [Agent] {
        var query = Self.agentQuery(options)
        if let name = options.agentName { query.insert(("agentName", name), at: 0) }
        let agents: CollectionEnvelope<Agent> = try await send(
            .GET, route: "GET pools/{poolId}/agents", path: ["distributedtask", "pools", String(poolID), "agents"], query: query
        )
        return agents.value
    }

    package func agent(poolID: Int, agentID: Int, options: AgentQueryOptions) async throws(AzureDevOpsError) -> Agent {
        try await send(
            .GET, route: "GET pools/{poolId}/agents/{agentId}",
            path: ["distributedtask", "pools", String(poolID), "agents", String(agentID)], query: Self.agentQuery(options)
        )
    }

    package func setAgentEnabled(poolID: Int, agentID: Int, enabled: Bool) async throws(AzureDevOpsError) -> Agent {
        struct Patch: Encodable { let id: Int; let enabled: Bool }
        return try await send(
            .PATCH, route: "PATCH pools/{poolId}/agents/{agentId}",
            path: ["distributedtask", "pools", String(poolID), "agents", String(agentID)], query: [("api-version", "7.1")],
            body: Patch(id: agentID, enabled: enabled)
        )
    }

    package func deleteAgent(poolID: Int, agentID: Int) async throws(AzureDevOpsError) -> DeletionOutcome {
        do {
            _ = try await exchange(
                .DELETE, route: "DELETE pools/{poolId}/agents/{agentId}",
                path: ["distributedtask", "pools", String(poolID), "agents", String(agentID)], query: [("api-version", "7.1")], body: nil
            )
            return .deleted
        } catch .notFound {
            return .alreadyGone
        }
    }

    package func addAgent(poolID: Int, _ agent: NewAgent) async throws(AzureDevOpsError) -> Agent {
        try await send(
            .POST, route: "POST pools/{poolId}/agents", path: ["distributedtask", "pools", String(poolID), "agents"],
            query: [("api-version", "7.1")], body: agent
        )
    }

    // MARK: - Job requests and packages

    package func unfinishedJobRequests(poolID: Int) async throws(AzureDevOpsError) -> [JobRequest] {
        let requests: CollectionEnvelope<JobRequest> = try await send(
            .GET, route: "GET pools/{poolId}/jobrequests", path: ["distributedtask", "pools", String(poolID), "jobrequests"],
            query: [("completedRequestCount", "0"), ("api-version", "7.1-preview.1")]
        )
        // The service should return only unfinished requests here; filter anyway so a quirk cannot count a finished job.
        return requests.value.filter { $0.phase != .finished }
    }

    package func newestAgentPackage(platform: String) async throws(AzureDevOpsError) -> AgentPackage? {
        let packages: CollectionEnvelope<AgentPackage> = try await send(
            .GET, route: "GET packages/agent/{platform}", path: ["distributedtask", "packages", "agent", platform],
            query: [("api-version", "7.1-preview.1")]
        )
        return packages.value.filter { $0.platform.lowercased() == platform.lowercased() }.max { $0.version < $1.version }
    }

    // MARK: - Transport

    private static func agentQuery(_ options: AgentQueryOptions) -> [(String, String)] {
        [
            ("includeCapabilities", String(options.includeCapabilities)),
            ("includeAssignedRequest", String(options.includeAssignedRequest)),
            ("includeLastCompletedRequest", String(options.includeLastCompletedRequest)),
            ("api-version", "7.1"),
        ]
    }

    /// The JSON decoder for the service's wire format (0-7 fractional digits in timestamps).
    package static func makeDecoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = WireTimestamp.parse(text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an ISO-8601 timestamp: \(text)")
            }
            return date
        }
        return decoder
    }

    private func send<Response: Decodable>(
        _ method: HTTPMethod, route: String, path: [String], query: [(String, String)], body: (any Encodable & Sendable)? = nil
    ) async throws(AzureDevOpsError) -> Response {
        let bytes = try await exchange(method, route: route, path: path, query: query, body: body)
        do {
            return try Self.makeDecoder().decode(Response.self, from: Data(bytes.readableBytesView))
        } catch {
            throw .decoding(route: route, detail: "\(error)", bodyExcerpt: Self.excerpt(bytes))
        }
    }

    /// Sends one logical request with retries and returns the body of the successful response.
    private func exchange(
        _ method: HTTPMethod, route: String, path: [String], query: [(String, String)], body: (any Encodable & Sendable)?
    ) async throws(AzureDevOpsError) -> ByteBuffer {
        let url = configuration.organization.apiURL(path, query: query)
        let encodedBody: Data?
        do {
            encodedBody = try body.map { try JSONEncoder().encode($0) }
        } catch {
            throw .decoding(route: route, detail: "could not encode the request body: \(error)", bodyExcerpt: "")
        }
        let retry = configuration.retry
        var attempt = 0
        while true {
            attempt += 1
            try await waitForServerDelay()
            let authorization: String
            do {
                authorization = try await credentials.authorizationHeader()
            } catch {
                throw .credential(error)
            }
            var request = HTTPClientRequest(url: url)
            request.method = method
            request.headers.add(name: "Authorization", value: authorization)
            request.headers.add(name: "Accept", value: "application/json")
            request.headers.add(name: "X-TFS-FedAuthRedirect", value: "Suppress")
            request.headers.add(name: "User-Agent", value: configuration.userAgent)
            if let encodedBody {
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(bytes: encodedBody))
            }
            let started = clock.monotonicNow()
            let outcome: Outcome
            do {
                outcome = try await perform(request, route: route)
            } catch {
                observer?(AzureDevOpsRequestRecord(route: route, status: nil, duration: clock.monotonicNow() - started, attempt: attempt))
                if Task.isCancelled { throw .cancelled }
                guard attempt < retry.maxAttempts else { throw .transport(route: route, detail: error.detail) }
                let delay = retry.backoff(beforeRetry: attempt, jitter: jitter())
                logger.notice("Azure DevOps unreachable, retrying", metadata: ["route": "\(route)", "attempt": "\(attempt)", "error": "\(error.detail)", "delay_s": "\(delay.seconds)"])
                try await pause(delay)
                continue
            }
            observer?(AzureDevOpsRequestRecord(route: route, status: outcome.status, duration: clock.monotonicNow() - started, attempt: attempt))
            recordRateLimit(outcome.headers)
            let status = outcome.status
            if status == 401 || status == 203 || (200..<300).contains(status) && Self.isHTML(outcome) {
                let message = Self.wrappedException(outcome.body)?.message
                throw .authentication(route: route, status: status, credential: credentials.summary, serverMessage: message)
            }
            if (200..<300).contains(status) { return outcome.body }
            let body = Self.wrappedException(outcome.body)
            let server = ServerError(status: status, route: route, message: body?.message ?? Self.nonJSONMessage(outcome.body), typeKey: body?.typeKey)
            let retryable = status == 429 || (500...599).contains(status) || status == 408
            guard retryable else { throw Self.terminal(server) }
            let serverDelay = Self.retryAfter(outcome.headers)
            guard attempt < retry.maxAttempts else {
                throw status == 429 ? .throttled(server, retryAfter: serverDelay) : .serverFailure(server)
            }
            var delay = retry.backoff(beforeRetry: attempt, jitter: jitter())
            if let serverDelay { delay = max(delay, min(serverDelay, retry.maxServerDelay)) }
            logger.notice("Azure DevOps answered \(status), retrying", metadata: ["route": "\(route)", "attempt": "\(attempt)", "delay_s": "\(delay.seconds)"])
            try await pause(delay)
        }
    }

    private struct Outcome {
        let status: Int
        let headers: HTTPHeaders
        let body: ByteBuffer
    }

    private func perform(_ request: HTTPClientRequest, route: String) async throws -> Outcome {
        let deadline = TimeAmount.nanoseconds(Int64(configuration.readTimeout.seconds * 1e9))
        let response = try await http.execute(request, timeout: deadline, logger: logger)
        let body = try await response.body.collect(upTo: configuration.maxResponseBytes)
        return Outcome(status: Int(response.status.code), headers: response.headers, body: body)
    }

    private func pause(_ delay: Duration) async throws(AzureDevOpsError) {
        do { try await clock.sleep(for: delay) } catch { throw .cancelled }
    }

    /// Waits out a `Retry-After`/`X-RateLimit-Delay` the service asked for on an earlier (even successful) response.
    private func waitForServerDelay() async throws(AzureDevOpsError) {
        let wait = state.withLock { $0.notBefore } - clock.monotonicNow()
        if wait > .zero { try await pause(wait) }
    }

    private func recordRateLimit(_ headers: HTTPHeaders) {
        let retryAfter = Self.retryAfter(headers)
        let delay = headers.first(name: "X-RateLimit-Delay").flatMap(Double.init).map(Duration.fractionalSeconds)
        let now = clock.monotonicNow()
        let cap = configuration.retry.maxServerDelay
        state.withLock { state in
            if let value = headers.first(name: "X-RateLimit-Remaining").flatMap(Double.init) { state.rateLimit.remaining = value }
            if let value = headers.first(name: "X-RateLimit-Limit").flatMap(Double.init) { state.rateLimit.limit = value }
            if let value = headers.first(name: "X-RateLimit-Resource") { state.rateLimit.resource = value }
            state.rateLimit.delay = delay
            state.rateLimit.retryAfter = retryAfter
            // The service asks clients to slow down before it starts blocking: space the next request out.
            if let pause = retryAfter ?? delay, pause > .zero {
                state.notBefore = max(state.notBefore, now + min(pause, cap))
            }
        }
    }

    private static func retryAfter(_ headers: HTTPHeaders) -> Duration? {
        headers.first(name: "Retry-After").flatMap { Double($0.trimmingWhitespace()) }.map(Duration.fractionalSeconds)
    }

    private static func terminal(_ error: ServerError) -> AzureDevOpsError {
        switch error.status {
        case 400: .badRequest(error)
        case 403: .forbidden(error)
        case 404: .notFound(error)
        case 409: .conflict(error)
        default: .unexpectedStatus(error)
        }
    }

    private static func isHTML(_ outcome: Outcome) -> Bool {
        if let type = outcome.headers.first(name: "Content-Type"), type.lowercased().contains("text/html") { return true }
        let prefix = excerpt(outcome.body).drop { $0.isWhitespace }
        return prefix.hasPrefix("<")
    }

    private static func wrappedException(_ body: ByteBuffer) -> WrappedException? {
        guard body.readableBytes > 0 else { return nil }
        return try? JSONDecoder().decode(WrappedException.self, from: Data(body.readableBytesView))
    }

    private static func nonJSONMessage(_ body: ByteBuffer) -> String? {
        let text = excerpt(body)
        return text.isEmpty ? nil : text
    }

    private static func excerpt(_ body: ByteBuffer) -> String {
        String(decoding: body.readableBytesView.prefix(300), as: UTF8.self)
    }
}

extension Error {
    /// A one-line description of a transport error for logs and messages.
    fileprivate var detail: String {
        if let error = self as? HTTPClientError { return "\(error)" }
        return String(describing: self)
    }
}
