import ArgumentParser
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Everything the entrypoint needs, built once from flags and the environment, then validated.
///
/// Flags win over environment variables. Every validation error names the variable (and its flag) and the bad
/// value, because this message is often the only thing a user sees in `kubectl logs`.
struct Settings: Sendable {
    /// `AZP_URL` / `--url`: the organization URL, exactly as given to `config.sh`.
    var url: String
    /// The validated form of ``url`` (used for the packages API).
    var organization: OrganizationURL
    /// `AZP_TOKEN` / `AZP_TOKEN_FILE` / `--token-file`; nil in controller mode (where setting one is an error).
    var token: TokenSource?
    /// `AZP_REGISTRATION` / `--registration`: who registers the agent (default `entrypoint`).
    var registration: RegistrationMode
    /// `AZP_REGISTRATION_DIR` / `--registration-dir` (default `/azp/registration`): the controller's identity files.
    var registrationDirectory: String
    /// `AZP_POOL` / `--pool` (default `Default`).
    var pool: String
    /// `AZP_AGENT_NAME` / `--agent-name` (default: host name).
    var agentName: String
    /// `AZP_WORK` / `--work` (default `_work`).
    var work: String
    /// `AZP_AGENT_DIR` / `--agent-dir` (default `/azp/agent`).
    var agentDirectory: String
    /// `AZP_IDLE_TIMEOUT` / `--idle-timeout` seconds; nil = off.
    var idleTimeout: Duration?
    /// `AZP_DRAIN_TIMEOUT` / `--drain-timeout` seconds; nil = let a job run as long as it takes.
    var drainTimeout: Duration?
    /// `AZP_REGISTRATION_TIMEOUT` / `--registration-timeout` seconds (default 300).
    var registrationTimeout: Duration
    /// `AZP_UNREGISTRATION_TIMEOUT` / `--unregistration-timeout` seconds (default 25).
    var unregistrationTimeout: Duration
    /// `AZP_TERMINATION_LOG` / `--termination-log` (default `/dev/termination-log`).
    var terminationLog: String
    /// `AZP_READY_FILE` / `--ready-file` (default `/tmp/azp-ready`).
    var readyFile: String
    /// `AZP_REQUIRE_DOCKER` / `--require-docker`.
    var requireDocker: Bool
    /// `AZP_DOCKER_SOCKET` / `--docker-socket` (default `/var/run/docker.sock`).
    var dockerSocket: String
    /// `AZP_AGENT_PLATFORM` / `--agent-platform`; nil = detect.
    var agentPlatform: String?
    /// `AZP_RELAUNCH_DELAY` / `--relaunch-delay` seconds (default 5).
    var relaunchDelay: Duration
    /// `LOG_FORMAT` / `--log-format`.
    var logFormat: LogFormat
    /// `LOG_LEVEL` / `--log-level`.
    var logLevel: String
    /// `AGENT_ALLOW_RUNASROOT` non-empty.
    var allowRunAsRoot: Bool
}

