import Logging
import Shared

/// How registration ended.
enum RegistrationResult: Sendable, Equatable {
    /// Registered, and its pool and agent id learned from the service.
    case registered(RegisteredAgent)
    /// The service refused; exit 3.
    case refused(RefusalReason, detail: String)
    /// Transient failures until the deadline, and `config.sh` never succeeded; exit 4.
    case gaveUp(detail: String)
    /// `config.sh` registered the agent, but its id could not be learned from the service in time; exit 4, and the
    /// registration is looked up by name to delete it.
    case unidentified(detail: String)
    /// Cancelled by a signal before `config.sh` succeeded.
    case cancelled
}

/// Registration with retries: backoff for transient failures, a deadline, and an immediate stop on refusals
/// that retrying cannot fix. Then the agent's pool and id are learned over REST and kept in memory, before any
/// job can touch the agent directory.
struct Registrar: Sendable {
    /// The scripts (`config.sh` runs with the token only here, before the listener starts).
    let scripts: AgentScripts
    /// The service, for the agent's id.
    let registry: any AgentRegistry
    /// Time source for backoff and deadlines.
    let clock: any ShoalClock
    /// Logger.
    let logger: Logger
    /// First backoff delay (doubles up to ``maximumBackoff``).
    var initialBackoff: Duration = .seconds(1)
    /// Largest backoff delay.
    var maximumBackoff: Duration = .seconds(30)
    /// The longest one `config.sh remove` (clearing a stale or half-finished configuration) may take.
    var removeTimeLimit: Duration = .seconds(10)
    /// The longest one lookup of the agent's id may take.
    var lookupTimeLimit: Duration = .seconds(30)

    /// Runs `config.sh` until it succeeds, is refused, or `timeout` passes, then learns the agent's id. A stale
    /// `.agent` is removed first (no job has run yet, so the agent directory is still the image's).
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
                return await identify(deadline: deadline)
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

    /// Asks the service for the pool's and the agent's id, retrying until `deadline`.
    private func identify(deadline: Duration) async -> RegistrationResult {
        let pool = scripts.settings.pool
        let name = scripts.settings.agentName
        var delay = initialBackoff
        while true {
            if Task.isCancelled { return .unidentified(detail: "stopped before the agent's id was known") }
            let limit = max(min(deadline - clock.monotonicNow(), lookupTimeLimit), .seconds(1))
            let outcome = await withTimeLimit(limit, clock: clock) { [registry] () throws(RegistryFailure) in
                try await registry.identify(pool: pool, agentName: name)
            }
            let detail: String
            switch outcome {
            case .success(let agent):
                return .registered(agent)
            case .failure(.unauthorized(let text)), .failure(.refused(let text)):
                return .unidentified(detail: text)
            case .failure(.busy(let text)), .failure(.notFound(let text)), .failure(.transient(let text)):
                detail = text
            }
            guard clock.monotonicNow() + delay < deadline else { return .unidentified(detail: detail) }
            logger.warning(
                "registered, but the agent's id could not be read; retrying",
                metadata: ["retry_in_seconds": "\(delay.seconds)", "error": "\(detail)"])
            do { try await clock.sleep(for: delay) } catch {
                return .unidentified(detail: "stopped before the agent's id was known")
            }
            delay = min(delay * 2, maximumBackoff)
        }
    }
}
