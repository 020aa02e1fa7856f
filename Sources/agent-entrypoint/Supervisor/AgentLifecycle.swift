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

/// What the lifecycle ended with; `main` turns it into the exit code and the termination message.
struct LifecycleResult: Sendable {
    /// The exit code.
    var exitCode: EntrypointExitCode
    /// Why.
    var reason: EntrypointExitReason
    /// One line for people (what to check).
    var message: String?
    /// The agent id, once registered.
    var agentId: Int?
    /// The agent's name when it differs from the settings' (controller mode: from the mounted `.agent`).
    var agentName: String?
    /// The job's display name, if one started.
    var jobName: String?
    /// The job's result, if it finished.
    var jobResult: String?
    /// Whether the registration is gone.
    var unregistered: Bool
    /// Phase durations in seconds (total is filled in by `main`).
    var registrationSeconds: Double?
    /// Listener start until job start (or exit).
    var idleSeconds: Double?
    /// Job start until job end.
    var jobSeconds: Double?
    /// Time spent unregistering.
    var unregistrationSeconds: Double?
}

/// Everything the lifecycle loop reacts to, posted by its child tasks.
private enum LifecycleEvent: Sendable {
    case signal(Int32)
    case registrationFinished(RegistrationResult)
    case line(String, generation: Int)
    case outputEnded(generation: Int)
    case listenerExited(ExitStatus, generation: Int)
    case exitGraceElapsed(generation: Int)
    case killDeadline(generation: Int)
    case idleTimeout
    case drainTimeout
}

/// Who registered the agent, and therefore who removes the registration.
enum RegistrationRole: Sendable {
    /// `config.sh` registers with the PAT before the listener starts; after the listener's last instance the
    /// entrypoint deletes the registration over REST (never through the agent's scripts, which a job can rewrite).
    case entrypoint(Registrar, Unregistrar)
    /// The pool controller registered the agent and mounted its identity (already installed in the agent
    /// directory); the pod holds no token and never unregisters.
    case controller(ControllerIdentity)
}

/// What the entrypoint deletes after the listener's last instance.
private enum UnregistrationTarget: Sendable {
    /// The agent whose ids were learned right after registration (kept in memory).
    case agent(RegisteredAgent)
    /// `config.sh` registered something whose id is unknown (no job ran): look it up by name over REST.
    case byName
    /// Nothing was registered.
    case nothing
    /// The controller owns the registration.
    case controller
}

/// One registration, exactly one job, always unregistered: the entrypoint's state machine.
///
/// All decisions happen in one loop over one event stream (signals, listener lines, exits, timers), so there is
/// no shared mutable state between tasks. The listener runs as `bin/Agent.Listener run --once` in its own
/// process group; signals go to that group. After its last instance, every process the job left behind is
/// killed before the token is used again.
struct AgentLifecycle: Sendable {
    /// Settings.
    let settings: Settings
    /// Registration and unregistration (entrypoint mode), or the controller's identity.
    let role: RegistrationRole
    /// Starts the listener.
    let launcher: any ProcessLauncher
    /// Environment for the listener (no secrets).
    let listenerEnvironment: [String: String]
    /// Time.
    let clock: any ShoalClock
    /// Lifecycle logger.
    let logger: Logger
    /// Kills what the job left behind.
    let leftovers: LeftoverProcesses
    /// How long a stopping listener gets before SIGKILL.
    var stopGracePeriod: Duration = .seconds(4)
    /// How many self-update relaunches are allowed.
    var maximumRelaunches = 5
    /// The longest the busy-safe removal before stopping an idle listener may take (at most 10 s, and never
    /// more than the whole unregistration budget, so stopping stays within the pod's grace period).
    var idleRemovalTimeLimit: Duration = .seconds(10)

    /// Runs registration, the listener and unregistration; returns how it all ended.
    func run(signals: AsyncStream<Int32>) async -> LifecycleResult {
        let (events, sink) = AsyncStream<LifecycleEvent>.makeStream()
        return await withTaskGroup(of: Void.self, returning: LifecycleResult.self) { group in
            group.addTask {
                for await number in signals { sink.yield(.signal(number)) }
            }
            var iterator = events.makeAsyncIterator()
            let result = await runPhases(group: &group, events: &iterator, sink: sink)
            group.cancelAll()
            return result
        }
    }

