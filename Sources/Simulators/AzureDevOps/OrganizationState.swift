import AgentIdentity
import Foundation
import Shared

/// The simulated organization's data and job-request state machine, free of HTTP and concurrency.
///
/// Every mutating operation takes `now` explicitly so the lifecycle (assignment, receipt, lock expiry, session
/// timeout, cancel timeout) can be driven and table-tested without a clock. `dispatch(now:)` must run after any
/// change that could let a queued job start; `SimulatedOrganization` does that after every mutation.
package struct OrganizationState: Sendable {
    /// Current knobs.
    package var knobs: SimulatorKnobs
    /// Pools by id (deleted pools are removed).
    package private(set) var pools: [Int: SimulatedPool] = [:]
    /// Agents by id, including deleted ones.
    package private(set) var agents: [Int: SimulatedAgent] = [:]
    /// Job requests by id.
    package private(set) var requests: [Int: SimulatedJobRequest] = [:]
    /// Jobs refused at queue time.
    package private(set) var queueFailures: [QueueFailure] = []
    /// Live sessions by id.
    package private(set) var sessions: [String: SimulatedSession] = [:]
    /// Published packages.
    package private(set) var packages: [SimulatedPackage] = []
    /// Event log, oldest first.
    package private(set) var events: [SimulatorEvent] = []
    /// Accepted personal access tokens.
    package private(set) var personalAccessTokens: Set<String>
    /// Agent bearer tokens: token → (agent id, client id it was issued for, expiry).
    private var accessTokens: [String: (agentId: Int, clientId: String, expiresOn: Date)] = [:]
    /// Target version of a one-shot `AgentRefresh` for the next session opened.
    private var pendingRefreshVersion: String?
    private var nextPoolId = 1
    private var nextAgentId = 1
    private var nextRequestId = 1
    private var nextMessageId = 1
    private var nextBuildId = 1000

    /// An empty organization.
    package init(knobs: SimulatorKnobs, personalAccessTokens: [String]) {
        self.knobs = knobs
        self.personalAccessTokens = Set(personalAccessTokens)
    }

    // MARK: Events

    private mutating func log(
        _ kind: SimulatorEvent.Kind, _ message: String, at now: Date,
        poolId: Int? = nil, agentId: Int? = nil, requestId: Int? = nil
    ) {
        events.append(SimulatorEvent(
            time: now, kind: kind, message: message, poolId: poolId, agentId: agentId, requestId: requestId))
    }

    // MARK: Credentials

    /// Whether the PAT is currently valid.
    package func isValidPersonalAccessToken(_ token: String) -> Bool {
        personalAccessTokens.contains(token)
    }

    /// Adds a PAT to the valid set.
    package mutating func addPersonalAccessToken(_ token: String, now: Date) {
        personalAccessTokens.insert(token)
        log(.patAdded, "personal access token added", at: now)
    }

    /// Removes a PAT from the valid set (simulates expiry or revocation).
    package mutating func revokePersonalAccessToken(_ token: String, now: Date) {
        personalAccessTokens.remove(token)
        log(.patRevoked, "personal access token revoked", at: now)
    }

    /// Exchanges an agent's signed client assertion for a bearer token, as the token service does.
    ///
    /// The assertion's `sub` names the OAuth client; the registered (not deleted) agent with that client id must
    /// have registered a public key, and the assertion must verify with it for `audience` (the `authorizationUrl`
    /// handed out at registration). Refusals are logged as `tokenRefused`.
    package mutating func issueAccessToken(
        assertion: String, audience: String, now: Date
    ) -> Result<IssuedAccessToken, TokenRefusal> {
        let result = grantAccessToken(assertion: assertion, audience: audience, now: now)
        switch result {
        case .success(let issued):
            let agent = agents[issued.agentId]
            log(.tokenIssued, "access token issued to agent \(agent?.name ?? "?")", at: now,
                poolId: agent?.poolId, agentId: issued.agentId)
        case .failure(let refusal):
            let clientId = ClientAssertion.unverifiedClientId(assertion)
            let agent = clientId.flatMap { id in agents.values.first { $0.clientId == id } }
            noteTokenRefused(refusal, now: now, agentId: agent?.id, poolId: agent?.poolId)
        }
        return result
    }

    private mutating func grantAccessToken(
        assertion: String, audience: String, now: Date
    ) -> Result<IssuedAccessToken, TokenRefusal> {
        guard let clientId = ClientAssertion.unverifiedClientId(assertion) else {
            return .failure(.invalidClient("The client assertion is not a JWT with a sub claim."))
        }
        let candidates = agents.values.filter { $0.clientId == clientId }
        guard let agent = candidates.first(where: \.isRegistered) else {
            let reason = candidates.isEmpty
                ? "No OAuth client \(clientId) is registered."
                : "The OAuth client \(clientId) was deleted with its agent."
            return .failure(.invalidClient(reason))
        }
        guard !agent.publicKeyModulus.isEmpty else {
            return .failure(.invalidClient("The agent \(agent.name) registered no public key, so it cannot get a token."))
        }
        let publicKey = AgentPublicKey(exponent: agent.publicKeyExponent, modulus: agent.publicKeyModulus)
        do {
            _ = try ClientAssertion.verify(assertion, publicKey: publicKey, audience: audience, now: now)
        } catch {
            switch error.kind {
            case .expired, .notYetValid:
                return .failure(.invalidGrant(
                    "\(error.description). Current server time is \(WireTimestamp.format(now))."))
            default:
                return .failure(.invalidClient(error.description))
            }
        }
        let lifetime = knobs.accessTokenLifetime.timeInterval
        let token = UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
            + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let expiresOn = now.addingTimeInterval(lifetime)
        accessTokens[token] = (agent.id, clientId, expiresOn)
        return .success(IssuedAccessToken(
            token: token, agentId: agent.id, expiresOn: expiresOn, expiresIn: Int(lifetime.rounded(.down))))
    }

    /// Records a refused token request (also the ones refused before any assertion was read).
    package mutating func noteTokenRefused(_ refusal: TokenRefusal, now: Date, agentId: Int? = nil, poolId: Int? = nil) {
        log(.tokenRefused, "token request refused: \(refusal.error): \(refusal.errorDescription)", at: now,
            poolId: poolId, agentId: agentId)
    }

    /// What a bearer token stands for.
    package enum TokenIdentity: Sendable, Equatable {
        /// A registered agent whose registration the token still matches.
        case agent(Int)
        /// An agent that has since been deleted.
        case deletedAgent(Int)
        /// A token of this agent whose lifetime (`accessTokenLifetime`) is over: the listener must fetch a new one.
        case expired(Int)
        /// Unknown, or issued for a replaced registration.
        case invalid
    }

    /// Resolves a bearer token at `now`.
    package func identity(ofAccessToken token: String, now: Date) -> TokenIdentity {
        guard let grant = accessTokens[token], let agent = agents[grant.agentId] else { return .invalid }
        if !agent.isRegistered { return .deletedAgent(agent.id) }
        guard agent.clientId == grant.clientId else { return .invalid }
        return now < grant.expiresOn ? .agent(agent.id) : .expired(agent.id)
    }

    // MARK: Pools

    /// Creates a pool; an existing pool with the same name (ignoring case) is returned unchanged.
    @discardableResult
    package mutating func createPool(name: String, autoUpdate: Bool, now: Date) -> SimulatedPool {
        if let existing = pool(named: name) { return existing }
        let pool = SimulatedPool(
            id: nextPoolId, name: name, autoUpdate: autoUpdate, createdOn: now, scope: UUID().uuidString.lowercased())
        nextPoolId += 1
        pools[pool.id] = pool
        log(.poolCreated, "pool \(name) created", at: now, poolId: pool.id)
        return pool
    }

    /// The pool with this name, ignoring case.
    package func pool(named name: String) -> SimulatedPool? {
        let lowered = name.lowercased()
        return pools.values.sorted { $0.id < $1.id }.first { $0.name.lowercased() == lowered }
    }

    /// The pool with this id, or a 404 failure.
    package func existingPool(_ poolId: Int) throws(SimulatorFailure) -> SimulatedPool {
        guard let pool = pools[poolId] else { throw .poolNotFound(poolId) }
        return pool
    }

    /// Applies a partial update (`name`, `autoUpdate`) to a pool.
    package mutating func updatePool(
        _ poolId: Int, name: String?, autoUpdate: Bool?, now: Date
    ) throws(SimulatorFailure) -> SimulatedPool {
        var pool = try existingPool(poolId)
        if let name { pool.name = name }
        if let autoUpdate { pool.autoUpdate = autoUpdate }
        pools[poolId] = pool
        log(.poolUpdated, "pool \(pool.name) updated", at: now, poolId: poolId)
        return pool
    }

    /// Deletes a pool with its agents; their sessions end and their jobs are abandoned.
    package mutating func deletePool(_ poolId: Int, now: Date) throws(SimulatorFailure) {
        let pool = try existingPool(poolId)
        for agent in registeredAgents(inPool: poolId) {
            removeAgent(agent.id, now: now)
        }
        for request in requests.values where request.poolId == poolId && !request.isFinished {
            finish(request.requestId, result: .canceled, at: now)
        }
        pools[poolId] = nil
        log(.poolDeleted, "pool \(pool.name) deleted", at: now, poolId: poolId)
    }

    // MARK: Agents

    /// Registered agents of a pool, by id.
    package func registeredAgents(inPool poolId: Int) -> [SimulatedAgent] {
        agents.values.filter { $0.poolId == poolId && $0.isRegistered }.sorted { $0.id < $1.id }
    }

    /// A registered agent of the pool, or a 404 failure.
    package func existingAgent(poolId: Int, agentId: Int) throws(SimulatorFailure) -> SimulatedAgent {
        _ = try existingPool(poolId)
        guard let agent = agents[agentId], agent.poolId == poolId, agent.isRegistered else {
            throw .agentNotFound(poolId: poolId, agentId: agentId)
        }
        return agent
    }

    /// What `POST agents` / `PUT agents/{id}` carry.
    package struct AgentRegistration: Sendable {
        /// Agent name.
        package var name: String
        /// Agent version.
        package var version: String
        /// OS description.
        package var osDescription: String
        /// Enabled flag.
        package var enabled: Bool
        /// Max parallelism.
        package var maxParallelism: Int
        /// System capabilities.
        package var systemCapabilities: [String: String]
        /// RSA public key exponent.
        package var publicKeyExponent: String
        /// RSA public key modulus.
        package var publicKeyModulus: String

        /// A registration with these properties.
        package init(
            name: String, version: String = "4.266.2", osDescription: String = "Linux", enabled: Bool = true,
            maxParallelism: Int = 1, systemCapabilities: [String: String] = [:],
            publicKeyExponent: String = "AQAB", publicKeyModulus: String = ""
        ) {
            self.name = name
            self.version = version
            self.osDescription = osDescription
            self.enabled = enabled
            self.maxParallelism = maxParallelism
            self.systemCapabilities = systemCapabilities
            self.publicKeyExponent = publicKeyExponent
            self.publicKeyModulus = publicKeyModulus
        }
    }

    /// Registers an agent; 409 when the name is taken in the pool.
    package mutating func addAgent(
        poolId: Int, _ registration: AgentRegistration, now: Date
    ) throws(SimulatorFailure) -> SimulatedAgent {
        let pool = try existingPool(poolId)
        guard !registration.name.isEmpty else { throw .badRequest("The agent name must not be empty.") }
        let lowered = registration.name.lowercased()
        if registeredAgents(inPool: poolId).contains(where: { $0.name.lowercased() == lowered }) {
            throw .agentExists(pool: pool.name, name: registration.name)
        }
        let agent = SimulatedAgent(
            id: nextAgentId, poolId: poolId, name: registration.name, version: registration.version,
            osDescription: registration.osDescription, enabled: registration.enabled,
            maxParallelism: registration.maxParallelism, createdOn: now, statusChangedOn: now, status: .offline,
            systemCapabilities: registration.systemCapabilities, userCapabilities: [:],
            clientId: UUID().uuidString.lowercased(), publicKeyExponent: registration.publicKeyExponent,
            publicKeyModulus: registration.publicKeyModulus)
        nextAgentId += 1
        agents[agent.id] = agent
        log(.agentRegistered, "agent \(agent.name) registered in pool \(pool.name)", at: now,
            poolId: poolId, agentId: agent.id)
        return agent
    }

    /// Replaces a registration (`config.sh --replace`): new client id, old tokens and session dropped.
    package mutating func replaceAgent(
        poolId: Int, agentId: Int, _ registration: AgentRegistration, now: Date
    ) throws(SimulatorFailure) -> SimulatedAgent {
        var agent = try existingAgent(poolId: poolId, agentId: agentId)
        if let sessionId = agent.sessionId {
            closeSession(sessionId, reason: .sessionClosed, detail: "replaced", now: now)
            agent = agents[agentId] ?? agent
        }
        agent.name = registration.name.isEmpty ? agent.name : registration.name
        agent.version = registration.version
        agent.osDescription = registration.osDescription
        agent.enabled = registration.enabled
        agent.maxParallelism = registration.maxParallelism
        agent.systemCapabilities = registration.systemCapabilities
        agent.publicKeyExponent = registration.publicKeyExponent
        agent.publicKeyModulus = registration.publicKeyModulus
        agent.clientId = UUID().uuidString.lowercased()
        agents[agentId] = agent
        log(.agentReplaced, "agent \(agent.name) replaced", at: now, poolId: poolId, agentId: agentId)
        return agent
    }

    /// Applies a partial update (`enabled`, `name`, `maxParallelism`, `status` is ignored) to an agent.
    package mutating func updateAgent(
        poolId: Int, agentId: Int, enabled: Bool?, name: String?, maxParallelism: Int?, now: Date
    ) throws(SimulatorFailure) -> SimulatedAgent {
        var agent = try existingAgent(poolId: poolId, agentId: agentId)
        if let enabled { agent.enabled = enabled }
        if let name, !name.isEmpty { agent.name = name }
        if let maxParallelism { agent.maxParallelism = maxParallelism }
        agents[agentId] = agent
        log(.agentUpdated, "agent \(agent.name) updated (enabled=\(agent.enabled))", at: now,
            poolId: poolId, agentId: agentId)
        return agent
    }

    /// Overwrites the agent's user capabilities.
    package mutating func setUserCapabilities(
        poolId: Int, agentId: Int, _ capabilities: [String: String], now: Date
    ) throws(SimulatorFailure) -> SimulatedAgent {
        var agent = try existingAgent(poolId: poolId, agentId: agentId)
        agent.userCapabilities = capabilities
        agents[agentId] = agent
        log(.capabilitiesUpdated, "user capabilities of \(agent.name) set", at: now, poolId: poolId, agentId: agentId)
        return agent
    }

    /// Deletes an agent; refused while it holds an assigned or running job.
    package mutating func deleteAgent(poolId: Int, agentId: Int, now: Date) throws(SimulatorFailure) {
        let agent = try existingAgent(poolId: poolId, agentId: agentId)
        if agent.assignedRequestId != nil {
            log(.agentDeleteRefused, "delete of busy agent \(agent.name) refused", at: now,
                poolId: poolId, agentId: agentId)
            throw .agentBusy(name: agent.name, status: knobs.deleteBusyAgentStatus)
        }
        removeAgent(agentId, now: now)
    }

    private mutating func removeAgent(_ agentId: Int, now: Date) {
        guard var agent = agents[agentId] else { return }
        if let sessionId = agent.sessionId {
            closeSession(sessionId, reason: .sessionClosed, detail: "agent deleted", now: now)
            agent = agents[agentId] ?? agent
        }
        agent.deletedOn = now
        agent.status = .offline
        agents[agentId] = agent
        log(.agentDeleted, "agent \(agent.name) deleted", at: now, poolId: agent.poolId, agentId: agentId)
    }

    // MARK: Matching

    /// Agents of the pool that count as matching the demands (enabled unless `disabledAgentsMatch`).
    package func matchingAgents(poolId: Int, demands: [Demand]) -> [SimulatedAgent] {
        registeredAgents(inPool: poolId).filter {
            ($0.enabled || knobs.disabledAgentsMatch) && Demand.allSatisfied(demands, by: $0.capabilities)
        }
    }

    /// The full demand list of a job: the user's demands plus the server's `Agent.Version -gtVersion X`.
    package func serverDemands(for userDemands: [String]) -> [String] {
        userDemands + ["Agent.Version -gtVersion \(knobs.minimumAgentVersion)"]
    }

    // MARK: Job requests

    /// Queues a job; fails (and records the failure) when no registered agent of the pool can satisfy it.
    package mutating func queueJob(
        _ specification: JobSpecification, now: Date
    ) -> Result<SimulatedJobRequest, QueueFailure> {
        let demandStrings = serverDemands(for: specification.demands)
        func fail(_ message: String) -> Result<SimulatedJobRequest, QueueFailure> {
            let failure = QueueFailure(
                time: now, poolName: specification.pool, jobName: specification.name, demands: demandStrings,
                message: message)
            queueFailures.append(failure)
            log(.jobQueueFailed, message, at: now)
            return .failure(failure)
        }
        guard let pool = pool(named: specification.pool) else {
            return fail("Could not find a pool with name \(specification.pool). The pool does not exist or has not been authorized for use.")
        }
        let parsed: [Demand]
        do {
            parsed = try Demand.parseAll(demandStrings)
        } catch {
            return fail("The demand '\(error.text)' is not valid.")
        }
        let matched = matchingAgents(poolId: pool.id, demands: parsed)
        guard !matched.isEmpty else {
            return fail(
                "No agent found in pool \(pool.name) which satisfies the specified demands: "
                    + demandStrings.joined(separator: ", "))
        }
        let planId = UUID().uuidString.lowercased()
        let request = SimulatedJobRequest(
            requestId: nextRequestId, poolId: pool.id, jobName: specification.name, planId: planId,
            jobId: UUID().uuidString.lowercased(), demands: demandStrings, parsedDemands: parsed,
            script: specification.script, durationSeconds: specification.durationSeconds,
            variables: specification.variables, scopeId: pool.scope, definitionId: 1,
            definitionName: specification.name, buildId: nextBuildId, buildNumber: "\(nextBuildId).1",
            queueTime: now, matchedAgentIds: matched.map(\.id))
        nextRequestId += 1
        nextBuildId += 1
        requests[request.requestId] = request
        log(.jobQueued, "job \(specification.name) queued in pool \(pool.name)", at: now,
            poolId: pool.id, requestId: request.requestId)
        return .success(request)
    }

    /// Cancels a job: a queued one finishes as canceled at once; an assigned or running one gets `JobCancel`.
    package mutating func cancelJob(_ requestId: Int, now: Date) throws(SimulatorFailure) {
        guard let request = requests[requestId] else { throw .jobNotFound(requestId) }
        switch request.phase {
        case .finished:
            return
        case .queued:
            finish(requestId, result: .canceled, at: now)
        case .assigned:
            // The agent has not taken the job yet: withdraw the message and finish it.
            if let agentId = request.reservedAgentId, let sessionId = agents[agentId]?.sessionId {
                sessions[sessionId]?.messages.removeAll { $0.requestId == requestId }
            }
            finish(requestId, result: .canceled, at: now)
        case .running:
            guard request.cancelRequestedOn == nil else { return }
            requests[requestId]?.cancelRequestedOn = now
            if let agentId = request.reservedAgentId, let sessionId = agents[agentId]?.sessionId {
                let body = JSONValue.object(JSONObject([
                    ("requestId", .int(requestId)), ("jobId", .string(request.jobId)),
                ]))
                enqueue(sessionId: sessionId, type: "JobCancel", body: body, requestId: requestId)
            }
            log(.jobCancelRequested, "cancel requested for job \(request.jobName)", at: now,
                poolId: request.poolId, agentId: request.reservedAgentId, requestId: requestId)
        }
    }

    /// Finishes a request and frees its agent.
    private mutating func finish(_ requestId: Int, result: JobResult, at time: Date, logAt now: Date? = nil) {
        guard var request = requests[requestId], !request.isFinished else { return }
        request.finishTime = time
        request.result = result
        request.lockedUntil = nil
        requests[requestId] = request
        if let agentId = request.reservedAgentId, var agent = agents[agentId], agent.assignedRequestId == requestId {
            agent.assignedRequestId = nil
            agent.lastCompletedRequestId = requestId
            agents[agentId] = agent
        }
        log(.jobFinished, "job \(request.jobName) finished: \(result.rawValue)", at: now ?? time,
            poolId: request.poolId, agentId: request.reservedAgentId, requestId: requestId)
    }

    /// A request the agent is allowed to touch with this lock token.
    private func lockedRequest(
        poolId: Int, requestId: Int, lockToken: String?
    ) throws(SimulatorFailure) -> SimulatedJobRequest {
        guard let request = requests[requestId], request.poolId == poolId else { throw .jobNotFound(requestId) }
        if request.isFinished { throw .jobNotFound(requestId, status: 409) }
        guard let lockToken, lockToken.lowercased() == request.lockToken?.lowercased() else {
            throw .invalidLockToken(requestId)
        }
        return request
    }

    /// Renews the lock of a running job (`PATCH jobrequests/{id}` without a result).
    package mutating func renewLock(
        poolId: Int, requestId: Int, lockToken: String?, now: Date
    ) throws(SimulatorFailure) -> SimulatedJobRequest {
        let request = try lockedRequest(poolId: poolId, requestId: requestId, lockToken: lockToken)
        markReceived(requestId: requestId, now: now)
        requests[requestId]?.lockedUntil = now.addingTimeInterval(knobs.lockDuration.timeInterval)
        if let agentId = request.reservedAgentId, let sessionId = agents[agentId]?.sessionId {
            sessions[sessionId]?.lastHeartbeat = now
        }
        log(.jobLockRenewed, "lock of job \(request.jobName) renewed", at: now,
            poolId: poolId, agentId: request.reservedAgentId, requestId: requestId)
        return requests[requestId] ?? request
    }

    /// Finishes a job on the agent's behalf (`PATCH jobrequests/{id}` with a result).
    package mutating func finishJob(
        poolId: Int, requestId: Int, lockToken: String?, result: JobResult, finishTime: Date?, now: Date
    ) throws(SimulatorFailure) -> SimulatedJobRequest {
        _ = try lockedRequest(poolId: poolId, requestId: requestId, lockToken: lockToken)
        markReceived(requestId: requestId, now: now)
        finish(requestId, result: result, at: finishTime ?? now, logAt: now)
        guard let request = requests[requestId] else { throw .jobNotFound(requestId) }
        return request
    }

    /// Assigns queued jobs, oldest first, to online, enabled, idle agents that satisfy their demands.
    ///
    /// Also refreshes `matchedAgents` of unfinished requests. Returns whether anything was assigned.
    @discardableResult
    package mutating func dispatch(now: Date) -> Bool {
        for (id, request) in requests where !request.isFinished {
            let matched = matchingAgents(poolId: request.poolId, demands: request.parsedDemands).map(\.id)
            if matched != request.matchedAgentIds { requests[id]?.matchedAgentIds = matched }
        }
        let waiting = requests.values
            .filter { $0.phase == .queued }
            .sorted { ($0.queueTime, $0.requestId) < ($1.queueTime, $1.requestId) }
        var assigned = false
        for request in waiting {
            let candidate = registeredAgents(inPool: request.poolId).first { agent in
                agent.enabled && agent.sessionId != nil && agent.assignedRequestId == nil
                    && Demand.allSatisfied(request.parsedDemands, by: agent.capabilities)
            }
            guard let agent = candidate, let sessionId = agent.sessionId else { continue }
            assign(request, to: agent, sessionId: sessionId, now: now)
            assigned = true
        }
        return assigned
    }

    private mutating func assign(_ request: SimulatedJobRequest, to agent: SimulatedAgent, sessionId: String, now: Date) {
        let lockToken = UUID().uuidString.lowercased()
        var updated = request
        updated.assignTime = now
        updated.reservedAgentId = agent.id
        updated.lockToken = lockToken
        requests[request.requestId] = updated
        agents[agent.id]?.assignedRequestId = request.requestId
        var body = JSONObject([
            ("requestId", .int(request.requestId)),
            ("jobId", .string(request.jobId)),
            ("planId", .string(request.planId)),
            ("jobDisplayName", .string(request.jobName)),
            ("lockToken", .string(lockToken)),
        ])
        body["script"] = request.script.map { .string($0) }
        body["durationSeconds"] = .double(request.durationSeconds)
        body["variables"] = .stringMap(request.variables)
        enqueue(sessionId: sessionId, type: "PipelineAgentJobRequest", body: .object(body), requestId: request.requestId)
        log(.jobAssigned, "job \(request.jobName) assigned to \(agent.name)", at: now,
            poolId: request.poolId, agentId: agent.id, requestId: request.requestId)
    }

    // MARK: Sessions and messages

    private mutating func enqueue(sessionId: String, type: String, body: JSONValue, requestId: Int?) {
        let message = AgentMessage(messageId: nextMessageId, messageType: type, body: body.serialized, requestId: requestId)
        nextMessageId += 1
        sessions[sessionId]?.messages.append(message)
    }

    /// Asks the next session opened (by any agent) to refresh to this version, once.
    package mutating func refreshNextSession(targetVersion: String, now: Date) {
        pendingRefreshVersion = targetVersion
        log(.refreshRequested, "next session gets AgentRefresh to \(targetVersion)", at: now)
    }

    /// Opens a session for an agent; 409 when it already has one.
    package mutating func createSession(
        poolId: Int, agentId: Int, ownerName: String, now: Date
    ) throws(SimulatorFailure) -> SimulatedSession {
        var agent = try existingAgent(poolId: poolId, agentId: agentId)
        if agent.sessionId != nil { throw .sessionConflict }
        var session = SimulatedSession(
            sessionId: UUID().uuidString.lowercased(), agentId: agentId, poolId: poolId, ownerName: ownerName,
            createdOn: now, lastHeartbeat: now, activePolls: 0, messages: [])
        sessions[session.sessionId] = session
        agent.sessionId = session.sessionId
        agent.status = .online
        agent.statusChangedOn = now
        agents[agentId] = agent
        if let target = pendingRefreshVersion {
            pendingRefreshVersion = nil
            enqueue(
                sessionId: session.sessionId, type: "AgentRefresh",
                body: .object(JSONObject([("agentId", .int(agentId)), ("targetVersion", .string(target))])),
                requestId: nil)
            session = sessions[session.sessionId] ?? session
        }
        log(.sessionOpened, "agent \(agent.name) online", at: now, poolId: poolId, agentId: agentId)
        return session
    }

    /// Closes a session on the agent's request (`DELETE sessions/{id}`).
    package mutating func deleteSession(
        poolId: Int, agentId: Int, sessionId: String, now: Date
    ) throws(SimulatorFailure) {
        guard let session = sessions[sessionId], session.agentId == agentId, session.poolId == poolId else {
            throw .sessionExpired(sessionId)
        }
        closeSession(session.sessionId, reason: .sessionClosed, detail: "deleted", now: now)
    }

    /// Ends a session: the agent goes offline and a job it still held is abandoned.
    private mutating func closeSession(_ sessionId: String, reason: SimulatorEvent.Kind, detail: String, now: Date) {
        guard let session = sessions.removeValue(forKey: sessionId) else { return }
        guard var agent = agents[session.agentId] else { return }
        agent.sessionId = nil
        agent.status = .offline
        agent.statusChangedOn = now
        agents[agent.id] = agent
        log(reason, "agent \(agent.name) offline (\(detail))", at: now, poolId: agent.poolId, agentId: agent.id)
        guard let requestId = agent.assignedRequestId, let request = requests[requestId] else { return }
        if request.phase == .assigned {
            // The agent never took the job message: release the reservation so another agent can run it.
            requeue(requestId, from: agent.id, now: now)
        } else {
            finish(requestId, result: .abandoned, at: now)
        }
    }

    /// Puts an assigned (not yet received) job back in the queue, as if it had never been assigned.
    private mutating func requeue(_ requestId: Int, from agentId: Int, now: Date) {
        guard var request = requests[requestId] else { return }
        request.assignTime = nil
        request.reservedAgentId = nil
        request.lockToken = nil
        requests[requestId] = request
        agents[agentId]?.assignedRequestId = nil
        log(.jobRequeued, "job \(request.jobName) back in the queue (agent left before taking it)", at: now,
            poolId: request.poolId, agentId: agentId, requestId: requestId)
    }

    /// The session of this agent, validated for a poll; refreshes the heartbeat and counts the open poll.
    package mutating func beginPoll(
        poolId: Int, agentId: Int, sessionId: String, now: Date
    ) throws(SimulatorFailure) {
        guard var session = sessions[sessionId], session.agentId == agentId, session.poolId == poolId else {
            throw .sessionExpired(sessionId)
        }
        session.lastHeartbeat = now
        session.activePolls += 1
        sessions[sessionId] = session
    }

    /// Ends a poll started with `beginPoll`, refreshing the heartbeat.
    package mutating func endPoll(sessionId: String, now: Date) {
        guard var session = sessions[sessionId] else { return }
        session.activePolls = max(0, session.activePolls - 1)
        session.lastHeartbeat = now
        sessions[sessionId] = session
    }

    /// The next message for the session after `lastMessageId`.
    ///
    /// Messages up to `lastMessageId` count as acknowledged and are dropped. A job message stays queued until
    /// acknowledged, so a listener that lost the response gets it again. Delivery alone does not start the job:
    /// a `--once` listener that already ran its job receives a second job message but never acknowledges it,
    /// and the service then gives that job to another agent.
    package mutating func takeMessage(
        sessionId: String, lastMessageId: Int?, now: Date
    ) throws(SimulatorFailure) -> AgentMessage? {
        guard var session = sessions[sessionId] else { throw .sessionExpired(sessionId) }
        if let lastMessageId {
            for acknowledged in session.messages where acknowledged.messageId <= lastMessageId {
                markReceived(acknowledged, now: now)
            }
            session.messages.removeAll { $0.messageId <= lastMessageId }
        }
        sessions[sessionId] = session
        guard let message = session.messages.first else { return nil }
        log(.messageDelivered, "\(message.messageType) \(message.messageId) delivered", at: now,
            poolId: session.poolId, agentId: session.agentId, requestId: message.requestId)
        return message
    }

    /// Acknowledges (removes) a message.
    package mutating func deleteMessage(
        poolId: Int, agentId: Int, sessionId: String, messageId: Int, now: Date
    ) throws(SimulatorFailure) {
        guard var session = sessions[sessionId], session.agentId == agentId, session.poolId == poolId else {
            throw .sessionExpired(sessionId)
        }
        for acknowledged in session.messages where acknowledged.messageId == messageId {
            markReceived(acknowledged, now: now)
        }
        session.messages.removeAll { $0.messageId == messageId }
        session.lastHeartbeat = now
        sessions[sessionId] = session
        log(.messageAcknowledged, "message \(messageId) acknowledged", at: now, poolId: poolId, agentId: agentId)
    }

    /// An acknowledged job message means the agent took the job: it gets `receiveTime` and its first lock.
    private mutating func markReceived(_ message: AgentMessage, now: Date) {
        guard message.messageType == "PipelineAgentJobRequest", let requestId = message.requestId else { return }
        markReceived(requestId: requestId, now: now)
    }

    /// Starts a job that was assigned and not yet received (acknowledgement, or a lock renewal that came first).
    private mutating func markReceived(requestId: Int, now: Date) {
        guard var request = requests[requestId], request.receiveTime == nil, !request.isFinished,
              request.assignTime != nil else { return }
        request.receiveTime = now
        request.lockedUntil = now.addingTimeInterval(knobs.lockDuration.timeInterval)
        requests[requestId] = request
        log(.jobReceived, "job \(request.jobName) received", at: now,
            poolId: request.poolId, agentId: request.reservedAgentId, requestId: requestId)
    }

    // MARK: Expiry

    /// Drops silent sessions, abandons jobs whose lock expired, and finishes cancelled jobs the agent ignored.
    ///
    /// Returns whether anything changed.
    @discardableResult
    package mutating func sweep(now: Date) -> Bool {
        var changed = false
        let timeout = knobs.sessionTimeout.timeInterval
        for session in sessions.values
        where session.activePolls == 0 && now.timeIntervalSince(session.lastHeartbeat) > timeout {
            closeSession(session.sessionId, reason: .sessionExpired, detail: "heartbeat timeout", now: now)
            changed = true
        }
        for request in requests.values where !request.isFinished {
            if let lockedUntil = request.lockedUntil, lockedUntil < now {
                finish(request.requestId, result: .abandoned, at: now)
                changed = true
            } else if let cancelled = request.cancelRequestedOn,
                now.timeIntervalSince(cancelled) > knobs.cancelTimeout.timeInterval
            {
                finish(request.requestId, result: .canceled, at: now)
                changed = true
            }
        }
        return changed
    }

    // MARK: Packages

    /// Publishes a package (replacing one with the same type, platform and version).
    @discardableResult
    package mutating func publishPackage(_ specification: PackageSpecification, now: Date) -> SimulatedPackage {
        let filename = specification.filename
            ?? "vsts-agent-\(specification.platform)-\(specification.version).tar.gz"
        let package = SimulatedPackage(
            type: specification.type, platform: specification.platform, version: specification.version,
            createdOn: now, downloadUrl: specification.downloadUrl, hashValue: specification.hashValue,
            filename: filename, infoUrl: "https://go.microsoft.com/fwlink/?LinkId=798199")
        packages.removeAll {
            $0.type.lowercased() == package.type.lowercased()
                && $0.platform.lowercased() == package.platform.lowercased() && $0.version == package.version
        }
        packages.append(package)
        log(.packagePublished, "package \(package.type) \(package.platform) \(package.version) published", at: now)
        return package
    }

    /// Packages of a type (and platform), newest version first.
    package func packages(type: String, platform: String?) -> [SimulatedPackage] {
        packages
            .filter { $0.type.lowercased() == type.lowercased() }
            .filter { platform == nil || $0.platform.lowercased() == platform?.lowercased() }
            .sorted { ($0.version, $0.createdOn) > ($1.version, $1.createdOn) }
    }

    /// Records a knob change in the event log.
    package mutating func noteKnobsChanged(now: Date) {
        log(.knobsChanged, "knobs changed", at: now)
    }
}
