import ArgumentParser
import Foundation
import Kubernetes
import Logging
import ServiceLifecycle
import Simulators
import UnixSignals

/// `shoal-sim local-node`: plays kubelet and scheduler for one node, running pods as local processes, until
/// SIGTERM/SIGINT (then every process it started is killed).
struct LocalNodeCommand: AsyncParsableCommand {
    /// Command metadata.
    static let configuration = CommandConfiguration(
        commandName: "local-node",
        abstract: "Register a Kubernetes Node and run the pods bound to it as local processes.")

    /// The kubeconfig to use.
    @Option(help: "Path of the kubeconfig to use (default: KUBECONFIG, in-cluster, ~/.kube/config).")
    var kubeconfig: String?

    /// The Node's name.
    @Option(help: "Name of the Node to register.")
    var nodeName: String

    /// The namespace to take pods from.
    @Option(help: "Only take pods of this namespace (default: all namespaces).")
    var namespace: String?

    /// A label selector for the pods.
    @Option(help: "Only take pods matching this label selector, e.g. app=agent.")
    var selector: String?

    /// Image entrypoints, `IMAGE=COMMAND`.
    @Option(name: .customLong("image"), help: "IMAGE=COMMAND: the entrypoint of an image for containers without a command (repeatable; COMMAND is split on spaces).")
    var images: [String] = []

    /// Where pod files go.
    @Option(help: "Directory for per-pod logs and termination messages.")
    var workDir: String?

    /// swift-log level name.
    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String = "info"

    /// Checks the `--image` mappings.
    func validate() throws {
        _ = try imageCommands()
    }

    /// Runs the node until SIGTERM/SIGINT.
    func run() async throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var baseLogger = Logger(label: "shoal-sim.local-node")
        baseLogger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let logger = baseLogger
        let kubernetes = try KubernetesConfiguration.resolve(kubeconfigPath: kubeconfig)
        let client = try KubernetesClient(configuration: kubernetes, logger: logger)
        let configuration = LocalNodeConfiguration(
            nodeName: nodeName, namespace: namespace, labelSelector: selector, imageCommands: try imageCommands(), workDirectory: workDir)
        let node = LocalNode(api: client, configuration: configuration, logger: logger)
        let group = ServiceGroup(
            configuration: .init(services: [LocalNodeService(node: node)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            try? await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }

    /// Parses `--image IMAGE=COMMAND` options; split at the first `=`.
    private func imageCommands() throws -> [String: [String]] {
        var commands: [String: [String]] = [:]
        for mapping in images {
            guard let equals = mapping.firstIndex(of: "="), equals != mapping.startIndex else {
                throw ValidationError("--image must be IMAGE=COMMAND, got '\(mapping)'")
            }
            let command = mapping[mapping.index(after: equals)...].split(separator: " ").map(String.init)
            guard !command.isEmpty else { throw ValidationError("--image \(mapping): the command is empty") }
            commands[String(mapping[..<equals])] = command
        }
        return commands
    }
}

/// Adapts the local node to `ServiceLifecycle`: graceful shutdown cancels it, which kills its processes.
struct LocalNodeService: Service {
    /// The node to run.
    let node: LocalNode

    /// Runs the node until graceful shutdown; the cancellation that shutdown causes is a normal end.
    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown { try await node.run() }
        } catch is CancellationError {
            return
        }
    }
}
