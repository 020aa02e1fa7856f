import AgentIdentity
import Foundation
import Kubernetes
import Logging
import Shared
import Testing

@testable import pool_controller

/// Pool `ci/linux` in controller registration over the recording fakes.
private struct RegistrationWorld {
    static let agentVersion = "4.266.2"
    let timeline = FakeTimeline()
    let kube: FakeKubernetes
    let ado: FakeAzureDevOps
    let cache: PodCache
    let spec: PoolSpec
    let pool = PoolReference(key: PoolKey(namespace: "ci", name: "linux"), uid: "uid-pool")
    private let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    init(agents: [Agent] = []) throws {
        spec = try PoolSpec.resolve(
            [
                "organizationUrl": "https://dev.azure.com/contoso", "poolName": "k8s", "tokenSecretRef": ["name": "azdo"], "image": "agent:1",
                "registration": "controller", "capabilities": ["gpu": "true"],
            ],
            name: "linux")
        kube = FakeKubernetes(defaultNamespace: "ci", timeline: timeline)
        ado = FakeAzureDevOps(pool: AgentPool(id: 7, name: "k8s"), agents: agents, timeline: timeline)
        cache = PodCache(api: kube, clock: SystemClock(), logger: logger, onChange: { _ in })
    }

    func execute(_ actions: [PoolAction]) async -> ExecutionReport {
        await PoolExecutor(kube: kube, cache: cache, logger: logger)
            .execute(actions, spec: spec, pool: pool, poolID: 7, api: ado, agentVersion: Self.agentVersion)
    }
}

/// Decodes one file of a registration Secret.
private func file(_ secret: KubeJSON?, _ name: String) throws -> Data {
    let encoded = try #require(secret?["data"]?[name]?.stringValue, "the Secret has \(name)")
    return try #require(Data(base64Encoded: encoded))
}

/// Reads a JSON object (with or without the UTF-8 BOM .NET writes).
private func object(_ data: Data) throws -> [String: Any] {
    let body = data.starts(with: [0xEF, 0xBB, 0xBF]) ? data.dropFirst(3) : data
    return try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any])
}

@Suite("Controller registration")
struct ControllerRegistrationTests {
    @Test("a pod is registered first: the public key goes to Azure DevOps, the private key only into the pod's own Secret")
    func registersThenCreatesThePod() async throws {
        let world = try RegistrationWorld()
        let report = await world.execute([.createPods(count: 1)])
        #expect(report.failures.isEmpty, "\(report.failures)")
        let name = try #require(report.createdPods.first)
        #expect(PoolDecision.isPodName(name, prefix: "linux"))

        // Azure DevOps: one registration under the pod's name, with a public key and the declared capabilities.
        let registered = try #require(world.ado.world.agent(named: name))
        let body = try #require(world.ado.calls.first { $0.method == .addAgent }?.newAgent)
        let publicKey = try #require(body.authorization?.publicKey)
        #expect(publicKey.exponent == "AQAB")
        #expect(Data(base64Encoded: publicKey.modulus)?.count == 256)
        #expect(body.systemCapabilities["gpu"] == "true" && body.systemCapabilities["Agent.Name"] == name)
        #expect(body.version == RegistrationWorld.agentVersion && body.maxParallelism == 1)

        // The Secret: the three files in the agent's formats, for this agent, owned by the pod once it exists.
        let secretName = "\(name)-registration"
        let secret = world.kube.object(.secrets, namespace: "ci", name: secretName)
        #expect(secret?["immutable"] == true)
        let agentFile = try object(try file(secret, ".agent"))
        #expect(agentFile["agentId"] as? Int == registered.id && agentFile["agentName"] as? String == name)
        #expect(agentFile["poolId"] as? Int == 7 && agentFile["poolName"] as? String == "k8s")
        let credentials = try object(try file(secret, ".credentials"))
        #expect(credentials["scheme"] as? String == "OAuth")
        let data = try #require(credentials["data"] as? [String: String])
        #expect(data["clientId"] == registered.authorization?.clientId)
        #expect(data["authorizationUrl"] == registered.authorization?.authorizationUrl)
        let parameters = try RSAParametersFile.decode(try file(secret, ".credentials_rsaparams"))
        #expect(parameters.modulus == publicKey.modulus, "the private key in the pod belongs to the registered public key")
        let pod = try #require(world.kube.object(.pods, namespace: "ci", name: name))
        let owners = secret?["metadata"]?["ownerReferences"]?.arrayValue ?? []
        #expect(owners.count == 1 && owners.first?["kind"] == "Pod" && owners.first?["uid"] == pod["metadata"]?["uid"])

        // The pod: no token anywhere, the identity mounted read-only, the mode in its environment and labels.
        let agent = try #require(pod["spec"]?["containers"]?.arrayValue?.first)
        let env = agent["env"]?.arrayValue ?? []
        #expect(!env.contains { $0["name"] == "AZP_TOKEN" || $0["name"] == "AZP_TOKEN_FILE" || $0["valueFrom"]?["secretKeyRef"] != nil })
        #expect(env.contains { $0["name"] == "AZP_REGISTRATION" && $0["value"] == "controller" })
        #expect(pod["metadata"]?["labels"]?["shoal.dev/registration"] == "controller")
        let volume = pod["spec"]?["volumes"]?.arrayValue?.first { $0["name"] == "shoal-registration" }
        #expect(volume?["secret"]?["secretName"] == .string(secretName))
        #expect(agent["volumeMounts"]?.arrayValue?.contains { $0["mountPath"] == "/azp/registration" && $0["readOnly"] == true } == true)
        // And the cache knows the pod before any watch event.
        #expect(await world.cache.pods(of: world.pool.key).compactMap(\.metadata.name) == [name])
    }

