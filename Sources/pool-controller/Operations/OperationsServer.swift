import Hummingbird
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle

/// The controller's operations endpoint: `/healthz`, `/readyz` and `/metrics` for the kubelet and Prometheus.
///
/// A `ServiceLifecycle` service: `run` serves until graceful shutdown or cancellation. The probes only read the
/// closures it was given, so they never block on the controller's loops.
struct OperationsServer: Service {
    /// What `/readyz` reports: ready, or why not in one line (e.g. `waiting for the first AgentPool list`).
    typealias Readiness = @Sendable () -> (ready: Bool, reason: String)

    /// The content type of the Prometheus text exposition format 0.0.4.
    static let metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

    private let host: String
    private let port: Int
    private let registry: PrometheusCollectorRegistry
    private let liveness: @Sendable () -> Bool
    private let readiness: Readiness
    private let logger: Logger
    private let onListening: @Sendable (Int) async -> Void

    /// A server for `host:port`; nothing listens until ``run()``.
    ///
    /// - Parameters:
    ///   - port: the TCP port; 0 picks a free one (tests), reported to `onListening`.
    ///   - registry: what `/metrics` renders.
    ///   - liveness: true while the controller's loops are alive; false makes `/healthz` answer 503 so the kubelet
    ///     restarts the pod.
    ///   - readiness: `/readyz`'s answer; not ready gives 503 with the reason as the body.
    ///   - onListening: called once with the bound port when the server accepts connections.
    init(
        host: String, port: Int, registry: PrometheusCollectorRegistry, liveness: @escaping @Sendable () -> Bool,
        readiness: @escaping Readiness, logger: Logger, onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) {
        self.host = host
        self.port = port
        self.registry = registry
        self.liveness = liveness
        self.readiness = readiness
        self.logger = logger
        self.onListening = onListening
    }

    /// Serves until graceful shutdown or cancellation (Hummingbird honours both).
    ///
    /// Run it in the process's `ServiceGroup`: graceful shutdown quiesces connections and closes the listening
    /// socket. Plain task cancellation also returns, but Hummingbird 2.28 then logs `Waiting on child channel:
    /// CancellationError()` and leaves the listening socket open until the process exits.
    func run() async throws {
        let logger = self.logger
        let onListening = self.onListening
        let host = self.host
        let application = Application(
            router: Self.router(registry: registry, liveness: liveness, readiness: readiness),
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                logger.info("operations endpoint listening", metadata: ["host": "\(host)", "port": "\(port)"])
                await onListening(port)
            },
            logger: logger
        )
        try await application.run()
    }

    /// The three routes; a separate function so they can be exercised without a socket.
    static func router(
        registry: PrometheusCollectorRegistry, liveness: @escaping @Sendable () -> Bool, readiness: @escaping Readiness
    ) -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/healthz") { _, _ -> Response in
            liveness() ? text(.ok, "ok") : text(.serviceUnavailable, "a controller loop has stopped")
        }
        router.get("/readyz") { _, _ -> Response in
            let state = readiness()
            return state.ready ? text(.ok, "ok") : text(.serviceUnavailable, state.reason.isEmpty ? "not ready" : state.reason)
        }
        router.get("/metrics") { _, _ -> Response in
            var bytes: [UInt8] = []
            registry.emit(into: &bytes)
            return Response(
                status: .ok, headers: [.contentType: metricsContentType], body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        return router
    }

    /// A plain-text answer of one line, exactly `line`.
    private static func text(_ status: HTTPResponse.Status, _ line: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: ResponseBody(byteBuffer: ByteBuffer(string: line)))
    }
}
