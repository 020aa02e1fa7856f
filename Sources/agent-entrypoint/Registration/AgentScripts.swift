import Logging
import Shared

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// How one `config.sh` call went, classified from its exit code and output.
enum ScriptOutcome: Sendable, Equatable {
    /// Exit 0.
    case succeeded
    /// The service refused: retrying with the same inputs cannot help.
    case refused(RefusalReason, detail: String)
    /// `remove` refused because the agent still holds a job: try again shortly.
    case busy(detail: String)
    /// Anything else (network, 5xx, throttling, unknown): retry until the deadline.
    case transient(detail: String)
}

/// Why the service refused a registration, with what the user should check.
enum RefusalReason: String, Sendable, Equatable {
    /// 401 / VS30063 / TF400813.
    case authentication
    /// The pool does not exist (or the token's user cannot see it).
    case poolNotFound
    /// The token's user lacks permission on the pool.
    case permission
    /// `config.sh` rejected an input (`Invalid configuration provided for ...`).
    case invalidInput

    /// One line telling the user what to check.
    func advice(settings: Settings) -> String {
        switch self {
        case .authentication:
            "the token was refused by \(settings.url): check that AZP_TOKEN / AZP_TOKEN_FILE holds a valid, unexpired PAT "
                + "with the Agent Pools (Read & manage) scope"
        case .poolNotFound:
            "agent pool '\(settings.pool)' was not found in \(settings.url): check AZP_POOL and that the token's user can see the pool"
        case .permission:
            "the token's user may not register agents in pool '\(settings.pool)': grant it the Administrator role on the pool "
                + "(or the Agent Pools (Read & manage) scope)"
        case .invalidInput:
            "config.sh rejected the configuration: check AZP_URL, AZP_POOL, AZP_AGENT_NAME and AZP_WORK"
        }
    }
}

/// Runs the agent's `config.sh` (configure and remove) with the token in `VSTS_AGENT_INPUT_TOKEN`.
///
/// Only before the listener starts: once a job may have run, the agent directory is the job's (its user owns
/// it) and `config.sh` could be anything, so unregistration goes through ``Unregistrar`` instead.
///
/// The token never appears on a command line (argv is world-readable in `/proc`); it is handed over in the
/// environment the agent itself reads and scrubs. `--auth pat` is always passed, because the agent's default
/// for http URLs and dotless hosts is not PAT.
struct AgentScripts: Sendable {
    /// The settings (URL, pool, agent, work, agent directory).
    let settings: Settings
    /// The environment every child gets (already scrubbed of secrets).
    let baseEnvironment: [String: String]
    /// Starts processes.
    let launcher: any ProcessLauncher
    /// Logger for lifecycle events.
    let logger: Logger

    /// `<agent dir>/config.sh`.
    var configScript: String { settings.agentDirectory + "/config.sh" }

    /// Registers the agent (`--replace`, so a leftover registration with the same name is taken over).
    func configure() async -> ScriptOutcome {
        await run([
            "--unattended", "--url", settings.url, "--auth", "pat", "--pool", settings.pool, "--agent", settings.agentName,
            "--work", settings.work, "--replace", "--acceptTeeEula",
        ])
    }

    /// Unregisters the agent and deletes its local configuration (a stale or half-finished one, before any job);
    /// `config.sh` is killed after `timeLimit`, so an unreachable service cannot hold the entrypoint past its
    /// pod's grace period.
    func remove(timeLimit: Duration) async -> ScriptOutcome {
        await run(["remove", "--unattended", "--auth", "pat"], timeLimit: timeLimit)
    }

    /// Whether `.agent` exists (the directory is configured).
    var isConfigured: Bool { FileManager.default.fileExists(atPath: settings.agentDirectory + "/.agent") }

    private func run(_ arguments: [String], timeLimit: Duration? = nil) async -> ScriptOutcome {
        let token: String
        do {
            token = try await currentToken()
        } catch {
            return .transient(detail: "\(error)")
        }
        var environment = baseEnvironment
        environment["VSTS_AGENT_INPUT_TOKEN"] = token
        let command = arguments.first == "remove" ? "remove" : "configure"
        logger.debug("starting config.sh", metadata: ["command": "\(command)"])
        let process: ChildProcess
        do {
            process = try launcher.launch(
                ProcessSpecification(
                    executable: configScript, arguments: arguments, environment: environment,
                    workingDirectory: settings.agentDirectory))
        } catch {
            return .transient(detail: error.description)
        }
        // A cancelled caller (a signal during registration) stops config.sh's whole process group; so does the
        // time limit.
        let (tail, status, timedOut) = await withTaskCancellationHandler {
            await withTaskGroup(of: ([String], ExitStatus)?.self) { group in
                group.addTask {
                    var tail: [String] = []
                    for await line in process.lines {
                        tail.append(line)
                        if tail.count > 40 { tail.removeFirst() }
                    }
                    return (tail, await process.exitStatus())
                }
                if let timeLimit {
                    group.addTask {
                        do { try await Task.sleep(for: timeLimit) } catch { return nil }
                        process.signalGroup(SIGKILL)
                        return nil
                    }
                }
                var fired = false
                while let next = await group.next() {
                    guard let (tail, status) = next else { fired = true; continue }
                    group.cancelAll()
                    return (tail, status, fired)
                }
                return ([], ExitStatus.exited(1), fired)
            }
        } onCancel: {
            process.signalGroup(SIGTERM)
        }
        if timedOut { logger.warning("config.sh did not finish in time; killed it", metadata: ["command": "\(command)"]) }
        let outcome = Self.classify(status: status, output: timedOut ? tail + ["config.sh \(command) timed out"] : tail)
        logger.debug("config.sh finished", metadata: ["command": "\(command)", "status": "\(status)"])
        return outcome
    }

    private func currentToken() async throws -> String {
        switch settings.token {
        case .value(let token): return token
        case .file(let path): return try await TokenFileSource(path: path).currentToken()
        case nil: throw CredentialError.empty(source: "\(EntrypointEnvironment.registration)=controller")
        }
    }

    /// Classifies a `config.sh` result from its exit status and last output lines.
    static func classify(status: ExitStatus, output: [String]) -> ScriptOutcome {
        if status == .exited(0) { return .succeeded }
        let text = output.joined(separator: "\n")
        let lower = text.lowercased()
        let detail = output.last(where: { !$0.trimmingWhitespace().isEmpty && !$0.hasPrefix("Failed: ") })
            ?? "config.sh ended with \(status)"
        func has(_ needles: String...) -> Bool { needles.contains { lower.contains($0.lowercased()) } }

        if has("currently running a job", "TaskAgentJobStillRunningException") { return .busy(detail: detail) }
        if has("VS30063", "not authorized", "TF400813", "Unauthorized", "Must not run with sudo") {
            return .refused(.authentication, detail: detail)
        }
        if has("Agent pool not found", "No agent pool found", "TaskAgentPoolNotFoundException") {
            return .refused(.poolNotFound, detail: detail)
        }
        if has("Access denied", "needs Manage permissions", "does not have permission", "AccessDeniedException") {
            return .refused(.permission, detail: detail)
        }
        if has("Invalid configuration provided for") { return .refused(.invalidInput, detail: detail) }
        return .transient(detail: detail)
    }
}
