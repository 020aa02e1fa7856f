import Foundation
import Logging
import Shared

/// Everything the simulated organization holds at one instant, for assertions and `waitUntil`.
package struct OrganizationSnapshot: Sendable {
    /// Pools by id order.
    package let pools: [SimulatedPool]
    /// Agents (including deleted ones) by id order.
    package let agents: [SimulatedAgent]
    /// Job requests by id order.
    package let requests: [SimulatedJobRequest]
    /// Jobs refused at queue time, oldest first.
    package let queueFailures: [QueueFailure]
    /// Live sessions.
    package let sessions: [SimulatedSession]
    /// Published packages.
    package let packages: [SimulatedPackage]
    /// Event log, oldest first.
    package let events: [SimulatorEvent]
    /// Requests seen per route key (`GET pools/{poolId}/jobrequests`) and status (0 = connection dropped).
    package let requestCounts: [String: [Int: Int]]
    /// Knobs in effect.
    package let knobs: SimulatorKnobs

    /// The pool with this name, ignoring case.
    package func pool(named name: String) -> SimulatedPool? {
        pools.first { $0.name.lowercased() == name.lowercased() }
    }

    /// The registered agent with this name (newest registration), ignoring case.
    package func agent(named name: String) -> SimulatedAgent? {
        agents.last { $0.name.lowercased() == name.lowercased() && $0.isRegistered }
    }

    /// The request with this id.
    package func request(_ requestId: Int) -> SimulatedJobRequest? {
        requests.first { $0.requestId == requestId }
    }

    /// Total requests seen for a route key, whatever the status.
    package func count(_ routeKey: String) -> Int {
        requestCounts[routeKey]?.values.reduce(0, +) ?? 0
    }
}

/// What queueing a job produced: a live request, or the service's queue-time failure.
package enum QueueOutcome: Sendable, Equatable {
    /// The job is queued with this request id.
    case queued(requestId: Int)
    /// No registered agent could satisfy the job; nothing was queued.
    case failed(QueueFailure)

    /// The request id when queued.
    package var requestId: Int? {
        if case .queued(let id) = self { return id }
        return nil
    }
}

/// Errors of the Swift control API.
package enum SimulatorControlError: Error, Sendable, CustomStringConvertible {
    /// `waitUntil` ran out of time; carries the last event lines for diagnosis.
    case timedOut(after: Duration, lastEvents: [String])
    /// A control call referred to something that does not exist or was refused.
    case refused(SimulatorFailure)
    /// `queueJobOrThrow` hit a queue-time failure.
    case queueFailed(QueueFailure)

    package var description: String {
        switch self {
        case .timedOut(let duration, let events):
            "condition not met within \(duration); last events:\n" + events.joined(separator: "\n")
        case .refused(let failure): "refused: \(failure)"
        case .queueFailed(let failure): "queue failed: \(failure.message)"
        }
    }
}

