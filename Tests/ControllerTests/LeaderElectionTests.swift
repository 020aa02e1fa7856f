import Foundation
import Kubernetes
import Logging
import Shared
import Synchronization
import Testing

@testable import pool_controller

/// What the `work` closures of the electors under test did.
final class LeaderWorkLog: Sendable {
    private struct State {
        var started: [String] = []
        var cancelled: [String] = []
        var running = 0
        var maximumConcurrent = 0
    }

    private let state = Mutex(State())

    /// Work that records itself and runs until cancelled.
    func work(_ identity: String) -> @Sendable () async throws -> Void {
        { [self] in
            state.withLock {
                $0.started.append(identity)
                $0.running += 1
                $0.maximumConcurrent = max($0.maximumConcurrent, $0.running)
            }
            defer { state.withLock { $0.running -= 1 } }
            do {
                try await Task.sleep(for: .seconds(3600))
            } catch {
                state.withLock { $0.cancelled.append(identity) }
                throw error
            }
        }
    }

    var started: [String] { state.withLock { $0.started } }
    var cancelled: [String] { state.withLock { $0.cancelled } }
    var maximumConcurrent: Int { state.withLock { $0.maximumConcurrent } }
}

/// A failure of the work under test.
struct LeaderWorkFailed: Error, Equatable {}

@Suite("Leader election against a real kube-apiserver", .timeLimit(.minutes(2)))
struct LeaderElectionTests {
    /// Short timings so expiry-based tests take seconds.
    static func configuration(_ namespace: String, lease: String, identity: String, duration: Duration = .seconds(2)) -> LeaderElectionConfiguration {
        LeaderElectionConfiguration(
            namespace: namespace, leaseName: lease, identity: identity, leaseDuration: duration,
            renewDeadline: duration * 3 / 4, retryPeriod: .milliseconds(200))
    }

    static func lease(_ api: KubernetesClient, _ namespace: String, _ name: String) async throws -> Lease {
        try await api.get(Lease.self, .leases, namespace: namespace, name: name)
    }

    /// Runs the elector to its end and returns how it ended (nil = returned normally).
    static func runToEnd(_ elector: LeaderElector, _ work: @escaping @Sendable () async throws -> Void) async -> (any Error)? {
        do {
            try await elector.run(whileLeading: work)
            return nil
        } catch {
            return error
        }
    }

    @Test func acquiresAFreshLeaseAndReleasesItOnCancellation() async throws {
        try await OperationsTestCluster.withNamespace { admin, _, namespace in
            let log = LeaderWorkLog()
            let leadership = Mutex<[Bool]>([])
            let elector = LeaderElector(
                api: admin, configuration: Self.configuration(namespace, lease: "fresh", identity: "replica-a"), logger: OperationsTestCluster.logger("a"),
                onLeadershipChange: { value in leadership.withLock { $0.append(value) } })
            await withTaskGroup(of: (any Error)?.self) { group in
                group.addTask { await Self.runToEnd(elector, log.work("replica-a")) }
                #expect(await OperationsTestCluster.waitUntil { elector.isLeader && log.started == ["replica-a"] })
                let held = try? await Self.lease(admin, namespace, "fresh")
                #expect(held?.spec.holderIdentity == "replica-a")
                #expect(held?.spec.leaseTransitions == 0)
                #expect(held?.spec.leaseDurationSeconds == 2)
                #expect(held?.spec.acquireTime != nil && held?.spec.renewTime != nil)
                group.cancelAll()
                let ending = await group.next() ?? nil
                #expect(ending is CancellationError)
            }
            #expect(log.cancelled == ["replica-a"])
            #expect(!elector.isLeader)
            #expect(leadership.withLock { $0 } == [true, false])
            let released = try await Self.lease(admin, namespace, "fresh")
            #expect((released.spec.holderIdentity ?? "").isEmpty)
            #expect(released.spec.leaseDurationSeconds == 1)
        }
    }

