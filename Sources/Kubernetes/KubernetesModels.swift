import Shared
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// An object the API serves: something with `metadata`, encodable for writes and decodable from responses.
///
/// Typed models decode the fields Shoal uses; parts Shoal only passes through are `KubeJSON` so they round-trip.
package protocol KubernetesObject: Codable, Sendable {
    /// The object's metadata.
    var metadata: ObjectMeta { get set }
}

/// `metadata` of every object: identity, versioning, labels, ownership and deletion state.
package struct ObjectMeta: Codable, Sendable, Hashable {
    /// The object's name; nil on create when `generateName` is used.
    package var name: String?
    /// Prefix from which the server makes a unique name (`PREFIX` + 5 random characters).
    package var generateName: String?
    /// The namespace of a namespaced object.
    package var namespace: String?
    /// Server-assigned unique id.
    package var uid: String?
    /// Opaque version for optimistic concurrency and watches.
    package var resourceVersion: String?
    /// Incremented by the server on spec changes (not on status or metadata-only changes of custom resources).
    package var generation: Int64?
    /// When the object was created.
    package var creationTimestamp: Date?
    /// Set when deletion was requested and finalizers or a grace period hold the object.
    package var deletionTimestamp: Date?
    /// The grace period the pending deletion was given.
    package var deletionGracePeriodSeconds: Int64?
    /// Labels (selectable).
    package var labels: [String: String]?
    /// Annotations (not selectable).
    package var annotations: [String: String]?
    /// Owners; the garbage collector deletes this object when its controller owner is gone.
    package var ownerReferences: [OwnerReference]?
    /// Finalizers that must be removed before the object disappears.
    package var finalizers: [String]?

    /// Builds metadata for a new object.
    package init(
        name: String? = nil, generateName: String? = nil, namespace: String? = nil, labels: [String: String]? = nil,
        annotations: [String: String]? = nil, ownerReferences: [OwnerReference]? = nil, finalizers: [String]? = nil,
        resourceVersion: String? = nil, uid: String? = nil
    ) {
        self.name = name
        self.generateName = generateName
        self.namespace = namespace
        self.labels = labels
        self.annotations = annotations
        self.ownerReferences = ownerReferences
        self.finalizers = finalizers
        self.resourceVersion = resourceVersion
        self.uid = uid
    }
}

/// A pointer from an object to its owner, for garbage collection and "who manages this".
package struct OwnerReference: Codable, Sendable, Hashable {
    /// The owner's `apiVersion` (`shoal.dev/v1alpha1`).
    package var apiVersion: String
    /// The owner's kind.
    package var kind: String
    /// The owner's name.
    package var name: String
    /// The owner's uid.
    package var uid: String
    /// Whether the owner is the managing controller.
    package var controller: Bool?
    /// Whether foreground deletion of the owner waits for this object.
    package var blockOwnerDeletion: Bool?

    /// Builds an owner reference.
    package init(apiVersion: String, kind: String, name: String, uid: String, controller: Bool? = nil, blockOwnerDeletion: Bool? = nil) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.name = name
        self.uid = uid
        self.controller = controller
        self.blockOwnerDeletion = blockOwnerDeletion
    }
}

/// A reference to another object (Event subject, binding target).
package struct ObjectReference: Codable, Sendable, Hashable {
    /// The referent's `apiVersion`.
    package var apiVersion: String?
    /// The referent's kind.
    package var kind: String?
    /// The referent's name.
    package var name: String?
    /// The referent's namespace.
    package var namespace: String?
    /// The referent's uid.
    package var uid: String?
    /// The referent's resourceVersion.
    package var resourceVersion: String?
    /// A field within the referent (`spec.containers{agent}`).
    package var fieldPath: String?

    /// Builds a reference.
    package init(apiVersion: String? = nil, kind: String? = nil, name: String? = nil, namespace: String? = nil, uid: String? = nil, resourceVersion: String? = nil, fieldPath: String? = nil) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.name = name
        self.namespace = namespace
        self.uid = uid
        self.resourceVersion = resourceVersion
        self.fieldPath = fieldPath
    }
}

