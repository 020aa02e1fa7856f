import Shared
import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Limits and retry behaviour of a ``KubernetesClient``.
package struct KubernetesClientOptions: Sendable {
    /// Retries of 429, 5xx and network failures (capped exponential backoff with jitter, `Retry-After` honoured).
    package var retry: RetryPolicy
    /// Time allowed for a whole non-watch request, and for a watch's response headers.
    package var requestTimeout: Duration
    /// Time allowed to connect.
    package var connectTimeout: Duration
    /// Longest silence on a connection before it is dropped; above any watch's `timeoutSeconds`.
    package var idleReadTimeout: Duration
    /// Largest non-watch response body accepted.
    package var maximumResponseBytes: Int
    /// Largest single watch event accepted (one line of the stream).
    package var maximumWatchLineBytes: Int
    /// Sent as `User-Agent`.
    package var userAgent: String

    /// Defaults: 5 attempts, 60 s per request, 10 s connect, 5 min idle, 64 MiB bodies, 16 MiB watch lines.
    package init(
        retry: RetryPolicy = RetryPolicy(), requestTimeout: Duration = .seconds(60), connectTimeout: Duration = .seconds(10),
        idleReadTimeout: Duration = .seconds(300), maximumResponseBytes: Int = 64 << 20, maximumWatchLineBytes: Int = 16 << 20,
        userAgent: String = "shoal"
    ) {
        self.retry = retry
        self.requestTimeout = requestTimeout
        self.connectTimeout = connectTimeout
        self.idleReadTimeout = idleReadTimeout
        self.maximumResponseBytes = maximumResponseBytes
        self.maximumWatchLineBytes = maximumWatchLineBytes
        self.userAgent = userAgent
    }
}

