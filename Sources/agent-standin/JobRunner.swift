import Foundation
import Subprocess
import Synchronization

#if canImport(System)
import System
#else
import SystemPackage
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The body of a `PipelineAgentJobRequest` message (the simulator's simplified job).
struct JobMessage: Decodable, Sendable {
    /// The job request id (PATCH target).
    let requestId: Int64
    /// The job's id (matched by `JobCancel`).
    let jobId: String
    /// The plan the job belongs to.
    let planId: String?
    /// Name printed in the `Running job:` / `completed with result:` lines.
    let jobDisplayName: String
    /// The lock token every PATCH must carry.
    let lockToken: String
    /// Shell script to run with `/bin/sh -c`, if any.
    let script: String?
    /// Minimum time the job stays running, in seconds.
    let durationSeconds: Double?
    /// Extra environment variables for the job process.
    let variables: [String: String]?
}

/// The body of a `JobCancel` message.
struct JobCancelMessage: Decodable, Sendable {
    /// The request to cancel.
    let requestId: Int64?
    /// The job to cancel.
    let jobId: String?
}

/// How a job ended, with the wire and the printed spellings.
enum JobResult: String, Sendable {
    /// Exit code 0.
    case succeeded
    /// Non-zero exit or failure to start.
    case failed
    /// Killed by `JobCancel`, a signal or a lost lock.
    case canceled

    /// The .NET `TaskResult.ToString()` form the listener prints.
    var displayName: String {
        switch self {
        case .succeeded: "Succeeded"
        case .failed: "Failed"
        case .canceled: "Canceled"
        }
    }
}

/// Cancels one running job from outside the task that runs it.
///
/// A class with a `Mutex` rather than an actor so `onCancel` handlers and signal paths can use it synchronously.
final class JobControl: Sendable {
    private struct State {
        var processGroup: pid_t?
        var isCancelled = false
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0
    }

    private let state = Mutex(State())

    /// Creates a control for a job that has not started yet.
    init() {}

    /// Whether `cancel()` was called.
    var isCancelled: Bool { state.withLock { $0.isCancelled } }

    /// Records the job's process group; sends SIGTERM at once if the job was already cancelled.
    func attach(processGroup: pid_t) {
        let cancelled = state.withLock { state in
            state.processGroup = processGroup
            return state.isCancelled
        }
        if cancelled { kill(-processGroup, SIGTERM) }
    }

    /// Forgets the process group once the process has exited (so a recycled pid is never signalled).
    func detach() {
        state.withLock { $0.processGroup = nil }
    }

    /// Cancels the job: SIGTERM to its process group (if running) and wakes everyone waiting for cancellation.
    func cancel() {
        let (group, waiters) = state.withLock { state -> (pid_t?, [CheckedContinuation<Void, Never>]) in
            guard !state.isCancelled else { return (nil, []) }
            state.isCancelled = true
            let waiters = Array(state.waiters.values)
            state.waiters.removeAll()
            return (state.processGroup, waiters)
        }
        if let group { kill(-group, SIGTERM) }
        for waiter in waiters { waiter.resume() }
    }

    /// SIGKILL to the job's process group, the escalation after the grace period.
    func forceKill() {
        if let group = state.withLock({ $0.processGroup }) { kill(-group, SIGKILL) }
    }

    /// Returns once the job is cancelled, or when the calling task is cancelled.
    func waitUntilCancelled() async {
        let id = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state in
                    if state.isCancelled || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }
}

/// Runs one job the way protocol.md describes: `/bin/sh -c <script>` in `<work>/1/s`, the listener's environment
/// plus the job variables, output straight to the listener's stdout, kept alive for at least `durationSeconds`.
struct JobRunner: Sendable {
    /// The agent's work folder.
    let workFolder: URL
    /// How long a cancelled job gets between SIGTERM and SIGKILL.
    var killGracePeriod: Duration = .seconds(5)

    /// Runs `job` to completion or cancellation and returns its result.
    func run(_ job: JobMessage, control: JobControl) async -> JobResult {
        let clock = ContinuousClock()
        let started = clock.now
        var succeeded = true

        if let script = job.script {
            succeeded = await runScript(script, job: job, control: control)
        }

        let deadline = started + .milliseconds(Int64(((job.durationSeconds ?? 0) * 1000).rounded()))
        if !control.isCancelled, clock.now < deadline {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { try? await Task.sleep(until: deadline, clock: clock) }
                group.addTask { await control.waitUntilCancelled() }
                await group.next()
                group.cancelAll()
            }
        }

        if control.isCancelled { return .canceled }
        return succeeded ? .succeeded : .failed
    }

    private func runScript(_ script: String, job: JobMessage, control: JobControl) async -> Bool {
        let sources = workFolder.appendingPathComponent("1").appendingPathComponent("s")
        do {
            try FileManager.default.createDirectory(at: sources, withIntermediateDirectories: true)
        } catch {
            Console.error("##[error]Cannot create the job directory \(sources.path): \(error)")
            return false
        }

        var overrides: [Environment.Key: String?] = [:]
        for (name, value) in job.variables ?? [:] where Self.isValidVariableName(name) {
            if let key = Environment.Key(rawValue: name) { overrides[key] = value }
        }
        var platformOptions = PlatformOptions()
        platformOptions.processGroupID = 0
        let environment = Environment.inherit.updating(overrides)
        let options = platformOptions

        let grace = killGracePeriod
        let status: TerminationStatus? = await withTaskGroup(of: TerminationStatus?.self) { group in
            group.addTask {
                do {
                    let result = try await Subprocess.run(
                        .path(FilePath("/bin/sh")),
                        arguments: ["-c", script],
                        environment: environment,
                        workingDirectory: FilePath(sources.path),
                        platformOptions: options,
                        input: .none,
                        output: .currentStandardOutput,
                        error: FileDescriptorOutput.currentStandardOutput
                    ) { execution in
                        control.attach(processGroup: execution.processIdentifier.value)
                    }
                    control.detach()
                    return result.terminationStatus
                } catch {
                    control.detach()
                    Console.error("##[error]Failed to start the job process: \(error)")
                    return nil
                }
            }
            group.addTask {
                await control.waitUntilCancelled()
                try? await Task.sleep(for: grace)
                if !Task.isCancelled { control.forceKill() }
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            // The process task finishes first unless cancellation escalated; either way wait for the process.
            var status = first
            while let next = await group.next() {
                if status == nil { status = next }
            }
            return status
        }
        return status?.isSuccess ?? false
    }

    private static func isValidVariableName(_ name: String) -> Bool {
        !name.isEmpty && !name.contains("=") && !name.contains("\0")
    }
}