/// The control API of a simulated organization, and the state the HTTP routes act on.
///
/// Every mutation runs the dispatcher and wakes waiters (long polls, `waitUntil`), so tests await conditions
/// instead of sleeping. Time comes from the configured clock plus an offset tests can advance.
package actor SimulatedOrganization {
    /// The organization name.
    package nonisolated let name: String
    /// Faults and request counts (shared with the connection-dropping channel handler).
    package nonisolated let traffic: TrafficControl
    private var state: OrganizationState
    private let clock: @Sendable () -> Date
    private var timeOffset: TimeInterval = 0
    private let changes = ChangeSignal()
    private var downloads: [String: [UInt8]] = [:]
    private let logger: Logger
    /// `http://127.0.0.1:PORT`, known once the server listens; used for links and download URLs.
    package private(set) var baseURL: String = "http://127.0.0.1"

    /// A new organization with the configured PATs, knobs and pools.
    package init(configuration: SimulatorConfiguration, logger: Logger) {
        self.name = configuration.organization
        self.traffic = TrafficControl()
        self.clock = configuration.clock
        self.logger = logger
        var state = OrganizationState(
            knobs: configuration.knobs, personalAccessTokens: configuration.personalAccessTokens)
        let now = configuration.clock()
        for pool in configuration.pools { state.createPool(name: pool, autoUpdate: true, now: now) }
        self.state = state
    }

    /// The organization URL, `http://127.0.0.1:PORT/ORG`.
    package var organizationURL: String { "\(baseURL)/\(name)" }

    /// Records `http://127.0.0.1:PORT` once the server is bound (links and download URLs use it).
    func setBaseURL(_ url: String) { baseURL = url }

    /// The simulator's current time.
    package func now() -> Date { clock().addingTimeInterval(timeOffset) }

    /// Moves the simulator's clock forward (then sweeps), so timeouts can be tested without waiting.
    package func advanceTime(by duration: Duration) {
        timeOffset += duration.timeInterval
        mutate { state, now in state.sweep(now: now) }
    }

    /// Runs a mutation, then dispatch, then wakes waiters.
    @discardableResult
    private func mutate<T, E: Error>(_ body: (inout OrganizationState, Date) throws(E) -> T) throws(E) -> T {
        let now = now()
        defer {
            state.dispatch(now: now)
            changes.signal()
        }
        return try body(&state, now)
    }

    // MARK: Snapshot and waiting

    /// A copy of everything the organization holds.
    package func snapshot() -> OrganizationSnapshot {
        OrganizationSnapshot(
            pools: state.pools.values.sorted { $0.id < $1.id },
            agents: state.agents.values.sorted { $0.id < $1.id },
            requests: state.requests.values.sorted { $0.requestId < $1.requestId },
            queueFailures: state.queueFailures,
            sessions: state.sessions.values.sorted { $0.createdOn < $1.createdOn },
            packages: state.packages,
            events: state.events,
            requestCounts: traffic.requestCounts,
            knobs: state.knobs)
    }

    /// Waits until the predicate holds for a snapshot, re-checking on every state change; returns that snapshot.
    ///
    /// Request counts are not state changes; a predicate on them is re-checked at least every 100 ms.
    @discardableResult
    package func waitUntil(
        timeout: Duration = .seconds(10),
        _ predicate: @Sendable (OrganizationSnapshot) -> Bool
    ) async throws -> OrganizationSnapshot {
        let deadline = ContinuousClock.now + timeout
        while true {
            let version = changes.version
            let current = snapshot()
            if predicate(current) { return current }
            try Task.checkCancellation()
            if ContinuousClock.now >= deadline {
                throw SimulatorControlError.timedOut(
                    after: timeout, lastEvents: current.events.suffix(15).map(\.description))
            }
            await changes.wait(afterVersion: version, until: min(deadline, ContinuousClock.now + .milliseconds(100)))
        }
    }

    // MARK: Control API

    /// Creates a pool (or returns the existing one with that name).
    @discardableResult
    package func createPool(name: String, autoUpdate: Bool = true) -> SimulatedPool {
        mutate { state, now in state.createPool(name: name, autoUpdate: autoUpdate, now: now) }
    }

    /// Queues a job; a job no registered agent can satisfy fails here, as on the real service.
    package func queueJob(_ specification: JobSpecification) -> QueueOutcome {
        let result = mutate { state, now in state.queueJob(specification, now: now) }
        switch result {
        case .success(let request):
            logger.info("job queued", metadata: ["job.request_id": "\(request.requestId)", "pool": "\(specification.pool)"])
            return .queued(requestId: request.requestId)
        case .failure(let failure):
            logger.info("job refused at queue time", metadata: ["pool": "\(specification.pool)", "reason": "\(failure.message)"])
            return .failed(failure)
        }
    }

    /// Queues a job and returns its request id, throwing the queue-time failure.
    package func queueJobOrThrow(_ specification: JobSpecification) throws(SimulatorControlError) -> Int {
        switch queueJob(specification) {
        case .queued(let requestId): return requestId
        case .failed(let failure): throw .queueFailed(failure)
        }
    }

    /// Cancels a job (queued: at once; running: `JobCancel` to the agent, forced after `cancelTimeout`).
    package func cancelJob(requestId: Int) throws(SimulatorControlError) {
        do {
            try mutate { (state, now) throws(SimulatorFailure) in try state.cancelJob(requestId, now: now) }
        } catch {
            throw .refused(error)
        }
    }

    /// Accepts a PAT from now on.
    package func addPersonalAccessToken(_ token: String) {
        mutate { state, now in state.addPersonalAccessToken(token, now: now) }
    }

    /// Stops accepting a PAT (simulates expiry or revocation).
    package func revokePersonalAccessToken(_ token: String) {
        mutate { state, now in state.revokePersonalAccessToken(token, now: now) }
    }

    /// Injects a fault into the org routes; returns its id.
    @discardableResult
    package nonisolated func addFault(_ rule: FaultRule) -> UUID { traffic.addFault(rule) }

    /// Removes every fault.
    package nonisolated func clearFaults() { traffic.clearFaults() }

    /// Publishes an agent package.
    @discardableResult
    package func publishPackage(_ specification: PackageSpecification) -> SimulatedPackage {
        mutate { state, now in state.publishPackage(specification, now: now) }
    }

    /// Stores bytes served at `GET /_sim/downloads/{filename}`; returns that URL.
    @discardableResult
    package func registerDownload(filename: String, contents: [UInt8]) -> String {
        downloads[filename] = contents
        return "\(baseURL)/_sim/downloads/\(filename)"
    }

    /// The bytes registered for a download, if any.
    package func download(_ filename: String) -> [UInt8]? { downloads[filename] }

    /// Sends `AgentRefresh` as the first message of the next session opened (one shot).
    package func refreshNextSession(targetVersion: String = "4.266.2") {
        mutate { state, now in state.refreshNextSession(targetVersion: targetVersion, now: now) }
    }

    /// The knobs in effect.
    package var knobs: SimulatorKnobs { state.knobs }

    /// Changes knobs.
    package func updateKnobs(_ change: @Sendable (inout SimulatorKnobs) -> Void) {
        mutate { state, now in
            change(&state.knobs)
            state.noteKnobsChanged(now: now)
        }
    }

    /// Runs the expiry sweep now (the background sweeper calls this periodically).
    package func sweep() {
        let now = now()
        if state.sweep(now: now) {
            state.dispatch(now: now)
            changes.signal()
        }
    }

    /// Registers an agent directly (as `POST agents` would); for tests that need agents without HTTP.
    package func registerAgent(
        pool: String, _ registration: OrganizationState.AgentRegistration
    ) throws(SimulatorControlError) -> SimulatedAgent {
        do {
            return try mutate { (state, now) throws(SimulatorFailure) in
                guard let pool = state.pool(named: pool) else { throw .badRequest("no pool named \(pool)") }
                return try state.addAgent(poolId: pool.id, registration, now: now)
            }
        } catch {
            throw .refused(error)
        }
    }

    // MARK: Used by the HTTP routes

    /// Runs a state operation for a route (mutation, then dispatch and wake-up).
    func perform<T: Sendable, E: Error>(
        _ body: @Sendable (inout OrganizationState, Date) throws(E) -> T
    ) throws(E) -> T {
        try mutate(body)
    }

    /// Reads state for a route.
    func inspect<T: Sendable, E: Error>(_ body: @Sendable (OrganizationState) throws(E) -> T) throws(E) -> T {
        try body(state)
    }

    /// Reads state for a route at the simulator's current time (token expiry).
    func inspectNow<T: Sendable>(_ body: @Sendable (OrganizationState, Date) -> T) -> T {
        body(state, now())
    }

    /// Long-polls the session's queue: returns the next message, or nil after `messageLongPollTimeout`.
    ///
    /// Heartbeat bookkeeping does not wake other waiters; only delivering a job message (which starts the job)
    /// counts as a change, so concurrent polls do not wake each other in a loop.
    func pollMessage(
        poolId: Int, agentId: Int, sessionId: String, lastMessageId: Int?
    ) async throws(SimulatorFailure) -> AgentMessage? {
        try state.beginPoll(poolId: poolId, agentId: agentId, sessionId: sessionId, now: now())
        let deadline = ContinuousClock.now + state.knobs.messageLongPollTimeout
        while true {
            let version = changes.version
            let message = try state.takeMessage(sessionId: sessionId, lastMessageId: lastMessageId, now: now())
            if message != nil || ContinuousClock.now >= deadline || Task.isCancelled {
                state.endPoll(sessionId: sessionId, now: now())
                if message?.messageType == "PipelineAgentJobRequest" { changes.signal() }
                return message
            }
            await changes.wait(afterVersion: version, until: deadline)
        }
    }
}