/// The Kubernetes REST client: AsyncHTTPClient with the configuration's TLS and bearer token.
///
/// Ownership: the client creates and owns one `HTTPClient` (its TLS settings are per cluster, so the process-wide
/// shared client cannot be used). Call ``shutdown()`` exactly once when done — after every watch has ended —
/// or AsyncHTTPClient reports a leaked client.
package final class KubernetesClient: KubernetesAPI {
    /// The configuration the client was built with.
    package let configuration: KubernetesConfiguration
    /// Limits and retries.
    package let options: KubernetesClientOptions
    private let http: HTTPClient
    private let clock: any ShoalClock
    private let jitter: @Sendable () -> Double
    private let logger: Logger

    /// Builds the client and its HTTP client; fails when the TLS material is unreadable or invalid.
    package init(
        configuration: KubernetesConfiguration, options: KubernetesClientOptions = KubernetesClientOptions(),
        clock: any ShoalClock = SystemClock(), jitter: @escaping @Sendable () -> Double = { Double.random(in: 0.5...1.0) },
        logger: Logger = Logger(label: "shoal.kubernetes")
    ) throws(KubernetesConfigurationError) {
        self.configuration = configuration
        self.options = options
        self.clock = clock
        self.jitter = jitter
        self.logger = logger
        var settings = HTTPClient.Configuration()
        settings.tlsConfiguration = try configuration.makeTLSConfiguration()
        settings.timeout = HTTPClient.Configuration.Timeout(
            connect: .nanoseconds(Int64(options.connectTimeout.seconds * 1e9)), read: .nanoseconds(Int64(options.idleReadTimeout.seconds * 1e9))
        )
        settings.redirectConfiguration = .disallow
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: settings)
    }

    /// Shuts the owned HTTP client down; call once, after the last request and watch.
    package func shutdown() async throws {
        try await http.shutdown()
    }

    package var defaultNamespace: String { configuration.namespace }

    // MARK: - KubernetesAPI

    package func get<Object: KubernetesObject>(_ type: Object.Type, _ resource: KubernetesResource, namespace: String?, name: String) async throws(KubernetesError) -> Object {
        let path = resource.path(namespace: scope(resource, namespace, nil), name: name)
        return try await send(.GET, path: path)
    }

    package func list<Object: KubernetesObject>(_ type: Object.Type, _ resource: KubernetesResource, namespace: String?, options: ListOptions) async throws(KubernetesError) -> ObjectList<Object> {
        try await send(.GET, path: resource.path(namespace: namespace), query: options.queryItems)
    }

    package func create<Object: KubernetesObject>(_ object: Object, _ resource: KubernetesResource, namespace: String?) async throws(KubernetesError) -> Object {
        let path = resource.path(namespace: scope(resource, namespace, object.metadata.namespace))
        return try await send(.POST, path: path, body: try encode(object, path: path))
    }

    package func update<Object: KubernetesObject>(_ object: Object, _ resource: KubernetesResource, namespace: String?, subresource: String?) async throws(KubernetesError) -> Object {
        let path = resource.path(namespace: scope(resource, namespace, object.metadata.namespace), name: object.metadata.name ?? "", subresource: subresource)
        return try await send(.PUT, path: path, body: try encode(object, path: path))
    }

    package func patch<Object: KubernetesObject>(
        _ type: Object.Type, _ resource: KubernetesResource, namespace: String?, name: String, patch: KubernetesPatch, subresource: String?
    ) async throws(KubernetesError) -> Object {
        let path = resource.path(namespace: scope(resource, namespace, nil), name: name, subresource: subresource)
        return try await send(.PATCH, path: path, body: try encode(patch.body, path: path), contentType: patch.contentType)
    }

    package func delete(_ resource: KubernetesResource, namespace: String?, name: String, options: DeleteOptions) async throws(KubernetesError) -> DeletionResult {
        let path = resource.path(namespace: scope(resource, namespace, nil), name: name)
        let description = "DELETE \(path)"
        let (code, bytes) = try await exchange(.DELETE, path: path, query: [], body: try encode(options, path: path), contentType: nil, description: description)
        let answer: DynamicObject
        do {
            answer = try KubernetesCoding.decoder().decode(DynamicObject.self, from: Data(bytes.readableBytesView))
        } catch {
            throw .decoding(request: description, detail: "\(error)", bodyExcerpt: Self.excerpt(bytes))
        }
        // A Status, or the last state without a deletionTimestamp, means gone. A returned deletionTimestamp is
        // ambiguous (v1.20 answers 200 both when a grace period starts and on the final grace-0 delete of a
        // bound Pod), so look: still there with the same uid means pending.
        if code != 202, answer.json["kind"]?.stringValue == "Status" || answer.metadata.deletionTimestamp == nil { return .deleted }
        do {
            let current: DynamicObject = try await send(.GET, path: path)
            guard current.metadata.uid == answer.metadata.uid else { return .deleted }
            return .pending(current)
        } catch .notFound {
            return .deleted
        }
    }

    package func createSubresource<Body: Encodable & Sendable>(
        _ body: Body, _ resource: KubernetesResource, namespace: String?, name: String, subresource: String
    ) async throws(KubernetesError) -> KubeJSON {
        let path = resource.path(namespace: scope(resource, namespace, nil), name: name, subresource: subresource)
        return try await send(.POST, path: path, body: try encode(body, path: path))
    }

    package func watch<Object: KubernetesObject>(_ type: Object.Type, _ resource: KubernetesResource, namespace: String?, options: WatchOptions) -> WatchStream<Object> {
        let path = resource.path(namespace: namespace)
        let query = options.queryItems
        let description = "WATCH \(path)"
        return WatchStream(request: description, maximumLineBytes: self.options.maximumWatchLineBytes) { () async throws(KubernetesError) -> HTTPClientResponse.Body in
            try await self.openWatch(path: path, query: query, description: description)
        }
    }

    // MARK: - Transport

    private func scope(_ resource: KubernetesResource, _ namespace: String?, _ objectNamespace: String?) -> String? {
        guard resource.namespaced else { return nil }
        return namespace ?? objectNamespace ?? configuration.namespace
    }

    private func encode(_ value: some Encodable, path: String) throws(KubernetesError) -> Data {
        do {
            return try KubernetesCoding.encoder().encode(value)
        } catch {
            throw .decoding(request: path, detail: "could not encode the request body: \(error)", bodyExcerpt: "")
        }
    }

    private func url(_ path: String, _ query: [(String, String)]) -> String {
        guard !query.isEmpty else { return configuration.serverURL + path }
        return configuration.serverURL + path + "?"
            + query.map { "\(OrganizationURL.percentEncodeQuery($0.0))=\(OrganizationURL.percentEncodeQuery($0.1))" }.joined(separator: "&")
    }

    private func makeRequest(_ method: HTTPMethod, url: String, body: Data?, contentType: String?) async throws(KubernetesError) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: options.userAgent)
        if let credentials = configuration.credentials {
            do {
                request.headers.add(name: "Authorization", value: try await credentials.authorizationHeader())
            } catch {
                throw .credential(error)
            }
        }
        if let body {
            request.headers.add(name: "Content-Type", value: contentType ?? "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        return request
    }

    private func send<Response: Decodable>(
        _ method: HTTPMethod, path: String, query: [(String, String)] = [], body: Data? = nil, contentType: String? = nil
    ) async throws(KubernetesError) -> Response {
        let description = "\(method.rawValue) \(path)"
        let (_, bytes) = try await exchange(method, path: path, query: query, body: body, contentType: contentType, description: description)
        do {
            return try KubernetesCoding.decoder().decode(Response.self, from: Data(bytes.readableBytesView))
        } catch {
            throw .decoding(request: description, detail: "\(error)", bodyExcerpt: Self.excerpt(bytes))
        }
    }

    /// One logical request with retries; returns the 2xx body.
    ///
    /// 429 and 5xx are retried for every method except that a POST is retried only on 429, 503 (the API
    /// server's "too many requests / not ready" answers, given before anything was written) and 5xx whose Status
    /// carries `retryAfterSeconds`; network
    /// failures only for methods that are safe to repeat (every method but POST).
    private func exchange(
        _ method: HTTPMethod, path: String, query: [(String, String)], body: Data?, contentType: String?, description: String
    ) async throws(KubernetesError) -> (Int, ByteBuffer) {
        let target = url(path, query)
        let retry = options.retry
        var attempt = 0
        while true {
            attempt += 1
            let request = try await makeRequest(method, url: target, body: body, contentType: contentType)
            let status: Int
            let headers: HTTPHeaders
            let responseBody: ByteBuffer
            do {
                let response = try await http.execute(request, timeout: .nanoseconds(Int64(options.requestTimeout.seconds * 1e9)), logger: logger)
                status = Int(response.status.code)
                headers = response.headers
                responseBody = try await response.body.collect(upTo: options.maximumResponseBytes)
            } catch {
                if Task.isCancelled { throw .cancelled }
                guard method != .POST, attempt < retry.maxAttempts else { throw .transport(request: description, detail: "\(error)") }
                let delay = retry.backoff(beforeRetry: attempt, jitter: jitter())
                logger.notice("Kubernetes API unreachable, retrying", metadata: ["request": "\(description)", "attempt": "\(attempt)", "error": "\(error)", "delay_s": "\(delay.seconds)"])
                try await pause(delay)
                continue
            }
            logger.debug("Kubernetes API answered", metadata: ["request": "\(description)", "status": "\(status)"])
            if (200..<300).contains(status) { return (status, responseBody) }
            let failure = Self.failure(request: description, code: status, body: responseBody)
            // A Status with retryAfterSeconds is the server asking for a retry (e.g. a new namespace's ServiceAccount
            // token not created yet): safe for POST too.
            let serverAsked = (500...599).contains(status) && failure.status?.details?.retryAfterSeconds != nil
            let retryable = status == 429 || status == 503 || serverAsked || (method != .POST && (500...599).contains(status))
            guard retryable, attempt < retry.maxAttempts else { throw KubernetesError.classify(failure) }
            var delay = retry.backoff(beforeRetry: attempt, jitter: jitter())
            let serverDelay = headers.first(name: "Retry-After").flatMap { Double($0.trimmingWhitespace()) }.map(Duration.fractionalSeconds)
                ?? failure.status?.details?.retryAfterSeconds.map { Duration.seconds($0) }
            if let serverDelay { delay = max(delay, min(serverDelay, retry.maxServerDelay)) }
            logger.notice("Kubernetes API answered \(status), retrying", metadata: ["request": "\(description)", "attempt": "\(attempt)", "delay_s": "\(delay.seconds)"])
            try await pause(delay)
        }
    }

    /// Starts a watch request and returns its streaming body once the server answered 200.
    private func openWatch(path: String, query: [(String, String)], description: String) async throws(KubernetesError) -> HTTPClientResponse.Body {
        let request = try await makeRequest(.GET, url: url(path, query), body: nil, contentType: nil)
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .nanoseconds(Int64(options.requestTimeout.seconds * 1e9)), logger: logger)
        } catch {
            if Task.isCancelled { throw .cancelled }
            throw .transport(request: description, detail: "\(error)")
        }
        let status = Int(response.status.code)
        guard status == 200 else {
            let body = (try? await response.body.collect(upTo: 1 << 20)) ?? ByteBuffer()
            throw KubernetesError.classify(Self.failure(request: description, code: status, body: body))
        }
        return response.body
    }

    private func pause(_ delay: Duration) async throws(KubernetesError) {
        do { try await clock.sleep(for: delay) } catch { throw .cancelled }
    }

    private static func failure(request: String, code: Int, body: ByteBuffer) -> KubernetesFailure {
        let status = try? JSONDecoder().decode(Status.self, from: Data(body.readableBytesView))
        let usable = status.flatMap { $0.message != nil || $0.reason != nil ? $0 : nil }
        return KubernetesFailure(request: request, code: code, status: usable, bodyExcerpt: usable == nil ? excerpt(body) : nil)
    }

    private static func excerpt(_ body: ByteBuffer) -> String {
        String(decoding: body.readableBytesView.prefix(300), as: UTF8.self)
    }
}
