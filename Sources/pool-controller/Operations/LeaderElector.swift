import Kubernetes
import Logging
import Shared
import Synchronization
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Timing and identity of a leader election on a `coordination.k8s.io/v1` Lease.
///
/// Invariant (checked by ``validate()``): `retryPeriod < renewDeadline < leaseDuration`, so a leader that cannot
/// renew stops its work before any other replica may consider the lease expired.
struct LeaderElectionConfiguration: Sendable, Hashable {
    /// Namespace of the Lease (the controller's own).
    var namespace: String
    /// Name of the Lease every replica competes for.
    var leaseName: String = "shoal-pool-controller"
    /// This replica's identity, unique among replicas (the pod name).
    var identity: String
    /// How long others wait, from when they last saw the record change, before taking an unrenewed lease over.
    var leaseDuration: Duration = .seconds(15)
    /// How long the leader keeps trying to renew before it gives up leading.
    var renewDeadline: Duration = .seconds(10)
    /// Pause between attempts to acquire or renew.
    var retryPeriod: Duration = .seconds(2)

    /// Builds a configuration; the defaults are client-go's.
    init(
        namespace: String, leaseName: String = "shoal-pool-controller", identity: String, leaseDuration: Duration = .seconds(15),
        renewDeadline: Duration = .seconds(10), retryPeriod: Duration = .seconds(2)
    ) {
        self.namespace = namespace
        self.leaseName = leaseName
        self.identity = identity
        self.leaseDuration = leaseDuration
        self.renewDeadline = renewDeadline
        self.retryPeriod = retryPeriod
    }

    /// `namespace/name` of the Lease, for logs and errors.
    var lease: String { "\(namespace)/\(leaseName)" }

    /// ``leaseDuration`` as the Lease's whole `leaseDurationSeconds`, rounded up (at least 1).
    var leaseDurationSeconds: Int32 { Int32(max(1, leaseDuration.seconds.rounded(.up))) }

    /// Checks the names and the timing invariant.
    func validate() throws(LeaderElectionError) {
        if namespace.isEmpty { throw .invalidConfiguration("leader election namespace must not be empty") }
        if leaseName.isEmpty { throw .invalidConfiguration("leader election lease name must not be empty") }
        if identity.isEmpty { throw .invalidConfiguration("leader election identity must not be empty") }
        guard retryPeriod > .zero, retryPeriod < renewDeadline, renewDeadline < leaseDuration else {
            throw .invalidConfiguration(
                "leader election needs retryPeriod < renewDeadline < leaseDuration, got \(retryPeriod.seconds) s, "
                    + "\(renewDeadline.seconds) s, \(leaseDuration.seconds) s")
        }
    }
}

/// Why leader election could not proceed.
enum LeaderElectionError: Error, Sendable, CustomStringConvertible {
    /// The configuration breaks an invariant (see ``LeaderElectionConfiguration/validate()``).
    case invalidConfiguration(String)
    /// ``LeaderElector/run(whileLeading:)`` was called while a run of the same elector is in progress.
    case alreadyRunning(lease: String)
    /// A Lease call failed; the Kubernetes error names the request (verb and path) and, for 403, the RBAC fix.
    case leaseCall(verb: String, lease: String, error: KubernetesError)

    var description: String {
        switch self {
        case .invalidConfiguration(let message): message
        case .alreadyRunning(let lease): "leader election on Lease \(lease) is already running in this process"
        case .leaseCall(let verb, let lease, let error): "leader election could not \(verb) Lease \(lease): \(error)"
        }
    }
}