// MARK: - Pod

/// A Pod (core/v1).
package struct Pod: KubernetesObject, Hashable {
    /// `v1`.
    package var apiVersion: String?
    /// `Pod`.
    package var kind: String?
    /// Metadata.
    package var metadata: ObjectMeta
    /// Desired state.
    package var spec: PodSpec?
    /// Observed state.
    package var status: PodStatus?

    /// Builds a Pod.
    package init(metadata: ObjectMeta, spec: PodSpec? = nil, status: PodStatus? = nil) {
        self.apiVersion = "v1"
        self.kind = "Pod"
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }
}

/// A Pod's spec: the fields Shoal's controller and local kubelet read; less common ones pass through as `KubeJSON`.
package struct PodSpec: Codable, Sendable, Hashable {
    /// The containers.
    package var containers: [Container]
    /// Init containers.
    package var initContainers: [Container]?
    /// `Always`, `OnFailure` or `Never`.
    package var restartPolicy: String?
    /// The node the Pod is bound to.
    package var nodeName: String?
    /// Seconds between SIGTERM and SIGKILL.
    package var terminationGracePeriodSeconds: Int64?
    /// The ServiceAccount the Pod runs as.
    package var serviceAccountName: String?
    /// Whether the ServiceAccount token is mounted.
    package var automountServiceAccountToken: Bool?
    /// Active deadline in seconds.
    package var activeDeadlineSeconds: Int64?
    /// Node selector labels.
    package var nodeSelector: [String: String]?
    /// Volumes, untyped.
    package var volumes: [KubeJSON]?
    /// Tolerations, untyped.
    package var tolerations: [KubeJSON]?
    /// Affinity, untyped.
    package var affinity: KubeJSON?
    /// Pod security context, untyped.
    package var securityContext: KubeJSON?
    /// Image pull secrets, untyped.
    package var imagePullSecrets: [KubeJSON]?
    /// Priority class.
    package var priorityClassName: String?

    /// Builds a spec.
    package init(containers: [Container], restartPolicy: String? = nil, nodeName: String? = nil, terminationGracePeriodSeconds: Int64? = nil, serviceAccountName: String? = nil) {
        self.containers = containers
        self.restartPolicy = restartPolicy
        self.nodeName = nodeName
        self.terminationGracePeriodSeconds = terminationGracePeriodSeconds
        self.serviceAccountName = serviceAccountName
    }
}

/// A container in a Pod spec.
package struct Container: Codable, Sendable, Hashable {
    /// Container name, unique in the Pod (strategic merge patches merge by it).
    package var name: String
    /// Image reference.
    package var image: String?
    /// Entrypoint override.
    package var command: [String]?
    /// Arguments.
    package var args: [String]?
    /// Environment variables.
    package var env: [EnvVar]?
    /// Working directory.
    package var workingDir: String?
    /// Resource requests and limits.
    package var resources: ResourceRequirements?
    /// `Always`, `IfNotPresent` or `Never`.
    package var imagePullPolicy: String?
    /// Volume mounts, untyped.
    package var volumeMounts: [KubeJSON]?
    /// `envFrom`, untyped.
    package var envFrom: [KubeJSON]?
    /// Ports, untyped.
    package var ports: [KubeJSON]?
    /// Security context, untyped.
    package var securityContext: KubeJSON?
    /// Lifecycle hooks, untyped.
    package var lifecycle: KubeJSON?
    /// Where the termination message is read from.
    package var terminationMessagePath: String?
    /// `File` or `FallbackToLogsOnError`.
    package var terminationMessagePolicy: String?

    /// Builds a container.
    package init(name: String, image: String? = nil, command: [String]? = nil, args: [String]? = nil, env: [EnvVar]? = nil, workingDir: String? = nil, resources: ResourceRequirements? = nil) {
        self.name = name
        self.image = image
        self.command = command
        self.args = args
        self.env = env
        self.workingDir = workingDir
        self.resources = resources
    }
}

