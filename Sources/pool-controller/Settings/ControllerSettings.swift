import Logging
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Everything `pool-controller run` is configured with, from flags first and the environment second, validated once.
struct ControllerSettings: Sendable, Equatable {
    /// `--kubeconfig` / `KUBECONFIG`: a kubeconfig file; nil means in-cluster (the ServiceAccount).
    var kubeconfig: String?
    /// `--namespace` / `SHOAL_WATCH_NAMESPACE`: only AgentPools in this namespace; nil for all namespaces.
    var watchNamespace: String?
    /// `--leader-election` / `SHOAL_LEADER_ELECTION` (default true): only the Lease holder acts.
    var leaderElection: Bool
    /// `--leader-election-namespace` / `SHOAL_LEADER_ELECTION_NAMESPACE`: the Lease's namespace (default
    /// `POD_NAMESPACE`, else the ServiceAccount's, else `shoal-system`).
    var leaderElectionNamespace: String
    /// `--lease-name` / `SHOAL_LEASE_NAME` (default `shoal-pool-controller`).
    var leaseName: String
    /// `--identity` / `POD_NAME`, else the host name: this replica in the Lease and in Events.
    var identity: String
    /// `--http-host` / `SHOAL_HTTP_HOST` (default 0.0.0.0): where `/healthz`, `/readyz` and `/metrics` listen.
    var httpHost: String
    /// `--http-port` / `SHOAL_HTTP_PORT` (default 8080; 0 picks a free port).
    var httpPort: Int
    /// `--log-level` / `LOG_LEVEL` (default info).
    var logLevel: Logger.Level
    /// `--log-format` / `LOG_FORMAT`: `json` or `text` (default text).
    var logFormat: LogFormat
    /// The original project's variables, when set.
    var legacy: LegacyConfiguration?
    /// `--allowed-organization-hosts` / `SHOAL_ALLOWED_ORGANIZATION_HOSTS` (default `dev.azure.com,*.visualstudio.com`)
    /// and `--allow-insecure-organization-urls` / `SHOAL_ALLOW_INSECURE_ORGANIZATION_URLS` (default false, for
    /// tests against a local simulator): which organizations AgentPools may name.
    var organizationPolicy = OrganizationPolicy()

    /// What can be given on the command line; nil means "not given".
    struct Flags: Sendable {
        var kubeconfig: String?
        var namespace: String?
        var leaderElection: Bool?
        var leaderElectionNamespace: String?
        var leaseName: String?
        var identity: String?
        var httpHost: String?
        var httpPort: Int?
        var logLevel: String?
        var logFormat: String?
        var allowedOrganizationHosts: String?
        var allowInsecureOrganizationURLs: Bool?
    }

    /// Resolves flags over `environment` over defaults, naming the flag and variable of any bad value.
    static func resolve(flags: Flags, environment: [String: String], serviceAccountNamespace: String? = nil, hostName: String = "pool-controller") throws(SettingsError) -> ControllerSettings {
        func pick(_ flag: String?, _ variable: String) -> String? {
            if let flag, !flag.isEmpty { return flag }
            if let value = environment[variable], !value.isEmpty { return value }
            return nil
        }
        func boolean(_ flag: Bool?, _ variable: String, default value: Bool) throws(SettingsError) -> Bool {
            if let flag { return flag }
            guard let text = environment[variable], !text.isEmpty else { return value }
            switch text.lowercased() {
            case "true", "1", "yes": return true
            case "false", "0", "no": return false
            default: throw SettingsError(key: variable, problem: "'\(text)' is not true or false")
            }
        }
        let leaderElection = try boolean(flags.leaderElection, "SHOAL_LEADER_ELECTION", default: true)
        let hosts = try pick(flags.allowedOrganizationHosts, "SHOAL_ALLOWED_ORGANIZATION_HOSTS").map(OrganizationPolicy.parse)
        let policy = OrganizationPolicy(
            allowedHosts: hosts ?? OrganizationPolicy.defaultAllowedHosts,
            allowInsecure: try boolean(flags.allowInsecureOrganizationURLs, "SHOAL_ALLOW_INSECURE_ORGANIZATION_URLS", default: false))
        let port: Int
        if let flagPort = flags.httpPort {
            port = flagPort
        } else if let text = environment["SHOAL_HTTP_PORT"], !text.isEmpty {
            guard let value = Int(text) else { throw SettingsError(key: "SHOAL_HTTP_PORT", problem: "'\(text)' is not a port number") }
            port = value
        } else {
            port = 8080
        }
        guard (0...65535).contains(port) else { throw SettingsError(key: "--http-port / SHOAL_HTTP_PORT", problem: "\(port) is not between 0 and 65535") }

        let levelText = pick(flags.logLevel, "LOG_LEVEL") ?? "info"
        guard let level = Logger.Level(rawValue: levelText.lowercased()) else {
            throw SettingsError(key: "--log-level / LOG_LEVEL", problem: "'\(levelText)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        let formatText = pick(flags.logFormat, "LOG_FORMAT") ?? "text"
        guard let format = LogFormat(rawValue: formatText.lowercased()) else {
            throw SettingsError(key: "--log-format / LOG_FORMAT", problem: "'\(formatText)' is not json or text")
        }
        let namespace = pick(flags.namespace, "SHOAL_WATCH_NAMESPACE")
        if let namespace, !PoolSpec.isDNSLabel(namespace) {
            throw SettingsError(key: "--namespace / SHOAL_WATCH_NAMESPACE", problem: "'\(namespace)' is not a namespace name")
        }
        let leaseNamespace = pick(flags.leaderElectionNamespace, "SHOAL_LEADER_ELECTION_NAMESPACE") ?? environment["POD_NAMESPACE"].flatMap { $0.isEmpty ? nil : $0 }
            ?? serviceAccountNamespace ?? "shoal-system"
        guard PoolSpec.isDNSLabel(leaseNamespace) else {
            throw SettingsError(key: "--leader-election-namespace / SHOAL_LEADER_ELECTION_NAMESPACE", problem: "'\(leaseNamespace)' is not a namespace name")
        }
        let leaseName = pick(flags.leaseName, "SHOAL_LEASE_NAME") ?? "shoal-pool-controller"
        guard PoolSpec.isDNSLabel(leaseName) else { throw SettingsError(key: "--lease-name / SHOAL_LEASE_NAME", problem: "'\(leaseName)' is not a valid Lease name") }

        return ControllerSettings(
            kubeconfig: pick(flags.kubeconfig, "KUBECONFIG"), watchNamespace: namespace, leaderElection: leaderElection,
            leaderElectionNamespace: leaseNamespace, leaseName: leaseName, identity: pick(flags.identity, "POD_NAME") ?? hostName,
            httpHost: pick(flags.httpHost, "SHOAL_HTTP_HOST") ?? "0.0.0.0", httpPort: port, logLevel: level, logFormat: format,
            legacy: try LegacyConfiguration.fromEnvironment(environment), organizationPolicy: policy)
    }
}