/// Lease-based leader election: at most one replica runs the controller's work at a time.
///
/// Expiry is judged with this replica's monotonic clock: a lease is expired when its record (holder, times,
/// transitions, duration) has not changed for its `leaseDurationSeconds` since this replica first saw it that way.
/// Another machine's `renewTime` is never compared with our wall clock, so clock skew cannot cause two leaders.
actor LeaderElector {
    private let api: any KubernetesAPI
    private let configuration: LeaderElectionConfiguration
    private let clock: any ShoalClock
    private let logger: Logger

    /// What readers outside the actor see (readyz, metrics); guarded by the mutex, written only by the actor.
    private struct Visible: Sendable {
        var isLeader = false
        var lastError: LeaderElectionError?
    }

    private let visible = Mutex(Visible())
    private let onLeadershipChange: @Sendable (Bool) -> Void

    /// The Lease spec last read or written, and when (monotonic) this replica first saw it with those values.
    private var observed: (spec: LeaseSpec, at: Duration)?
    /// Whether a ``run(whileLeading:)`` is in progress (one at a time).
    private var running = false
    /// The description of the last failure logged at error, so a repeated failure is logged once.
    private var lastLoggedFailure: String?

    /// An elector on `configuration.namespace/leaseName`; nothing happens until ``run(whileLeading:)``.
    ///
    /// - Parameter onLeadershipChange: called with the new value each time ``isLeader`` changes (e.g.
    ///   ``ControllerMetrics/setLeader(_:)``); must not block.
    init(
        api: any KubernetesAPI, configuration: LeaderElectionConfiguration, clock: any ShoalClock = SystemClock(), logger: Logger,
        onLeadershipChange: @escaping @Sendable (Bool) -> Void = { _ in }
    ) {
        self.api = api
        self.onLeadershipChange = onLeadershipChange
        self.configuration = configuration
        self.clock = clock
        var logger = logger
        logger[metadataKey: "lease"] = "\(configuration.lease)"
        logger[metadataKey: "identity"] = "\(configuration.identity)"
        self.logger = logger
    }

    /// Whether this replica holds the lease right now (false while campaigning and once renewal failed).
    nonisolated var isLeader: Bool { visible.withLock { $0.isLeader } }

    /// The last failed Lease call while it keeps failing (e.g. a 403 naming verb and Lease); nil once one succeeds.
    nonisolated var lastError: LeaderElectionError? { visible.withLock { $0.lastError } }

    /// Campaigns until elected, runs `work` while leading, and campaigns again when leadership is lost.
    ///
    /// - Leadership is lost when renewal fails for `renewDeadline` or another holder is seen on the Lease: `work` is
    ///   cancelled and awaited before campaigning again, so it never runs on two replicas at once.
    /// - When `work` returns, the lease is released and `run` returns; when it throws, the lease is released and the
    ///   error rethrown.
    /// - When the caller is cancelled, `work` is cancelled and awaited, the lease is released (holder cleared,
    ///   `leaseDurationSeconds` 1) so another replica takes over at once, and `run` throws `CancellationError`.
    func run(whileLeading work: @escaping @Sendable () async throws -> Void) async throws {
        try configuration.validate()
        guard !running else { throw LeaderElectionError.alreadyRunning(lease: configuration.lease) }
        running = true
        defer {
            running = false
            setLeader(false)
        }
        while true {
            try await campaign()
            let outcome = await lead(work)
            switch outcome {
            case .lost(let reason):
                logger.info("lost leadership; stopped work, campaigning again", metadata: ["reason": "\(reason)", "holder": "\(observedHolder)"])
                continue
            case .workReturned:
                await releaseShielded()
                try Task.checkCancellation()
                logger.info("work finished; released the lease")
                return
            case .workFailed(let error):
                await releaseShielded()
                try Task.checkCancellation()
                logger.error("work failed; released the lease", metadata: ["error": "\(error)"])
                throw error
            case .cancelled:
                await releaseShielded()
                throw CancellationError()
            }
        }
    }

    // MARK: Campaign and lead

    /// How a term of leadership ended.
    private enum TermOutcome {
        case lost(String)
        case workReturned
        case workFailed(any Error)
        case cancelled
    }

    /// What one acquire-or-renew attempt found.
    private enum Attempt {
        /// We hold the lease now.
        case held
        /// Someone else holds an unexpired lease.
        case heldByOther(String)
        /// The call failed (network, 403, a lost 409 race); retried after the retry period.
        case failed(LeaderElectionError)
    }

    /// Tries every retry period until this replica holds the lease; throws `CancellationError` when cancelled.
    private func campaign() async throws {
        logger.debug("campaigning for leadership")
        while true {
            try Task.checkCancellation()
            switch await tryAcquireOrRenew() {
            case .held:
                setLeader(true)
                logger.info("became leader", metadata: ["holder": "\(configuration.identity)"])
                return
            case .heldByOther, .failed:
                break
            }
            try await clock.sleep(for: configuration.retryPeriod)
        }
    }

    /// Runs `work` beside the renewal loop until one of them ends, then cancels and awaits the other.
    private func lead(_ work: @escaping @Sendable () async throws -> Void) async -> TermOutcome {
        let outcome = await withTaskGroup(of: TermOutcome.self) { group in
            group.addTask {
                do {
                    try await work()
                    return .workReturned
                } catch {
                    return .workFailed(error)
                }
            }
            group.addTask { await self.renewUntilLost() }
            let first = await group.next() ?? .cancelled
            if case .lost = first { setLeader(false) }
            group.cancelAll()
            // The group waits for `work` to finish before returning: it must stop before anyone else may lead.
            return first
        }
        setLeader(false)
        if Task.isCancelled { return .cancelled }
        return outcome
    }

    /// Renews every retry period; returns when renewal failed for `renewDeadline`, another holder appeared, or the
    /// task was cancelled.
    private func renewUntilLost() async -> TermOutcome {
        var lastRenewal = clock.monotonicNow()
        while true {
            do {
                try await clock.sleep(for: configuration.retryPeriod)
            } catch {
                return .cancelled
            }
            if Task.isCancelled { return .cancelled }
            switch await tryAcquireOrRenew() {
            case .held:
                lastRenewal = clock.monotonicNow()
            case .heldByOther(let holder):
                return .lost("the Lease is now held by \(holder)")
            case .failed(let error):
                if Task.isCancelled { return .cancelled }
                if clock.monotonicNow() - lastRenewal >= configuration.renewDeadline {
                    return .lost("could not renew within \(configuration.renewDeadline.seconds) s: \(error)")
                }
            }
        }
    }

    // MARK: Lease calls

    /// One attempt: read the Lease (creating it when missing) and take it when we hold it, it is free, or expired.
    private func tryAcquireOrRenew() async -> Attempt {
        let name = configuration.leaseName
        let namespace = configuration.namespace
        let lease: Lease
        do {
            lease = try await api.get(Lease.self, .leases, namespace: namespace, name: name)
        } catch .notFound {
            return await createLease()
        } catch {
            return failed("get", error)
        }
        observe(lease.spec)
        let holder = lease.spec.holderIdentity ?? ""
        let ours = holder == configuration.identity
        if !holder.isEmpty, !ours, !isExpired() {
            succeeded()
            return .heldByOther(holder)
        }
        let now = clock.wallNow()
        var spec = lease.spec
        spec.holderIdentity = configuration.identity
        spec.leaseDurationSeconds = configuration.leaseDurationSeconds
        spec.renewTime = now
        if !ours {
            spec.acquireTime = now
            spec.leaseTransitions = (lease.spec.leaseTransitions ?? 0) + 1
        }
        var desired = lease
        desired.spec = spec
        do {
            let written = try await api.update(desired, .leases, namespace: namespace, subresource: nil)
            observe(written.spec)
            succeeded()
            if !ours {
                logger.info("took over the lease", metadata: ["holder": "\(configuration.identity)", "previous": "\(holder)"])
            }
            return .held
        } catch {
            // 409: someone else wrote the Lease since our read (a lost race); the next read tells who.
            return failed("update", error)
        }
    }

    /// Creates the Lease held by us; a 409 means another replica created it first, so it is read again.
    private func createLease() async -> Attempt {
        let now = clock.wallNow()
        let lease = Lease(
            metadata: ObjectMeta(name: configuration.leaseName, namespace: configuration.namespace),
            spec: LeaseSpec(
                holderIdentity: configuration.identity, leaseDurationSeconds: configuration.leaseDurationSeconds, acquireTime: now,
                renewTime: now, leaseTransitions: 0))
        do {
            let created = try await api.create(lease, .leases, namespace: configuration.namespace)
            observe(created.spec)
            succeeded()
            logger.info("created the lease", metadata: ["holder": "\(configuration.identity)"])
            return .held
        } catch .conflict {
            logger.debug("the lease was created by another replica first; reading it again")
            return await tryAcquireOrRenew()
        } catch {
            return failed("create", error)
        }
    }

    /// Releases the lease if we hold it: holder cleared, `leaseDurationSeconds` 1, transitions kept.
    ///
    /// Best effort: failures are logged; the lease then expires on its own after `leaseDuration`.
    private func release() async {
        for _ in 0..<2 {
            let lease: Lease
            do {
                lease = try await api.get(Lease.self, .leases, namespace: configuration.namespace, name: configuration.leaseName)
            } catch {
                _ = failed("get", error)
                return
            }
            guard lease.spec.holderIdentity == configuration.identity else { return }
            var released = lease
            let now = clock.wallNow()
            released.spec.holderIdentity = nil
            released.spec.leaseDurationSeconds = 1
            released.spec.renewTime = now
            released.spec.acquireTime = now
            do {
                let written = try await api.update(released, .leases, namespace: configuration.namespace, subresource: nil)
                observe(written.spec)
                logger.info("released the lease", metadata: ["holder": ""])
                return
            } catch .conflict {
                continue
            } catch {
                _ = failed("update", error)
                return
            }
        }
    }

    /// Runs ``release()`` even when the caller is cancelled, bounded by `renewDeadline`.
    ///
    /// An awaited unstructured task is the only way to make calls after cancellation (they would fail at once); it
    /// is awaited here, never left running.
    private func releaseShielded() async {
        let deadline = configuration.renewDeadline
        let clock = self.clock
        let shield = Task {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.release() }
                group.addTask { try? await clock.sleep(for: deadline) }
                await group.next()
                group.cancelAll()
            }
        }
        await shield.value
    }

    // MARK: Bookkeeping

    /// Notes the record read or written; the monotonic time restarts whenever the record differs.
    private func observe(_ spec: LeaseSpec) {
        guard observed?.spec != spec else { return }
        let previousHolder = observed?.spec.holderIdentity ?? ""
        observed = (spec, clock.monotonicNow())
        let holder = spec.holderIdentity ?? ""
        guard holder != previousHolder, holder != configuration.identity else { return }
        if holder.isEmpty {
            logger.info("observed the lease released", metadata: ["holder": "", "previous": "\(previousHolder)"])
        } else {
            logger.info("observed a new lease holder", metadata: ["holder": "\(holder)"])
        }
    }

    /// Whether the observed record has gone unchanged for its own `leaseDurationSeconds` by our monotonic clock.
    private func isExpired() -> Bool {
        guard let observed else { return false }
        let duration = observed.spec.leaseDurationSeconds.map { Duration.seconds(Int64($0)) } ?? configuration.leaseDuration
        return clock.monotonicNow() - observed.at >= duration
    }

    /// The holder last observed, for logs.
    private var observedHolder: String { observed?.spec.holderIdentity ?? "" }

    /// Records a failed call: error level when its description changes, debug while it repeats.
    private func failed(_ verb: String, _ error: KubernetesError) -> Attempt {
        let failure = LeaderElectionError.leaseCall(verb: verb, lease: configuration.lease, error: error)
        if case .cancelled = error {
            // Shutting down or losing leadership, not a failure to report.
            logger.debug("lease call cancelled", metadata: ["verb": "\(verb)"])
            return .failed(failure)
        }
        visible.withLock { $0.lastError = failure }
        let description = failure.description
        if description != lastLoggedFailure {
            lastLoggedFailure = description
            logger.error("lease call failed; retrying", metadata: ["error": "\(description)", "holder": "\(observedHolder)"])
        } else {
            logger.debug("lease call failed again", metadata: ["error": "\(description)"])
        }
        return .failed(failure)
    }

    /// Clears the failure state after a successful call.
    private func succeeded() {
        lastLoggedFailure = nil
        visible.withLock { $0.lastError = nil }
    }

    /// Publishes leadership to ``isLeader`` and, when it changed, to `onLeadershipChange`.
    private func setLeader(_ leading: Bool) {
        let changed = visible.withLock { state in
            defer { state.isLeader = leading }
            return state.isLeader != leading
        }
        if changed { onLeadershipChange(leading) }
    }
}