extension Settings {
    /// Builds settings from parsed flags (which win) and the environment; throws a message naming the variable.
    init(flags: EntrypointOptions, environment: [String: String], hostName: String) throws(SettingsError) {
        func pick(_ flag: String?, _ variable: String) -> String? {
            if let flag, !flag.isEmpty { return flag }
            if let value = environment[variable], !value.trimmingWhitespace().isEmpty { return value }
            return nil
        }
        func seconds(_ flag: String?, _ variable: String, option: String, default fallback: Double?) throws(SettingsError) -> Duration? {
            guard let text = pick(flag, variable) else { return fallback.map(Duration.fractionalSeconds) }
            guard let value = Double(text.trimmingWhitespace()), value.isFinite, value >= 0 else {
                throw SettingsError(description: "\(variable) (\(option)) must be a number of seconds >= 0, got '\(text)'")
            }
            return value == 0 ? nil : .fractionalSeconds(value)
        }
        func boolean(_ flag: Bool, _ variable: String) throws(SettingsError) -> Bool {
            if flag { return true }
            guard let text = environment[variable]?.trimmingWhitespace(), !text.isEmpty else { return false }
            switch text.lowercased() {
            case "true", "1", "yes": return true
            case "false", "0", "no": return false
            default: throw SettingsError(description: "\(variable) must be true or false, got '\(text)'")
            }
        }

        let names = EntrypointEnvironment.self
        guard let url = pick(flags.url, names.url) else {
            throw SettingsError(
                description: "\(names.url) (--url) is required: the organization URL, e.g. https://dev.azure.com/contoso")
        }
        do {
            self.organization = try OrganizationURL(url)
        } catch {
            throw SettingsError(description: "\(names.url) (--url) is invalid: \(error.description)")
        }
        self.url = url.trimmingWhitespace()

        let registration = try RegistrationSettings(
            modeFlag: flags.registration, directoryFlag: flags.registrationDirectory, tokenFileFlag: flags.tokenFile,
            environment: environment)
        self.registration = registration.mode
        self.registrationDirectory = registration.directory
        self.token = registration.token

        self.pool = pick(flags.pool, names.pool) ?? "Default"
        self.agentName = pick(flags.agentName, names.agentName) ?? hostName
        guard !agentName.contains(where: { $0 == "/" || $0 == "\\" || $0.isNewline }) else {
            throw SettingsError(description: "\(names.agentName) (--agent-name) must not contain slashes or newlines, got '\(agentName)'")
        }
        self.work = pick(flags.work, names.work) ?? "_work"
        self.agentDirectory = pick(flags.agentDirectory, names.agentDirectory) ?? "/azp/agent"
        self.idleTimeout = try seconds(flags.idleTimeout, names.idleTimeout, option: "--idle-timeout", default: nil)
        self.drainTimeout = try seconds(flags.drainTimeout, names.drainTimeout, option: "--drain-timeout", default: nil)
        self.registrationTimeout = try seconds(
            flags.registrationTimeout, names.registrationTimeout, option: "--registration-timeout", default: 300) ?? .zero
        self.unregistrationTimeout = try seconds(
            flags.unregistrationTimeout, names.unregistrationTimeout, option: "--unregistration-timeout", default: 25)
            ?? .zero
        self.terminationLog = pick(flags.terminationLog, names.terminationLog) ?? "/dev/termination-log"
        self.readyFile = pick(flags.readyFile, names.readyFile) ?? "/tmp/azp-ready"
        self.requireDocker = try boolean(flags.requireDocker, names.requireDocker)
        self.dockerSocket = pick(flags.dockerSocket, names.dockerSocket) ?? "/var/run/docker.sock"
        self.agentPlatform = pick(flags.agentPlatform, names.agentPlatform)
        self.relaunchDelay = try seconds(flags.relaunchDelay, names.relaunchDelay, option: "--relaunch-delay", default: 5) ?? .zero

        let format = (pick(flags.logFormat, names.logFormat) ?? "text").lowercased()
        guard let logFormat = LogFormat(rawValue: format) else {
            throw SettingsError(description: "\(names.logFormat) (--log-format) must be text or json, got '\(format)'")
        }
        self.logFormat = logFormat
        let level = (pick(flags.logLevel, names.logLevel) ?? "info").lowercased()
        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(level) else {
            throw SettingsError(
                description: "\(names.logLevel) (--log-level) must be trace, debug, info, notice, warning, error or critical, got '\(level)'")
        }
        self.logLevel = level
        self.allowRunAsRoot = !(environment[names.allowRunAsRoot] ?? "").isEmpty
    }
}

/// The command line; every option mirrors an environment variable, which it overrides.
struct EntrypointOptions: ParsableCommand {
    /// Help text shown by `--help`.
    static let configuration = CommandConfiguration(
        commandName: "agent-entrypoint",
        abstract: "Registers one Azure Pipelines agent, runs exactly one job, and always unregisters it.",
        discussion: """
            Every option can also be given as the environment variable in brackets; the flag wins.
            The token is read only from AZP_TOKEN or AZP_TOKEN_FILE (never a flag: argv is world-readable).
            With AZP_REGISTRATION=controller the pool controller registered the agent and mounted its identity
            files into AZP_REGISTRATION_DIR; no token may be set then, and the agent is never unregistered here.
            Exit codes: 0 job ran / clean drain or idle exit, 1 internal error, 2 invalid configuration,
            3 registration refused (token, pool, permission), 4 registration kept failing, 5 listener failed,
            6 unregistration failed, 7 agent download failed, 8 Docker required but unusable.
            At exit one JSON line is written to AZP_TERMINATION_LOG.
            """
    )

