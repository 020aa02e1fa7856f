import Logging
import Shared

/// How unregistration ended.
package enum UnregistrationResult: Sendable, Equatable {
    /// The agent is gone from the service (deleted now or already absent).
    case removed
    /// Still registered (or unknown) after the deadline, or the token was refused.
    case failed(detail: String)
}

/// What removing an idle agent's registration, before stopping its listener, found.
package enum IdleRemoval: Sendable, Equatable {
    /// Deleted (or already gone): the listener may be stopped.
    case removed
    /// A job was just assigned (the agent holds a request, or the service refused the delete): keep the listener.
    case busy(detail: String)
    /// The token was refused; retrying after the listener stopped cannot help either.
    case unauthorized(detail: String)
    /// The service could not be asked (network, 5xx, time limit): stop the listener and retry afterwards.
    case failed(detail: String)
}

/// Deletes the registration over REST, with the PAT from memory: retried while the service reports a job,
/// with backoff on transient failures, bounded by a deadline. 401/403 end it at once.
package struct Unregistrar: Sendable {
    /// The service.
    let registry: any AgentRegistry
    /// Time source for backoff and deadlines.
    let clock: any ShoalClock
    /// Time source that cuts off a call at its time limit (``clock`` unless a test separates the two, so an
    /// instant clock can skip backoff without also cutting off every call).
    package var callClock: any ShoalClock
    /// Logger.
    let logger: Logger
    /// First backoff delay after a transient failure (doubles up to ``maximumBackoff``).
    package var initialBackoff: Duration = .seconds(1)
    /// Largest backoff delay.
    package var maximumBackoff: Duration = .seconds(30)
    /// Delay between attempts while the service reports a running job (Microsoft's start.sh: 30 s).
    package var busyRetryInterval: Duration = .seconds(2)

    /// An unregistrar on `registry`.
    package init(registry: any AgentRegistry, clock: any ShoalClock, logger: Logger) {
        self.registry = registry
        self.clock = clock
        self.callClock = clock
        self.logger = logger
    }

    /// Deletes `agent` until it is gone or `timeout` passes (each attempt is cut off at the deadline).
    package func unregister(_ agent: RegisteredAgent, timeout: Duration) async -> UnregistrationResult {
        await retrying(timeout: timeout) { [registry] () throws(RegistryFailure) in
            _ = try await registry.delete(agent)
        }
    }

    /// Finds the agent by name over REST, then deletes it: for a registration whose id was never learned (no
    /// job ran, so the service's answer is trustworthy). An agent or pool that does not exist counts as removed.
    package func unregister(pool: String, agentName: String, timeout: Duration) async -> UnregistrationResult {
        await retrying(timeout: timeout) { [registry] () throws(RegistryFailure) in
            let agent: RegisteredAgent
            do throws(RegistryFailure) {
                agent = try await registry.identify(pool: pool, agentName: agentName)
            } catch .notFound {
                return
            }
            _ = try await registry.delete(agent)
        }
    }

    /// One busy-safe attempt for an idle agent: first ask whether it holds a request, then delete. A refused
    /// delete means a job arrived between the two calls.
    package func removeIfIdle(_ agent: RegisteredAgent, timeLimit: Duration) async -> IdleRemoval {
        let outcome = await withTimeLimit(max(timeLimit, .seconds(1)), clock: callClock) {
            [registry, logger] () throws(RegistryFailure) -> Int64? in
            do throws(RegistryFailure) {
                if let request = try await registry.assignedRequest(of: agent) { return request }
            } catch .unauthorized(let detail) {
                throw .unauthorized(detail)
            } catch {
                // The delete below is refused while a job is assigned, so it stays safe without this answer.
                logger.notice("cannot read the agent's assigned request; deleting anyway", metadata: ["error": "\(error)"])
            }
            _ = try await registry.delete(agent)
            return nil
        }
        switch outcome {
        case .success(nil): return .removed
        case .success(let request?): return .busy(detail: "job request \(request) is assigned to the agent")
        case .failure(.notFound): return .removed
        case .failure(.busy(let detail)): return .busy(detail: detail)
        case .failure(.unauthorized(let detail)): return .unauthorized(detail: detail)
        case .failure(.refused(let detail)), .failure(.transient(let detail)): return .failed(detail: detail)
        }
    }

    private func retrying(
        timeout: Duration, _ attempt: @escaping @Sendable () async throws(RegistryFailure) -> Void
    ) async -> UnregistrationResult {
        let deadline = clock.monotonicNow() + timeout
        var delay = initialBackoff
        var number = 1
        while true {
            let limit = max(deadline - clock.monotonicNow(), .seconds(1))
            let outcome = await withTimeLimit(limit, clock: callClock, attempt)
            let detail: String
            let wait: Duration
            switch outcome {
            case .success, .failure(.notFound):
                return .removed
            case .failure(.busy(let text)):
                detail = text
                wait = busyRetryInterval
            case .failure(.unauthorized(let text)), .failure(.refused(let text)):
                return .failed(detail: text)
            case .failure(.transient(let text)):
                detail = text
                wait = delay
                delay = min(delay * 2, maximumBackoff)
            }
            guard clock.monotonicNow() + wait < deadline else { return .failed(detail: detail) }
            logger.warning(
                "unregistration failed; retrying",
                metadata: ["attempt": "\(number)", "retry_in_seconds": "\(wait.seconds)", "error": "\(detail)"])
            // Callers run this outside any cancelled task; a cancelled sleep ends the attempts rather than spin.
            do { try await clock.sleep(for: wait) } catch { return .failed(detail: detail) }
            number += 1
        }
    }
}
