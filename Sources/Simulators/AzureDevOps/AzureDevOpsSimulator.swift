import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle

/// A running simulated Azure DevOps organization on 127.0.0.1.
///
/// Start it with `start(_:logger:)` (or `withSimulator`, which always shuts down), point clients at
/// `organizationURL`, and drive or inspect it through `organization`.
package struct AzureDevOpsSimulator: Sendable {
    /// `http://127.0.0.1:PORT/ORG`.
    package let organizationURL: String
    /// `http://127.0.0.1:PORT`.
    package let baseURL: String
    /// The bound port.
    package let port: Int
    /// The control API.
    package let organization: SimulatedOrganization
    /// The `authorizationUrl` registrations return: where agents post client assertions, and their audience.
    package var authorizationURL: String { WireFormat.authorizationURL(organizationURL: organizationURL) }
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    /// Errors starting the simulator.
    package enum StartError: Error, CustomStringConvertible {
        /// The server stopped before it reported a listening port.
        case serverDidNotStart(underlying: (any Error)?)

        package var description: String {
            switch self {
            case .serverDidNotStart(let error): "the simulator's HTTP server did not start: \(error.map { "\($0)" } ?? "no error")"
            }
        }
    }

    /// Starts the server and returns once it listens.
    package static func start(
        _ configuration: SimulatorConfiguration = .init(),
        logger: Logger = Logger(label: "shoal.simulator.azure-devops")
    ) async throws -> AzureDevOpsSimulator {
        let server = AzureDevOpsSimulatorServer(configuration: configuration, logger: logger)
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let group = ServiceGroup(configuration: .init(
            services: [ListeningService(server: server) { port in continuation.yield(port) }], logger: logger))
        // Owned by the returned value: `shutdown()` stops it gracefully and awaits it.
        let task = Task {
            defer { continuation.finish() }
            try await group.run()
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else {
            do {
                try await task.value
                throw StartError.serverDidNotStart(underlying: nil)
            } catch {
                throw StartError.serverDidNotStart(underlying: error)
            }
        }
        let baseURL = "http://\(configuration.host):\(port)"
        return AzureDevOpsSimulator(
            organizationURL: "\(baseURL)/\(configuration.organization)", baseURL: baseURL, port: port,
            organization: server.organization, group: group, task: task)
    }

    /// Stops the server (graceful: open requests finish) and the sweeper, and waits for them.
    package func shutdown() async throws {
        await group.triggerGracefulShutdown()
        try await task.value
    }

    /// Runs `body` against a fresh simulator and always shuts it down.
    package static func withSimulator<T: Sendable>(
        _ configuration: SimulatorConfiguration = .init(),
        logger: Logger = Logger(label: "shoal.simulator.azure-devops"),
        _ body: (AzureDevOpsSimulator) async throws -> T
    ) async throws -> T {
        let simulator = try await start(configuration, logger: logger)
        do {
            let result = try await body(simulator)
            try await simulator.shutdown()
            return result
        } catch {
            try? await simulator.shutdown()
            throw error
        }
    }
}

/// Runs the server as a `ServiceLifecycle` service, reporting the bound port.
private struct ListeningService: Service {
    let server: AzureDevOpsSimulatorServer
    let onListening: @Sendable (Int) async -> Void

    func run() async throws {
        try await server.run(onListening: onListening)
    }
}

/// The simulator's HTTP server plus its expiry sweeper, runnable in-process or under a `ServiceGroup`.
///
/// `run` returns when the task is cancelled or graceful shutdown is triggered (Hummingbird's application runs
/// its own `ServiceGroup`, which honours an enclosing graceful shutdown).
package struct AzureDevOpsSimulatorServer: Sendable {
    /// The control API of the organization served.
    package let organization: SimulatedOrganization
    private let configuration: SimulatorConfiguration
    private let logger: Logger

    /// A server for this configuration; nothing listens until `run`.
    package init(configuration: SimulatorConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.organization = SimulatedOrganization(configuration: configuration, logger: logger)
    }

    /// Serves until cancelled or gracefully shut down; `onListening` gets the bound port once.
    package func run(onListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let organization = self.organization
        let organizationRoutes = OrganizationRoutes(organization: organization, logger: logger)
        let controlRoutes = ControlRoutes(organization: organization)
        let name = configuration.organization
        let responder = CallbackResponder<BasicRequestContext> { request, _ in
            let path = request.uri.path
            if path == "/_sim" || path.hasPrefix("/_sim/") {
                return await controlRoutes.respond(to: request)
            }
            guard let route = OrgRoute.classify(path: path, organization: name) else {
                return HTTPReply.failure(.routeNotFound(path))
            }
            return await organizationRoutes.respond(to: request, route: route)
        }
        let traffic = organization.traffic
        let host = configuration.host
        let application = Application(
            responder: responder,
            server: .http1(configuration: .init(
                additionalChannelHandlers: [ConnectionDropHandler(traffic: traffic, organization: name)])),
            configuration: .init(address: .hostname(host, port: configuration.port), serverName: nil),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                await organization.setBaseURL("http://\(host):\(port)")
                await onListening(port)
            },
            logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await application.run() }
            group.addTask {
                while !Task.isCancelled {
                    let interval = await organization.knobs.sweepInterval
                    try await Task.sleep(for: interval)
                    await organization.sweep()
                }
            }
            // The application ends on graceful shutdown or cancellation; the sweeper then stops with it.
            try await group.next()
            group.cancelAll()
        }
    }
}
