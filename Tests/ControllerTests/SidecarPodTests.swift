import Foundation
import Kubernetes
import Shared
import Testing

@testable import pool_controller

/// A pod of pool `ci/linux` with the agent container and a Docker daemon sidecar (ARC's "dind" shape).
private func sidecarPod(agent: KubeJSON, sidecar: KubeJSON, phase: String = "Running") throws -> Pod {
    let json: KubeJSON = [
        "apiVersion": "v1", "kind": "Pod",
        "metadata": ["name": "linux-abcde", "namespace": "ci", "creationTimestamp": "2026-12-04T10:00:00Z"],
        "spec": ["containers": [["name": "dind", "image": "docker:dind"], ["name": "agent", "image": "agent:1"]]],
        "status": [
            "phase": .string(phase),
            "containerStatuses": [
                ["name": "dind", "ready": true, "restartCount": 0, "image": "docker:dind", "imageID": "", "state": sidecar],
                ["name": "agent", "ready": false, "restartCount": 0, "image": "agent:1", "imageID": "", "state": agent],
            ],
        ],
    ]
    return try json.decode(as: Pod.self)
}

@Suite("Pods with sidecars")
struct SidecarPodTests {
    private let running: KubeJSON = ["running": ["startedAt": "2026-12-04T10:00:01Z"]]

    @Test("an agent container that ended finishes the pod, whatever its sidecar does; its termination message is the agent's")
    func agentEndedIsFinished() throws {
        let message = try TerminationMessage(
            exitCode: .success, reason: .jobCompleted, agentName: "linux-abcde", pool: "k8s", unregistered: false,
            durations: .init(total: 3), startedAt: "2026-12-04T10:00:01Z", finishedAt: "2026-12-04T10:00:04Z"
        ).jsonLine()
        let agentEnded: KubeJSON = ["terminated": ["exitCode": 0, "reason": "Completed", "message": .string(message)]]
        let facts = PodFacts(try sidecarPod(agent: agentEnded, sidecar: running))
        #expect(facts.phase == .succeeded)
        #expect(facts.sidecarsRunning)
        #expect(facts.termination?.reason == .jobCompleted)

        let failed = PodFacts(try sidecarPod(agent: ["terminated": ["exitCode": 3, "reason": "Error"]], sidecar: running))
        #expect(failed.phase == .failed)
    }

    @Test("a sidecar that ended does not finish a pod whose agent still runs")
    func sidecarEndedIsNotFinished() throws {
        let facts = PodFacts(try sidecarPod(agent: running, sidecar: ["terminated": ["exitCode": 1, "reason": "Error"]]))
        #expect(facts.phase == .running)
        #expect(!facts.sidecarsRunning)
        #expect(facts.termination == nil, "a sidecar's message is not the entrypoint's")
    }

    @Test("the finished pod is deleted at once, yet holds its slot against maxAgents until it is gone")
    func finishedPodHoldsItsSlot() throws {
        let spec = try PoolSpec.resolve(
            [
                "organizationUrl": "https://dev.azure.com/contoso", "poolName": "k8s", "tokenSecretRef": ["name": "azdo"], "image": "a:1",
                "standby": 1, "maxAgents": 1,
            ],
            name: "linux")
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let done = PodFacts(name: "linux-abcde", phase: .succeeded, createdAt: now, sidecarsRunning: true)
        let observation = PoolObservation(now: now, pods: [done], agents: [], jobs: [], agentVersion: "4.266.2")
        let result = PoolDecision.decide(spec: spec, observation: observation, memory: PoolMemory())
        #expect(result.actions.contains { if case .deletePod("linux-abcde", .completed, _) = $0 { true } else { false } })
        #expect(!result.actions.contains { if case .createPods = $0 { true } else { false } }, "max 1 is still taken: \(result.actions)")
        #expect(result.counts.pods == 1)

        // Once only its sidecar is left terminating... and then gone, the standby comes back.
        let gone = PoolObservation(now: now, pods: [], agents: [], jobs: [], agentVersion: "4.266.2")
        let next = PoolDecision.decide(spec: spec, observation: gone, memory: PoolMemory())
        #expect(next.actions.contains(.createPods(count: 1)))
    }
}