    @Test("a pod that cannot be created leaves neither its Secret nor its registration behind")
    func failedPodCreationIsUndone() async throws {
        let world = try RegistrationWorld()
        world.kube.fail(.fake(403, reason: "Forbidden"), on: .create, .pods)
        let report = await world.execute([.createPods(count: 2)])
        #expect(report.createdPods.isEmpty)
        #expect(report.failures.count == 1)
        #expect(world.kube.names(.secrets, namespace: "ci").isEmpty)
        #expect(world.ado.world.agents.isEmpty, "the registration was deleted again")
        #expect(world.ado.calls.map(\.method) == [.addAgent, .deleteAgent], "one attempt, undone; the second not tried")
    }

    @Test("a Secret that cannot be created undoes the registration; throttling defers the rest")
    func failedSecretIsUndone() async throws {
        let world = try RegistrationWorld()
        world.kube.fail(.fake(429, reason: "TooManyRequests"), on: .create, .secrets, occurrence: 2)
        let report = await world.execute([.createPods(count: 3)])
        #expect(report.createdPods.count == 1)
        #expect(report.creationsDeferred == 2)
        #expect(world.ado.world.agents.count == 1, "only the created pod's agent is registered")
        #expect(world.kube.names(.pods, namespace: "ci").count == 1)
    }

    @Test("scale-down deletes a controller-registered agent's registration before its pod; a refusal keeps the pod")
    func scaleDownDeletesRegistrationFirst() async throws {
        let idle = Agent(id: 1, name: "linux-aaaaa", version: RegistrationWorld.agentVersion, enabled: true, status: .online)
        let busy = Agent(id: 2, name: "linux-bbbbb", version: RegistrationWorld.agentVersion, enabled: true, status: .online)
        let world = try RegistrationWorld(agents: [idle, busy])
        for name in ["linux-aaaaa", "linux-bbbbb"] {
            let pod = try (["apiVersion": "v1", "kind": "Pod", "metadata": ["name": .string(name), "namespace": "ci"], "spec": ["containers": [["name": "agent"]]]] as KubeJSON).decode(as: Pod.self)
            await world.cache.record(try world.kube.seed(pod, .pods))
        }
        // The service refuses to delete agent 2 (a job arrived after the re-read).
        world.ado.fail(.fake(400, message: "The agent is busy"), on: .deleteAgent, agentID: 2)
        let report = await world.execute([
            .scaleDown([
                ScaleDownCandidate(agentID: 1, podName: "linux-aaaaa", registeredByController: true),
                ScaleDownCandidate(agentID: 2, podName: "linux-bbbbb", registeredByController: true),
            ])
        ])
        #expect(report.deletedPods.map(\.name) == ["linux-aaaaa"])
        #expect(report.deletedRegistrations.map(\.name) == ["linux-aaaaa"])
        #expect(report.reEnabled == [2])
        #expect(world.kube.names(.pods, namespace: "ci") == ["linux-bbbbb"])
        let order = world.ado.calls.map(\.description) + world.kube.calls(.delete, .pods).map(\.description)
        #expect(world.ado.world.agent(named: "linux-aaaaa") == nil, "\(order)")
        #expect(world.ado.world.agent(named: "linux-bbbbb")?.enabled == true)
    }

