// agent-entrypoint: the composition root. Token hygiene first, then settings, logging, the reaper and signal
// handling, then one `AgentLifecycle` run; the exit code and termination message come from its result.
import ArgumentParser
import AsyncHTTPClient
import Logging
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// 1. Before anything else: nobody of our user may read our memory or /proc/<pid>/environ, and the token
//    variables are wiped from the environment block (their values stay only in `environment` below).
ProcessEnvironment.makeNonDumpable()
let environment = ProcessEnvironment.snapshot()
ProcessEnvironment.scrub(EntrypointEnvironment.secretVariables)
signal(SIGPIPE, SIG_IGN)

let clock = SystemClock()
let startedAt = Date()
let hostName = TerminationReport.hostName()

/// Writes the termination message for an exit before the lifecycle ran, prints `line`, and exits.
func exitEarly(_ code: EntrypointExitCode, reason: EntrypointExitReason, line: String, terminationLog: String) -> Never {
    OutputRelay.writeAll(STDERR_FILENO, Array("agent-entrypoint: \(line)\n".utf8)[...])
    let message = TerminationMessage(
        exitCode: code, reason: reason, message: line,
        agentName: environment[EntrypointEnvironment.agentName] ?? hostName,
        pool: environment[EntrypointEnvironment.pool] ?? "Default", unregistered: true,
        durations: .init(total: Date().timeIntervalSince(startedAt)),
        startedAt: WireTimestamp.format(startedAt), finishedAt: WireTimestamp.format(Date()))
    TerminationReport.write(message, to: terminationLog)
    exit(code.rawValue)
}

// 2. Flags and environment.
let options: EntrypointOptions
do {
    options = try EntrypointOptions.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    if EntrypointOptions.exitCode(for: error) == .success {
        print(EntrypointOptions.fullMessage(for: error))
        exit(0)
    }
    exitEarly(
        .invalidConfiguration, reason: .invalidConfiguration, line: EntrypointOptions.message(for: error),
        terminationLog: environment[EntrypointEnvironment.terminationLog] ?? "/dev/termination-log")
}
let defaultTerminationLog = options.terminationLog ?? environment[EntrypointEnvironment.terminationLog] ?? "/dev/termination-log"

let settings: Settings
do {
    settings = try Settings(flags: options, environment: environment, hostName: hostName)
} catch {
    exitEarly(.invalidConfiguration, reason: .invalidConfiguration, line: error.description, terminationLog: defaultTerminationLog)
}
if getuid() == 0 && !settings.allowRunAsRoot {
    exitEarly(
        .invalidConfiguration, reason: .invalidConfiguration,
        line: "running as root needs \(EntrypointEnvironment.allowRunAsRoot)=1 (the agent refuses root otherwise); "
            + "better, run the container as a non-root user",
        terminationLog: settings.terminationLog)
}

// 3. Logging.
let logLevel = Logger.Level(rawValue: settings.logLevel) ?? .info
LoggingSystem.bootstrap { label in settings.logFormat.handler(label: label, level: logLevel) }
let logger: Logger = {
    var logger = Logger(label: "agent-entrypoint")
    logger[metadataKey: "agent"] = "\(settings.agentName)"
    return logger
}()

// 4. Processes: one reaper owns wait(); orphans come to us even when we are not PID 1.
ProcessEnvironment.becomeChildSubreaper()
let reaper = ProcessReaper()
reaper.start()
let launcher = PosixProcessLauncher(reaper: reaper)
let signals = SignalWatcher.watch([SIGTERM, SIGINT])
let childEnvironment = ProcessEnvironment.childEnvironment(from: environment, secrets: EntrypointEnvironment.secretVariables)
logger.info("starting", metadata: ["pid": "\(getpid())", "uid": "\(getuid())", "agent_dir": "\(settings.agentDirectory)"])

/// Seconds rounded to milliseconds, so the termination message stays short.
func milliseconds(_ seconds: Double?) -> Double? {
    seconds.map { ($0 * 1000).rounded() / 1000 }
}

