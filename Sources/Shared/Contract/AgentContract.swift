#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The exit codes of `agent-entrypoint`: the contract between an agent pod and the pool controller.
///
/// The controller reads the container's exit code (and the termination message) to tell a finished job from a
/// broken pod. Codes are stable; new ones are only ever added.
package enum EntrypointExitCode: Int32, Sendable, CaseIterable, Codable {
    /// A job ran (whatever its result), or the agent drained or idled out cleanly and was unregistered.
    case success = 0
    /// An unexpected internal error of the entrypoint itself (a bug); the agent may still be registered.
    case internalError = 1
    /// Missing or invalid configuration (environment or flags); nothing was registered.
    case invalidConfiguration = 2
    /// Azure DevOps refused the registration: bad or expired token, pool not found, or no permission.
    case registrationRefused = 3
    /// Registration kept failing for transient reasons (network, 5xx, throttling) until its deadline.
    case registrationFailed = 4
    /// The listener crashed or exited with an error before a job ran; the agent was unregistered.
    case listenerFailed = 5
    /// Unregistration failed within its deadline and no job ran; the agent may still be registered and must be
    /// deleted. (When a job ran the code stays 0 and the termination message says `unregistered: false`.)
    case unregistrationFailed = 6
    /// The agent directory held no agent and downloading one from the organization failed.
    case agentDownloadFailed = 7
    /// `AZP_REQUIRE_DOCKER=true` but the Docker socket is missing or not usable by the agent's user.
    case dockerUnavailable = 8

    /// A short name used in logs and the termination message.
    package var name: String {
        switch self {
        case .success: "success"
        case .internalError: "internal-error"
        case .invalidConfiguration: "invalid-configuration"
        case .registrationRefused: "registration-refused"
        case .registrationFailed: "registration-failed"
        case .listenerFailed: "listener-failed"
        case .unregistrationFailed: "unregistration-failed"
        case .agentDownloadFailed: "agent-download-failed"
        case .dockerUnavailable: "docker-unavailable"
        }
    }
}

/// Why the entrypoint exited, as written in the termination message's `reason` field.
package enum EntrypointExitReason: String, Sendable, Codable, CaseIterable {
    /// The one job finished (any result) and the agent was unregistered.
    case jobCompleted = "job-completed"
    /// No job was assigned within `AZP_IDLE_TIMEOUT`.
    case idleTimeout = "idle-timeout"
    /// SIGTERM/SIGINT arrived while no job ran; the listener was stopped.
    case stoppedWhileIdle = "stopped-while-idle"
    /// SIGTERM/SIGINT arrived during a job; the job was allowed to finish (or forwarded the signal).
    case drained = "drained"
    /// Configuration was missing or invalid.
    case invalidConfiguration = "invalid-configuration"
    /// Azure DevOps refused the registration.
    case registrationRefused = "registration-refused"
    /// Registration did not succeed before its deadline.
    case registrationFailed = "registration-failed"
    /// The listener exited with an error or was killed.
    case listenerFailed = "listener-failed"
    /// The agent could not be downloaded.
    case agentDownloadFailed = "agent-download-failed"
    /// The Docker socket was required but unusable.
    case dockerUnavailable = "docker-unavailable"
    /// Anything else.
    case internalError = "internal-error"
}