    private func runPhases(
        group: inout TaskGroup<Void>, events: inout AsyncStream<LifecycleEvent>.Iterator,
        sink: AsyncStream<LifecycleEvent>.Continuation
    ) async -> LifecycleResult {
        var result = LifecycleResult(exitCode: .success, reason: .jobCompleted, unregistered: false)
        let registrar: Registrar
        switch role {
        case .controller(let identity):
            result.agentId = identity.agentId
            result.agentName = identity.agentName
            logger.info(
                "using the registration the controller made; this pod never unregisters",
                metadata: ["agent.id": "\(identity.agentId.map(String.init) ?? "unknown")", "pool": "\(settings.pool)"])
            return await runListener(result: result, agent: nil, group: &group, events: &events, sink: sink)
        case .entrypoint(let entrypointRegistrar, _):
            registrar = entrypointRegistrar
        }

        // Phase 1: register (a signal cancels it; whatever got registered is removed below).
        let registrationStart = clock.monotonicNow()
        logger.info("registering agent", metadata: ["pool": "\(settings.pool)", "agent": "\(settings.agentName)", "url": "\(settings.url)"])
        var stopRequested = false
        let registration = await withTaskGroup(of: Void.self, returning: RegistrationResult.self) { inner in
            let timeout = settings.registrationTimeout
            inner.addTask { [registrar] in
                sink.yield(.registrationFinished(await registrar.register(timeout: timeout)))
            }
            while let event = await events.next() {
                switch event {
                case .signal(let number):
                    logger.notice("signal during registration; stopping", metadata: ["signal": "\(SignalWatcher.name(number))"])
                    stopRequested = true
                    inner.cancelAll()
                case .registrationFinished(let outcome):
                    return outcome
                default:
                    continue
                }
            }
            return .cancelled
        }
        result.registrationSeconds = (clock.monotonicNow() - registrationStart).seconds
        // No job has run yet: `.agent` still says what `config.sh` left, so it may decide whether to look.
        let leftBehind: UnregistrationTarget = registrar.scripts.isConfigured ? .byName : .nothing

        switch registration {
        case .registered(let agent):
            result.agentId = agent.agentID
            logger.info(
                "agent registered", metadata: ["agent.id": "\(agent.agentID)", "pool": "\(settings.pool)", "pool.id": "\(agent.poolID)"])
            if stopRequested {
                result.reason = .stoppedWhileIdle
                return await finishUnregistering(result, target: .agent(agent))
            }
            // Phase 2: the listener, relaunched after a self-update, until it exits for good.
            return await runListener(result: result, agent: agent, group: &group, events: &events, sink: sink)
        case .refused(let reason, let detail):
            let advice = reason.advice(settings: settings)
            logger.error("registration refused", metadata: ["reason": "\(reason.rawValue)", "error": "\(detail)", "check": "\(advice)"])
            result.exitCode = .registrationRefused
            result.reason = .registrationRefused
            result.message = "\(advice) (\(detail))"
            result.unregistered = true
            return result
        case .gaveUp(let detail):
            logger.error("registration kept failing until its deadline", metadata: ["error": "\(detail)"])
            result.exitCode = .registrationFailed
            result.reason = .registrationFailed
            result.message = "registration did not succeed within \(settings.registrationTimeout.seconds) s: \(detail)"
            return await finishUnregistering(result, target: leftBehind)
        case .unidentified(let detail) where !stopRequested:
            logger.error("the agent registered, but its id could not be read from Azure DevOps", metadata: ["error": "\(detail)"])
            result.exitCode = .registrationFailed
            result.reason = .registrationFailed
            result.message = "the agent registered, but its id could not be read within \(settings.registrationTimeout.seconds) s: \(detail)"
            return await finishUnregistering(result, target: .byName)
        case .unidentified:
            result.reason = .stoppedWhileIdle
            return await finishUnregistering(result, target: .byName)
        case .cancelled:
            result.reason = .stoppedWhileIdle
            return await finishUnregistering(result, target: leftBehind)
        }
    }

    /// Phase 2 and 3: the listener until its last instance ended, then the leftovers, then unregistration.
    private func runListener(
        result initial: LifecycleResult, agent: RegisteredAgent?, group: inout TaskGroup<Void>,
        events: inout AsyncStream<LifecycleEvent>.Iterator, sink: AsyncStream<LifecycleEvent>.Continuation
    ) async -> LifecycleResult {
        let result = await superviseListener(result: initial, agent: agent, group: &group, events: &events, sink: sink)
        // Whatever the job started must be gone before the token is used again (and before the pod reports done).
        await leftovers.killAll()
        if case .controller = role { return await finishUnregistering(result, target: .controller) }
        return await finishUnregistering(result, target: agent.map(UnregistrationTarget.agent) ?? .byName)
    }

    // MARK: Listener phase