    /// See ``Settings/url``.
    @Option(name: .long, help: "Organization URL [AZP_URL], required.")
    var url: String?
    /// See ``Settings/token``.
    @Option(name: .long, help: "File holding the PAT [AZP_TOKEN_FILE]; or set AZP_TOKEN.")
    var tokenFile: String?
    /// See ``Settings/pool``.
    @Option(name: .long, help: "Agent pool [AZP_POOL], default Default.")
    var pool: String?
    /// See ``Settings/agentName``.
    @Option(name: .long, help: "Agent name [AZP_AGENT_NAME], default the host name.")
    var agentName: String?
    /// See ``Settings/work``.
    @Option(name: .long, help: "Work folder [AZP_WORK], default _work.")
    var work: String?
    /// See ``Settings/agentDirectory``.
    @Option(name: .customLong("agent-dir"), help: "Agent directory with config.sh [AZP_AGENT_DIR], default /azp/agent.")
    var agentDirectory: String?
    /// See ``Settings/idleTimeout``.
    @Option(name: .long, help: "Seconds without a job before unregistering and exiting 0 [AZP_IDLE_TIMEOUT], 0 = off.")
    var idleTimeout: String?
    /// See ``Settings/drainTimeout``.
    @Option(name: .long, help: "Seconds a job may run after SIGTERM before the signal is forwarded [AZP_DRAIN_TIMEOUT], 0 = no limit.")
    var drainTimeout: String?
    /// See ``Settings/registrationTimeout``.
    @Option(name: .long, help: "Seconds to retry transient registration failures [AZP_REGISTRATION_TIMEOUT], default 300.")
    var registrationTimeout: String?
    /// See ``Settings/unregistrationTimeout``.
    @Option(name: .long, help: "Seconds to retry unregistration [AZP_UNREGISTRATION_TIMEOUT], default 25.")
    var unregistrationTimeout: String?
    /// See ``Settings/terminationLog``.
    @Option(name: .long, help: "Termination message file [AZP_TERMINATION_LOG], default /dev/termination-log.")
    var terminationLog: String?
    /// See ``Settings/readyFile``.
    @Option(name: .long, help: "File created once the agent listens for jobs [AZP_READY_FILE], default /tmp/azp-ready.")
    var readyFile: String?
    /// See ``Settings/requireDocker``.
    @Flag(name: .long, help: "Fail (exit 8) unless the Docker socket is usable [AZP_REQUIRE_DOCKER=true].")
    var requireDocker = false
    /// See ``Settings/dockerSocket``.
    @Option(name: .long, help: "Docker socket to check [AZP_DOCKER_SOCKET], default /var/run/docker.sock.")
    var dockerSocket: String?
    /// See ``Settings/agentPlatform``.
    @Option(name: .long, help: "Agent package platform to download into an empty agent dir [AZP_AGENT_PLATFORM], default detected.")
    var agentPlatform: String?
    /// See ``Settings/relaunchDelay``.
    @Option(name: .long, help: "Seconds before relaunching a self-updated listener [AZP_RELAUNCH_DELAY], default 5.")
    var relaunchDelay: String?
    /// See ``Settings/registration``.
    @Option(name: .long, help: "Who registers the agent: entrypoint or controller [AZP_REGISTRATION], default entrypoint.")
    var registration: String?
    /// See ``Settings/registrationDirectory``.
    @Option(
        name: .customLong("registration-dir"),
        help: "Directory with the controller's .agent, .credentials, .credentials_rsaparams [AZP_REGISTRATION_DIR], default /azp/registration.")
    var registrationDirectory: String?
    /// See ``Settings/logFormat``.
    @Option(name: .long, help: "text or json [LOG_FORMAT], default text.")
    var logFormat: String?
    /// See ``Settings/logLevel``.
    @Option(name: .long, help: "Log level [LOG_LEVEL], default info.")
    var logLevel: String?

    /// Required by `ParsableCommand`; `main` parses and never calls `run()`.
    init() {}
}
