import ArgumentParser
import Logging
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `pool-controller run`: reconcile AgentPools until SIGTERM.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run the controller (in-cluster unless --kubeconfig or KUBECONFIG is given).",
        discussion: """
            Every flag has an environment variable (shown in brackets); flags win. The original project's variables \
            (AZDO_ORG_URI, AZDO_TOKEN, AZDO_POOLNAME, TARGET_NAMESPACE, STANDBY_AGENT_COUNT, MAX_AGENT_COUNT) make the \
            controller manage that one pool.
            """)

    @Option(help: "Kubeconfig file [KUBECONFIG]; default: in-cluster ServiceAccount.")
    var kubeconfig: String?
    @Option(help: "Only watch AgentPools in this namespace [SHOAL_WATCH_NAMESPACE]; default: all namespaces.")
    var namespace: String?
    @Option(help: "Hold a Lease so only one replica acts [SHOAL_LEADER_ELECTION]; default true.")
    var leaderElection: Bool?
    @Option(help: "Namespace of the leader-election Lease [SHOAL_LEADER_ELECTION_NAMESPACE]; default POD_NAMESPACE.")
    var leaderElectionNamespace: String?
    @Option(help: "Name of the leader-election Lease [SHOAL_LEASE_NAME]; default shoal-pool-controller.")
    var leaseName: String?
    @Option(help: "This replica's identity [POD_NAME]; default the host name.")
    var identity: String?
    @Option(help: "Address for /healthz, /readyz and /metrics [SHOAL_HTTP_HOST]; default 0.0.0.0.")
    var httpHost: String?
    @Option(help: "Port for /healthz, /readyz and /metrics [SHOAL_HTTP_PORT]; default 8080.")
    var httpPort: Int?
    @Option(help: "trace, debug, info, notice, warning, error or critical [LOG_LEVEL]; default info.")
    var logLevel: String?
    @Option(help: "json or text [LOG_FORMAT]; default text.")
    var logFormat: String?
    @Option(help: "Comma-separated hosts AgentPools may name in organizationUrl; '*.domain' matches subdomains [SHOAL_ALLOWED_ORGANIZATION_HOSTS]; default dev.azure.com,*.visualstudio.com.")
    var allowedOrganizationHosts: String?
    @Option(help: "Also accept http:// organization URLs, for tests against a local simulator only [SHOAL_ALLOW_INSECURE_ORGANIZATION_URLS]; default false.")
    var allowInsecureOrganizationUrls: Bool?

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let settings: ControllerSettings
        do {
            let flags = ControllerSettings.Flags(
                kubeconfig: kubeconfig, namespace: namespace, leaderElection: leaderElection, leaderElectionNamespace: leaderElectionNamespace,
                leaseName: leaseName, identity: identity, httpHost: httpHost, httpPort: httpPort, logLevel: logLevel, logFormat: logFormat,
                allowedOrganizationHosts: allowedOrganizationHosts, allowInsecureOrganizationURLs: allowInsecureOrganizationUrls)
            let serviceAccountNamespace = try? String(contentsOfFile: "/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding: .utf8)
            settings = try ControllerSettings.resolve(
                flags: flags, environment: environment, serviceAccountNamespace: serviceAccountNamespace?.filter { !$0.isWhitespace },
                hostName: ProcessInfo.processInfo.hostName)
        } catch {
            RawOutput.writeAll(2, Array("pool-controller: invalid configuration: \(error)\n".utf8)[...])
            throw ExitCode(2)
        }
        let level = settings.logLevel
        let format = settings.logFormat
        LoggingSystem.bootstrap { label in format.handler(label: label, level: level) }
        let logger = Logger(label: "shoal.pool-controller")
        do {
            try await ControllerApplication(settings: settings, logger: logger).run()
        } catch let error as ControllerStartupError {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(2)
        }
    }
}