    @Test("a stuck or disabled controller-registered pod takes its registration with it; an entrypoint pod leaves it to its entrypoint")
    func stuckPodTakesItsRegistration() throws {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let base = try PoolSpec.resolve(
            ["organizationUrl": "https://dev.azure.com/contoso", "poolName": "k8s", "tokenSecretRef": ["name": "azdo"], "image": "a:1", "standby": 0],
            name: "linux")
        for controller in [true, false] {
            let observation = PoolObservation(
                now: now,
                pods: [
                    PodFacts(name: "linux-stuck", phase: .running, createdAt: now.addingTimeInterval(-3600), registeredByController: controller),
                    PodFacts(name: "linux-offed", phase: .running, createdAt: now, registeredByController: controller),
                ],
                agents: [AgentFacts(id: 1, name: "linux-stuck", online: false), AgentFacts(id: 2, name: "linux-offed", online: true, enabled: false)],
                jobs: [], agentVersion: "4.266.2")
            let actions = PoolDecision.decide(spec: base, observation: observation, memory: PoolMemory()).actions
            let registrations = actions.compactMap { action -> String? in
                if case .deleteRegistration(_, let name, let reason) = action { return "\(name) \(reason.rawValue)" }
                return nil
            }
            #expect(registrations == (controller ? ["linux-stuck pod-removed", "linux-offed pod-removed"] : []), "controller: \(controller)")
        }
    }
}

@Suite("Pod hardening and registration modes")
struct PodHardeningTests {
    private let pool = PoolKey(namespace: "ci", name: "linux")

    private func spec(_ extra: [String: KubeJSON] = [:], template: KubeJSON? = nil) throws -> PoolSpec {
        var json: KubeJSON = ["organizationUrl": "https://dev.azure.com/contoso", "poolName": "k8s", "tokenSecretRef": ["name": "azdo"]]
        if let template { json["template"] = template } else { json["image"] = "agent:1" }
        for (key, value) in extra { json[key] = value }
        return try PoolSpec.resolve(json, name: "linux")
    }

    @Test("unset security fields get hardened defaults: no ServiceAccount token, non-root, seccomp, no privilege escalation, no capabilities")
    func hardenedDefaults() throws {
        let pod = PodFactory.makePod(spec: try spec(), pool: pool, poolUID: nil)
        #expect(pod["spec"]?["automountServiceAccountToken"] == false)
        #expect(pod["spec"]?["securityContext"] == ["runAsNonRoot": true, "seccompProfile": ["type": "RuntimeDefault"]])
        let agent = pod["spec"]?["containers"]?.arrayValue?.first
        #expect(agent?["securityContext"] == ["allowPrivilegeEscalation": false, "capabilities": ["drop": ["ALL"]]])
    }

    @Test("what the template sets explicitly is kept")
    func templateWins() throws {
        let template: KubeJSON = [
            "spec": [
                "automountServiceAccountToken": true,
                "securityContext": ["runAsUser": 1000, "fsGroup": 1000, "seccompProfile": ["type": "Localhost", "localhostProfile": "p.json"]],
                "containers": [["name": "agent", "image": "a:1", "securityContext": ["capabilities": ["add": ["SYS_PTRACE"]], "privileged": true]]],
            ]
        ]
        let pod = PodFactory.makePod(spec: try spec(template: template), pool: pool, poolUID: nil)
        #expect(pod["spec"]?["automountServiceAccountToken"] == true)
        #expect(pod["spec"]?["securityContext"]?["seccompProfile"]?["type"] == "Localhost")
        #expect(pod["spec"]?["securityContext"]?["runAsNonRoot"] == true)
        let security = pod["spec"]?["containers"]?.arrayValue?.first?["securityContext"]
        #expect(security?["capabilities"] == ["add": ["SYS_PTRACE"]])
        #expect(security?["allowPrivilegeEscalation"] == nil, "a privileged container cannot also forbid escalation")
    }

    @Test("a template that runs as root explicitly is not contradicted with runAsNonRoot")
    func explicitRoot() throws {
        let template: KubeJSON = ["spec": ["securityContext": ["runAsUser": 0], "containers": [["name": "agent", "image": "a:1"]]]]
        let pod = PodFactory.makePod(spec: try spec(template: template), pool: pool, poolUID: nil)
        #expect(pod["spec"]?["securityContext"]?["runAsNonRoot"] == nil)
    }

