import Foundation
import Kubernetes
import Shared
import Simulators
import Testing

@testable import pool_controller

/// `deploy/` against the Swift CRD definition (offline) and against the real local API server (v1.20.2): install.yaml
/// and the examples apply, and the controller runs on install.yaml's RBAC and nothing else.
///
/// Serialized: install.yaml's objects are cluster-scoped or live in `shoal-system`, shared by every test (and the
/// leader-election test holds the one Lease `shoal-system/shoal-pool-controller`). Other suites create the same CRD
/// from `AgentPoolCRD.definition`; the drift test below proves the two are equal, so either order works.
@Suite("Deploy manifests", .serialized, .timeLimit(.minutes(5)))
struct DeployManifestTests {
    /// The repository root: this file is `Tests/ControllerTests/DeployManifestTests.swift`.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Kubernetes 1.20 serves no policy/v1 PodDisruptionBudget.
    static let skipOn120: Set<String> = ["PodDisruptionBudget"]

    static func manifest(_ path: String) throws -> [KubeJSON] {
        try ManifestApplier.documents(String(contentsOf: root.appendingPathComponent(path), encoding: .utf8))
    }

    static func installObjects() throws -> [KubeJSON] { try manifest("deploy/install.yaml") }

    /// Applies install.yaml (without the PodDisruptionBudget) as cluster admin.
    @discardableResult
    static func install(_ admin: any KubernetesAPI) async throws -> [ManifestApplier.Applied] {
        try await ManifestApplier(api: admin, logger: quietLogger("apply")).apply(installObjects(), skipKinds: skipOn120)
    }

    /// What docs/deploy.md tells users to create for another agent namespace.
    static func agentNamespaceBinding(_ namespace: String) -> KubeJSON {
        [
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": ["name": "shoal-controller", "namespace": .string(namespace)],
            "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "shoal-agent-pods"],
            "subjects": [["kind": "ServiceAccount", "name": "shoal-controller", "namespace": "shoal-system"]],
        ]
    }

    /// The paths where `expected` is not contained in `actual` (objects: every key of `expected`; arrays: same length,
    /// element by element; scalars: equal).
    static func differences(_ expected: KubeJSON, in actual: KubeJSON?, path: String = "") -> [String] {
        switch expected {
        case .object(let members):
            guard case .object = actual else { return ["\(path): missing or not an object"] }
            return members.keys.sorted().flatMap { differences(members[$0]!, in: actual?[$0], path: "\(path).\($0)") }
        case .array(let items):
            guard let actualItems = actual?.arrayValue, actualItems.count == items.count else {
                return ["\(path): \(String(describing: actual)) instead of \(items.count) items"]
            }
            return zip(items, actualItems).enumerated().flatMap { differences($1.0, in: $1.1, path: "\(path)[\($0)]") }
        default:
            return actual == expected ? [] : ["\(path): \(String(describing: actual)) instead of \(expected)"]
        }
    }

    static func label(_ object: KubeJSON) -> String {
        let name = object["metadata"]?["name"]?.stringValue ?? "?"
        return "\(object["kind"]?.stringValue ?? "?") \(object["metadata"]?["namespace"]?.stringValue.map { "\($0)/\(name)" } ?? name)"
    }

    static func live(_ object: KubeJSON, _ api: any KubernetesAPI) async throws -> KubeJSON {
        let resource = try #require(ManifestApplier.resource(apiVersion: object["apiVersion"]?.stringValue ?? "", kind: object["kind"]?.stringValue ?? ""))
        return try await api.get(
            DynamicObject.self, resource, namespace: resource.namespaced ? object["metadata"]?["namespace"]?.stringValue : nil,
            name: object["metadata"]?["name"]?.stringValue ?? ""
        ).json
    }

    // MARK: - Offline