/// The one JSON line `agent-entrypoint` writes to `AZP_TERMINATION_LOG` (Kubernetes' termination message).
///
/// Kept well under the 4096-byte limit Kubernetes applies to termination messages. Optional fields are
/// omitted when unknown. Durations are seconds with millisecond precision.
package struct TerminationMessage: Codable, Sendable, Equatable {
    /// Schema version of this message; bumped only on incompatible changes.
    package var version: Int
    /// The container exit code (an ``EntrypointExitCode`` raw value).
    package var exitCode: Int32
    /// Why the entrypoint exited.
    package var reason: EntrypointExitReason
    /// One human-readable line, e.g. what to check after a refused registration.
    package var message: String?
    /// The agent's name in the pool.
    package var agentName: String
    /// The agent id the service assigned, once registered.
    package var agentId: Int?
    /// The pool name.
    package var pool: String
    /// Display name of the job the agent ran, if any.
    package var jobName: String?
    /// The job's result as the listener printed it (`Succeeded`, `Failed`, `Canceled`, ...), if a job finished.
    package var jobResult: String?
    /// Whether the registration was removed (or found already gone) before exit.
    package var unregistered: Bool
    /// Time phases took.
    package var durations: Durations
    /// When the entrypoint started (`WireTimestamp` format).
    package var startedAt: String
    /// When it wrote this message (`WireTimestamp` format).
    package var finishedAt: String

    /// Seconds spent per phase; `nil` for phases that did not happen.
    package struct Durations: Codable, Sendable, Equatable {
        /// From start until the agent was registered (`config.sh`), or its controller-made identity was in place.
        package var registration: Double?
        /// From the listener's start until a job started (or until exit when none did).
        package var idle: Double?
        /// From "Running job" until "completed with result".
        package var job: Double?
        /// Time spent deleting the registration over REST (all attempts).
        package var unregistration: Double?
        /// From start to exit.
        package var total: Double

        /// Builds durations; every phase is optional except the total.
        package init(registration: Double? = nil, idle: Double? = nil, job: Double? = nil, unregistration: Double? = nil, total: Double) {
            self.registration = registration
            self.idle = idle
            self.job = job
            self.unregistration = unregistration
            self.total = total
        }
    }

    /// The schema version this code writes.
    package static let currentVersion = 1

    /// Builds a message; `version` is always ``currentVersion``.
    package init(
        exitCode: EntrypointExitCode, reason: EntrypointExitReason, message: String? = nil, agentName: String,
        agentId: Int? = nil, pool: String, jobName: String? = nil, jobResult: String? = nil, unregistered: Bool,
        durations: Durations, startedAt: String, finishedAt: String
    ) {
        self.version = Self.currentVersion
        self.exitCode = exitCode.rawValue
        self.reason = reason
        self.message = message
        self.agentName = agentName
        self.agentId = agentId
        self.pool = pool
        self.jobName = jobName
        self.jobResult = jobResult
        self.unregistered = unregistered
        self.durations = durations
        self.startedAt = startedAt
        self.finishedAt = finishedAt
    }

    /// The message as one JSON line (sorted keys, no trailing newline).
    package func jsonLine() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    /// Parses a message the entrypoint wrote (the controller reads `terminated.message`).
    package static func parse(_ text: String) throws -> TerminationMessage {
        try JSONDecoder().decode(TerminationMessage.self, from: Data(text.utf8))
    }
}