/// Builds the termination message from a lifecycle result.
func report(_ result: LifecycleResult) -> TerminationMessage {
    TerminationMessage(
        exitCode: result.exitCode, reason: result.reason, message: result.message, agentName: settings.agentName,
        agentId: result.agentId, pool: settings.pool, jobName: result.jobName, jobResult: result.jobResult,
        unregistered: result.unregistered,
        durations: .init(
            registration: milliseconds(result.registrationSeconds), idle: milliseconds(result.idleSeconds),
            job: milliseconds(result.jobSeconds), unregistration: milliseconds(result.unregistrationSeconds),
            total: milliseconds(Date().timeIntervalSince(startedAt)) ?? 0),
        startedAt: WireTimestamp.format(startedAt), finishedAt: WireTimestamp.format(Date()))
}

/// Logs, writes the termination message and exits.
func finish(_ result: LifecycleResult) -> Never {
    let message = report(result)
    if let problem = TerminationReport.write(message, to: settings.terminationLog) {
        logger.warning("termination message not written", metadata: ["error": "\(problem)"])
    }
    logger.info(
        "exiting",
        metadata: [
            "exit_code": "\(result.exitCode.rawValue)", "reason": "\(result.reason.rawValue)",
            "job.result": "\(result.jobResult ?? "none")", "orphans_reaped": "\(reaper.orphansReaped)",
            "peak_rss_kib": "\(ProcessEnvironment.peakResidentKiB() ?? 0)",
        ])
    exit(result.exitCode.rawValue)
}

// 5. Docker socket.
switch DockerAccess.check(socketPath: settings.dockerSocket) {
case .usable:
    logger.info("docker socket is usable", metadata: ["socket": "\(settings.dockerSocket)"])
case .absent where settings.requireDocker, .unusable where settings.requireDocker:
    let line = "\(EntrypointEnvironment.requireDocker)=true but the Docker socket \(settings.dockerSocket) is missing or not usable by uid \(getuid())"
    logger.error("docker required but unusable", metadata: ["socket": "\(settings.dockerSocket)"])
    finish(LifecycleResult(exitCode: .dockerUnavailable, reason: .dockerUnavailable, message: line, unregistered: true))
case .unusable(let reason):
    logger.warning("docker socket exists but is not usable by the agent's user", metadata: ["socket": "\(settings.dockerSocket)", "error": "\(reason)"])
case .absent:
    logger.debug("no docker socket", metadata: ["socket": "\(settings.dockerSocket)"])
}

// 6. The agent itself, downloaded when the image does not bake it in.
if !AgentInstaller.hasAgent(in: settings.agentDirectory) {
    let credentials: any CredentialSource
    switch settings.token {
    case .value(let token):
        do {
            credentials = try StaticTokenSource(token: token, origin: EntrypointEnvironment.token)
        } catch {
            exitEarly(.invalidConfiguration, reason: .invalidConfiguration, line: error.description, terminationLog: settings.terminationLog)
        }
    case .file(let path):
        credentials = TokenFileSource(path: path)
    }
    let client = AzureDevOpsClient(
        configuration: AzureDevOpsClientConfiguration(organization: settings.organization, userAgent: "shoal-agent-entrypoint"),
        credentials: credentials, logger: logger)
    let installer = AgentInstaller(api: client, http: .shared, launcher: launcher, logger: logger)
    do {
        try await installer.install(into: settings.agentDirectory, platform: settings.agentPlatform ?? AgentInstaller.detectPlatform())
    } catch {
        logger.error("agent download failed", metadata: ["error": "\(error)"])
        finish(LifecycleResult(exitCode: .agentDownloadFailed, reason: .agentDownloadFailed, message: error.description, unregistered: true))
    }
}

// 7. One registration, one job, one unregistration.
let scripts = AgentScripts(settings: settings, baseEnvironment: childEnvironment, launcher: launcher, logger: logger)
let lifecycle = AgentLifecycle(
    settings: settings, registrar: Registrar(
        scripts: scripts, clock: clock, logger: logger, removeTimeLimit: min(.seconds(10), settings.unregistrationTimeout)), launcher: launcher,
    listenerEnvironment: childEnvironment, clock: clock, logger: logger)
finish(await lifecycle.run(signals: signals))
