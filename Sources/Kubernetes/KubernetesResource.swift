import Shared
/// Which REST collection an object lives in: API group, version, plural resource name, and namespace scope.
///
/// The client is generic over this description, so custom resources (`agentpools.shoal.dev`) need no new code.
package struct KubernetesResource: Sendable, Hashable, CustomStringConvertible {
    /// API group; empty for the core group (`/api/v1`).
    package var group: String
    /// API version (`v1`, `v1alpha1`).
    package var version: String
    /// Plural resource name as in the URL (`pods`, `agentpools`).
    package var plural: String
    /// Whether objects live in a namespace.
    package var namespaced: Bool

    /// Describes a resource.
    package init(group: String, version: String, plural: String, namespaced: Bool) {
        self.group = group
        self.version = version
        self.plural = plural
        self.namespaced = namespaced
    }

    /// `apiVersion` of objects of this resource (`v1`, `shoal.dev/v1alpha1`).
    package var apiVersion: String { group.isEmpty ? version : "\(group)/\(version)" }

    /// Pods (core/v1).
    package static let pods = KubernetesResource(group: "", version: "v1", plural: "pods", namespaced: true)
    /// Secrets (core/v1).
    package static let secrets = KubernetesResource(group: "", version: "v1", plural: "secrets", namespaced: true)
    /// Events (core/v1).
    package static let events = KubernetesResource(group: "", version: "v1", plural: "events", namespaced: true)
    /// Nodes (core/v1, cluster-scoped).
    package static let nodes = KubernetesResource(group: "", version: "v1", plural: "nodes", namespaced: false)
    /// Namespaces (core/v1, cluster-scoped).
    package static let namespaces = KubernetesResource(group: "", version: "v1", plural: "namespaces", namespaced: false)
    /// Leases (coordination.k8s.io/v1).
    package static let leases = KubernetesResource(group: "coordination.k8s.io", version: "v1", plural: "leases", namespaced: true)
    /// CustomResourceDefinitions (apiextensions.k8s.io/v1, cluster-scoped).
    package static let customResourceDefinitions = KubernetesResource(
        group: "apiextensions.k8s.io", version: "v1", plural: "customresourcedefinitions", namespaced: false
    )

    /// The URL path of the collection or of one object and its subresource, each segment percent-encoded.
    ///
    /// A namespaced resource with a nil namespace addresses all namespaces (lists and watches only).
    package func path(namespace: String?, name: String? = nil, subresource: String? = nil) -> String {
        var segments = group.isEmpty ? ["api", version] : ["apis", group, version]
        if namespaced, let namespace { segments += ["namespaces", namespace] }
        segments.append(plural)
        if let name { segments.append(name) }
        if let subresource { segments.append(subresource) }
        return "/" + segments.map(OrganizationURL.percentEncodePathSegment).joined(separator: "/")
    }

    package var description: String { group.isEmpty ? plural : "\(plural).\(group)" }
}

/// How a PATCH body is interpreted; the client sends the matching `Content-Type`.
package enum KubernetesPatch: Sendable, Hashable {
    /// RFC 7386 JSON merge patch: objects merge, lists replace, `null` deletes.
    case merge(KubeJSON)
    /// Strategic merge patch (built-in types only): lists such as `containers` merge by their key (`name`).
    case strategicMerge(KubeJSON)
    /// RFC 6902 JSON patch: a list of operations (`add`, `remove`, `replace`, `test`...).
    case json([KubeJSON])

    /// The `Content-Type` of the body.
    package var contentType: String {
        switch self {
        case .merge: "application/merge-patch+json"
        case .strategicMerge: "application/strategic-merge-patch+json"
        case .json: "application/json-patch+json"
        }
    }

    /// The body as JSON.
    package var body: KubeJSON {
        switch self {
        case .merge(let body), .strategicMerge(let body): body
        case .json(let operations): .array(operations)
        }
    }
}

/// Options of a list (and of the list that starts a watch).
package struct ListOptions: Sendable, Hashable {
    /// Label selector, e.g. `app=shoal,pool in (a,b)`.
    package var labelSelector: String?
    /// Field selector, e.g. `spec.nodeName=local`.
    package var fieldSelector: String?
    /// Page size; nil for everything at once.
    package var limit: Int?
    /// Continue token of the previous page.
    package var continueToken: String?
    /// Minimum resourceVersion to serve (`0` = any, from the cache).
    package var resourceVersion: String?

    /// Builds options.
    package init(labelSelector: String? = nil, fieldSelector: String? = nil, limit: Int? = nil, continueToken: String? = nil, resourceVersion: String? = nil) {
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
        self.limit = limit
        self.continueToken = continueToken
        self.resourceVersion = resourceVersion
    }

    var queryItems: [(String, String)] {
        var items: [(String, String)] = []
        if let labelSelector { items.append(("labelSelector", labelSelector)) }
        if let fieldSelector { items.append(("fieldSelector", fieldSelector)) }
        if let limit { items.append(("limit", String(limit))) }
        if let continueToken { items.append(("continue", continueToken)) }
        if let resourceVersion { items.append(("resourceVersion", resourceVersion)) }
        return items
    }
}

/// Options of one watch request.
package struct WatchOptions: Sendable, Hashable {
    /// Label selector.
    package var labelSelector: String?
    /// Field selector.
    package var fieldSelector: String?
    /// Start after this version (from a list or the last event); nil starts with synthetic ADDED events for all.
    package var resourceVersion: String?
    /// The server ends the watch after this many seconds; the caller watches again from the last version.
    package var timeoutSeconds: Int
    /// Ask for BOOKMARK events that advance the version without an object change.
    package var allowWatchBookmarks: Bool

    /// Builds options; the default timeout (4 minutes) stays below the client's idle read timeout.
    package init(labelSelector: String? = nil, fieldSelector: String? = nil, resourceVersion: String? = nil, timeoutSeconds: Int = 240, allowWatchBookmarks: Bool = true) {
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
        self.resourceVersion = resourceVersion
        self.timeoutSeconds = max(1, timeoutSeconds)
        self.allowWatchBookmarks = allowWatchBookmarks
    }

    var queryItems: [(String, String)] {
        var items: [(String, String)] = [("watch", "true")]
        if let labelSelector { items.append(("labelSelector", labelSelector)) }
        if let fieldSelector { items.append(("fieldSelector", fieldSelector)) }
        if let resourceVersion { items.append(("resourceVersion", resourceVersion)) }
        items.append(("timeoutSeconds", String(timeoutSeconds)))
        if allowWatchBookmarks { items.append(("allowWatchBookmarks", "true")) }
        return items
    }
}