    @Test func exactlyOneLeadsAndTheOtherTakesOverPromptlyOnRelease() async throws {
        try await OperationsTestCluster.withNamespace { admin, _, namespace in
            let log = LeaderWorkLog()
            // A long lease duration (60 s): a takeover well before it proves the release, not expiry, handed over.
            let first = LeaderElector(
                api: admin, configuration: Self.configuration(namespace, lease: "pair", identity: "replica-a", duration: .seconds(60)),
                logger: OperationsTestCluster.logger("a"))
            let second = LeaderElector(
                api: admin, configuration: Self.configuration(namespace, lease: "pair", identity: "replica-b", duration: .seconds(60)),
                logger: OperationsTestCluster.logger("b"))
            await withTaskGroup(of: Void.self) { outer in
                await withTaskGroup(of: Void.self) { inner in
                    inner.addTask { _ = await Self.runToEnd(first, log.work("replica-a")) }
                    #expect(await OperationsTestCluster.waitUntil { first.isLeader })
                    outer.addTask { _ = await Self.runToEnd(second, log.work("replica-b")) }
                    // Sample while replica-b campaigns: exactly one leader throughout.
                    let sampleEnd = ContinuousClock.now + .seconds(1)
                    while ContinuousClock.now < sampleEnd {
                        #expect(first.isLeader != second.isLeader)
                        try? await Task.sleep(for: .milliseconds(50))
                    }
                    #expect(first.isLeader)
                    #expect(log.started == ["replica-a"])
                    inner.cancelAll()
                }
                #expect(log.cancelled == ["replica-a"])
                #expect(!first.isLeader)
                let start = ContinuousClock.now
                #expect(await OperationsTestCluster.waitUntil(timeout: .seconds(30)) { second.isLeader })
                #expect(ContinuousClock.now - start < .seconds(30), "taken over before the 60 s lease could expire")
                let lease = try? await Self.lease(admin, namespace, "pair")
                #expect(lease?.spec.holderIdentity == "replica-b")
                #expect(lease?.spec.leaseTransitions == 1)
                #expect(log.started == ["replica-a", "replica-b"])
                outer.cancelAll()
            }
            #expect(log.maximumConcurrent == 1)
        }
    }

    @Test func anExpiredLeaseOfADeadHolderIsTakenOverAfterLeaseDuration() async throws {
        try await OperationsTestCluster.withNamespace { admin, _, namespace in
            // renewTime an hour old: comparing it with our wall clock would take over at once; expiry must instead
            // be measured from when this replica first saw the record.
            let anHourAgo = Date().addingTimeInterval(-3600)
            _ = try await admin.create(
                Lease(
                    metadata: ObjectMeta(name: "dead", namespace: namespace),
                    spec: LeaseSpec(holderIdentity: "dead-replica", leaseDurationSeconds: 2, acquireTime: anHourAgo, renewTime: anHourAgo, leaseTransitions: 4)),
                .leases, namespace: namespace)
            let log = LeaderWorkLog()
            let elector = LeaderElector(api: admin, configuration: Self.configuration(namespace, lease: "dead", identity: "replica-a"), logger: OperationsTestCluster.logger("a"))
            await withTaskGroup(of: Void.self) { group in
                let start = ContinuousClock.now
                group.addTask { _ = await Self.runToEnd(elector, log.work("replica-a")) }
                #expect(await OperationsTestCluster.waitUntil(timeout: .seconds(15)) { elector.isLeader })
                let elapsed = ContinuousClock.now - start
                #expect(elapsed >= .seconds(2), "took over after \(elapsed), before the lease duration had passed")
                #expect(elapsed < .seconds(10))
                let lease = try? await Self.lease(admin, namespace, "dead")
                #expect(lease?.spec.holderIdentity == "replica-a")
                #expect(lease?.spec.leaseTransitions == 5)
                #expect(lease?.spec.acquireTime.map { $0 > anHourAgo } == true)
                group.cancelAll()
            }
        }
    }

