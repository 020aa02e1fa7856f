import AgentIdentity
import Dispatch
import Foundation
import Shared
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The agent's own bearer token: a client assertion signed with `.credentials_rsaparams`, exchanged at the token
/// endpoint (`oauthEndpointUrl`, else `authorizationUrl`) with the OAuth client-credentials grant.
///
/// Like the real agent the key file is read again for every assertion, so it must stay in place while the
/// listener runs.
actor AgentTokenSource {
    private let server: AgentServer
    private let directory: AgentDirectory
    private let clientId: String
    private let audience: String
    private let tokenEndpoint: String
    private var token: String?

    /// Creates a source for the OAuth client in `.credentials`; `audience` is its `authorizationUrl` verbatim.
    init(server: AgentServer, directory: AgentDirectory, clientId: String, audience: String, tokenEndpoint: String) {
        self.server = server
        self.directory = directory
        self.clientId = clientId
        self.audience = audience
        self.tokenEndpoint = tokenEndpoint
    }

    /// The cached token, fetching one if needed.
    func current() async throws -> String {
        if let token { return token }
        return try await fetch()
    }

    /// A token to use instead of `rejected` (after a 401: tokens expire and die with the registration).
    ///
    /// Fetches a new one unless another caller already replaced `rejected` meanwhile.
    func replacing(_ rejected: String) async throws -> String {
        if let token, token != rejected { return token }
        return try await fetch()
    }

    private func fetch() async throws -> String {
        let key = try directory.loadKey()
        let assertion = try key.clientAssertion(clientId: clientId, audience: audience, now: Date())
        let fresh = try await server.accessToken(assertion: assertion, tokenEndpoint: tokenEndpoint).value
        token = fresh
        return fresh
    }
}

/// The agent-internal routes bound to one configured agent, retrying once with a fresh token on 401.
struct AgentConnection: Sendable {
    /// The HTTP client.
    let server: AgentServer
    /// Where the bearer token comes from.
    let tokens: AgentTokenSource
    /// `.agent` content.
    let settings: AgentSettingsFile
    /// The version the agent reports.
    let agentVersion: String

    /// Runs `call` with the current token; on 401 (typically an expired token) fetches a new token once and
    /// retries. A second 401, or a refused token request (deleted registration), is the caller's to handle.
    func withToken<T: Sendable>(_ call: (String) async throws -> T) async throws -> T {
        let token = try await tokens.current()
        do {
            return try await call(token)
        } catch ServerError.unauthorized {
            return try await call(try await tokens.replacing(token))
        }
    }
}

/// Delivers SIGTERM and SIGINT as an async stream instead of letting them kill the process.
enum SignalWatcher {
    /// Starts watching `signals`; the dispositions stay `SIG_IGN` afterwards (job processes reset them at spawn).
    static func watch(_ signals: [Int32]) -> AsyncStream<Int32> {
        AsyncStream { continuation in
            let sources = SignalSources(
                signals.map { number in
                    signal(number, SIG_IGN)
                    let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
                    source.setEventHandler { continuation.yield(number) }
                    source.resume()
                    return source
                }
            )
            continuation.onTermination = { _ in sources.cancelAll() }
        }
    }
}

/// The dispatch signal sources of one `SignalWatcher` stream, kept alive until the stream ends.
private final class SignalSources: Sendable {
    private let sources: Mutex<[any DispatchSourceSignal]>

    /// Keeps `sources` alive until `cancelAll()`.
    init(_ sources: sending [any DispatchSourceSignal]) {
        self.sources = Mutex(sources)
    }

    /// Cancels and releases every source.
    func cancelAll() {
        sources.withLock { sources in
            for source in sources { source.cancel() }
            sources.removeAll()
        }
    }
}

/// `run`: opens a session, listens for jobs, runs them, and handles signals, refresh and connection trouble.
struct Listener: Sendable {
    /// Everything the listener loop reacts to, from its child tasks.
    private enum Event: Sendable {
        case signal(Int32)
        case sessionOpened(String)
        case stop(ExitCode)
        case message(AgentMessage, sessionId: String)
        case jobFinished(JobMessage, JobResult)
    }

