import Shared
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What Shoal needs from the Kubernetes API: typed CRUD, patch, subresources and watches over any resource.
///
/// ``KubernetesClient`` talks to a real API server; tests of controllers use a fake. Namespace rules: for
/// namespaced resources a nil `namespace` means the object's own `metadata.namespace`, else ``defaultNamespace``;
/// for `list` and `watch` a nil namespace means all namespaces. Cluster-scoped resources ignore it.
package protocol KubernetesAPI: Sendable {
    /// The namespace used when none is given (the ServiceAccount's or kubeconfig context's).
    var defaultNamespace: String { get }

    /// GET one object.
    func get<Object: KubernetesObject>(_ type: Object.Type, _ resource: KubernetesResource, namespace: String?, name: String) async throws(KubernetesError) -> Object

    /// GET one page of a collection; see ``KubernetesAPI/listAll(_:_:namespace:labelSelector:fieldSelector:pageSize:)``.
    func list<Object: KubernetesObject>(_ type: Object.Type, _ resource: KubernetesResource, namespace: String?, options: ListOptions) async throws(KubernetesError) -> ObjectList<Object>

    /// POST a new object (`metadata.generateName` lets the server pick the name).
    func create<Object: KubernetesObject>(_ object: Object, _ resource: KubernetesResource, namespace: String?) async throws(KubernetesError) -> Object

    /// PUT an object (or its `subresource`, e.g. `status`); its `metadata.resourceVersion` makes this a
    /// compare-and-swap: a stale one gives ``KubernetesError/conflict(_:)``.
    func update<Object: KubernetesObject>(_ object: Object, _ resource: KubernetesResource, namespace: String?, subresource: String?) async throws(KubernetesError) -> Object

    /// PATCH an object (or its `subresource`) with a merge, strategic merge or JSON patch.
    func patch<Object: KubernetesObject>(_ type: Object.Type, _ resource: KubernetesResource, namespace: String?, name: String, patch: KubernetesPatch, subresource: String?) async throws(KubernetesError) -> Object

    /// DELETE an object; ``DeletionResult/pending(_:)`` when finalizers or a grace period keep it for now.
    func delete(_ resource: KubernetesResource, namespace: String?, name: String, options: DeleteOptions) async throws(KubernetesError) -> DeletionResult

    /// POST to a subresource that is not the object itself (a Pod's `binding`); returns the answer as JSON.
    func createSubresource<Body: Encodable & Sendable>(_ body: Body, _ resource: KubernetesResource, namespace: String?, name: String, subresource: String) async throws(KubernetesError) -> KubeJSON

    /// One watch request; see ``ListWatch`` for the list-then-watch loop that callers normally want.
    func watch<Object: KubernetesObject>(_ type: Object.Type, _ resource: KubernetesResource, namespace: String?, options: WatchOptions) -> WatchStream<Object>
}

/// The outcome of a DELETE.
package enum DeletionResult: Sendable, Hashable {
    /// The object is gone.
    case deleted
    /// The object still exists with a `deletionTimestamp` (finalizers, a bound Pod's grace period).
    case pending(DynamicObject)
}

extension KubernetesAPI {
    /// Lists every page (`limit` + `continue`) and returns all items with the resourceVersion of the first page,
    /// which is the consistent snapshot the pages belong to (start a watch from it).
    package func listAll<Object: KubernetesObject>(
        _ type: Object.Type, _ resource: KubernetesResource, namespace: String?, labelSelector: String? = nil, fieldSelector: String? = nil,
        pageSize: Int? = 500
    ) async throws(KubernetesError) -> ObjectList<Object> {
        var options = ListOptions(labelSelector: labelSelector, fieldSelector: fieldSelector, limit: pageSize)
        var items: [Object] = []
        var firstVersion: String?
        while true {
            let page = try await list(type, resource, namespace: namespace, options: options)
            items += page.items
            if firstVersion == nil { firstVersion = page.metadata.resourceVersion }
            guard let token = page.metadata.continue, !token.isEmpty else { break }
            options.continueToken = token
        }
        return ObjectList(metadata: ListMeta(resourceVersion: firstVersion), items: items)
    }

    /// PUT the `status` subresource (spec changes in the body are ignored by the server).
    package func updateStatus<Object: KubernetesObject>(_ object: Object, _ resource: KubernetesResource, namespace: String? = nil) async throws(KubernetesError) -> Object {
        try await update(object, resource, namespace: namespace, subresource: "status")
    }

    /// PATCH the `status` subresource.
    package func patchStatus<Object: KubernetesObject>(
        _ type: Object.Type, _ resource: KubernetesResource, namespace: String? = nil, name: String, patch: KubernetesPatch
    ) async throws(KubernetesError) -> Object {
        try await self.patch(type, resource, namespace: namespace, name: name, patch: patch, subresource: "status")
    }

    /// Replaces `metadata.finalizers` by a merge patch guarded with the object's resourceVersion (409 if stale).
    package func setFinalizers<Object: KubernetesObject>(
        _ finalizers: [String], on object: Object, _ resource: KubernetesResource, namespace: String? = nil
    ) async throws(KubernetesError) -> Object {
        var metadata: KubeJSON = ["finalizers": .array(finalizers.map(KubeJSON.string))]
        if let version = object.metadata.resourceVersion { metadata["resourceVersion"] = .string(version) }
        return try await patch(
            Object.self, resource, namespace: namespace ?? object.metadata.namespace, name: object.metadata.name ?? "",
            patch: .merge(["metadata": metadata]), subresource: nil
        )
    }

    /// Assigns a Pod to a node through its `binding` subresource (what a scheduler does).
    package func bindPod(named name: String, namespace: String? = nil, toNode node: String) async throws(KubernetesError) {
        _ = try await createSubresource(Binding(podName: name, nodeName: node), .pods, namespace: namespace, name: name, subresource: "binding")
    }

    /// Reads a Secret.
    package func secret(named name: String, namespace: String? = nil) async throws(KubernetesError) -> Secret {
        try await get(Secret.self, .secrets, namespace: namespace, name: name)
    }

    /// Records an Event (core/v1).
    package func createEvent(_ event: Event, namespace: String? = nil) async throws(KubernetesError) -> Event {
        try await create(event, .events, namespace: namespace)
    }

    /// Reads a Pod.
    package func pod(named name: String, namespace: String? = nil) async throws(KubernetesError) -> Pod {
        try await get(Pod.self, .pods, namespace: namespace, name: name)
    }

    /// Creates a Pod (set `metadata.generateName` for a server-chosen name).
    package func createPod(_ pod: Pod, namespace: String? = nil) async throws(KubernetesError) -> Pod {
        try await create(pod, .pods, namespace: namespace)
    }

    /// Deletes a Pod.
    package func deletePod(named name: String, namespace: String? = nil, options: DeleteOptions = DeleteOptions()) async throws(KubernetesError) -> DeletionResult {
        try await delete(.pods, namespace: namespace, name: name, options: options)
    }
}