    @Test func workIsCancelledWhenTheLeaseIsStolen() async throws {
        try await OperationsTestCluster.withNamespace { admin, _, namespace in
            let log = LeaderWorkLog()
            let elector = LeaderElector(api: admin, configuration: Self.configuration(namespace, lease: "stolen", identity: "replica-a"), logger: OperationsTestCluster.logger("a"))
            await withTaskGroup(of: Void.self) { group in
                group.addTask { _ = await Self.runToEnd(elector, log.work("replica-a")) }
                #expect(await OperationsTestCluster.waitUntil { elector.isLeader && !log.started.isEmpty })
                // Another holder writes a fresh, long lease (retrying the compare-and-swap against our renewals).
                let stolen = await OperationsTestCluster.waitUntil {
                    guard var lease = try? await Self.lease(admin, namespace, "stolen") else { return false }
                    lease.spec.holderIdentity = "thief"
                    lease.spec.leaseDurationSeconds = 60
                    lease.spec.renewTime = Date()
                    lease.spec.acquireTime = Date()
                    return (try? await admin.update(lease, .leases, namespace: namespace, subresource: nil)) != nil
                }
                #expect(stolen)
                #expect(await OperationsTestCluster.waitUntil(timeout: .seconds(5)) { log.cancelled == ["replica-a"] })
                #expect(!elector.isLeader)
                // The thief's lease is fresh for 60 s: the elector campaigns but does not take it back.
                try? await Task.sleep(for: .seconds(1))
                #expect(!elector.isLeader)
                #expect(log.started == ["replica-a"])
                group.cancelAll()
            }
            // Cancelling a non-leader must not release someone else's lease.
            let lease = try await Self.lease(admin, namespace, "stolen")
            #expect(lease.spec.holderIdentity == "thief")
        }
    }

    @Test func failingWorkReleasesTheLeaseAndRethrows() async throws {
        try await OperationsTestCluster.withNamespace { admin, _, namespace in
            let elector = LeaderElector(api: admin, configuration: Self.configuration(namespace, lease: "failing", identity: "replica-a"), logger: OperationsTestCluster.logger("a"))
            let ending = await Self.runToEnd(elector) { throw LeaderWorkFailed() }
            #expect(ending as? LeaderWorkFailed == LeaderWorkFailed())
            #expect(!elector.isLeader)
            let lease = try await Self.lease(admin, namespace, "failing")
            #expect((lease.spec.holderIdentity ?? "").isEmpty)
            #expect(lease.spec.leaseDurationSeconds == 1)
        }
    }

    @Test func forbiddenIsReportedWithVerbAndLeaseAndRetried() async throws {
        try await OperationsTestCluster.withNamespace { _, controller, namespace in
            let elector = LeaderElector(api: controller, configuration: Self.configuration(namespace, lease: "denied", identity: "replica-a"), logger: OperationsTestCluster.logger("a"))
            await withTaskGroup(of: Void.self) { group in
                group.addTask { _ = await Self.runToEnd(elector) {} }
                #expect(await OperationsTestCluster.waitUntil { elector.lastError != nil })
                guard case .leaseCall(let verb, let lease, let error) = elector.lastError else {
                    Issue.record("expected a lease call failure, got \(String(describing: elector.lastError))")
                    group.cancelAll()
                    return
                }
                #expect(verb == "get")
                #expect(lease == "\(namespace)/denied")
                guard case .forbidden = error else { Issue.record("expected 403, got \(error)"); group.cancelAll(); return }
                let message = "\(elector.lastError.map(String.init(describing:)) ?? "")"
                #expect(message.contains("get Lease \(namespace)/denied"))
                #expect(message.contains("leases"))
                #expect(!elector.isLeader)
                group.cancelAll()
            }
        }
    }

    @Test func configurationRejectsARenewDeadlineNotBelowTheLeaseDuration() {
        let bad = LeaderElectionConfiguration(namespace: "ns", identity: "a", leaseDuration: .seconds(5), renewDeadline: .seconds(5))
        #expect(throws: LeaderElectionError.self) { try bad.validate() }
        #expect(throws: Never.self) { try LeaderElectionConfiguration(namespace: "ns", identity: "a").validate() }
        #expect(LeaderElectionConfiguration(namespace: "ns", identity: "a", leaseDuration: .milliseconds(1500)).leaseDurationSeconds == 2)
    }
}