/// Requests and limits; quantities stay strings (`500m`, `1Gi`) as on the wire.
package struct ResourceRequirements: Codable, Sendable, Hashable {
    /// Limits by resource name.
    package var limits: [String: String]?
    /// Requests by resource name.
    package var requests: [String: String]?

    /// Builds requirements.
    package init(limits: [String: String]? = nil, requests: [String: String]? = nil) {
        self.limits = limits
        self.requests = requests
    }
}

/// An environment variable: a literal value or one taken from a Secret key or a Pod field.
package struct EnvVar: Codable, Sendable, Hashable {
    /// Variable name.
    package var name: String
    /// Literal value.
    package var value: String?
    /// Where the value comes from instead.
    package var valueFrom: EnvVarSource?

    /// A literal variable.
    package init(name: String, value: String) {
        self.name = name
        self.value = value
    }

    /// A variable read from elsewhere.
    package init(name: String, valueFrom: EnvVarSource) {
        self.name = name
        self.valueFrom = valueFrom
    }
}

/// The source of an environment variable's value.
package struct EnvVarSource: Codable, Sendable, Hashable {
    /// A key of a Secret.
    package var secretKeyRef: SecretKeySelector?
    /// A field of the Pod (`metadata.name`, `status.podIP`...).
    package var fieldRef: ObjectFieldSelector?
    /// A key of a ConfigMap, untyped.
    package var configMapKeyRef: KubeJSON?
    /// A container resource, untyped.
    package var resourceFieldRef: KubeJSON?

    /// A Secret key reference.
    package init(secretKeyRef: SecretKeySelector) { self.secretKeyRef = secretKeyRef }
    /// A Pod field reference.
    package init(fieldRef: ObjectFieldSelector) { self.fieldRef = fieldRef }
}

/// Selects a key of a Secret.
package struct SecretKeySelector: Codable, Sendable, Hashable {
    /// Secret name.
    package var name: String
    /// Key in the Secret.
    package var key: String
    /// Whether a missing Secret or key is allowed.
    package var optional: Bool?

    /// Builds a selector.
    package init(name: String, key: String, optional: Bool? = nil) {
        self.name = name
        self.key = key
        self.optional = optional
    }
}

/// Selects a field of the Pod.
package struct ObjectFieldSelector: Codable, Sendable, Hashable {
    /// Schema version of `fieldPath` (`v1`).
    package var apiVersion: String?
    /// The field path, e.g. `metadata.name`.
    package var fieldPath: String

    /// Builds a selector.
    package init(fieldPath: String, apiVersion: String? = nil) {
        self.fieldPath = fieldPath
        self.apiVersion = apiVersion
    }
}

/// A Pod's observed state.
package struct PodStatus: Codable, Sendable, Hashable {
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    package var phase: String?
    /// Conditions (`PodScheduled`, `Ready`...).
    package var conditions: [PodCondition]?
    /// Per-container status.
    package var containerStatuses: [ContainerStatus]?
    /// When the kubelet accepted the Pod.
    package var startTime: Date?
    /// Human-readable detail.
    package var message: String?
    /// Machine-readable reason (`Evicted`...).
    package var reason: String?
    /// The node's IP.
    package var hostIP: String?
    /// The Pod's IP.
    package var podIP: String?

    /// Builds a status.
    package init(phase: String? = nil, conditions: [PodCondition]? = nil, containerStatuses: [ContainerStatus]? = nil, startTime: Date? = nil, message: String? = nil, reason: String? = nil) {
        self.phase = phase
        self.conditions = conditions
        self.containerStatuses = containerStatuses
        self.startTime = startTime
        self.message = message
        self.reason = reason
    }
}

