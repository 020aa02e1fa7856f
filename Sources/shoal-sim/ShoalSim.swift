import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import Simulators
import UnixSignals

/// `shoal-sim`: runs the simulators as standalone processes for demos and manual testing.
@main
struct ShoalSim: AsyncParsableCommand {
    /// Command metadata.
    static let configuration = CommandConfiguration(
        commandName: "shoal-sim",
        abstract: "Run Shoal's simulators as standalone processes.",
        subcommands: [AzureDevOpsCommand.self, LocalNodeCommand.self, DemoCommand.self, AgentImageCommand.self])
}

/// `shoal-sim azure-devops`: serves a simulated Azure DevOps organization until SIGTERM/SIGINT.
struct AzureDevOpsCommand: AsyncParsableCommand {
    /// Command metadata.
    static let configuration = CommandConfiguration(
        commandName: "azure-devops",
        abstract: "Serve a simulated Azure DevOps organization on 127.0.0.1.")

    /// Port to listen on.
    @Option(help: "Port to listen on (0 picks a free one).")
    var port: Int = 0

    /// Organization name.
    @Option(help: "Organization name (first path segment).")
    var organization: String = "shoal-sim"

    /// Accepted personal access tokens.
    @Option(name: .customLong("token"), help: "A personal access token to accept (repeatable).")
    var tokens: [String] = []

    /// Pools created at start.
    @Option(name: .customLong("pool"), help: "A pool to create at start (repeatable).")
    var pools: [String] = []

    /// Whether to print the organization URL on stdout once listening.
    @Flag(help: "Print the organization URL on one line once listening.")
    var printURL = false

    /// swift-log level name.
    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String = "info"

    /// Serves until SIGTERM/SIGINT; exits 0 after a graceful shutdown.
    func run() async throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var baseLogger = Logger(label: "shoal-sim.azure-devops")
        baseLogger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let logger = baseLogger
        let configuration = SimulatorConfiguration(
            organization: organization, port: port, personalAccessTokens: tokens, pools: pools)
        let server = AzureDevOpsSimulatorServer(configuration: configuration, logger: logger)
        let printURL = self.printURL
        let organization = self.organization
        let service = SimulatorService(server: server) { port in
            let url = "http://127.0.0.1:\(port)/\(organization)"
            if printURL { FileHandle.standardOutput.write(Data((url + "\n").utf8)) }
            logger.info("simulated organization listening", metadata: ["url": "\(url)"])
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// Adapts the simulator server to `ServiceLifecycle`.
struct SimulatorService: Service {
    /// The server to run.
    let server: AzureDevOpsSimulatorServer
    /// Called once with the bound port.
    let onListening: @Sendable (Int) async -> Void

    /// Runs the server until graceful shutdown.
    func run() async throws {
        try await server.run(onListening: onListening)
    }
}
