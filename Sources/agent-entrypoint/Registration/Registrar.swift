import Logging
import Shared

/// How registration ended.
enum RegistrationResult: Sendable, Equatable {
    /// Registered; the id from `.agent` when readable.
    case registered(agentId: Int?)
    /// The service refused; exit 3.
    case refused(RefusalReason, detail: String)
    /// Transient failures until the deadline; exit 4.
    case gaveUp(detail: String)
    /// Cancelled by a signal before it finished.
    case cancelled
}

/// How unregistration ended.
enum UnregistrationResult: Sendable, Equatable {
    /// The agent is gone from the service (deleted now or already absent) and the local config removed.
    case removed
    /// Still registered after the deadline (busy, refused or unreachable).
    case failed(detail: String)
}

/// Registration and unregistration with retries: backoff for transient failures, a deadline, and an immediate
/// stop on refusals that retrying cannot fix.
struct Registrar: Sendable {
    /// The scripts.
    let scripts: AgentScripts
    /// Time source for backoff and deadlines.
    let clock: any ShoalClock
    /// Logger.
    let logger: Logger
    /// First backoff delay (doubles up to ``maximumBackoff``).
    var initialBackoff: Duration = .seconds(1)
    /// Largest backoff delay.
    var maximumBackoff: Duration = .seconds(30)
    /// Delay between `remove` attempts while the service reports a running job (Microsoft's start.sh: 30 s).
    var busyRetryInterval: Duration = .seconds(2)

    /// Runs `config.sh` until it succeeds, is refused, or `timeout` passes. A stale `.agent` is removed first.
    func register(timeout: Duration) async -> RegistrationResult {
        if scripts.isConfigured {
            logger.warning("agent directory is already configured; removing the stale registration first")
            _ = await scripts.remove(timeLimit: removeTimeLimit)
        }
        let deadline = clock.monotonicNow() + timeout
        var delay = initialBackoff
        var attempt = 1
        while true {
            if Task.isCancelled { return .cancelled }
            switch await scripts.configure() {
            case .succeeded:
                return .registered(agentId: scripts.registeredAgentId())
            case .refused(let reason, let detail):
                return .refused(reason, detail: detail)
            case .busy(let detail), .transient(let detail):
                if Task.isCancelled { return .cancelled }
                if scripts.isConfigured {
                    // A half-finished configure leaves files that make the next attempt fail; clear them.
                    _ = await scripts.remove(timeLimit: removeTimeLimit)
                }
                let now = clock.monotonicNow()
                guard now + delay < deadline else { return .gaveUp(detail: detail) }
                logger.warning(
                    "registration failed; retrying",
                    metadata: ["attempt": "\(attempt)", "retry_in_seconds": "\(delay.seconds)", "error": "\(detail)"])
                do { try await clock.sleep(for: delay) } catch { return .cancelled }
                delay = min(delay * 2, maximumBackoff)
                attempt += 1
            }
        }
    }

    /// The longest one `config.sh remove` may take outside `unregister(timeout:)`: at most 10 s, and never more
    /// than the whole unregistration budget, so stopping an idle agent stays within the pod's grace period.
    var removeTimeLimit: Duration = .seconds(10)

    /// One `remove` attempt (used before stopping an idle listener: a refusal means a job was just assigned).
    func removeOnce() async -> ScriptOutcome {
        await scripts.remove(timeLimit: removeTimeLimit)
    }

    /// Runs `config.sh remove` until the agent is gone or `timeout` passes; retried while it holds a job.
    func unregister(timeout: Duration) async -> UnregistrationResult {
        let deadline = clock.monotonicNow() + timeout
        var delay = initialBackoff
        var attempt = 1
        while true {
            let outcome = await scripts.remove(timeLimit: max(deadline - clock.monotonicNow(), .seconds(1)))
            let detail: String
            let wait: Duration
            switch outcome {
            case .succeeded:
                return .removed
            case .busy(let text):
                detail = text
                wait = busyRetryInterval
            case .refused(_, let text):
                return .failed(detail: text)
            case .transient(let text):
                detail = text
                wait = delay
                delay = min(delay * 2, maximumBackoff)
            }
            guard clock.monotonicNow() + wait < deadline else { return .failed(detail: detail) }
            logger.warning(
                "unregistration failed; retrying",
                metadata: ["attempt": "\(attempt)", "retry_in_seconds": "\(wait.seconds)", "error": "\(detail)"])
            // Callers run this outside any cancelled task; a cancelled sleep ends the attempts rather than spin.
            do { try await clock.sleep(for: wait) } catch { return .failed(detail: detail) }
            attempt += 1
        }
    }
}
