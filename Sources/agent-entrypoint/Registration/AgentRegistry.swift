import Shared

/// The agent as the service knows it: learned over REST right after `config.sh` registered it, kept in memory.
///
/// Never re-read from `.agent`: the agent directory belongs to the job's user, and a job that rewrites `.agent`
/// must not be able to point the unregistration at another agent.
package struct RegisteredAgent: Sendable, Equatable {
    /// The pool's id.
    package var poolID: Int
    /// The agent's id in the pool.
    package var agentID: Int
    /// The agent's name.
    package var name: String

    /// Builds an identity.
    package init(poolID: Int, agentID: Int, name: String) {
        self.poolID = poolID
        self.agentID = agentID
        self.name = name
    }
}

/// Why a call about the registration failed, classified once for the loops that retry it.
package enum RegistryFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// The service refused to delete the agent: a job holds it. Every 4xx refusal of a DELETE other than
    /// 401/403/404 counts, whatever its text — the safe reading of an answer the code has never seen.
    case busy(String)
    /// 401/403 (or a sign-in page): the token is refused; retrying with it cannot help.
    case unauthorized(String)
    /// The pool or agent does not exist.
    case notFound(String)
    /// Another terminal answer (a lookup rejected as invalid).
    case refused(String)
    /// Network, timeouts, 5xx, throttling, an unreadable token file: worth retrying.
    case transient(String)

    /// The detail line.
    package var description: String {
        switch self {
        case .busy(let detail), .unauthorized(let detail), .notFound(let detail), .refused(let detail),
            .transient(let detail):
            detail
        }
    }

    /// Classifies a failed `DELETE pools/{poolId}/agents/{agentId}`.
    package static func deletion(_ error: AzureDevOpsError) -> RegistryFailure {
        switch error {
        case .authentication, .forbidden: .unauthorized(error.description)
        case .notFound: .notFound(error.description)
        case .badRequest, .conflict: .busy(error.description)
        case .unexpectedStatus(let server) where (400..<500).contains(server.status): .busy(error.description)
        case .poolNotFound: .notFound(error.description)
        default: .transient(error.description)
        }
    }

    /// Classifies a failed lookup (pool, agent list, one agent).
    package static func lookup(_ error: AzureDevOpsError) -> RegistryFailure {
        switch error {
        case .authentication, .forbidden: .unauthorized(error.description)
        case .notFound, .poolNotFound: .notFound(error.description)
        case .badRequest, .ambiguousPool: .refused(error.description)
        case .unexpectedStatus(let server) where (400..<500).contains(server.status): .refused(error.description)
        default: .transient(error.description)
        }
    }
}

/// The service calls the entrypoint makes itself, with the PAT from memory, instead of running the agent's
/// scripts after a job (a job can rewrite them).
package protocol AgentRegistry: Sendable {
    /// Finds the agent named `agentName` in the pool named `pool`; `.notFound` when either does not exist.
    func identify(pool: String, agentName: String) async throws(RegistryFailure) -> RegisteredAgent
    /// The id of the job request the agent holds (assigned or running), nil when it holds none or is gone.
    func assignedRequest(of agent: RegisteredAgent) async throws(RegistryFailure) -> Int64?
    /// Deletes the registration; `.alreadyGone` when it did not exist. Refused (`.busy`) while a job holds it.
    func delete(_ agent: RegisteredAgent) async throws(RegistryFailure) -> DeletionOutcome
}

/// ``AgentRegistry`` over the Azure DevOps REST API.
package struct RESTAgentRegistry: AgentRegistry {
    /// The client (credentials: the PAT from memory or `AZP_TOKEN_FILE`).
    let api: any AzureDevOpsAPI

    /// A registry on `api`.
    package init(api: any AzureDevOpsAPI) {
        self.api = api
    }

    package func identify(pool: String, agentName: String) async throws(RegistryFailure) -> RegisteredAgent {
        do {
            let found = try await api.resolvePool(named: pool)
            let agents = try await api.agents(
                poolID: found.id, options: AgentQueryOptions(agentName: agentName, includeAssignedRequest: false))
            guard let agent = agents.first(where: { $0.name.lowercased() == agentName.lowercased() }) else {
                throw RegistryFailure.notFound("no agent named '\(agentName)' in pool '\(pool)'")
            }
            return RegisteredAgent(poolID: found.id, agentID: agent.id, name: agent.name)
        } catch let error as RegistryFailure {
            throw error
        } catch let error as AzureDevOpsError {
            throw .lookup(error)
        } catch {
            throw .transient("\(error)")
        }
    }

    package func assignedRequest(of agent: RegisteredAgent) async throws(RegistryFailure) -> Int64? {
        do {
            let found = try await api.agent(
                poolID: agent.poolID, agentID: agent.agentID, options: AgentQueryOptions(includeAssignedRequest: true))
            return found.assignedRequest?.requestId
        } catch .notFound {
            return nil
        } catch {
            throw .lookup(error)
        }
    }

    package func delete(_ agent: RegisteredAgent) async throws(RegistryFailure) -> DeletionOutcome {
        do {
            return try await api.deleteAgent(poolID: agent.poolID, agentID: agent.agentID)
        } catch {
            throw .deletion(error)
        }
    }
}

/// Runs `operation`, but gives up after `limit`: the task running it is cancelled and the result is
/// `.transient`, so an unreachable service cannot hold the entrypoint past its pod's grace period.
package func withTimeLimit<T: Sendable>(
    _ limit: Duration, clock: any ShoalClock,
    _ operation: @escaping @Sendable () async throws(RegistryFailure) -> T
) async -> Result<T, RegistryFailure> {
    await withTaskGroup(of: Result<T, RegistryFailure>?.self) { group in
        group.addTask {
            do throws(RegistryFailure) {
                return .success(try await operation())
            } catch {
                return .failure(error)
            }
        }
        group.addTask {
            try? await clock.sleep(for: limit)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first ?? .failure(.transient("Azure DevOps did not answer within \(wholeOrFractionalSeconds(limit)) s"))
    }
}

/// `3` for three seconds, `2.5` otherwise: durations in messages people read.
private func wholeOrFractionalSeconds(_ duration: Duration) -> String {
    let seconds = duration.seconds
    return seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
}