    /// The agent's connection.
    let connection: AgentConnection
    /// `--once`: run one job, then exit 0.
    let once: Bool
    /// Runs the jobs.
    let runner: JobRunner
    /// How long to keep retrying while another session for this agent exists.
    let sessionConflictRetry: Duration

    private var poolId: Int { connection.settings.poolId }

    /// Creates the listener for a configured agent.
    init(connection: AgentConnection, once: Bool, runner: JobRunner, sessionConflictRetry: Duration) {
        self.connection = connection
        self.once = once
        self.runner = runner
        self.sessionConflictRetry = sessionConflictRetry
    }

    /// Runs until `--once` completes, a signal, a refresh or a fatal error, and returns the exit code.
    func run() async -> ExitCode {
        let (events, sink) = AsyncStream<Event>.makeStream()
        let (handled, handledSink) = AsyncStream<Void>.makeStream(bufferingPolicy: .unbounded)
        let signals = SignalWatcher.watch([SIGTERM, SIGINT])

        var sessionId: String?
        let exitCode = await withTaskGroup(of: Void.self, returning: ExitCode.self) { group in
            group.addTask {
                for await number in signals { sink.yield(.signal(number)) }
            }
            group.addTask {
                await listen(events: sink, handled: handled)
            }

            var runningJob: (message: JobMessage, control: JobControl)?
            var acceptedJob = false
            var exitAfterJob: ExitCode?
            var exitCode = ExitCode.success

            loop: for await event in events {
                switch event {
                case .signal(let number):
                    if number == SIGINT { Console.line("Exiting...") }
                    guard let job = runningJob else { exitCode = .success; break loop }
                    exitAfterJob = exitAfterJob ?? .success
                    job.control.cancel()

                case .sessionOpened(let id):
                    if sessionId == nil { Console.stamped("Listening for Jobs") }
                    sessionId = id

                case .stop(let code):
                    guard let job = runningJob else { exitCode = code; break loop }
                    exitAfterJob = exitAfterJob ?? code
                    job.control.cancel()

                case .message(let message, let messageSession):
                    defer { handledSink.yield(()) }
                    switch message.messageType {
                    case "PipelineAgentJobRequest", "AgentJobRequest":
                        // Under --once, later job messages stay unacknowledged so the server can re-deliver them.
                        guard runningJob == nil, !(once && acceptedJob), exitAfterJob == nil else { continue }
                        await acknowledge(message, sessionId: messageSession)
                        guard let job = decode(JobMessage.self, from: message) else { continue }
                        acceptedJob = true
                        let control = JobControl()
                        runningJob = (job, control)
                        Console.stamped("Running job: \(job.jobDisplayName)")
                        group.addTask {
                            let result = await execute(job, control: control)
                            sink.yield(.jobFinished(job, result))
                        }

                    case "JobCancel":
                        await acknowledge(message, sessionId: messageSession)
                        if let cancel = decode(JobCancelMessage.self, from: message), let job = runningJob,
                            cancel.requestId == job.message.requestId
                                || cancel.jobId?.lowercased() == job.message.jobId.lowercased()
                        {
                            job.control.cancel()
                        }

                    case "AgentRefresh":
                        await acknowledge(message, sessionId: messageSession)
                        if let disabled = ProcessEnvironment.current()["agent.disableupdate"], !disabled.isEmpty {
                            continue
                        }
                        Console.stamped("Agent will exit shortly for update, should back online within 10 seconds.")
                        let code: ExitCode = once ? .runOnceAgentUpdating : .agentUpdating
                        guard let job = runningJob else { exitCode = code; break loop }
                        exitAfterJob = exitAfterJob ?? code
                        job.control.cancel()

                    default:
                        await acknowledge(message, sessionId: messageSession)
                    }

                case .jobFinished(let job, let result):
                    runningJob = nil
                    await finish(job, result: result)
                    Console.stamped("Job \(job.jobDisplayName) completed with result: \(result.displayName)")
                    if let code = exitAfterJob { exitCode = code; break loop }
                    if once { exitCode = .success; break loop }
                }
            }
            group.cancelAll()
            handledSink.finish()
            return exitCode
        }

        if let sessionId {
            _ = try? await connection.withToken { token in
                try await connection.server.deleteSession(sessionId, poolId: poolId, token: token)
            }
        }
        return exitCode
    }