    private struct ListenerState {
        var generation = 0
        var process: ChildProcess?
        var status: ExitStatus?
        var outputEnded = false
        var listening = false
        var jobName: String?
        var jobResult: String?
        var jobStartedAt: Duration?
        var jobEndedAt: Duration?
        var draining = false
        var forwarded = false
        var stopping: EntrypointExitReason?
        var unregistered = false
        var relaunches = 0
        var busyConfirmed = false

        var jobRunning: Bool { jobName != nil && jobResult == nil }
    }

    /// Runs the listener until its last instance ended; returns the result without unregistering.
    private func superviseListener(
        result initial: LifecycleResult, agent: RegisteredAgent?, group: inout TaskGroup<Void>,
        events: inout AsyncStream<LifecycleEvent>.Iterator, sink: AsyncStream<LifecycleEvent>.Continuation
    ) async -> LifecycleResult {
        var result = initial
        var state = ListenerState()
        let listenerStart = clock.monotonicNow()
        let readiness = ReadinessFile(path: settings.readyFile, logger: logger)
        defer { readiness.remove() }

        guard launchListener(&state, group: &group, sink: sink, result: &result) else {
            return result
        }
        if let idle = settings.idleTimeout {
            group.addTask { [clock] in
                do { try await clock.sleep(for: idle) } catch { return }
                sink.yield(.idleTimeout)
            }
        }

        loop: while let event = await events.next() {
            switch event {
            case .signal(let number):
                let name = SignalWatcher.name(number)
                if state.stopping != nil || state.draining {
                    logger.notice("another signal; forwarding it to the listener", metadata: ["signal": "\(name)"])
                    state.process?.signalGroup(number)
                    state.forwarded = true
                } else if state.jobRunning || state.busyConfirmed {
                    logger.notice(
                        "signal while a job runs; letting the job finish (a second signal forwards it)",
                        metadata: ["signal": "\(name)", "job": "\(state.jobName ?? "assigned")"])
                    startDraining(&state, group: &group, sink: sink)
                } else {
                    logger.notice("signal while idle; unregistering and stopping the listener", metadata: ["signal": "\(name)"])
                    await stopIdleListener(&state, agent: agent, reason: .stoppedWhileIdle, group: &group, sink: sink)
                }

            case .idleTimeout:
                guard state.jobName == nil, !state.busyConfirmed, state.stopping == nil, !state.draining else { continue }
                logger.notice("no job within the idle timeout; unregistering", metadata: ["idle_timeout_seconds": "\(settings.idleTimeout?.seconds ?? 0)"])
                await stopIdleListener(&state, agent: agent, reason: .idleTimeout, group: &group, sink: sink)

            case .drainTimeout:
                guard state.jobRunning, !state.forwarded else { continue }
                logger.warning("drain deadline passed; forwarding SIGTERM to the listener (the job will be canceled)")
                state.process?.signalGroup(SIGTERM)
                state.forwarded = true

            case .line(let text, let generation):
                guard generation == state.generation else { continue }
                switch ListenerLine(parsing: text) {
                case .listening where !state.listening:
                    state.listening = true
                    readiness.write()
                    logger.info("agent is listening for jobs", metadata: ["agent.id": "\(result.agentId.map(String.init) ?? "unknown")"])
                case .jobStarted(let name):
                    state.jobName = name
                    state.jobStartedAt = clock.monotonicNow()
                    logger.info("job started", metadata: ["job": "\(name)"])
                case .jobCompleted(let name, let jobResult):
                    state.jobName = state.jobName ?? name
                    state.jobResult = jobResult
                    state.jobEndedAt = clock.monotonicNow()
                    logger.info("job completed", metadata: ["job": "\(name)", "result": "\(jobResult)"])
                default:
                    break
                }

            case .outputEnded(let generation):
                guard generation == state.generation else { continue }
                state.outputEnded = true
                if state.status != nil, await listenerInstanceEnded(&state, group: &group, sink: sink, result: &result) { break loop }

            case .listenerExited(let status, let generation):
                guard generation == state.generation else { continue }
                state.status = status
                logger.info("listener exited", metadata: ["status": "\(status)"])
                if state.outputEnded {
                    if await listenerInstanceEnded(&state, group: &group, sink: sink, result: &result) { break loop }
                } else {
                    // Job steps that outlive the listener may hold its stdout open; read what is left briefly.
                    group.addTask { [clock] in
                        try? await clock.sleep(for: .milliseconds(300))
                        sink.yield(.exitGraceElapsed(generation: generation))
                    }
                }

            case .exitGraceElapsed(let generation):
                guard generation == state.generation, state.status != nil else { continue }
                if await listenerInstanceEnded(&state, group: &group, sink: sink, result: &result) { break loop }

            case .killDeadline(let generation):
                guard generation == state.generation, state.status == nil else { continue }
                logger.warning("listener did not stop in time; sending SIGKILL")
                state.process?.signalGroup(SIGKILL)

            case .registrationFinished:
                continue
            }
        }

        // Phase 3 starts here: what happened (the caller then ends the leftovers and unregisters).
        let now = clock.monotonicNow()
        result.jobName = state.jobName
        result.jobResult = state.jobResult
        result.idleSeconds = ((state.jobStartedAt ?? now) - listenerStart).seconds
        if let started = state.jobStartedAt { result.jobSeconds = ((state.jobEndedAt ?? now) - started).seconds }
        result.unregistered = state.unregistered

        if state.jobName != nil, state.jobResult == nil, !state.forwarded {
            // The listener died while the job ran: the job's outcome is unknown (the service abandons it).
            result.reason = .listenerFailed
            result.exitCode = .listenerFailed
            result.message = "the listener ended with \(state.status.map(String.init(describing:)) ?? "no status") while job '\(state.jobName ?? "")' ran"
        } else if state.jobName != nil {
            result.reason = state.draining ? .drained : .jobCompleted
            result.exitCode = .success
        } else if let stopping = state.stopping {
            result.reason = stopping
            result.exitCode = .success
        } else if result.exitCode == .success {
            result.reason = .listenerFailed
            result.exitCode = .listenerFailed
            result.message = "the listener ended with \(state.status.map(String.init(describing:)) ?? "no status") before running a job"
        }
        return result
    }

