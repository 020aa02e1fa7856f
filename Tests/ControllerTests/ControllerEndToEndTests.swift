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

                    // Held: three more reconciles change nothing.
                    let standbyAgents = await world.registrations().filter { !$0.name.hasSuffix("-placeholder") }.map(\.id)
                    try await world.waitForReconciles(3)
                    let stillThere = await world.registrations().filter { !$0.name.hasSuffix("-placeholder") }.map(\.id)
                    #expect(stillThere == standbyAgents, "the standby is held, not churned")

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

                    let reported = try await eventually(timeout: .seconds(30)) {
                        let status = try await world.pool().status
                        return status?.idle == 2 && status?.busy == 0 && status?.starting == 0 && status?.conditions?["Ready"]?.status == "True"
                    }
                    try await expect(reported) { "status: \(String(describing: try await world.pool().status))" }
                }
                watchers.cancelAll()
            }
            let peak = await highWater.maximum
            #expect(peak <= 4, "never more than maxAgents live pods (saw \(peak))")
            #expect(peak >= 3, "the burst scaled out beyond the standby (peak \(peak))")
        }
    }

    @Test("a pod killed mid-job is collected with its registration, and the pool returns to standby")
    func podKilledMidJob() async throws {
        try await ControllerWorld.run { world in
            try await world.createPool(spec: ControllerWorld.poolSpec(organizationURL: world.simulator.organizationURL, standby: 1, maxAgents: 3))
            try await world.withController {
                try await expect(try await world.waitForStandby(1)) { "standby: \(await world.describeRegistrations())" }
                let job = try await world.queueJobs(1, seconds: 300, name: "long")[0]
                let running = try await world.organization.waitUntil(timeout: .seconds(60)) { snapshot in
                    snapshot.requests.first { $0.requestId == job }?.receiveTime != nil
                }
                let agentID = try #require(running.requests.first { $0.requestId == job }?.reservedAgentId)
                let agentName = try #require(running.agents.first { $0.id == agentID }?.name)
                let pod = try await world.kube.pod(named: agentName, namespace: world.namespace)
                #expect(try world.killPodProcesses(pod) >= 1)

                // Azure DevOps abandons the job once the dead agent's session times out.
                try await world.organization.waitUntil(timeout: .seconds(60)) { $0.requests.first { $0.requestId == job }?.result == .abandoned }
                let collected = try await eventually(timeout: .seconds(60)) {
                    let podLeft = (try? await world.kube.pod(named: agentName, namespace: world.namespace)) != nil
                    let registrationLeft = await world.registrations().contains { $0.name == agentName }
                    return !podLeft && !registrationLeft
                }
                try await expect(collected) { "pods \(try await world.describePods()), registrations \(await world.describeRegistrations())" }
                try await expect(try await world.waitForStandby(1)) { "standby: \(await world.describeRegistrations())" }
            }
        }
    }

    @Test("an orphan registration named like our pods is deleted; foreign agents and the placeholder are kept")
    func orphanRegistration() async throws {
        try await ControllerWorld.run { world in
            try await world.createPool(spec: ControllerWorld.poolSpec(organizationURL: world.simulator.organizationURL, standby: 1, maxAgents: 2))
            try await world.withController {
                #expect(try await world.waitForStandby(1))
                let orphan = try await world.organization.registerAgent(pool: ControllerWorld.poolName, .init(name: "linux-zz9zz"))
                let foreign = try await world.organization.registerAgent(pool: ControllerWorld.poolName, .init(name: "build-vm-01"))
                try await world.organization.waitUntil(timeout: .seconds(60)) { snapshot in
                    snapshot.agents.first { $0.id == orphan.id }?.deletedOn != nil
                }
                try await world.waitForReconciles(3)
                let registrations = await world.registrations()
                #expect(registrations.contains { $0.id == foreign.id }, "a foreign registration is never collected")
                #expect(registrations.contains { $0.name == "linux-placeholder" }, "the placeholder is never collected")
                let events = try await world.kube.listAll(Event.self, .events, namespace: world.namespace).items
                #expect(events.contains { $0.reason == "OrphanRegistrationDeleted" && $0.message?.contains("linux-zz9zz") == true })
            }
        }
    }

    @Test("standby 0: the placeholder keeps a demanding job queued, a pod serves it, follows the spec's capabilities, and goes with the AgentPool")
    func scaleToZero() async throws {
        try await ControllerWorld.run { world in
            try await world.createPool(
                spec: ControllerWorld.poolSpec(organizationURL: world.simulator.organizationURL, standby: 0, maxAgents: 2, capabilities: ["buildkit": "true"]))
            try await world.withController {
                let registered = try await world.organization.waitUntil(timeout: .seconds(60)) { snapshot in
                    snapshot.agents.contains { $0.name == "linux-placeholder" && $0.deletedOn == nil }
                }
                let placeholder = try #require(registered.agents.first { $0.name == "linux-placeholder" })
                #expect(placeholder.status == .offline)
                #expect(placeholder.systemCapabilities["buildkit"] == "true")
                #expect(try await world.pods().isEmpty)

                // Without the placeholder this job would fail at queue time ("No agent found in pool ...").
                let job = try await world.queueJobs(1, seconds: 1, demands: ["buildkit -equals true"], name: "buildkit")[0]
                let done = try await world.organization.waitUntil(timeout: .seconds(90)) { $0.requests.first { $0.requestId == job }?.isFinished ?? false }
                #expect(done.requests.first { $0.requestId == job }?.result == .succeeded)
                let atZero = try await eventually(timeout: .seconds(60)) {
                    let names = await world.registrations().map(\.name)
                    return try await world.pods().isEmpty && names == ["linux-placeholder"]
                }
                try await expect(atZero) { "pods \(try await world.describePods()), registrations \(await world.describeRegistrations())" }
                #expect(try await world.pool().status?.placeholderAgentId == placeholder.id)

                // New capabilities in the spec: the placeholder is replaced by one that carries them.
                _ = try await world.kube.patch(
                    AgentPoolObject.self, AgentPoolResource.resource, namespace: world.namespace, name: "linux",
                    patch: .merge(["spec": ["capabilities": ["buildkit": "true", "JAVA_VERSION": "21"]]]), subresource: nil)
                let replaced = try await world.organization.waitUntil(timeout: .seconds(60)) { snapshot in
                    snapshot.agents.contains { $0.name == "linux-placeholder" && $0.deletedOn == nil && $0.systemCapabilities["JAVA_VERSION"] == "21" }
                }
                let current = try #require(replaced.agents.first { $0.name == "linux-placeholder" && $0.deletedOn == nil })
                #expect(current.id != placeholder.id)
                #expect(replaced.agents.first { $0.id == placeholder.id }?.deletedOn != nil)

                _ = try await world.kube.delete(AgentPoolResource.resource, namespace: world.namespace, name: "linux", options: DeleteOptions())
                let removed = try await eventually(timeout: .seconds(60)) {
                    let poolLeft = (try? await world.pool()) != nil
                    let placeholderLeft = await world.registrations().contains { $0.name == "linux-placeholder" }
                    return !poolLeft && !placeholderLeft
                }
                #expect(removed, "the finalizer removes the placeholder, then lets the AgentPool go")
            }
        }
    }

    @Test("the original project's environment variables manage one pool, with the token in a Secret")
    func originalProjectConfiguration() async throws {
        try await ControllerWorld.run { world in
            // The AgentPool in TARGET_NAMESPACE is only the template: organization, pool, counts and token come from the environment.
            try await world.createPool(spec: ControllerWorld.poolSpec(organizationURL: "https://dev.azure.com/ignored", standby: 0, maxAgents: 1))
            let legacy = try #require(try LegacyConfiguration.fromEnvironment([
                "AZDO_ORG_URI": world.simulator.organizationURL, "AZDO_TOKEN": ControllerWorld.token, "AZDO_POOLNAME": ControllerWorld.poolName,
                "TARGET_NAMESPACE": world.namespace, "STANDBY_AGENT_COUNT": "2", "MAX_AGENT_COUNT": "3",
            ]))
            try await world.withController(settings: world.defaultSettings(legacy: legacy)) {
                try await expect(try await world.waitForStandby(2)) { "standby: \(await world.describeRegistrations())" }
                let secret = try await world.kube.secret(named: LegacyConfiguration.secretName, namespace: world.namespace)
                #expect(secret.string(forKey: "token") == ControllerWorld.token)
                for pod in try await world.pods() {
                    let token = pod.spec?.containers.first?.env?.first { $0.name == "AZP_TOKEN" }
                    #expect(token?.value == nil)
                    #expect(token?.valueFrom?.secretKeyRef?.name == LegacyConfiguration.secretName)
                }
                let jobs = try await world.queueJobs(2, seconds: 1)
                let done = try await world.organization.waitUntil(timeout: .seconds(90)) { snapshot in
                    jobs.allSatisfy { id in snapshot.requests.first { $0.requestId == id }?.isFinished ?? false }
                }
                #expect(done.requests.filter { jobs.contains($0.requestId) }.allSatisfy { $0.result == .succeeded })
            }
        }
    }

    @Test("bad pools report why in status and Events while a good pool keeps working")
    func badPoolsDoNotStopOthers() async throws {
        try await ControllerWorld.run { world in
            let url = world.simulator.organizationURL
            _ = try await world.kube.create(
                Secret(
                    metadata: ObjectMeta(name: "wrong", namespace: world.namespace, labels: [AgentPodLabels.tokenSecret: "true"]),
                    stringData: ["token": "not-a-valid-pat"]), .secrets,
                namespace: world.namespace)
            var badToken = ControllerWorld.poolSpec(organizationURL: url, standby: 1, maxAgents: 2)
            badToken["tokenSecretRef"] = ["name": "wrong"]
            var noSecret = ControllerWorld.poolSpec(organizationURL: url, standby: 1, maxAgents: 2)
            noSecret["tokenSecretRef"] = ["name": "missing"]
            var unknownPool = ControllerWorld.poolSpec(organizationURL: url, standby: 1, maxAgents: 2)
            unknownPool["poolName"] = "no-such-pool"
            var invalid = ControllerWorld.poolSpec(organizationURL: url, standby: 3, maxAgents: 2)
            invalid["prefix"] = "invalid"
            // A Secret not labelled for Shoal, and an organization outside the allow-list (a loopback address, so a
            // broken check could not send anything off this machine).
            _ = try await world.kube.create(
                Secret(metadata: ObjectMeta(name: "unrelated", namespace: world.namespace), stringData: ["token": ControllerWorld.token]), .secrets,
                namespace: world.namespace)
            var unlabelled = ControllerWorld.poolSpec(organizationURL: url, standby: 1, maxAgents: 2)
            unlabelled["tokenSecretRef"] = ["name": "unrelated"]
            unlabelled["prefix"] = "unlabelled"
            let elsewhere = ControllerWorld.poolSpec(organizationURL: "http://127.0.0.2:9/collector", standby: 1, maxAgents: 2)
            try await world.createPool("unlabelled", spec: unlabelled)
            try await world.createPool("elsewhere", spec: elsewhere)
            try await world.createPool("badtoken", spec: badToken)
            try await world.createPool("nosecret", spec: noSecret)
            try await world.createPool("unknownpool", spec: unknownPool)
            try await world.createPool("invalid", spec: invalid)
            try await world.createPool("good", spec: ControllerWorld.poolSpec(organizationURL: url, standby: 1, maxAgents: 2))
            try await world.withController {
                let expected = [
                    "badtoken": "AuthenticationFailed", "nosecret": "SecretNotFound", "unknownpool": "PoolNotFound", "invalid": "InvalidSpec",
                    "unlabelled": "TokenSecretNotAllowed", "elsewhere": "OrganizationNotAllowed",
                ]
                for (name, reason) in expected {
                    let reported = try await eventually(timeout: .seconds(60)) {
                        let ready = try await world.pool(name).status?.conditions?["Ready"]
                        return ready?.status == "False" && ready?.reason == reason
                    }
                    let ready = try await world.pool(name).status?.conditions?["Ready"]
                    #expect(reported, "\(name): Ready \(String(describing: ready))")
                }
                let invalidMessage = try await world.pool("invalid").status?.conditions?["Ready"]?.message
                #expect(invalidMessage?.contains("spec.standby") == true)
                let unlabelledMessage = try await world.pool("unlabelled").status?.conditions?["Ready"]?.message
                #expect(unlabelledMessage?.contains("shoal.dev/token=true") == true)
                let elsewhereMessage = try await world.pool("elsewhere").status?.conditions?["Ready"]?.message
                #expect(elsewhereMessage?.contains("spec.organizationUrl") == true && elsewhereMessage?.contains("127.0.0.2") == true)
                let events = try await world.kube.listAll(Event.self, .events, namespace: world.namespace).items
                for (name, reason) in expected {
                    #expect(events.contains { $0.involvedObject.name == name && $0.reason == reason && $0.type == "Warning" }, "Warning Event \(reason) on \(name)")
                }
                let goodRuns = try await eventually(timeout: .seconds(60)) {
                    let pods = try await world.pods()
                    return pods.contains { $0.metadata.labels?[AgentPodLabels.pool] == "good" && $0.status?.phase == "Running" }
                }
                #expect(goodRuns, "the good pool reaches its standby despite the others")
                let others = try await world.pods().filter { $0.metadata.labels?[AgentPodLabels.pool] != "good" }
                #expect(others.isEmpty, "no pods for pools that cannot work: \(others.compactMap(\.metadata.name))")
            }
        }
    }

    @Test("scale-down removes only idle agents: a busy agent's pod and its job survive lowering the standby")
    func scaleDownSparesBusyAgents() async throws {
        try await ControllerWorld.run { world in
            try await world.createPool(spec: ControllerWorld.poolSpec(organizationURL: world.simulator.organizationURL, standby: 3, maxAgents: 4))
            try await world.withController {
                #expect(try await world.waitForStandby(3, timeout: .seconds(120)))
                let job = try await world.queueJobs(1, seconds: 20, name: "busy")[0]
                let running = try await world.organization.waitUntil(timeout: .seconds(60)) { $0.requests.first { $0.requestId == job }?.receiveTime != nil }
                let busyAgent = try #require(running.requests.first { $0.requestId == job }?.reservedAgentId)
                let busyName = try #require(running.agents.first { $0.id == busyAgent }?.name)

                _ = try await world.kube.patch(
                    AgentPoolObject.self, AgentPoolResource.resource, namespace: world.namespace, name: "linux", patch: .merge(["spec": ["standby": 1]]),
                    subresource: nil)

                // Settles at the busy agent plus one idle agent, with the job still running on the same pod.
                let settled = try await eventually(timeout: .seconds(60)) {
                    let registrations = await world.registrations().filter { !$0.name.hasSuffix("-placeholder") }
                    return registrations.count == 2 && registrations.contains { $0.name == busyName && $0.assignedRequestId == job }
                }
                try await expect(settled) { "registrations \(await world.describeRegistrations())" }
                let busyPod = try await world.kube.pod(named: busyName, namespace: world.namespace)
                #expect(busyPod.metadata.deletionTimestamp == nil, "the busy agent's pod was never deleted")
                let done = try await world.organization.waitUntil(timeout: .seconds(90)) { $0.requests.first { $0.requestId == job }?.isFinished ?? false }
                #expect(done.requests.first { $0.requestId == job }?.result == .succeeded, "the job was not cancelled by the scale-down")
                let events = try await world.kube.listAll(Event.self, .events, namespace: world.namespace).items
                #expect(events.contains { $0.reason == "ScaledDown" })
                #expect(try await world.waitForStandby(1))
            }
        }
    }

    @Test("two replicas: one leads, the other takes over when it stops, and the pool is never doubled")
    func twoReplicas() async throws {
        try await ControllerWorld.run { world in
            try await world.createPool(spec: ControllerWorld.poolSpec(organizationURL: world.simulator.organizationURL, standby: 2, maxAgents: 4))
            let first = world.makeController(settings: world.defaultSettings(identity: "replica-a", leaderElection: true), kube: world.kube)
            let second = world.makeController(settings: world.defaultSettings(identity: "replica-b", leaderElection: true), kube: world.kube)
            let highWater = PodHighWaterMark()
            let watcher = Task { try await highWater.watch(world.kube, namespace: world.namespace) }
            let runFirst = Task { try await first.run() }
            let runSecond = Task { try await second.run() }
            defer {
                watcher.cancel()
                runFirst.cancel()
                runSecond.cancel()
            }
            #expect(try await world.waitForStandby(2))
            try await world.waitForReconciles(3)
            let leaders = [first, second].filter { $0.readiness().reason == "leading" }
            #expect(leaders.count == 1, "exactly one replica leads")
            let lease = try await world.kube.get(Lease.self, .leases, namespace: world.namespace, name: "shoal-pool-controller")
            let holder = try #require(lease.spec.holderIdentity)

            // The leader stops (as on SIGTERM): it releases the Lease and the other replica carries on.
            let (stopping, successor) = holder == "replica-a" ? (runFirst, second) : (runSecond, first)
            stopping.cancel()
            _ = await stopping.result
            #expect(try await eventually(timeout: .seconds(30)) { successor.readiness().reason == "leading" })
            let jobs = try await world.queueJobs(3, seconds: 1)
            let done = try await world.organization.waitUntil(timeout: .seconds(90)) { snapshot in
                jobs.allSatisfy { id in snapshot.requests.first { $0.requestId == id }?.isFinished ?? false }
            }
            let runners = done.requests.filter { jobs.contains($0.requestId) }.compactMap(\.reservedAgentId)
            #expect(Set(runners).count == jobs.count)
            #expect(try await world.waitForStandby(2))
            #expect(await highWater.maximum <= 4)
        }
    }

    @Test("a controller restart in the middle of a burst loses no job and serves none twice")
    func restartMidBurst() async throws {
        try await ControllerWorld.run { world in
            try await world.createPool(spec: ControllerWorld.poolSpec(organizationURL: world.simulator.organizationURL, standby: 1, maxAgents: 4))
            let highWater = PodHighWaterMark()
            let watcher = Task { try await highWater.watch(world.kube, namespace: world.namespace) }
            defer { watcher.cancel() }
            let first = world.makeController(settings: world.defaultSettings(identity: "first"), kube: world.kube)
            let runFirst = Task { try await first.run() }
            #expect(try await world.waitForStandby(1))
            let jobs = try await world.queueJobs(8, seconds: 2)
            try await world.organization.waitUntil(timeout: .seconds(60)) { snapshot in
                snapshot.requests.count { jobs.contains($0.requestId) && $0.receiveTime != nil } >= 2
            }
            runFirst.cancel()
            _ = await runFirst.result

            // A new controller process: nothing remembered, everything re-observed.
            let second = world.makeController(settings: world.defaultSettings(identity: "restarted"), kube: world.kube)
            let runSecond = Task { try await second.run() }
            defer { runSecond.cancel() }
            let done = try await world.organization.waitUntil(timeout: .seconds(180)) { snapshot in
                jobs.allSatisfy { id in snapshot.requests.first { $0.requestId == id }?.isFinished ?? false }
            }
            let finished = done.requests.filter { jobs.contains($0.requestId) }
            #expect(finished.allSatisfy { $0.result == .succeeded })
            let runners = finished.compactMap(\.reservedAgentId)
            #expect(Set(runners).count == jobs.count, "one registration per job: \(runners)")
            let rested = try await world.waitForStandby(1)
            try await expect(rested) { "standby: \(await world.describeRegistrations())" }
            #expect(await highWater.maximum <= 4)
        }
    }

    @Test("a throttled organization is reported as Throttled, and the pool recovers when the throttling ends")
    func throttled() async throws {
        try await ControllerWorld.run { world in
            _ = world.organization.addFault(FaultRule(.tooManyRequests(retryAfterSeconds: 1), route: "pools/{poolId}/jobrequests", method: "GET"))
            try await world.createPool(spec: ControllerWorld.poolSpec(organizationURL: world.simulator.organizationURL, standby: 1, maxAgents: 2))
            try await world.withController {
                let reported = try await eventually(timeout: .seconds(90)) {
                    let ready = try await world.pool().status?.conditions?["Ready"]
                    return ready?.status == "False" && ready?.reason == "Throttled"
                }
                #expect(reported)
                let events = try await world.kube.listAll(Event.self, .events, namespace: world.namespace).items
                #expect(events.contains { $0.reason == "Throttled" && $0.type == "Warning" })
                #expect(try await world.pods().isEmpty, "nothing is decided on a failed observation")

                world.organization.clearFaults()
                #expect(try await world.waitForStandby(1))
                let recovered = try await eventually(timeout: .seconds(60)) { try await world.pool().status?.conditions?["Ready"]?.status == "True" }
                #expect(recovered)
            }
        }
    }
}
