import AgentIdentity
import AsyncHTTPClient
import Foundation
import Kubernetes
import NIOCore
import NIOHTTP1
import Shared
import Simulators
import Testing

@testable import pool_controller

/// Controller registration on the real local API server with real agent-entrypoint processes: pods that hold no
/// PAT take jobs, and what they hold is worthless once their pod is gone.
@Suite("Controller registration end to end", .serialized, .timeLimit(.minutes(5)))
struct ControllerRegistrationEndToEndTests {
    /// Asks the organization's token endpoint for an agent token with a client assertion signed by `key`.
    private func tokenStatus(key: AgentKey, clientId: String, tokenURL: String) async throws -> UInt {
        let assertion = try key.clientAssertion(clientId: clientId, audience: tokenURL, now: Date())
        var request = HTTPClientRequest(url: tokenURL)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        let form = "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
            + "&client_assertion=\(assertion)"
        request.body = .bytes(ByteBuffer(string: form))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        _ = try await response.body.collect(upTo: 1 << 16)
        return response.status.code
    }

    @Test("pods hold no PAT and never see it; each job runs on its own registration, which goes with its pod, and a copied key stops working")
    func podsWithoutPAT() async throws {
        try await ControllerWorld.run { world in
            var spec = ControllerWorld.poolSpec(organizationURL: world.simulator.organizationURL, standby: 1, maxAgents: 3)
            spec["registration"] = "controller"
            try await world.createPool(spec: spec)
            try await world.withController {
                try await expect(try await world.waitForStandby(1)) { "standby: \(await world.describeRegistrations())" }

                // What a job on the standby agent could steal: its pod's Secret. Right now it is a working identity.
                let standby = try #require(try await world.pods().first)
                let podName = try #require(standby.metadata.name)
                let secret = try await world.kube.secret(named: "\(podName)-registration", namespace: world.namespace)
                #expect(secret.metadata.ownerReferences?.first?.uid == standby.metadata.uid, "the Secret belongs to its pod")
                let keyFile = try #require(secret.value(forKey: ".credentials_rsaparams"))
                let key = try AgentKey(parameters: try RSAParametersFile.decode(keyFile))
                let credentialsFile = try #require(secret.value(forKey: ".credentials"))
                let credentials = try #require(try JSONSerialization.jsonObject(with: stripBOM(credentialsFile)) as? [String: Any])
                let data = try #require(credentials["data"] as? [String: String])
                let clientId = try #require(data["clientId"])
                let tokenURL = try #require(data["authorizationUrl"])
                #expect(try await tokenStatus(key: key, clientId: clientId, tokenURL: tokenURL) == 200, "the live agent's key gets a token")

                let jobs = try await world.queueJobs(3, seconds: 1)
                let done = try await world.organization.waitUntil(timeout: .seconds(120)) { snapshot in
                    jobs.allSatisfy { id in snapshot.requests.first { $0.requestId == id }?.isFinished ?? false }
                }
                let finished = done.requests.filter { jobs.contains($0.requestId) }
                #expect(finished.allSatisfy { $0.result == .succeeded }, "\(finished.map { "\($0.requestId)=\(String(describing: $0.result))" })")
                let runners = finished.compactMap(\.reservedAgentId)
                #expect(Set(runners).count == jobs.count, "one registration per job: \(runners)")

                // No pod ever carried the token: not as a variable, not as a reference to its Secret.
                for pod in try await world.pods() {
                    let encoded = String(decoding: try JSONEncoder().encode(pod), as: UTF8.self)
                    #expect(!encoded.contains(ControllerWorld.token), "pod \(pod.metadata.name ?? "") carries the PAT")
                    #expect(!encoded.contains("\"azdo\""), "pod \(pod.metadata.name ?? "") references the token Secret")
                }

                // The runners' registrations go with their pods; the pool settles back at its standby.
                let collected = try await eventually(timeout: .seconds(60)) {
                    let names = Set(await world.registrations().map(\.id))
                    return runners.allSatisfy { !names.contains($0) }
                }
                try await expect(collected) { "registrations \(await world.describeRegistrations())" }
                try await expect(try await world.waitForStandby(1)) { "standby: \(await world.describeRegistrations())" }

                // The standby agent took one of the jobs, so its registration is gone: the copied key is worthless.
                let standbyGone = await !world.registrations().contains { $0.name == podName }
                #expect(standbyGone, "the standby agent \(podName) ran the first job and is gone")
                #expect(try await tokenStatus(key: key, clientId: clientId, tokenURL: tokenURL) != 200, "a deleted agent's key gets no token")
                // Its Secret goes with its pod (the garbage collector follows the owner reference).
                let secretCollected = try await eventually(timeout: .seconds(60)) {
                    let podLeft = (try? await world.kube.pod(named: podName, namespace: world.namespace)) != nil
                    let secretLeft = (try? await world.kube.secret(named: "\(podName)-registration", namespace: world.namespace)) != nil
                    return !podLeft && !secretLeft
                }
                #expect(secretCollected, "the registration Secret of a deleted pod is garbage-collected")
            }
        }
    }

    @Test("scaling down a controller-registered pool deletes the registrations itself, at once")
    func scaleDownDeletesRegistrations() async throws {
        try await ControllerWorld.run { world in
            var spec = ControllerWorld.poolSpec(organizationURL: world.simulator.organizationURL, standby: 2, maxAgents: 3, orphanGrace: 3600)
            spec["registration"] = "controller"
            try await world.createPool(spec: spec)
            try await world.withController {
                try await expect(try await world.waitForStandby(2)) { "standby: \(await world.describeRegistrations())" }
                _ = try await world.kube.patch(
                    AgentPoolObject.self, AgentPoolResource.resource, namespace: world.namespace, name: "linux", patch: .merge(["spec": ["standby": 0]]),
                    subresource: nil)
                // The orphan grace is an hour: only the controller's own deletion can remove them this fast.
                let gone = try await eventually(timeout: .seconds(60)) {
                    await world.registrations().filter { !$0.name.hasSuffix("-placeholder") }.isEmpty
                }
                try await expect(gone) { "registrations \(await world.describeRegistrations()), pods \(try await world.describePods())" }
            }
        }
    }
}

/// The bytes without a leading UTF-8 BOM.
private func stripBOM(_ data: Data) -> Data {
    data.starts(with: [0xEF, 0xBB, 0xBF]) ? data.dropFirst(3) : data
}
