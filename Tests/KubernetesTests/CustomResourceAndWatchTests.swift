import Foundation
import Kubernetes
import Simulators
import Shared
import Testing

/// A tiny CRD with a schema and a status subresource, created once per test process.
actor WidgetDefinition {
    static let shared = WidgetDefinition()
    static let resource = KubernetesResource(group: "test.shoal.dev", version: "v1alpha1", plural: "widgets", namespaced: true)

    private var ready: Task<Void, any Error>?

    func ensure(_ admin: KubernetesClient) async throws {
        if let ready { return try await ready.value }
        let task = Task { try await Self.create(admin) }
        ready = task
        try await task.value
    }

    private static func isServed(_ admin: KubernetesClient) async -> Bool {
        do {
            _ = try await admin.list(DynamicObject.self, resource, namespace: nil, options: ListOptions(limit: 1))
            return true
        } catch {
            return false
        }
    }

    private static func create(_ admin: KubernetesClient) async throws {
        let crd: KubeJSON = [
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": ["name": "widgets.test.shoal.dev"],
            "spec": [
                "group": "test.shoal.dev", "scope": "Namespaced",
                "names": ["plural": "widgets", "singular": "widget", "kind": "Widget"],
                "versions": [[
                    "name": "v1alpha1", "served": true, "storage": true, "subresources": ["status": [:]],
                    "schema": ["openAPIV3Schema": [
                        "type": "object",
                        "properties": [
                            "spec": ["type": "object", "required": ["replicas"], "properties": ["replicas": ["type": "integer", "minimum": 0, "maximum": 10]]],
                            "status": ["type": "object", "properties": ["ready": ["type": "integer"]]],
                        ],
                    ]],
                ]],
            ],
        ]
        do {
            _ = try await admin.create(DynamicObject(crd), .customResourceDefinitions, namespace: nil)
        } catch {
            guard error.isAlreadyExists else { throw error }
        }
        let served = try await eventually(timeout: .seconds(30)) { await isServed(admin) }
        guard served else { throw ClusterUnavailable(description: "the Widget CRD was not served within 30 s") }
    }
}

func widget(_ name: String, replicas: KubeJSON) -> DynamicObject {
    DynamicObject(["apiVersion": "test.shoal.dev/v1alpha1", "kind": "Widget", "metadata": ["name": .string(name)], "spec": ["replicas": replicas]])
}