/// A Pod condition.
package struct PodCondition: Codable, Sendable, Hashable {
    /// Condition type.
    package var type: String
    /// `True`, `False` or `Unknown`.
    package var status: String
    /// Machine-readable reason.
    package var reason: String?
    /// Human-readable message.
    package var message: String?
    /// When the status last changed.
    package var lastTransitionTime: Date?

    /// Builds a condition.
    package init(type: String, status: String, reason: String? = nil, message: String? = nil, lastTransitionTime: Date? = nil) {
        self.type = type
        self.status = status
        self.reason = reason
        self.message = message
        self.lastTransitionTime = lastTransitionTime
    }
}

/// One container's status.
package struct ContainerStatus: Codable, Sendable, Hashable {
    /// Container name.
    package var name: String
    /// Whether the container passes its readiness probe.
    package var ready: Bool
    /// Restarts so far.
    package var restartCount: Int
    /// Image running.
    package var image: String
    /// Image id running.
    package var imageID: String
    /// Runtime container id.
    package var containerID: String?
    /// Whether the container has started.
    package var started: Bool?
    /// Current state.
    package var state: ContainerState?
    /// Previous state.
    package var lastState: ContainerState?

    /// Builds a container status.
    package init(name: String, ready: Bool, restartCount: Int = 0, image: String, imageID: String = "", state: ContainerState? = nil, started: Bool? = nil) {
        self.name = name
        self.ready = ready
        self.restartCount = restartCount
        self.image = image
        self.imageID = imageID
        self.state = state
        self.started = started
    }
}

/// At most one of waiting, running, terminated.
package struct ContainerState: Codable, Sendable, Hashable {
    /// Waiting to start.
    package var waiting: Waiting?
    /// Running.
    package var running: Running?
    /// Finished.
    package var terminated: Terminated?

    /// Builds a state.
    package init(waiting: Waiting? = nil, running: Running? = nil, terminated: Terminated? = nil) {
        self.waiting = waiting
        self.running = running
        self.terminated = terminated
    }

    /// Waiting detail.
    package struct Waiting: Codable, Sendable, Hashable {
        /// Why it waits.
        package var reason: String?
        /// Detail.
        package var message: String?
        /// Builds it.
        package init(reason: String? = nil, message: String? = nil) {
            self.reason = reason
            self.message = message
        }
    }

    /// Running detail.
    package struct Running: Codable, Sendable, Hashable {
        /// When it started.
        package var startedAt: Date?
        /// Builds it.
        package init(startedAt: Date? = nil) { self.startedAt = startedAt }
    }

    /// Termination detail: the agent entrypoint's exit code contract travels here.
    package struct Terminated: Codable, Sendable, Hashable {
        /// Exit code.
        package var exitCode: Int32
        /// Signal that ended it, if any.
        package var signal: Int32?
        /// Machine-readable reason (`Completed`, `Error`, `OOMKilled`).
        package var reason: String?
        /// The termination message.
        package var message: String?
        /// Start time.
        package var startedAt: Date?
        /// End time.
        package var finishedAt: Date?
        /// Runtime container id.
        package var containerID: String?

        /// Builds it.
        package init(exitCode: Int32, reason: String? = nil, message: String? = nil, startedAt: Date? = nil, finishedAt: Date? = nil) {
            self.exitCode = exitCode
            self.reason = reason
            self.message = message
            self.startedAt = startedAt
            self.finishedAt = finishedAt
        }
    }
}

/// The Pod `binding` subresource body: assigns a Pod to a node (the scheduler's write).
package struct Binding: Codable, Sendable, Hashable {
    /// `v1`.
    package var apiVersion = "v1"
    /// `Binding`.
    package var kind = "Binding"
    /// The Pod's name (and namespace).
    package var metadata: ObjectMeta
    /// The node.
    package var target: ObjectReference

    /// Binds Pod `podName` to node `nodeName`.
    package init(podName: String, nodeName: String) {
        metadata = ObjectMeta(name: podName)
        target = ObjectReference(apiVersion: "v1", kind: "Node", name: nodeName)
    }
}

// MARK: - Secret, Lease, Event, Node, Namespace