/// The environment variables `agent-entrypoint` reads; every one also has a flag (see `--help`).
///
/// The first five are compatible with Microsoft's documented Docker agent (`start.sh`).
package enum EntrypointEnvironment {
    /// Organization URL, e.g. `https://dev.azure.com/contoso` (required).
    package static let url = "AZP_URL"
    /// Personal access token (this or `AZP_TOKEN_FILE` is required). Removed from the environment at start.
    package static let token = "AZP_TOKEN"
    /// File holding the PAT; re-read for every use (`config.sh`, the REST delete) so a rotated Secret is picked up.
    package static let tokenFile = "AZP_TOKEN_FILE"
    /// Agent pool name (default `Default`).
    package static let pool = "AZP_POOL"
    /// Agent name (default: the host name, i.e. the pod name).
    package static let agentName = "AZP_AGENT_NAME"
    /// The agent's work folder (default `_work`).
    package static let work = "AZP_WORK"
    /// The agent directory holding `config.sh` and `bin/Agent.Listener` (default `/azp/agent`).
    package static let agentDirectory = "AZP_AGENT_DIR"
    /// Seconds without a job before the agent unregisters and exits 0 (default 0 = off).
    package static let idleTimeout = "AZP_IDLE_TIMEOUT"
    /// Seconds a running job may take after SIGTERM before the signal is forwarded (default 0 = wait forever).
    package static let drainTimeout = "AZP_DRAIN_TIMEOUT"
    /// Seconds registration keeps retrying transient failures (default 300).
    package static let registrationTimeout = "AZP_REGISTRATION_TIMEOUT"
    /// Seconds unregistration keeps retrying (default 25, inside the default 30 s grace period).
    package static let unregistrationTimeout = "AZP_UNREGISTRATION_TIMEOUT"
    /// Where the termination message goes (default `/dev/termination-log`).
    package static let terminationLog = "AZP_TERMINATION_LOG"
    /// File created once the listener is listening, for an exec readiness probe (default `/tmp/azp-ready`).
    package static let readyFile = "AZP_READY_FILE"
    /// `true` to fail (exit 8) when the Docker socket is missing or unusable.
    package static let requireDocker = "AZP_REQUIRE_DOCKER"
    /// The Docker socket to check (default `/var/run/docker.sock`).
    package static let dockerSocket = "AZP_DOCKER_SOCKET"
    /// Agent package platform to download when the agent directory is empty (default: detected, e.g. `linux-x64`).
    package static let agentPlatform = "AZP_AGENT_PLATFORM"
    /// Seconds to wait before relaunching a listener that exited for a self-update (default 5, like `run.sh`).
    package static let relaunchDelay = "AZP_RELAUNCH_DELAY"
    /// `json` for JSON log lines, anything else for plain text.
    package static let logFormat = "LOG_FORMAT"
    /// swift-log level: `trace`, `debug`, `info` (default), `notice`, `warning`, `error`, `critical`.
    package static let logLevel = "LOG_LEVEL"
    /// Non-empty allows running as root; passed through to the agent (its scripts refuse root otherwise).
    package static let allowRunAsRoot = "AGENT_ALLOW_RUNASROOT"
    /// Who registers the agent: `entrypoint` (default: `config.sh` with the PAT) or `controller` (the pool
    /// controller registered it and mounted its identity files; the pod holds no credential).
    package static let registration = "AZP_REGISTRATION"
    /// With `AZP_REGISTRATION=controller`: the directory holding `.agent`, `.credentials` and
    /// `.credentials_rsaparams` (default `/azp/registration`, a Secret volume).
    package static let registrationDirectory = "AZP_REGISTRATION_DIR"

    /// Variables that may hold or point to the secret; none of them reaches the listener or a job.
    package static let secretVariables = [token, tokenFile, "VSTS_AGENT_INPUT_TOKEN", "VSTS_AGENT_INPUT_PASSWORD"]
}

/// Labels and annotations the controller puts on agent pods and the entrypoint's environment mirrors.
package enum AgentPodLabels {
    /// `app.kubernetes.io/managed-by: shoal` on every pod the controller creates.
    package static let managedBy = "app.kubernetes.io/managed-by"
    /// The value of ``managedBy``.
    package static let managedByValue = "shoal"
    /// The name of the AgentPool (in the pod's namespace) that created the pod.
    package static let pool = "shoal.dev/pool"
    /// The agent name, equal to the pod name and `AZP_AGENT_NAME`.
    package static let agentName = "shoal.dev/agent-name"
    /// `controller` on pods whose agent the controller registered (``RegistrationMode/controller``).
    package static let registration = "shoal.dev/registration"
    /// The label a Secret needs before an AgentPool may name it as `tokenSecretRef` (value `"true"`).
    package static let tokenSecret = "shoal.dev/token"
}

/// Who registers a pod's agent with Azure DevOps: the contract value of `AZP_REGISTRATION` and `spec.registration`.
package enum RegistrationMode: String, Sendable, Codable, CaseIterable {
    /// The entrypoint runs `config.sh` with the PAT before the job and deletes the registration over REST after it.
    case entrypoint
    /// The controller registers the agent with a key pair it makes, and mounts the agent's identity files into
    /// the pod; the pod holds no PAT and never unregisters (the controller deletes the registration).
    case controller

    /// The default registration directory in controller mode.
    package static let defaultRegistrationDirectory = "/azp/registration"
}
