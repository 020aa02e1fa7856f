import Foundation
import Kubernetes
import Shared
import Simulators
import Testing

@testable import pool_controller

/// The controller against the real local API server, a local node running real agent-entrypoint processes and the
/// Azure DevOps simulator.
@Suite("Controller end to end", .serialized, .timeLimit(.minutes(5)))
struct ControllerEndToEndTests {
    @Test("standby is reached, a burst is served within max, and the pool returns to standby with nothing left over")
    func burst() async throws {
        try await ControllerWorld.run { world in
            try await world.createPool(spec: ControllerWorld.poolSpec(organizationURL: world.simulator.organizationURL, standby: 2, maxAgents: 4))
            let highWater = PodHighWaterMark()
            try await withThrowingTaskGroup(of: Void.self) { watchers in
                watchers.addTask { try await highWater.watch(world.kube, namespace: world.namespace) }
                try await world.withController {
                    // Standby: two idle agents, registered and online.
                    try await world.organization.waitUntil(timeout: .seconds(60)) { snapshot in
                        snapshot.agents.count { $0.deletedOn == nil && $0.status == .online && $0.assignedRequestId == nil && !$0.name.hasSuffix("placeholder") } == 2
                    }

                    let jobs = try await world.queueJobs(10, seconds: 1)
                    let done = try await world.organization.waitUntil(timeout: .seconds(180)) { snapshot in
                        jobs.allSatisfy { id in snapshot.requests.first { $0.requestId == id }?.isFinished ?? false }
                    }
                    let finished = done.requests.filter { jobs.contains($0.requestId) }
                    #expect(finished.allSatisfy { $0.result == .succeeded }, "every job succeeded: \(finished.map { "\($0.requestId)=\(String(describing: $0.result))" })")
                    // One job per agent: every job ran on its own registration.
                    let runners = finished.compactMap(\.reservedAgentId)
                    #expect(runners.count == jobs.count)
                    #expect(Set(runners).count == runners.count, "a registration ran two jobs: \(runners)")

                    // Back to standby: two idle agents, two pods, no offline registration, no completed pod.
                    let settled = try await eventually(timeout: .seconds(90)) {
                        let registrations = await world.registrations().filter { !$0.name.hasSuffix("placeholder") }
                        let pods = try await world.pods()
                        return registrations.count == 2 && registrations.allSatisfy { $0.status == .online && $0.assignedRequestId == nil }
                            && pods.count == 2 && pods.allSatisfy { $0.status?.phase == "Running" && $0.metadata.deletionTimestamp == nil }
                    }
                    let registrations = await world.registrations().map { "\($0.name):\($0.status)" }
                    let pods = try await world.pods().map { "\($0.metadata.name ?? ""):\($0.status?.phase ?? "")" }
                    #expect(settled, "not back to standby: registrations \(registrations), pods \(pods)")

                    let status = try await world.pool().status
                    #expect(status?.idle == 2)
                    #expect(status?.busy == 0)
                    #expect(status?.conditions?["Ready"]?.status == "True")
                }
                watchers.cancelAll()
            }
            let peak = await highWater.maximum
            #expect(peak <= 4, "never more than maxAgents live pods (saw \(peak))")
            #expect(peak >= 3, "the burst scaled out beyond the standby (peak \(peak))")
        }
    }
}