/// A Secret (core/v1).
package struct Secret: KubernetesObject, Hashable {
    /// `v1`.
    package var apiVersion: String?
    /// `Secret`.
    package var kind: String?
    /// Metadata.
    package var metadata: ObjectMeta
    /// Secret type (`Opaque`...).
    package var type: String?
    /// Values, base64 as on the wire.
    package var data: [String: String]?
    /// Write-only plain-text values (merged into `data` by the server).
    package var stringData: [String: String]?

    /// Builds a Secret from plain-text values.
    package init(metadata: ObjectMeta, stringData: [String: String]) {
        self.apiVersion = "v1"
        self.kind = "Secret"
        self.metadata = metadata
        self.stringData = stringData
    }

    /// The decoded bytes of `key`, or nil if absent or not base64.
    package func value(forKey key: String) -> Data? {
        data?[key].flatMap { Data(base64Encoded: $0) }
    }

    /// The value of `key` as UTF-8 text.
    package func string(forKey key: String) -> String? {
        value(forKey: key).map { String(decoding: $0, as: UTF8.self) }
    }
}

/// A Lease (coordination.k8s.io/v1), used for leader election and node heartbeats.
package struct Lease: KubernetesObject, Hashable {
    /// `coordination.k8s.io/v1`.
    package var apiVersion: String?
    /// `Lease`.
    package var kind: String?
    /// Metadata; `resourceVersion` makes updates compare-and-swap.
    package var metadata: ObjectMeta
    /// The lease.
    package var spec: LeaseSpec

    /// Builds a Lease.
    package init(metadata: ObjectMeta, spec: LeaseSpec) {
        self.apiVersion = "coordination.k8s.io/v1"
        self.kind = "Lease"
        self.metadata = metadata
        self.spec = spec
    }
}

/// A Lease's spec; times are MicroTimes (six fractional digits, see ``MicroTime``).
package struct LeaseSpec: Codable, Sendable, Hashable {
    /// The current holder.
    package var holderIdentity: String?
    /// How long a holder keeps the lease without renewing.
    package var leaseDurationSeconds: Int32?
    /// When the current holder acquired it.
    package var acquireTime: Date?
    /// When the holder last renewed it.
    package var renewTime: Date?
    /// Holder changes so far.
    package var leaseTransitions: Int32?

    /// Builds a spec.
    package init(holderIdentity: String? = nil, leaseDurationSeconds: Int32? = nil, acquireTime: Date? = nil, renewTime: Date? = nil, leaseTransitions: Int32? = nil) {
        self.holderIdentity = holderIdentity
        self.leaseDurationSeconds = leaseDurationSeconds
        self.acquireTime = acquireTime
        self.renewTime = renewTime
        self.leaseTransitions = leaseTransitions
    }
}

/// An Event (core/v1): what `kubectl describe` shows under "Events".
package struct Event: KubernetesObject, Hashable {
    /// `v1`.
    package var apiVersion: String?
    /// `Event`.
    package var kind: String?
    /// Metadata (usually `generateName` = the subject's name + ".").
    package var metadata: ObjectMeta
    /// The object the Event is about.
    package var involvedObject: ObjectReference
    /// Short CamelCase reason.
    package var reason: String?
    /// Human-readable message.
    package var message: String?
    /// `Normal` or `Warning`.
    package var type: String?
    /// Who reported it.
    package var source: EventSource?
    /// First occurrence.
    package var firstTimestamp: Date?
    /// Last occurrence.
    package var lastTimestamp: Date?
    /// Occurrences.
    package var count: Int32?
    /// Reporting controller (`shoal.dev/pool-controller`).
    package var reportingComponent: String?
    /// Reporting instance (the Pod name).
    package var reportingInstance: String?
    /// What was done (`Scale`).
    package var action: String?

    /// Builds an Event.
    package init(metadata: ObjectMeta, involvedObject: ObjectReference, reason: String, message: String, type: String = "Normal", source: EventSource? = nil, timestamp: Date? = nil) {
        self.apiVersion = "v1"
        self.kind = "Event"
        self.metadata = metadata
        self.involvedObject = involvedObject
        self.reason = reason
        self.message = message
        self.type = type
        self.source = source
        self.firstTimestamp = timestamp
        self.lastTimestamp = timestamp
        self.count = 1
    }
}

