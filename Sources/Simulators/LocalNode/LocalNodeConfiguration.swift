import Foundation

/// What a ``LocalNode`` is called, which pods it takes and how it runs them.
package struct LocalNodeConfiguration: Sendable {
    /// The Node object's name; pods are bound to it.
    package var nodeName: String
    /// The namespace whose pods the node takes; nil for all namespaces.
    package var namespace: String?
    /// A label selector (`k=v,k2`) limiting the pods the node takes; nil for all.
    package var labelSelector: String?
    /// The entrypoint of images, for containers without `command` (the container's `args` follow it).
    package var imageCommands: [String: [String]]
    /// Where per-pod directories (logs, termination messages, default working directory) are made.
    package var workDirectory: String
    /// The Node's `status.capacity` (and `allocatable`).
    package var capacity: [String: String]
    /// The address reported as `podIP` and `hostIP` (every process shares the node's network).
    package var podIP: String
    /// How often the Node's Ready condition is renewed, so a node lifecycle controller keeps it Ready.
    package var heartbeatInterval: Duration
    /// Variables every process starts with before the pod's own (the node's `PATH`, so commands resolve).
    package var baseEnvironment: [String: String]

    /// Builds a configuration; the work directory defaults to a directory under the temporary directory.
    package init(
        nodeName: String, namespace: String? = nil, labelSelector: String? = nil, imageCommands: [String: [String]] = [:],
        workDirectory: String? = nil, capacity: [String: String] = ["cpu": "8", "memory": "16Gi", "pods": "110"], podIP: String = "127.0.0.1",
        heartbeatInterval: Duration = .seconds(10),
        baseEnvironment: [String: String] = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"]
    ) {
        self.nodeName = nodeName
        self.namespace = namespace
        self.labelSelector = labelSelector
        self.imageCommands = imageCommands
        self.workDirectory = workDirectory ?? FileManager.default.temporaryDirectory.appendingPathComponent("shoal-local-node-\(nodeName)").path
        self.capacity = capacity
        self.podIP = podIP
        self.heartbeatInterval = heartbeatInterval
        self.baseEnvironment = baseEnvironment
    }
}