    /// Starts (or restarts) the listener; false when it cannot be started (result is set).
    private func launchListener(
        _ state: inout ListenerState, group: inout TaskGroup<Void>, sink: AsyncStream<LifecycleEvent>.Continuation,
        result: inout LifecycleResult
    ) -> Bool {
        state.generation += 1
        state.status = nil
        state.outputEnded = false
        let generation = state.generation
        let executable = settings.agentDirectory + "/bin/Agent.Listener"
        let process: ChildProcess
        do {
            process = try launcher.launch(
                ProcessSpecification(
                    executable: executable, arguments: ["run", "--once"], environment: listenerEnvironment,
                    workingDirectory: settings.agentDirectory))
        } catch {
            logger.error("cannot start the listener", metadata: ["error": "\(error)"])
            result.exitCode = .listenerFailed
            result.reason = .listenerFailed
            result.message = error.description
            return false
        }
        logger.info("listener started", metadata: ["pid": "\(process.pid)", "launch": "\(generation)"])
        state.process = process
        group.addTask {
            for await line in process.lines { sink.yield(.line(line, generation: generation)) }
            sink.yield(.outputEnded(generation: generation))
        }
        group.addTask {
            sink.yield(.listenerExited(await process.exitStatus(), generation: generation))
        }
        return true
    }

    /// Handles the end of one listener process; returns true when the phase is over (false after a relaunch).
    private func listenerInstanceEnded(
        _ state: inout ListenerState, group: inout TaskGroup<Void>, sink: AsyncStream<LifecycleEvent>.Continuation,
        result: inout LifecycleResult
    ) async -> Bool {
        guard let status = state.status else { return false }
        let updating = status == .exited(3) || status == .exited(4)
        guard updating, state.stopping == nil, !state.forwarded, state.jobResult == nil else { return true }
        guard state.relaunches < maximumRelaunches else {
            logger.error("listener asked for too many relaunches", metadata: ["relaunches": "\(state.relaunches)"])
            return true
        }
        state.relaunches += 1
        logger.info(
            "listener exited for a self-update; relaunching",
            metadata: ["status": "\(status)", "delay_seconds": "\(settings.relaunchDelay.seconds)"])
        try? await clock.sleep(for: settings.relaunchDelay)
        // Like run.sh: give the updater up to 15 s more to put the new listener in place.
        let executable = settings.agentDirectory + "/bin/Agent.Listener"
        let deadline = clock.monotonicNow() + .seconds(15)
        while access(executable, X_OK) != 0, clock.monotonicNow() < deadline {
            try? await clock.sleep(for: .milliseconds(200))
        }
        return !launchListener(&state, group: &group, sink: sink, result: &result)
    }