/// The component that reported an Event.
package struct EventSource: Codable, Sendable, Hashable {
    /// Component name.
    package var component: String?
    /// Host name.
    package var host: String?

    /// Builds a source.
    package init(component: String? = nil, host: String? = nil) {
        self.component = component
        self.host = host
    }
}

/// A Node (core/v1); Shoal registers a local node so Pods can be bound to it.
package struct Node: KubernetesObject, Hashable {
    /// `v1`.
    package var apiVersion: String?
    /// `Node`.
    package var kind: String?
    /// Metadata.
    package var metadata: ObjectMeta
    /// Spec, untyped (taints, podCIDR...).
    package var spec: KubeJSON?
    /// Status.
    package var status: NodeStatus?

    /// Builds a Node.
    package init(metadata: ObjectMeta, spec: KubeJSON? = nil, status: NodeStatus? = nil) {
        self.apiVersion = "v1"
        self.kind = "Node"
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }
}

/// A Node's status.
package struct NodeStatus: Codable, Sendable, Hashable {
    /// Capacity by resource.
    package var capacity: [String: String]?
    /// Allocatable by resource.
    package var allocatable: [String: String]?
    /// Conditions (`Ready`...).
    package var conditions: [NodeCondition]?
    /// Addresses, untyped.
    package var addresses: [KubeJSON]?
    /// Node info, untyped.
    package var nodeInfo: KubeJSON?

    /// Builds a status.
    package init(capacity: [String: String]? = nil, allocatable: [String: String]? = nil, conditions: [NodeCondition]? = nil) {
        self.capacity = capacity
        self.allocatable = allocatable
        self.conditions = conditions
    }
}

/// A Node condition.
package struct NodeCondition: Codable, Sendable, Hashable {
    /// Condition type (`Ready`).
    package var type: String
    /// `True`, `False` or `Unknown`.
    package var status: String
    /// Last heartbeat.
    package var lastHeartbeatTime: Date?
    /// Last status change.
    package var lastTransitionTime: Date?
    /// Machine-readable reason.
    package var reason: String?
    /// Human-readable message.
    package var message: String?

    /// Builds a condition.
    package init(type: String, status: String, lastHeartbeatTime: Date? = nil, lastTransitionTime: Date? = nil, reason: String? = nil, message: String? = nil) {
        self.type = type
        self.status = status
        self.lastHeartbeatTime = lastHeartbeatTime
        self.lastTransitionTime = lastTransitionTime
        self.reason = reason
        self.message = message
    }
}

/// A Namespace (core/v1); only its metadata and phase.
package struct Namespace: KubernetesObject, Hashable {
    /// `v1`.
    package var apiVersion: String?
    /// `Namespace`.
    package var kind: String?
    /// Metadata.
    package var metadata: ObjectMeta
    /// Status, untyped (`phase`).
    package var status: KubeJSON?

    /// Builds a Namespace.
    package init(name: String, labels: [String: String]? = nil) {
        self.apiVersion = "v1"
        self.kind = "Namespace"
        self.metadata = ObjectMeta(name: name, labels: labels)
    }
}