@Suite("Custom resources and watches against a real kube-apiserver", .timeLimit(.minutes(2)))
struct CustomResourceAndWatchTests {
    @Test func schemaViolationIsInvalidWithCauses() async throws {
        try await KubeTestContext.run { k in
            try await WidgetDefinition.shared.ensure(k.admin)
            let error = await #expect(throws: KubernetesError.self) {
                try await k.admin.create(widget("too-many", replicas: 20), WidgetDefinition.resource, namespace: nil)
            }
            guard case .invalid(let failure) = error else { Issue.record("expected invalid, got \(String(describing: error))"); return }
            #expect(failure.causes.contains { $0.field == "spec.replicas" })
        }
    }

    @Test func statusUpdateKeepsGenerationAndSpecChangeBumpsIt() async throws {
        try await KubeTestContext.run { k in
            try await WidgetDefinition.shared.ensure(k.admin)
            var created = try await k.admin.create(widget("w", replicas: 1), WidgetDefinition.resource, namespace: nil)
            #expect(created.metadata.generation == 1)
            created.status = ["ready": 1]
            created.spec = ["replicas": 5]  // ignored by the status subresource
            let afterStatus = try await k.admin.updateStatus(created, WidgetDefinition.resource)
            #expect(afterStatus.metadata.generation == 1)
            #expect(afterStatus.status?["ready"] == 1)
            #expect(afterStatus.spec?["replicas"] == 1)
            let stale = await #expect(throws: KubernetesError.self) { try await k.admin.updateStatus(created, WidgetDefinition.resource) }
            #expect(stale?.code == 409)
            let patched = try await k.admin.patchStatus(DynamicObject.self, WidgetDefinition.resource, name: "w", patch: .merge(["status": ["ready": 2]]))
            #expect(patched.status?["ready"] == 2 && patched.metadata.generation == 1)
            var changed = patched
            changed.spec = ["replicas": 3]
            let afterSpec = try await k.admin.update(changed, WidgetDefinition.resource, namespace: nil, subresource: nil)
            #expect(afterSpec.metadata.generation == 2)
            let listed = try await k.admin.listAll(DynamicObject.self, WidgetDefinition.resource, namespace: k.namespace)
            #expect(listed.items.map(\.metadata.name) == ["w"])
        }
    }

    @Test func finalizersHoldDeletionUntilRemoved() async throws {
        try await KubeTestContext.run { k in
            try await WidgetDefinition.shared.ensure(k.admin)
            let created = try await k.admin.create(widget("held", replicas: 1), WidgetDefinition.resource, namespace: nil)
            let held = try await k.admin.setFinalizers(["shoal.dev/cleanup"], on: created, WidgetDefinition.resource)
            #expect(held.metadata.finalizers == ["shoal.dev/cleanup"])
            let stale = await #expect(throws: KubernetesError.self) { try await k.admin.setFinalizers([], on: created, WidgetDefinition.resource) }
            #expect(stale?.code == 409)
            let result = try await k.admin.delete(WidgetDefinition.resource, namespace: nil, name: "held", options: DeleteOptions())
            guard case .pending(let pending) = result else { Issue.record("expected pending, got \(result)"); return }
            #expect(pending.metadata.deletionTimestamp != nil)
            _ = try await k.admin.setFinalizers([], on: pending, WidgetDefinition.resource)
            let gone = try await eventually(timeout: .seconds(10)) {
                do {
                    _ = try await k.admin.get(DynamicObject.self, WidgetDefinition.resource, namespace: nil, name: "held")
                    return false
                } catch let error as KubernetesError {
                    if case .notFound = error { return true }
                    throw error
                }
            }
            #expect(gone)
        }
    }

    @Test func listWatchSeesChangesAcrossRewatches() async throws {
        try await KubeTestContext.run { k in
            let listWatch = ListWatch<Pod>(api: k.admin, resource: .pods, namespace: k.namespace, watchTimeoutSeconds: 1)
            var events = listWatch.makeAsyncIterator()
            guard case .relisted(let initial, let version) = try await events.next() else { Issue.record("expected a list first"); return }
            #expect(initial.isEmpty && !version.isEmpty)

            let pod = try await k.admin.createPod(samplePod(prefix: "watched-"))
            let name = try #require(pod.metadata.name)
            guard case .added(let added) = try await events.next() else { Issue.record("expected ADDED"); return }
            #expect(added.metadata.name == name)

            // Let the 1-second watch end on the server; the next change must arrive through a new watch that
            // resumes from the last resourceVersion, without a relist.
            try await Task.sleep(for: .milliseconds(1500))
            _ = try await k.admin.patch(Pod.self, .pods, namespace: nil, name: name, patch: .merge(["metadata": ["labels": ["seen": "yes"]]]), subresource: nil)
            let next = try await events.next()
            guard case .modified(let modified) = next else { Issue.record("expected MODIFIED, got \(String(describing: next))"); return }
            #expect(modified.metadata.labels?["seen"] == "yes")

            _ = try await k.admin.deletePod(named: name)
            // The delete may first show up as a MODIFIED (deletionTimestamp set), then as DELETED.
            var last = try await events.next()
            if case .modified(let object) = last, object.metadata.deletionTimestamp != nil { last = try await events.next() }
            guard case .deleted(let deleted) = last else { Issue.record("expected DELETED, got \(String(describing: last))"); return }
            #expect(deleted.metadata.name == name)
        }
    }

    @Test func watchFromAncientVersionIsGoneOrReplayed() async throws {
        try await KubeTestContext.run { k in
            let pod = try await k.admin.createPod(samplePod())
            // Measured on this v1.20.2 server, both happen: once the pods watch cache no longer reaches back to "1"
            // (after some hundred pod writes) it sends an ERROR event 410 "too old resource version: 1 (267)" inside
            // the 200 stream; on a young cluster it replays history (ADDED...) and a BOOKMARK instead.
            let stream = k.admin.watch(Pod.self, .pods, namespace: k.namespace, options: WatchOptions(resourceVersion: "1", timeoutSeconds: 1))
            var names: [String] = []
            do {
                for try await event in stream {
                    if case .added(let object) = event, let name = object.metadata.name { names.append(name) }
                }
                #expect(names == [pod.metadata.name].compactMap { $0 })
            } catch let error as KubernetesError {
                guard case .gone(let failure) = error else { Issue.record("expected gone, got \(error)"); return }
                #expect(failure.code == 410 && failure.reason == "Expired")
                #expect(failure.message.contains("too old resource version"))
            }
        }
    }

    @Test func listWithBogusContinueTokenFails() async throws {
        try await KubeTestContext.run { k in
            let error = await #expect(throws: KubernetesError.self) {
                try await k.admin.list(Pod.self, .pods, namespace: k.namespace, options: ListOptions(limit: 1, continueToken: "bm9wZQ"))
            }
            // v1.20 answers 400 for a malformed token (410 only for an expired, well-formed one, after compaction).
            guard case .badRequest(let failure) = error else { Issue.record("expected badRequest, got \(String(describing: error))"); return }
            #expect(failure.message.contains("invalid continue token"))
        }
    }
}