    private func startDraining(
        _ state: inout ListenerState, group: inout TaskGroup<Void>, sink: AsyncStream<LifecycleEvent>.Continuation
    ) {
        state.draining = true
        if let drain = settings.drainTimeout {
            group.addTask { [clock] in
                do { try await clock.sleep(for: drain) } catch { return }
                sink.yield(.drainTimeout)
            }
        }
    }

    /// Stops a listener that runs no job, busy-safely: in entrypoint mode, first ask the service whether the agent
    /// holds a request and delete the registration (the service refuses while a job is assigned, which tells us
    /// one just arrived), then SIGTERM the listener's group. In controller mode there is no token to ask with:
    /// the listener is stopped at once.
    private func stopIdleListener(
        _ state: inout ListenerState, agent: RegisteredAgent?, reason: EntrypointExitReason, group: inout TaskGroup<Void>,
        sink: AsyncStream<LifecycleEvent>.Continuation
    ) async {
        if case .entrypoint(_, let unregistrar) = role, let agent {
            switch await unregistrar.removeIfIdle(agent, timeLimit: idleRemovalTimeLimit) {
            case .removed:
                state.unregistered = true
                logger.info("agent unregistered", metadata: ["agent.id": "\(agent.agentID)"])
            case .busy(let detail):
                logger.notice("the service says a job was just assigned; keeping the listener running", metadata: ["detail": "\(detail)"])
                state.busyConfirmed = true
                if reason == .stoppedWhileIdle { startDraining(&state, group: &group, sink: sink) }
                return
            case .unauthorized(let detail), .failed(let detail):
                logger.warning("could not unregister before stopping; will retry after the listener stops", metadata: ["error": "\(detail)"])
            }
        }
        state.stopping = reason
        guard state.status == nil, let process = state.process else { return }
        process.signalGroup(SIGTERM)
        let generation = state.generation
        let grace = stopGracePeriod
        group.addTask { [clock] in
            do { try await clock.sleep(for: grace) } catch { return }
            sink.yield(.killDeadline(generation: generation))
        }
    }

    // MARK: Unregistration

    private func finishUnregistering(_ input: LifecycleResult, target: UnregistrationTarget) async -> LifecycleResult {
        var result = input
        let unregistrar: Unregistrar
        switch (role, target) {
        case (.controller, _), (_, .controller):
            // The controller deletes the registration once the pod is done; a job ran or not, the code stays.
            result.unregistered = false
            return result
        case (_, .nothing):
            result.unregistered = true
            return result
        case (.entrypoint(_, let entrypointUnregistrar), _):
            unregistrar = entrypointUnregistrar
        }
        guard !result.unregistered else {
            removeLocalIdentity()
            return result
        }
        let start = clock.monotonicNow()
        logger.info("unregistering agent")
        let outcome: UnregistrationResult
        switch target {
        case .agent(let agent):
            outcome = await unregistrar.unregister(agent, timeout: settings.unregistrationTimeout)
        default:
            outcome = await unregistrar.unregister(
                pool: settings.pool, agentName: settings.agentName, timeout: settings.unregistrationTimeout)
        }
        switch outcome {
        case .removed:
            result.unregistered = true
            logger.info("agent unregistered")
            removeLocalIdentity()
        case .failed(let detail):
            logger.error("unregistration failed; the agent may still be registered", metadata: ["error": "\(detail)"])
            // The contract: exit 0 whenever a job ran. The termination message's `unregistered: false` tells the
            // controller to delete the registration; without a job the failure is the outcome, so it is the code.
            if result.jobName == nil || result.exitCode != .success { result.exitCode = .unregistrationFailed }
            result.message = [result.message, "unregistration failed: \(detail)"].compactMap { $0 }.joined(separator: "; ")
        }
        result.unregistrationSeconds = (clock.monotonicNow() - start).seconds
        return result
    }

    /// Deletes the agent's identity files once the registration is gone (best effort): they name an agent that
    /// no longer exists. `unlink` removes a symlink a job put there, never its target.
    private func removeLocalIdentity() {
        for name in ControllerIdentity.fileNames {
            unlink(settings.agentDirectory + "/" + name)
        }
    }
}

/// The readiness-probe file: created when the listener listens, removed at exit.
struct ReadinessFile: Sendable {
    /// Its path.
    let path: String
    /// Logger.
    let logger: Logger

    /// Writes the file (content: the time it became ready).
    func write() {
        do {
            try Data((WireTimestamp.format(Date()) + "\n").utf8).write(to: URL(fileURLWithPath: path))
        } catch {
            logger.warning("cannot write the readiness file", metadata: ["path": "\(path)", "error": "\(error)"])
        }
    }

    /// Deletes the file if present.
    func remove() {
        unlink(path)
    }
}