/// Any object as a JSON tree with typed metadata: custom resources and pods built from templates.
///
/// Every field round-trips: only `metadata` is decoded into a type, and writes go back into the same tree.
package struct DynamicObject: KubernetesObject, Hashable {
    /// The whole object.
    package var json: KubeJSON

    /// Wraps a JSON object.
    package init(_ json: KubeJSON) { self.json = json }

    /// Decodes any object.
    package init(from decoder: any Decoder) throws {
        json = try KubeJSON(from: decoder)
        guard json.objectValue != nil else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "a Kubernetes object must be a JSON object"))
        }
    }

    /// Encodes the tree as is.
    package func encode(to encoder: any Encoder) throws { try json.encode(to: encoder) }

    /// The object's metadata; setting it replaces the metadata fields Shoal models and keeps the others.
    package var metadata: ObjectMeta {
        get { (try? (json["metadata"] ?? .emptyObject).decode(as: ObjectMeta.self)) ?? ObjectMeta() }
        set {
            guard var encoded = try? KubeJSON(encoding: newValue).objectValue else { return }
            var merged = json["metadata"]?.objectValue ?? [:]
            for key in Self.modelledMetadataKeys { merged[key] = encoded.removeValue(forKey: key) }
            json["metadata"] = .object(merged)
        }
    }

    private static let modelledMetadataKeys = [
        "name", "generateName", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
        "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
    ]

    /// `spec`, if present.
    package var spec: KubeJSON? {
        get { json["spec"] }
        set { json["spec"] = newValue }
    }

    /// `status`, if present.
    package var status: KubeJSON? {
        get { json["status"] }
        set { json["status"] = newValue }
    }

    /// Decodes the whole object as a typed model.
    package func decode<T: Decodable>(as type: T.Type = T.self) throws -> T { try json.decode(as: T.self) }
}

// MARK: - Lists, watches, deletes

/// A list response: items plus the list's `resourceVersion` (to start a watch) and `continue` (next page).
package struct ObjectList<Item: Decodable & Sendable>: Decodable, Sendable {
    /// List metadata.
    package var metadata: ListMeta
    /// The items; the API sends `null` for none, decoded as empty.
    package var items: [Item]

    /// Builds a list (fakes, page collection).
    package init(metadata: ListMeta, items: [Item]) {
        self.metadata = metadata
        self.items = items
    }

    private enum CodingKeys: String, CodingKey { case metadata, items }

    /// Decodes a list, accepting `items: null`.
    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        metadata = try container.decodeIfPresent(ListMeta.self, forKey: .metadata) ?? ListMeta()
        items = try container.decodeIfPresent([Item].self, forKey: .items) ?? []
    }
}

/// A list's metadata.
package struct ListMeta: Codable, Sendable, Hashable {
    /// The version of the collection at list time; watch from here.
    package var resourceVersion: String?
    /// Token for the next page; empty or nil on the last page.
    package var `continue`: String?
    /// Items left after this page, when the server knows.
    package var remainingItemCount: Int64?

    /// Builds list metadata.
    package init(resourceVersion: String? = nil, continue: String? = nil, remainingItemCount: Int64? = nil) {
        self.resourceVersion = resourceVersion
        self.continue = `continue`
        self.remainingItemCount = remainingItemCount
    }
}

/// Options of a DELETE: grace period, preconditions and propagation.
package struct DeleteOptions: Codable, Sendable, Hashable {
    /// `v1`.
    package var apiVersion = "v1"
    /// `DeleteOptions`.
    package var kind = "DeleteOptions"
    /// Grace period; 0 deletes at once (a kubelet confirming a Pod is gone).
    package var gracePeriodSeconds: Int64?
    /// Delete only if the object still has this uid / resourceVersion (409 otherwise).
    package var preconditions: Preconditions?
    /// `Orphan`, `Background` or `Foreground`.
    package var propagationPolicy: String?

    /// Builds options.
    package init(gracePeriodSeconds: Int64? = nil, preconditions: Preconditions? = nil, propagationPolicy: String? = nil) {
        self.gracePeriodSeconds = gracePeriodSeconds
        self.preconditions = preconditions
        self.propagationPolicy = propagationPolicy
    }

    /// DELETE preconditions.
    package struct Preconditions: Codable, Sendable, Hashable {
        /// Required uid.
        package var uid: String?
        /// Required resourceVersion.
        package var resourceVersion: String?

        /// Builds preconditions.
        package init(uid: String? = nil, resourceVersion: String? = nil) {
            self.uid = uid
            self.resourceVersion = resourceVersion
        }
    }
}