    // MARK: Session and message loop (one child task)

    private func listen(events: AsyncStream<Event>.Continuation, handled: AsyncStream<Void>) async {
        var handledAcks = handled.makeAsyncIterator()
        guard var sessionId = await openSession(events: events) else { return }
        var lastMessageId: Int64?
        var disconnected = false
        var backoff = Backoff(maximum: .seconds(10))

        while !Task.isCancelled {
            do {
                let current = sessionId
                let message = try await connection.withToken { token in
                    try await connection.server.nextMessage(
                        sessionId: current, lastMessageId: lastMessageId, poolId: poolId, token: token
                    )
                }
                if disconnected {
                    Console.stamped("Agent reconnected.")
                    disconnected = false
                    backoff.reset()
                }
                guard let message else { continue }
                lastMessageId = message.messageId
                events.yield(.message(message, sessionId: sessionId))
                guard await handledAcks.next() != nil else { return }
            } catch is CancellationError {
                return
            } catch let error as ServerError {
                if error.typeKey == "TaskAgentNotFoundException" {
                    Console.error("The agent no longer exists on the server. Please reconfigure the agent.")
                    events.yield(.stop(.terminatedError))
                    return
                }
                if error.status == 404 {
                    // The session expired (missed heartbeats): open a new one, like the real listener.
                    guard let renewed = await openSession(events: events) else { return }
                    sessionId = renewed
                    continue
                }
                switch error {
                case .unauthorized, .tokenRefused:
                    Console.error(error.description)
                    events.yield(.stop(.terminatedError))
                    return
                default:
                    break
                }
                if !disconnected {
                    Console.stamped("Agent connect error: \(error.description). Retrying until reconnected.")
                    disconnected = true
                }
                guard await backoff.sleep() else { return }
            } catch {
                if !disconnected {
                    Console.stamped("Agent connect error: \(error). Retrying until reconnected.")
                    disconnected = true
                }
                guard await backoff.sleep() else { return }
            }
        }
    }

    /// Creates a session, retrying conflicts (bounded) and connection trouble (until cancelled).
    /// Returns `nil` after yielding `.stop` when it gives up or the task is cancelled.
    private func openSession(events: AsyncStream<Event>.Continuation) async -> String? {
        let clock = ContinuousClock()
        let conflictDeadline = clock.now + sessionConflictRetry
        var backoff = Backoff(maximum: .seconds(5))
        var disconnected = false
        let request = SessionRequest(
            ownerName: CapabilityScanner.hostName,
            agent: .init(
                id: connection.settings.agentId, name: connection.settings.agentName,
                version: connection.agentVersion, osDescription: CapabilityScanner.osDescription
            )
        )

        while !Task.isCancelled {
            do {
                let id = try await connection.withToken { token in
                    try await connection.server.createSession(request, poolId: poolId, token: token)
                }
                if disconnected { Console.stamped("Agent reconnected.") }
                events.yield(.sessionOpened(id))
                return id
            } catch is CancellationError {
                return nil
            } catch let error as ServerError {
                switch error {
                case .unauthorized, .tokenRefused:
                    Console.error(error.description)
                    events.yield(.stop(.terminatedError))
                    return nil
                case _ where error.typeKey == "TaskAgentSessionConflictException" || error.status == 409:
                    Console.error("A session for this agent already exists.")
                    if clock.now >= conflictDeadline {
                        let seconds = sessionConflictRetry.components.seconds
                        Console.error("Stop retry on SessionConflictException after retried for \(seconds) seconds.")
                        events.yield(.stop(.terminatedError))
                        return nil
                    }
                case _ where error.status == 404 || error.typeKey == "TaskAgentNotFoundException":
                    Console.error("The agent no longer exists on the server. Please reconfigure the agent.")
                    events.yield(.stop(.terminatedError))
                    return nil
                case _ where error.isTransient:
                    if !disconnected {
                        Console.stamped("Agent connect error: \(error.description). Retrying until reconnected.")
                        disconnected = true
                    }
                default:
                    Console.error(error.description)
                    events.yield(.stop(.terminatedError))
                    return nil
                }
            } catch {
                Console.error(String(describing: error))
                events.yield(.stop(.terminatedError))
                return nil
            }
            guard await backoff.sleep() else { return nil }
        }
        return nil
    }