    @Test("every CRD copy equals AgentPoolCRD.definition", arguments: [
        "deploy/crds/agentpools.shoal.dev.yaml", "deploy/helm/shoal/crds/agentpools.shoal.dev.yaml", "deploy/install.yaml",
    ])
    func crdCopyMatchesDefinition(path: String) throws {
        let crds = try Self.manifest(path).filter { $0["kind"] == "CustomResourceDefinition" }
        #expect(crds.count == 1, "\(path) holds \(crds.count) CRDs")
        let crd = try #require(crds.first)
        let drift = Self.differences(AgentPoolCRD.definition, in: crd) + Self.differences(crd, in: AgentPoolCRD.definition)
        #expect(crd == AgentPoolCRD.definition, "\(path) drifted from AgentPoolCRD.definition (run scripts/generate-crd): \(drift.prefix(10))")
    }

    @Test("install.yaml holds the objects docs/deploy.md describes, each a kind the applier knows")
    func installContents() throws {
        let objects = try Self.installObjects()
        #expect(objects.map(Self.label) == [
            "Namespace shoal-system", "CustomResourceDefinition agentpools.shoal.dev", "ServiceAccount shoal-system/shoal-controller",
            "ClusterRole shoal-controller", "ClusterRoleBinding shoal-controller", "ClusterRole shoal-agent-pods", "Namespace shoal-agents",
            "RoleBinding shoal-agents/shoal-controller", "Role shoal-system/shoal-leader-election",
            "RoleBinding shoal-system/shoal-leader-election", "Deployment shoal-system/shoal-pool-controller",
            "PodDisruptionBudget shoal-system/shoal-pool-controller", "Service shoal-system/shoal-pool-controller-metrics",
        ])
        for object in objects {
            #expect(ManifestApplier.resource(apiVersion: object["apiVersion"]?.stringValue ?? "", kind: object["kind"]?.stringValue ?? "") != nil, "\(Self.label(object))")
        }
    }

    // MARK: - Against the API server

    @Test("install.yaml applies cleanly, and applying it again changes nothing")
    func installApplies() async throws {
        try await KubeTestContext.run { context in
            let objects = try Self.installObjects().filter { !Self.skipOn120.contains($0["kind"]?.stringValue ?? "") }
            let first = try await Self.install(context.admin)
            #expect(first.map(\.kind) == objects.compactMap { $0["kind"]?.stringValue })

            var before: [String: KubeJSON] = [:]
            for object in objects {
                let live = try await Self.live(object, context.admin)
                before[Self.label(object)] = live
                // What the manifest says is what the server holds (defaults may add to it).
                var expected = object
                expected["metadata"]?["annotations"] = nil
                if object["kind"] == "Namespace" { expected["spec"] = nil }
                let drift = Self.differences(expected, in: live)
                #expect(drift.isEmpty, "\(Self.label(object)) as stored differs from install.yaml: \(drift.prefix(10))")
            }

            let second = try await Self.install(context.admin)
            #expect(second.count == objects.count)
            let created = second.filter { !$0.updated }.map(\.description)
            #expect(created.isEmpty, "the second apply replaced every object, created none: \(created)")
            for object in objects {
                let label = Self.label(object)
                let old = try #require(before[label])
                let now = try await Self.live(object, context.admin)
                #expect(now["metadata"]?["uid"] == old["metadata"]?["uid"], "\(label) was not recreated")
                #expect(now["metadata"]?["generation"] == old["metadata"]?["generation"], "\(label): the spec did not change")
                let labels = object["metadata"]?["labels"] ?? [:]
                let labelDrift = Self.differences(labels, in: now["metadata"]?["labels"])
                #expect(labelDrift.isEmpty, "\(label): \(labelDrift)")
                switch object["kind"]?.stringValue {
                case "ServiceAccount":
                    #expect(now["secrets"] == old["secrets"], "the token Secret is kept, not minted again")
                case "Service":
                    #expect(now["spec"]?["clusterIP"] == old["spec"]?["clusterIP"])
                    #expect(now["spec"]?["clusterIP"]?.stringValue?.isEmpty == false)
                case "CustomResourceDefinition":
                    #expect(now["spec"] == old["spec"])
                default:
                    break
                }
            }
        }
    }

    static let examples: [String] = {
        let directory = root.appendingPathComponent("deploy/examples")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasSuffix(".yaml") }.sorted()
    }()

    @Test("the examples directory is not empty")
    func examplesExist() {
        #expect(Self.examples.count >= 6, "\(Self.examples)")
    }

    @Test("every example applies cleanly (into a test namespace instead of shoal-agents)", arguments: examples)
    func exampleApplies(file: String) async throws {
        try await KubeTestContext.run { context in
            try await Self.install(context.admin)
            let all = try Self.manifest("deploy/examples/\(file)")
            #expect(!all.isEmpty)
            // A file may create its own agent namespace (the Docker-socket and BuildKit examples need a Pod Security
            // level of their own): that Namespace is checked by scripts/check-deploy, and its objects land here in the
            // test namespace like everyone else's.
            let ownNamespaces = Set(all.filter { $0["kind"] == "Namespace" }.compactMap { $0["metadata"]?["name"]?.stringValue })
            var objects = all.filter { $0["kind"] != "Namespace" }
            for index in objects.indices {
                let namespace = objects[index]["metadata"]?["namespace"]?.stringValue ?? ""
                #expect(namespace == "shoal-agents" || ownNamespaces.contains(namespace), "\(file): \(Self.label(objects[index]))")
                objects[index]["metadata"]?["namespace"] = .string(context.namespace)
            }
            let applied = try await ManifestApplier(api: context.admin, logger: quietLogger("apply")).apply(objects)
            #expect(applied.map(\.kind) == objects.compactMap { $0["kind"]?.stringValue })
            #expect(applied.allSatisfy { !$0.updated })
            #expect(objects.contains { $0["kind"] == "AgentPool" }, "\(file) has an AgentPool")
            for object in objects {
                let live = try await Self.live(object, context.admin)
                var expected = object
                expected["stringData"] = nil  // stored as data
                let drift = Self.differences(expected, in: live)
                #expect(drift.isEmpty, "\(file): \(Self.label(object)) as stored differs: \(drift.prefix(10))")
                if object["kind"] == "Secret", let stringData = object["stringData"]?.objectValue {
                    #expect(Set(live["data"]?.objectValue?.keys.map { $0 } ?? []) == Set(stringData.keys))
                }
            }
            // The pool's Secret reference names a Secret the file creates, with the key it asks for.
            for pool in objects where pool["kind"] == "AgentPool" {
                guard let reference = pool["spec"]?["tokenSecretRef"] else { continue }
                let secret = objects.first { $0["kind"] == "Secret" && $0["metadata"]?["name"] == reference["name"] }
                #expect(secret != nil, "\(file): the Secret \(String(describing: reference["name"])) is in the file")
                let key = reference["key"]?.stringValue ?? "token"
                #expect(secret?["stringData"]?[key] != nil || secret?["data"]?[key] != nil, "\(file): the Secret has key \(key)")
                #expect(secret?["metadata"]?["labels"]?[AgentPodLabels.tokenSecret] == "true", "\(file): the token Secret is labelled for Shoal")
            }
        }
    }

    // MARK: - RBAC

    @Test(
        "the controller runs on install.yaml's RBAC and one RoleBinding: leader election, standby, jobs, status, finalizer, events",
        arguments: RegistrationMode.allCases)
    func controllerRunsOnInstalledRBAC(registration: RegistrationMode) async throws {
        try await ControllerWorld.run { world in
            try await Self.install(world.kube)
            try await ManifestApplier(api: world.kube, logger: quietLogger("apply")).apply([Self.agentNamespaceBinding(world.namespace)])
            var spec = ControllerWorld.poolSpec(organizationURL: world.simulator.organizationURL, standby: 2, maxAgents: 3)
            spec["registration"] = .string(registration.rawValue)  // controller: also creates, patches and deletes Secrets
            try await world.createPool(spec: spec)
            let identity = "rbac-\(world.namespace)"
            var settings = world.defaultSettings(identity: identity, leaderElection: true)
            settings.leaderElectionNamespace = "shoal-system"

            try await world.withController(settings: settings, kube: world.context.controller) {
                let standby = try await Self.waitForStandby(world, 2)
                let atStandby = try await Self.describe(world)
                #expect(standby, "standby 2 not reached: \(atStandby)")

                let jobs = try await world.queueJobs(2, seconds: 1)
                let done = try await world.organization.waitUntil(timeout: .seconds(180)) { snapshot in
                    jobs.allSatisfy { id in snapshot.requests.first { $0.requestId == id }?.isFinished ?? false }
                }
                let finished = done.requests.filter { jobs.contains($0.requestId) }
                #expect(finished.count == 2)
                #expect(finished.allSatisfy { $0.result == .succeeded }, "\(finished.map { "\($0.requestId)=\(String(describing: $0.result))" })")
                let runners = finished.compactMap(\.reservedAgentId)
                #expect(Set(runners).count == 2, "one job per agent: \(runners)")

                let settled = try await Self.waitForStandby(world, 2)
                let afterJobs = try await Self.describe(world)
                #expect(settled, "not back to standby: \(afterJobs)")

                // Status and finalizer were written with the ServiceAccount's token.
                let ready = try await eventually(timeout: .seconds(60)) {
                    let pool = try await world.pool()
                    return pool.status?.conditions?["Ready"]?.status == "True" && pool.status?.idle == 2
                }
                let pool = try await world.pool()
                #expect(ready, "status: \(String(describing: pool.status))")
                #expect(pool.metadata.finalizers?.contains(AgentPoolResource.finalizer) == true)

                // The Lease in shoal-system is held by this replica.
                let lease = try await world.kube.get(DynamicObject.self, .leases, namespace: "shoal-system", name: "shoal-pool-controller")
                let holder = lease.json["spec"]?["holderIdentity"]?.stringValue
                #expect(holder == identity)

                // Events about the pool and its pods, created by the controller in the agent namespace.
                let events = try await world.kube.listAll(Event.self, .events, namespace: world.namespace).items
                let ours = events.filter { $0.source?.component == AgentPoolResource.component || $0.reportingComponent == AgentPoolResource.component }
                #expect(!ours.isEmpty, "events: \(events.map { "\($0.reason ?? ""):\($0.involvedObject.kind ?? "")" })")
                #expect(ours.contains { $0.involvedObject.kind == "AgentPool" && $0.involvedObject.name == "linux" })
            }
        }
    }

    @Test("requests outside install.yaml's RBAC are refused, and a pool without the RoleBinding reports KubernetesForbidden")
    func outsideRBACIsRefused() async throws {
        try await ControllerWorld.run { world in
            try await Self.install(world.kube)
            let controller = world.context.controller
            let namespace = world.namespace  // no RoleBinding here

            let pod = Pod(
                metadata: ObjectMeta(name: "intruder", namespace: namespace),
                spec: PodSpec(containers: [Container(name: "agent", image: ControllerWorld.agentImage)]))
            await Self.expectForbidden(verb: "create", resource: "pods", namespace: namespace) {
                _ = try await controller.createPod(pod, namespace: namespace)
            }
            let pods = try await world.kube.listAll(Pod.self, .pods, namespace: namespace).items
            #expect(pods.isEmpty)

            // Secrets: `get` in agent namespaces only, never `list` (not even in shoal-agents).
            await Self.expectForbidden(verb: "list", resource: "secrets", namespace: "shoal-agents") {
                _ = try await controller.list(Secret.self, .secrets, namespace: "shoal-agents", options: ListOptions())
            }
            await Self.expectForbidden(verb: "get", resource: "secrets", namespace: namespace) {
                _ = try await controller.secret(named: "azdo", namespace: namespace)
            }

            // AgentPools belong to users: no delete, no create.
            try await world.createPool(spec: ControllerWorld.poolSpec(organizationURL: world.simulator.organizationURL, standby: 1, maxAgents: 2))
            await Self.expectForbidden(verb: "delete", resource: "agentpools", namespace: namespace) {
                _ = try await controller.delete(AgentPoolResource.resource, namespace: namespace, name: "linux", options: DeleteOptions())
            }
            #expect(try await world.pool().metadata.deletionTimestamp == nil)
            await Self.expectForbidden(verb: "create", resource: "agentpools", namespace: namespace) {
                _ = try await controller.create(
                    AgentPoolObject(metadata: ObjectMeta(name: "other", namespace: namespace), spec: [:]), AgentPoolResource.resource, namespace: namespace)
            }

            // The controller itself, on that token: the pool reports the missing permission and no pod appears.
            try await world.withController(kube: controller) {
                let reported = try await eventually(timeout: .seconds(90)) {
                    try await world.pool().status?.conditions?["Ready"]?.reason == "KubernetesForbidden"
                }
                let pool = try await world.pool()
                let condition = pool.status?.conditions?["Ready"]
                #expect(reported, "status: \(String(describing: pool.status))")
                #expect(condition?.status == "False")
                let message = condition?.message ?? ""
                #expect(message.contains("pods"), "\(message)")
                #expect(message.contains(namespace), "\(message)")
                #expect(message.contains("cannot list"), "\(message)")
                #expect(try await world.pods().isEmpty)
            }
        }
    }

    /// Waits until the pool rests at `standby` idle agents: as many online idle registrations (besides the
    /// placeholder) and Running pods, and nothing else.
    static func waitForStandby(_ world: ControllerWorld, _ standby: Int) async throws -> Bool {
        try await eventually(timeout: .seconds(120)) {
            let registrations = await world.registrations().filter { !$0.name.hasSuffix("placeholder") }
            let pods = try await world.pods()
            return registrations.count == standby && registrations.allSatisfy { $0.status == .online && $0.assignedRequestId == nil }
                && pods.count == standby && pods.allSatisfy { $0.status?.phase == "Running" && $0.metadata.deletionTimestamp == nil }
        }
    }

    /// Registrations and pods, for failure messages.
    static func describe(_ world: ControllerWorld) async throws -> String {
        let registrations = await world.registrations().map { "\($0.name):\($0.status)" }
        let pods = try await world.pods().map { "\($0.metadata.name ?? ""):\($0.status?.phase ?? "")" }
        return "registrations \(registrations), pods \(pods)"
    }

    /// Expects `body` to fail with a 403 whose description names the verb, the resource and the namespace.
    static func expectForbidden(
        verb: String, resource: String, namespace: String, sourceLocation: SourceLocation = #_sourceLocation,
        _ body: () async throws -> Void
    ) async {
        do {
            try await body()
            Issue.record("\(verb) \(resource) in \(namespace) was allowed", sourceLocation: sourceLocation)
        } catch let error as KubernetesError {
            guard case .forbidden = error else {
                Issue.record("expected 403 for \(verb) \(resource), got \(error)", sourceLocation: sourceLocation)
                return
            }
            let description = "\(error)"
            #expect(description.contains("cannot \(verb) resource \"\(resource)\""), "\(description)", sourceLocation: sourceLocation)
            #expect(description.contains("namespace \"\(namespace)\""), "\(description)", sourceLocation: sourceLocation)
            #expect(description.contains("system:serviceaccount:shoal-system:shoal-controller"), "\(description)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("expected KubernetesError.forbidden, got \(error)", sourceLocation: sourceLocation)
        }
    }
}
