// agent-entrypoint: the composition root. Token hygiene first, then settings, logging, the reaper and signal
// handling, then one `AgentLifecycle` run; the exit code and termination message come from its result.
// Entrypoint mode builds the REST client for the unregistration (the PAT stays in this process's memory);
// controller mode installs the identity the pool controller mounted and builds no client at all.
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

/// Whether the pool controller owns the registration (`AZP_REGISTRATION=controller`), as far as the raw
/// environment tells before the settings are validated; such a pod never unregisters.
let controllerOwnsRegistration =
    environment[EntrypointEnvironment.registration]?.trimmingWhitespace().lowercased() == RegistrationMode.controller.rawValue

/// Writes the termination message for an exit before the lifecycle ran, prints `line`, and exits.
func exitEarly(_ code: EntrypointExitCode, reason: EntrypointExitReason, line: String, terminationLog: String) -> Never {
    OutputRelay.writeAll(STDERR_FILENO, Array("agent-entrypoint: \(line)\n".utf8)[...])
    let message = TerminationMessage(
        exitCode: code, reason: reason, message: line,
        agentName: environment[EntrypointEnvironment.agentName] ?? hostName,
        pool: environment[EntrypointEnvironment.pool] ?? "Default", unregistered: !controllerOwnsRegistration,
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

// In controller mode the identity files must be there before anything else happens (exit 2 naming the file).
let controllerIdentity: ControllerIdentity?
if settings.registration == .controller {
    do {
        controllerIdentity = try ControllerIdentity.load(from: settings.registrationDirectory)
    } catch {
        exitEarly(.invalidConfiguration, reason: .invalidConfiguration, line: error.description, terminationLog: settings.terminationLog)
    }
} else {
    controllerIdentity = nil
}

// 3. Logging.
let logLevel = Logger.Level(rawValue: settings.logLevel) ?? .info
LoggingSystem.bootstrap { label in settings.logFormat.handler(label: label, level: logLevel) }
let logger: Logger = {
    var logger = Logger(label: "agent-entrypoint")
    logger[metadataKey: "agent"] = "\(controllerIdentity?.agentName ?? settings.agentName)"
    return logger
}()

// 4. Processes: one reaper owns wait(); orphans come to us even when we are not PID 1.
ProcessEnvironment.becomeChildSubreaper()
let reaper = ProcessReaper()
reaper.start()
let launcher = PosixProcessLauncher(reaper: reaper)
let signals = SignalWatcher.watch([SIGTERM, SIGINT])
let childEnvironment = ProcessEnvironment.childEnvironment(from: environment, secrets: EntrypointEnvironment.secretVariables)
logger.info(
    "starting",
    metadata: [
        "pid": "\(getpid())", "uid": "\(getuid())", "agent_dir": "\(settings.agentDirectory)",
        "registration": "\(settings.registration.rawValue)",
    ])

/// Seconds rounded to milliseconds, so the termination message stays short.
func milliseconds(_ seconds: Double?) -> Double? {
    seconds.map { ($0 * 1000).rounded() / 1000 }
}

/// Builds the termination message from a lifecycle result.
func report(_ result: LifecycleResult) -> TerminationMessage {
    TerminationMessage(
        exitCode: result.exitCode, reason: result.reason, message: result.message,
        agentName: result.agentName ?? controllerIdentity?.agentName ?? settings.agentName,
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
    finish(LifecycleResult(
        exitCode: .dockerUnavailable, reason: .dockerUnavailable, message: line, agentId: controllerIdentity?.agentId,
        unregistered: controllerIdentity == nil))
case .unusable(let reason):
    logger.warning("docker socket exists but is not usable by the agent's user", metadata: ["socket": "\(settings.dockerSocket)", "error": "\(reason)"])
case .absent:
    logger.debug("no docker socket", metadata: ["socket": "\(settings.dockerSocket)"])
}

// 6. The credential and the REST client (entrypoint mode only): the PAT from memory, or re-read from
//    AZP_TOKEN_FILE for rotation. Controller mode has no token and makes no call of its own.
let credentials: (any CredentialSource)?
switch settings.token {
case .value(let token):
    do {
        credentials = try StaticTokenSource(token: token, origin: EntrypointEnvironment.token)
    } catch {
        exitEarly(.invalidConfiguration, reason: .invalidConfiguration, line: error.description, terminationLog: settings.terminationLog)
    }
case .file(let path):
    credentials = TokenFileSource(path: path)
case nil:
    credentials = nil
}

/// The client for the registration's id and its deletion. One attempt per call: the registrar's and
/// unregistrar's loops own retries and deadlines, and cut off every call at its time limit.
let api: AzureDevOpsClient? = credentials.map { credentials in
    AzureDevOpsClient(
        configuration: AzureDevOpsClientConfiguration(
            organization: settings.organization, readTimeout: .seconds(20), retry: RetryPolicy(maxAttempts: 1),
            userAgent: "shoal-agent-entrypoint"),
        credentials: credentials, logger: logger)
}

// 7. The agent itself, downloaded when the image does not bake it in.
if !AgentInstaller.hasAgent(in: settings.agentDirectory) {
    guard let credentials else {
        let line = "the agent directory \(settings.agentDirectory) (\(EntrypointEnvironment.agentDirectory)) holds no agent "
            + "(config.sh and bin/Agent.Listener); with \(EntrypointEnvironment.registration)=controller the pod has no token "
            + "for the organization's packages API, so the agent cannot be downloaded: bake it into the image"
        logger.error("no agent in the agent directory", metadata: ["agent_dir": "\(settings.agentDirectory)"])
        finish(LifecycleResult(
            exitCode: .agentDownloadFailed, reason: .agentDownloadFailed, message: line, agentId: controllerIdentity?.agentId,
            unregistered: false))
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

// 8. One registration (or the controller's), one job, one unregistration (or none: the controller's).
let role: RegistrationRole
if let controllerIdentity {
    do {
        try controllerIdentity.install(into: settings.agentDirectory)
    } catch {
        logger.error("cannot install the controller's identity files", metadata: ["error": "\(error)"])
        finish(LifecycleResult(
            exitCode: .invalidConfiguration, reason: .invalidConfiguration,
            message: "\(error.description) (\(EntrypointEnvironment.agentDirectory) must be writable by uid \(getuid()))",
            agentId: controllerIdentity.agentId, unregistered: false))
    }
    logger.info(
        "installed the controller's identity files",
        metadata: ["agent.id": "\(controllerIdentity.agentId.map(String.init) ?? "unknown")", "from": "\(settings.registrationDirectory)"])
    role = .controller(controllerIdentity)
} else if let api {
    let registry = RESTAgentRegistry(api: api)
    let scripts = AgentScripts(settings: settings, baseEnvironment: childEnvironment, launcher: launcher, logger: logger)
    role = .entrypoint(
        Registrar(
            scripts: scripts, registry: registry, clock: clock, logger: logger,
            removeTimeLimit: min(.seconds(10), settings.unregistrationTimeout)),
        Unregistrar(registry: registry, clock: clock, logger: logger))
} else {
    // Settings guarantee a token in entrypoint mode.
    finish(LifecycleResult(exitCode: .internalError, reason: .internalError, message: "no token in entrypoint mode", unregistered: false))
}
let lifecycle = AgentLifecycle(
    settings: settings, role: role, launcher: launcher, listenerEnvironment: childEnvironment, clock: clock,
    logger: logger, leftovers: LeftoverProcesses(logger: logger, clock: clock),
    idleRemovalTimeLimit: min(.seconds(10), settings.unregistrationTimeout))
finish(await lifecycle.run(signals: signals))