    // MARK: Jobs

    private func execute(_ job: JobMessage, control: JobControl) async -> JobResult {
        await withTaskGroup(of: JobResult?.self) { group in
            group.addTask { await runner.run(job, control: control) }
            group.addTask {
                await renewLock(job, control: control)
                return nil
            }
            var result = JobResult.failed
            for await value in group {
                if let value {
                    result = value
                    group.cancelAll()
                }
            }
            return result
        }
    }

    /// Keeps the job's lock alive at half its remaining time; a request the server no longer knows cancels the job.
    private func renewLock(_ job: JobMessage, control: JobControl) async {
        while !Task.isCancelled {
            var interval = Duration.seconds(30)
            do {
                let record = try await connection.withToken { token in
                    try await connection.server.renewJobRequest(
                        job.requestId, lockToken: job.lockToken, poolId: poolId, token: token
                    )
                }
                if let text = record.lockedUntil, let lockedUntil = WireTimestamp.parse(text) {
                    let half = lockedUntil.timeIntervalSinceNow / 2
                    interval = .milliseconds(Int64(max(1, min(half, 60)) * 1000))
                }
            } catch is CancellationError {
                return
            } catch let error as ServerError where !error.isTransient {
                Console.error("##[error]The job request \(job.requestId) is no longer valid: \(error.description)")
                control.cancel()
                return
            } catch {
                interval = .seconds(2)
            }
            do { try await Task.sleep(for: interval) } catch { return }
        }
    }

    private func finish(_ job: JobMessage, result: JobResult) async {
        do {
            try await connection.withToken { token in
                try await connection.server.finishJobRequest(
                    job.requestId, result: result.rawValue, finishTime: WireTimestamp.format(Date()),
                    lockToken: job.lockToken, poolId: poolId, token: token
                )
            }
        } catch {
            Console.error("Failed to report the result of job \(job.jobDisplayName): \(error)")
        }
    }

    private func acknowledge(_ message: AgentMessage, sessionId: String) async {
        do {
            try await connection.withToken { token in
                try await connection.server.deleteMessage(
                    message.messageId, sessionId: sessionId, poolId: poolId, token: token
                )
            }
        } catch {
            Console.error("Failed to acknowledge message \(message.messageId): \(error)")
        }
    }

    private func decode<T: Decodable>(_ type: T.Type, from message: AgentMessage) -> T? {
        do {
            return try JSONDecoder().decode(type, from: Data(message.body.utf8))
        } catch {
            Console.error("Cannot read \(message.messageType) message \(message.messageId): \(error)")
            return nil
        }
    }
}

/// Exponential backoff from 1 s up to `maximum`, cancellable.
struct Backoff {
    /// The longest single wait.
    let maximum: Duration
    private var next = Duration.seconds(1)

    /// Creates a backoff starting at 1 s.
    init(maximum: Duration) { self.maximum = maximum }

    /// Sleeps the current delay and doubles it; returns `false` when the task was cancelled.
    mutating func sleep() async -> Bool {
        do { try await Task.sleep(for: next) } catch { return false }
        next = min(next * 2, maximum)
        return true
    }

    /// Back to 1 s.
    mutating func reset() { next = .seconds(1) }
}