    @Test("spec.registration defaults to entrypoint and rejects other values, naming the field")
    func registrationField() throws {
        #expect(try spec().registration == .entrypoint)
        #expect(try spec(["registration": "controller"]).registration == .controller)
        #expect(throws: SpecError(field: "spec.registration", problem: "'pod' is not one of entrypoint, controller")) {
            try spec(["registration": "pod"])
        }
    }

    @Test(
        "a template mounting a container runtime socket needs controller registration",
        arguments: ["/var/run/docker.sock", "/run/containerd/containerd.sock", "/var/run", "/var/run/docker.sock/"])
    func runtimeSocketNeedsControllerRegistration(path: String) throws {
        let template: KubeJSON = [
            "spec": [
                "volumes": [["name": "work", "emptyDir": [:]], ["name": "docker", "hostPath": ["path": .string(path), "type": "Socket"]]],
                "containers": [["name": "agent", "image": "a:1"]],
            ]
        ]
        do {
            _ = try spec(template: template)
            Issue.record("accepted a pool whose pods mount \(path) with entrypoint registration")
        } catch let error as SpecError {
            #expect(error.field == "spec.template.spec.volumes[1].hostPath.path")
            #expect(error.problem.contains("spec.registration: controller"))
        }
        #expect(try spec(["registration": "controller"], template: template).registration == .controller)
    }

    @Test("other hostPath volumes are not mistaken for a runtime socket")
    func otherHostPaths() throws {
        let template: KubeJSON = [
            "spec": ["volumes": [["name": "cache", "hostPath": ["path": "/var/cache/ci"]]], "containers": [["name": "agent", "image": "a:1"]]]
        ]
        #expect(try spec(template: template).registration == .entrypoint)
    }
}

@Suite("Organization allow-list")
struct OrganizationPolicyTests {
    @Test(
        "the default list allows Azure DevOps Services over https only",
        arguments: [
            ("https://dev.azure.com/contoso", true), ("https://contoso.visualstudio.com", true), ("http://dev.azure.com/contoso", false),
            ("https://evil.example.com/contoso", false), ("https://visualstudio.com.evil.example/x", false), ("https://dev.azure.com.evil.io/x", false),
            ("http://127.0.0.1:8080/org", false),
        ])
    func defaults(url: String, allowed: Bool) throws {
        let policy = OrganizationPolicy()
        let parsed = try OrganizationURL(url)
        if allowed {
            try policy.check(parsed)
        } else {
            #expect(throws: SpecError.self) { try policy.check(parsed) }
        }
    }

    @Test("the refusal names the field, the host and how an administrator extends the list")
    func refusalMessage() throws {
        do {
            try OrganizationPolicy().check(try OrganizationURL("https://collector.example.com/contoso"))
            Issue.record("accepted a host outside the allow-list")
        } catch let error as SpecError {
            #expect(error.field == "spec.organizationUrl")
            #expect(error.problem.contains("collector.example.com") && error.problem.contains("--allowed-organization-hosts"))
        }
        do {
            try OrganizationPolicy().check(try OrganizationURL("http://dev.azure.com/contoso"))
            Issue.record("accepted plain http")
        } catch let error as SpecError {
            #expect(error.problem.contains("must use https"))
        }
    }

    @Test("extra hosts, host:port, and plain http only with the test flag")
    func configured() throws {
        let policy = OrganizationPolicy(allowedHosts: try OrganizationPolicy.parse("tfs.example.com:8443, 127.0.0.1"), allowInsecure: true)
        try policy.check(try OrganizationURL("https://tfs.example.com:8443/DefaultCollection"))
        try policy.check(try OrganizationURL("http://127.0.0.1:39211/org"))
        #expect(throws: SpecError.self) { try policy.check(try OrganizationURL("https://tfs.example.com/DefaultCollection")) }
        #expect(throws: SettingsError.self) { try OrganizationPolicy.parse("https://dev.azure.com") }
        #expect(throws: SettingsError.self) { try OrganizationPolicy.parse(" , ") }
    }

    @Test("controller settings read the list and the flag from the environment, naming a bad value")
    func settings() throws {
        let resolved = try ControllerSettings.resolve(
            flags: .init(), environment: ["SHOAL_ALLOWED_ORGANIZATION_HOSTS": "*.example.com", "SHOAL_ALLOW_INSECURE_ORGANIZATION_URLS": "true"])
        #expect(resolved.organizationPolicy == OrganizationPolicy(allowedHosts: ["*.example.com"], allowInsecure: true))
        #expect(try ControllerSettings.resolve(flags: .init(), environment: [:]).organizationPolicy == OrganizationPolicy())
        #expect(throws: SettingsError.self) {
            try ControllerSettings.resolve(flags: .init(), environment: ["SHOAL_ALLOW_INSECURE_ORGANIZATION_URLS": "maybe"])
        }
    }
}
