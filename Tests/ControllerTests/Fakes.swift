import Foundation
import Kubernetes
import Shared
import Synchronization

// Recording fakes of the controller's two I/O edges, `KubernetesAPI` and `AzureDevOpsAPI`: no cluster, no simulator,
// no sockets. Each fake keeps a small in-memory world that behaves like the real service where the controller relies
// on it (generated names, 404s, pending deletions, "busy agent cannot be deleted"), records every call in order, and
// takes a script of per-call reactions so a test can say "the 3rd pod create throws `.throttled`" or "a job lands on
// agent 1 when it is disabled".
//
// Both are `Mutex`-backed final classes rather than actors: `KubernetesAPI.watch` is synchronous, and a test (or one
// fake's observer) can read the other fake's state synchronously at the moment of a call, which is what invariants
// like "never delete the pod of an agent holding a job" need.

// MARK: - Call scripts

/// What a scripted rule does when its call comes: fail the call, or change the fake's world first (and then answer
/// from the changed world, unless another rule fails the call).
enum FakeReaction<World, Failure: Error & Sendable>: Sendable {
    /// The call throws this error (the world is not changed by the call).
    case fail(Failure)
    /// The world changes just before the call is answered: a job lands, an object disappears, ...
    case change(@Sendable (inout World) -> Void)
}

/// The per-call script of a fake: rules tried in the order they were added, each counting the calls it matches.
///
/// A rule with an `occurrence` fires only on that matching call (1-based: `occurrence: 3` is the third matching call),
/// one without fires on every matching call. Every firing `change` runs; the first firing `fail` is thrown.
struct FakeScript<Call: Sendable, World, Failure: Error & Sendable>: Sendable {
    private struct Rule: Sendable {
        let matches: @Sendable (Call) -> Bool
        let occurrence: Int?
        let reaction: FakeReaction<World, Failure>
        var seen = 0
    }

    private var rules: [Rule] = []

    /// Adds a rule.
    mutating func add(occurrence: Int?, matching: @escaping @Sendable (Call) -> Bool, _ reaction: FakeReaction<World, Failure>) {
        precondition(occurrence.map { $0 >= 1 } ?? true, "occurrences count from 1")
        rules.append(Rule(matches: matching, occurrence: occurrence, reaction: reaction))
    }

    /// Counts `call` against every rule, applies the changes that fire and returns the failure to throw, if any.
    mutating func react(to call: Call, world: inout World) -> Failure? {
        var failure: Failure?
        for index in rules.indices where rules[index].matches(call) {
            rules[index].seen += 1
            if let occurrence = rules[index].occurrence, occurrence != rules[index].seen { continue }
            switch rules[index].reaction {
            case .fail(let error): failure = failure ?? error
            case .change(let change): change(&world)
            }
        }
        return failure
    }
}

/// One ordered log that several fakes append to, for asserting the order of calls across edges
/// (`k8s DELETE pods ci/x` before `azdo DELETE agent 3`). Optional: pass the same timeline to each fake.
final class FakeTimeline: Sendable {
    private let entries = Mutex<[String]>([])

    /// An empty timeline.
    init() {}

    /// Every entry so far, in order: `k8s <call>` or `azdo <call>`.
    var calls: [String] { entries.withLock { $0 } }

    /// Appends an entry.
    func append(_ entry: String) { entries.withLock { $0.append(entry) } }
}

// MARK: - Kubernetes

/// One call the controller made to ``FakeKubernetes``.
struct KubernetesCall: Sendable, Hashable, CustomStringConvertible {
    /// The API verb.
    enum Verb: String, Sendable, Hashable {
        case get = "GET", list = "LIST", create = "POST", update = "PUT", patch = "PATCH", delete = "DELETE"
        case createSubresource = "POST-SUBRESOURCE", watch = "WATCH"
    }

    /// The verb.
    var verb: Verb
    /// The resource's plural (`pods`, `agentpools`).
    var resource: String
    /// The namespace as the call resolved it (nil for cluster-scoped resources and all-namespace lists/watches).
    var namespace: String?
    /// The object's name; for a create, the name asked for (nil with `generateName`).
    var name: String?
    /// The subresource (`status`, `binding`), if any.
    var subresource: String?
    /// The body sent (create, update, patch, subresource), as JSON.
    var body: KubeJSON?
    /// The label selector of a list or watch.
    var labelSelector: String?

    /// `DELETE pods ci/linux-aaaab`, `POST pods ci`, `PUT agentpools ci/linux/status`.
    var description: String {
        var text = "\(verb.rawValue) \(resource)"
        let path = [namespace, name, subresource].compactMap { $0 }.joined(separator: "/")
        if !path.isEmpty { text += " \(path)" }
        return text
    }
}

/// An in-memory API server for controller tests: stores objects as JSON per resource, namespace and name, records every
/// call, and lets a test script failures or world changes per call.
///
/// Behaves like a real API server where Shoal depends on it: `generateName` gets five lowercase characters
/// (`aaaaa`, `aaaab`, ... in creation order), every write bumps a cluster-wide resourceVersion, an update with a stale
/// resourceVersion is a 409, a missing object is a 404, a taken name is a 409 `AlreadyExists`. A DELETE is
/// ``DeletionResult/pending(_:)`` (the object stays with a `deletionTimestamp`) when it has finalizers or is a pod
/// bound to a node (`spec.nodeName`, graceful deletion, unless `gracePeriodSeconds: 0`); otherwise it is gone at once.
/// Merge and strategic-merge patches both merge as RFC 7386 (lists replace); JSON patches are refused (415).
/// Watches replay nothing and end at once (or throw a scripted failure): tests drive caches by hand.
final class FakeKubernetes: KubernetesAPI, Sendable {
    /// Where an object lives.
    struct ObjectKey: Sendable, Hashable, Comparable {
        /// The resource's plural.
        var resource: String
        /// The namespace; empty for cluster-scoped objects.
        var namespace: String
        /// The object's name.
        var name: String

        static func < (lhs: ObjectKey, rhs: ObjectKey) -> Bool {
            (lhs.resource, lhs.namespace, lhs.name) < (rhs.resource, rhs.namespace, rhs.name)
        }
    }

    /// The stored world, which scripted changes may edit.
    struct World: Sendable {
        /// Every object.
        var objects: [ObjectKey: KubeJSON] = [:]
        /// The last resourceVersion handed out.
        var resourceVersion = 100
        /// Names generated so far (drives the next suffix).
        var generatedNames = 0
        /// The time stamped as `creationTimestamp` and `deletionTimestamp`.
        var now = Date(timeIntervalSince1970: 1_800_000_000)
    }

    private struct State: Sendable {
        var world = World()
        var calls: [KubernetesCall] = []
        var script = FakeScript<KubernetesCall, World, KubernetesError>()
        var observers: [@Sendable (KubernetesCall, World) -> Void] = []
    }

    private let state = Mutex(State())

    /// The namespace used when a call names none.
    let defaultNamespace: String

    private let timeline: FakeTimeline?

    /// An empty cluster; calls are also logged to `timeline` (prefixed `k8s `) when given.
    init(defaultNamespace: String = "default", timeline: FakeTimeline? = nil) {
        self.defaultNamespace = defaultNamespace
        self.timeline = timeline
    }

    // MARK: Scripting and inspection

    /// Every call so far, in order.
    var calls: [KubernetesCall] { state.withLock { $0.calls } }

    /// The calls so far with this verb on this resource.
    func calls(_ verb: KubernetesCall.Verb, _ resource: KubernetesResource) -> [KubernetesCall] {
        calls.filter { $0.verb == verb && $0.resource == resource.plural }
    }

    /// Makes the `occurrence`-th call (1-based; every one when nil) with `verb` on `resource` (and `name`, when given)
    /// throw `error`.
    func fail(_ error: KubernetesError, on verb: KubernetesCall.Verb, _ resource: KubernetesResource, name: String? = nil, occurrence: Int? = nil) {
        let plural = resource.plural
        react(occurrence: occurrence, when: { $0.verb == verb && $0.resource == plural && (name == nil || $0.name == name) }, .fail(error))
    }

    /// Adds a rule with any matcher and reaction (see ``FakeScript``).
    func react(occurrence: Int? = nil, when matches: @escaping @Sendable (KubernetesCall) -> Bool, _ reaction: FakeReaction<World, KubernetesError>) {
        state.withLock { $0.script.add(occurrence: occurrence, matching: matches, reaction) }
    }

    /// Calls `observer` with each call and the world as it is just before the call is answered (after scripted
    /// changes), outside the fake's lock: the place for invariants that look at another fake's state at that moment.
    func observe(_ observer: @escaping @Sendable (KubernetesCall, World) -> Void) {
        state.withLock { $0.observers.append(observer) }
    }

    /// Edits the world directly (seeding, or a change a test makes between calls).
    func modify<Result>(_ body: (inout World) throws -> Result) rethrows -> Result {
        try state.withLock { try body(&$0.world) }
    }

    /// Stores an object as if it had been created earlier (no call is recorded); returns it as stored.
    @discardableResult
    func seed<Object: KubernetesObject>(_ object: Object, _ resource: KubernetesResource) throws -> Object {
        let json = try KubeJSON(encoding: object)
        return try state.withLock { state in
            let stored = try Self.store(json, resource, namespace: object.metadata.namespace ?? defaultNamespace, world: &state.world)
            return try stored.decode(as: Object.self)
        }
    }

    /// The stored object, if any.
    func object(_ resource: KubernetesResource, namespace: String?, name: String) -> KubeJSON? {
        let key = key(resource, namespace: namespace, name: name)
        return state.withLock { $0.world.objects[key] }
    }

    /// Names of the stored objects of `resource` in `namespace`, sorted.
    func names(_ resource: KubernetesResource, namespace: String?) -> [String] {
        let namespace = resource.namespaced ? (namespace ?? defaultNamespace) : ""
        return state.withLock { state in
            state.world.objects.keys.filter { $0.resource == resource.plural && $0.namespace == namespace }.map(\.name).sorted()
        }
    }

    // MARK: KubernetesAPI

    func get<Object: KubernetesObject>(_ type: Object.Type, _ resource: KubernetesResource, namespace: String?, name: String) async throws(KubernetesError) -> Object {
        let call = KubernetesCall(verb: .get, resource: resource.plural, namespace: resolved(resource, namespace), name: name)
        let json = try answer(call) { world throws(KubernetesError) in
            guard let json = world.objects[key(resource, namespace: namespace, name: name)] else { throw Self.notFound(call, resource, name) }
            return json
        }
        return try Self.decode(json, as: Object.self, call: call)
    }

    func list<Object: KubernetesObject>(_ type: Object.Type, _ resource: KubernetesResource, namespace: String?, options: ListOptions) async throws(KubernetesError) -> ObjectList<Object> {
        let scope = resource.namespaced ? namespace : nil
        let call = KubernetesCall(verb: .list, resource: resource.plural, namespace: scope, labelSelector: options.labelSelector)
        let (items, version) = try answer(call) { world throws(KubernetesError) in
            let items = world.objects.filter { key, json in
                key.resource == resource.plural && (scope == nil || key.namespace == scope)
                    && Self.matches(labels: json["metadata"]?["labels"], selector: options.labelSelector)
            }
            return (items.sorted { $0.key < $1.key }.map(\.value), String(world.resourceVersion))
        }
        var typed: [Object] = []
        for item in items { typed.append(try Self.decode(item, as: Object.self, call: call)) }
        return ObjectList(metadata: ListMeta(resourceVersion: version), items: typed)
    }

    func create<Object: KubernetesObject>(_ object: Object, _ resource: KubernetesResource, namespace: String?) async throws(KubernetesError) -> Object {
        let body = try Self.encode(object, request: "POST \(resource.plural)")
        let target = resource.namespaced ? (namespace ?? object.metadata.namespace ?? defaultNamespace) : nil
        let call = KubernetesCall(verb: .create, resource: resource.plural, namespace: target, name: object.metadata.name, body: body)
        let stored = try answer(call) { world throws(KubernetesError) in
            try Self.store(body, resource, namespace: target ?? "", world: &world, call: call)
        }
        return try Self.decode(stored, as: Object.self, call: call)
    }

    func update<Object: KubernetesObject>(_ object: Object, _ resource: KubernetesResource, namespace: String?, subresource: String?) async throws(KubernetesError) -> Object {
        let body = try Self.encode(object, request: "PUT \(resource.plural)")
        let name = object.metadata.name ?? ""
        let target = resolved(resource, namespace ?? object.metadata.namespace)
        let call = KubernetesCall(verb: .update, resource: resource.plural, namespace: target, name: name, subresource: subresource, body: body)
        let stored = try answer(call) { world throws(KubernetesError) in
            let key = key(resource, namespace: target, name: name)
            guard var current = world.objects[key] else { throw Self.notFound(call, resource, name) }
            if let version = object.metadata.resourceVersion, version != current["metadata"]?["resourceVersion"]?.stringValue {
                throw Self.failure(call, 409, reason: "Conflict", message: "the object has been modified; please apply your changes to the latest version and try again")
            }
            switch subresource {
            case "status": current["status"] = body["status"]
            case nil:
                let status = current["status"]
                let metadata = current["metadata"]
                current = body
                current["status"] = status
                current["metadata"] = metadata?.merging(["labels": body["metadata"]?["labels"] ?? .null, "annotations": body["metadata"]?["annotations"] ?? .null, "finalizers": body["metadata"]?["finalizers"] ?? .null])
            default: break
            }
            return Self.write(current, at: key, world: &world)
        }
        return try Self.decode(stored, as: Object.self, call: call)
    }

    func patch<Object: KubernetesObject>(_ type: Object.Type, _ resource: KubernetesResource, namespace: String?, name: String, patch: KubernetesPatch, subresource: String?) async throws(KubernetesError) -> Object {
        let target = resolved(resource, namespace)
        let body: KubeJSON? = switch patch {
        case .merge(let json), .strategicMerge(let json): json
        case .json(let operations): .array(operations)
        }
        let call = KubernetesCall(verb: .patch, resource: resource.plural, namespace: target, name: name, subresource: subresource, body: body)
        let stored = try answer(call) { world throws(KubernetesError) in
            let key = key(resource, namespace: target, name: name)
            guard let current = world.objects[key] else { throw Self.notFound(call, resource, name) }
            guard case .merge(let json) = patch.mergeForm else {
                throw Self.failure(call, 415, reason: "UnsupportedMediaType", message: "FakeKubernetes does not apply JSON patches")
            }
            if let version = json["metadata"]?["resourceVersion"]?.stringValue, version != current["metadata"]?["resourceVersion"]?.stringValue {
                throw Self.failure(call, 409, reason: "Conflict", message: "the object has been modified")
            }
            var merged = current.merging(json)
            if merged["metadata"]?["deletionTimestamp"] != nil, merged["metadata"]?["finalizers"]?.arrayValue?.isEmpty ?? true {
                world.objects[key] = nil  // the last finalizer removed from an object being deleted: it goes
                return merged
            }
            merged["metadata"]?["resourceVersion"] = nil
            return Self.write(merged, at: key, world: &world)
        }
        return try Self.decode(stored, as: Object.self, call: call)
    }

    func delete(_ resource: KubernetesResource, namespace: String?, name: String, options: DeleteOptions) async throws(KubernetesError) -> DeletionResult {
        let target = resolved(resource, namespace)
        let call = KubernetesCall(verb: .delete, resource: resource.plural, namespace: target, name: name)
        return try answer(call) { world throws(KubernetesError) in
            let key = key(resource, namespace: target, name: name)
            guard var current = world.objects[key] else { throw Self.notFound(call, resource, name) }
            let finalizers = current["metadata"]?["finalizers"]?.arrayValue ?? []
            let graceful = resource.plural == "pods" && current["spec"]?["nodeName"]?.stringValue != nil && options.gracePeriodSeconds != 0
            guard !finalizers.isEmpty || graceful else {
                world.objects[key] = nil
                return .deleted
            }
            if current["metadata"]?["deletionTimestamp"] == nil {
                current["metadata"]?["deletionTimestamp"] = (try? KubeJSON(encoding: world.now)) ?? .null
                if graceful { current["metadata"]?["deletionGracePeriodSeconds"] = .int(options.gracePeriodSeconds ?? 30) }
                current = Self.write(current, at: key, world: &world)
            }
            return .pending(DynamicObject(current))
        }
    }

    func createSubresource<Body: Encodable & Sendable>(_ body: Body, _ resource: KubernetesResource, namespace: String?, name: String, subresource: String) async throws(KubernetesError) -> KubeJSON {
        let json = try Self.encode(body, request: "POST \(resource.plural)/\(subresource)")
        let target = resolved(resource, namespace)
        let call = KubernetesCall(verb: .createSubresource, resource: resource.plural, namespace: target, name: name, subresource: subresource, body: json)
        return try answer(call) { world throws(KubernetesError) in
            let key = key(resource, namespace: target, name: name)
            guard var current = world.objects[key] else { throw Self.notFound(call, resource, name) }
            if resource.plural == "pods", subresource == "binding", let node = json["target"]?["name"] {
                current["spec"]?["nodeName"] = node
                _ = Self.write(current, at: key, world: &world)
            }
            return ["kind": "Status", "status": "Success"]
        }
    }

    func watch<Object: KubernetesObject>(_ type: Object.Type, _ resource: KubernetesResource, namespace: String?, options: WatchOptions) -> WatchStream<Object> {
        let call = KubernetesCall(verb: .watch, resource: resource.plural, namespace: resource.namespaced ? namespace : nil, labelSelector: options.labelSelector)
        let (stream, continuation) = AsyncThrowingStream<WatchEvent<Object>, any Error>.makeStream()
        do {
            try answer(call) { _ throws(KubernetesError) in }
            continuation.finish()
        } catch {
            continuation.finish(throwing: error)
        }
        return WatchStream(events: stream)
    }

    // MARK: Internals

    /// Records `call`, runs the script, tells the observers, then answers from the world (or throws).
    private func answer<Result: Sendable>(_ call: KubernetesCall, _ body: (inout World) throws(KubernetesError) -> Result) throws(KubernetesError) -> Result {
        let (failure, world, observers) = state.withLock { state in
            state.calls.append(call)
            timeline?.append("k8s \(call)")
            let failure = state.script.react(to: call, world: &state.world)
            return (failure, state.world, state.observers)
        }
        for observer in observers { observer(call, world) }
        if let failure { throw failure }
        return try state.withLock { state throws(KubernetesError) in try body(&state.world) }
    }

    private func resolved(_ resource: KubernetesResource, _ namespace: String?) -> String? {
        resource.namespaced ? (namespace ?? defaultNamespace) : nil
    }

    private func key(_ resource: KubernetesResource, namespace: String?, name: String) -> ObjectKey {
        ObjectKey(resource: resource.plural, namespace: resolved(resource, namespace) ?? "", name: name)
    }

    /// Stores a new object: picks its name, stamps uid, resourceVersion and creationTimestamp.
    private static func store(_ body: KubeJSON, _ resource: KubernetesResource, namespace: String, world: inout World, call: KubernetesCall? = nil) throws(KubernetesError) -> KubeJSON {
        var object = body
        let request = call ?? KubernetesCall(verb: .create, resource: resource.plural, namespace: namespace)
        var name = object["metadata"]?["name"]?.stringValue
        if name == nil, let prefix = object["metadata"]?["generateName"]?.stringValue {
            name = prefix + generatedSuffix(world.generatedNames)
            world.generatedNames += 1
        }
        guard let name, !name.isEmpty else {
            throw failure(request, 422, reason: "Invalid", message: "name or generateName is required")
        }
        let key = ObjectKey(resource: resource.plural, namespace: resource.namespaced ? namespace : "", name: name)
        guard world.objects[key] == nil else {
            throw failure(request, 409, reason: "AlreadyExists", message: "\(resource.plural) \"\(name)\" already exists")
        }
        if object["metadata"] == nil { object["metadata"] = .object([:]) }
        object["metadata"]?["name"] = .string(name)
        if resource.namespaced { object["metadata"]?["namespace"] = .string(namespace) }
        object["metadata"]?["uid"] = .string("uid-\(resource.plural)-\(name)")
        if object["metadata"]?["creationTimestamp"] == nil { object["metadata"]?["creationTimestamp"] = (try? KubeJSON(encoding: world.now)) ?? .null }
        return write(object, at: key, world: &world)
    }

    /// Writes an object with the next resourceVersion and returns it as stored.
    private static func write(_ object: KubeJSON, at key: ObjectKey, world: inout World) -> KubeJSON {
        var object = object
        world.resourceVersion += 1
        object["metadata"]?["resourceVersion"] = .string(String(world.resourceVersion))
        world.objects[key] = object
        return object
    }

    /// `aaaaa`, `aaaab`, ...: five lowercase letters like the API server's, deterministic.
    private static func generatedSuffix(_ index: Int) -> String {
        let letters = Array("abcdefghijklmnopqrstuvwxyz")
        var value = index
        var suffix: [Character] = []
        for _ in 0..<5 {
            suffix.append(letters[value % 26])
            value /= 26
        }
        return String(suffix.reversed())
    }

    /// Equality (`k=v`, `k==v`), inequality (`k!=v`), existence (`k`) and absence (`!k`) terms, comma-separated.
    private static func matches(labels: KubeJSON?, selector: String?) -> Bool {
        guard let selector, !selector.isEmpty else { return true }
        let labels = labels?.objectValue ?? [:]
        return selector.split(separator: ",").allSatisfy { term in
            let term = term.trimmingCharacters(in: .whitespaces)
            if let range = term.range(of: "!=") {
                return labels[String(term[..<range.lowerBound])]?.stringValue != String(term[range.upperBound...])
            }
            if let range = term.range(of: "==") ?? term.range(of: "=") {
                return labels[String(term[..<range.lowerBound])]?.stringValue == String(term[range.upperBound...])
            }
            if term.hasPrefix("!") { return labels[String(term.dropFirst())] == nil }
            return labels[term] != nil
        }
    }

    private static func encode(_ value: some Encodable, request: String) throws(KubernetesError) -> KubeJSON {
        do { return try KubeJSON(encoding: value) } catch {
            throw .decoding(request: request, detail: "FakeKubernetes could not encode the body: \(error)", bodyExcerpt: "")
        }
    }

    private static func decode<Object: Decodable>(_ json: KubeJSON, as type: Object.Type, call: KubernetesCall) throws(KubernetesError) -> Object {
        do { return try json.decode(as: Object.self) } catch {
            throw .decoding(request: call.description, detail: "\(error)", bodyExcerpt: String(json.jsonText.prefix(200)))
        }
    }

    private static func notFound(_ call: KubernetesCall, _ resource: KubernetesResource, _ name: String) -> KubernetesError {
        failure(call, 404, reason: "NotFound", message: "\(resource.plural) \"\(name)\" not found")
    }

    private static func failure(_ call: KubernetesCall, _ code: Int, reason: String, message: String) -> KubernetesError {
        .fake(code, request: call.description, reason: reason, message: message)
    }
}

extension KubernetesPatch {
    /// Merge and strategic merge as one merge (the fake does not know list merge keys); JSON patches unchanged.
    fileprivate var mergeForm: KubernetesPatch {
        switch self {
        case .merge(let json), .strategicMerge(let json): .merge(json)
        case .json: self
        }
    }
}

extension KubernetesError {
    /// The error the real client raises for an HTTP `code` with a Status of `reason` (classified by
    /// ``KubernetesError/classify(_:)``): `.fake(429)` is `.throttled`, `.fake(403)` is `.forbidden`.
    static func fake(_ code: Int, request: String = "fake request", reason: String? = nil, message: String? = nil) -> KubernetesError {
        classify(KubernetesFailure(request: request, code: code, status: Status(message: message ?? "scripted HTTP \(code)", reason: reason, code: code)))
    }
}

// MARK: - Azure DevOps

/// One call the controller made to ``FakeAzureDevOps``.
struct AzureDevOpsCall: Sendable, Equatable, CustomStringConvertible {
    /// The protocol method.
    enum Method: String, Sendable, Hashable {
        case resolvePool, pool, agents, agent, setAgentEnabled, deleteAgent, addAgent, unfinishedJobRequests, newestAgentPackage
    }

    /// The method.
    var method: Method
    /// The pool id, for pool-scoped calls.
    var poolID: Int?
    /// The agent id (`agent`, `setAgentEnabled`, `deleteAgent`).
    var agentID: Int?
    /// `setAgentEnabled`'s value.
    var enabled: Bool?
    /// `addAgent`'s body.
    var newAgent: NewAgent?
    /// The pool name (`resolvePool`), agent-name filter (`agents`) or platform (`newestAgentPackage`).
    var name: String?

    /// `PATCH agent 2 enabled=false`, `GET agent 2`, `GET jobrequests`, `DELETE agent 2`, `POST agent linux-placeholder`.
    var description: String {
        switch method {
        case .resolvePool: "GET pools?poolName=\(name ?? "")"
        case .pool: "GET pool \(poolID ?? 0)"
        case .agents: name.map { "GET agents?agentName=\($0)" } ?? "GET agents"
        case .agent: "GET agent \(agentID ?? 0)"
        case .setAgentEnabled: "PATCH agent \(agentID ?? 0) enabled=\(enabled ?? true)"
        case .deleteAgent: "DELETE agent \(agentID ?? 0)"
        case .addAgent: "POST agent \(newAgent?.name ?? "")"
        case .unfinishedJobRequests: "GET jobrequests"
        case .newestAgentPackage: "GET packages/agent?platform=\(name ?? "")"
        }
    }
}

/// An in-memory Azure DevOps organization with one agent pool, for controller tests: records every call and lets a
/// test script failures or world changes per call.
///
/// Behaves like the service where Shoal depends on it: a pool id other than the pool's is a 404, a missing agent is a
/// 404 (`deleteAgent` answers `.alreadyGone`), deleting an agent that holds a job is a 400 (the service refuses while
/// it runs one), `addAgent` with a taken name is a 409, `unfinishedJobRequests` leaves out finished requests, and
/// `includeAssignedRequest` / `includeCapabilities` strip what was not asked for.
final class FakeAzureDevOps: AzureDevOpsAPI, Sendable {
    /// The organization's state, which scripted changes may edit.
    struct World: Sendable {
        /// The one pool.
        var pool: AgentPool
        /// Registered agents by id.
        var agents: [Int: Agent] = [:]
        /// Job requests of the pool, finished or not.
        var jobRequests: [JobRequest] = []
        /// Agent packages `newestAgentPackage` chooses from.
        var packages: [AgentPackage] = []
        /// The id `addAgent` gives next.
        var nextAgentID = 1000

        /// The agent with this name, if any.
        func agent(named name: String) -> Agent? { agents.values.first { $0.name == name } }

        /// Whether the agent holds a job by either read: its `assignedRequest`, or an unfinished, non-queued request
        /// reserved for it.
        func holdsJob(agentID: Int) -> Bool {
            agents[agentID]?.assignedRequest != nil
                || jobRequests.contains { $0.reservedAgent?.id == agentID && $0.phase != .queued && $0.phase != .finished }
        }

        /// Gives `request` to its `reservedAgent`: both the agent's `assignedRequest` and the job list show it.
        mutating func assign(_ request: JobRequest) {
            jobRequests.removeAll { $0.requestId == request.requestId }
            jobRequests.append(request)
            if let id = request.reservedAgent?.id, let agent = agents[id] { agents[id] = agent.with(assignedRequest: .some(request)) }
        }

        /// Adds `request` to the job list only: the list shows it reserved while the agent's own read does not yet.
        mutating func reserveInListOnly(_ request: JobRequest) {
            jobRequests.removeAll { $0.requestId == request.requestId }
            jobRequests.append(request)
        }
    }

    private struct State: Sendable {
        var world: World
        var calls: [AzureDevOpsCall] = []
        var script = FakeScript<AzureDevOpsCall, World, AzureDevOpsError>()
    }

    private let state: Mutex<State>
    private let timeline: FakeTimeline?

    /// An organization with `pool` and these agents; calls are also logged to `timeline` (prefixed `azdo `) when given.
    init(pool: AgentPool = AgentPool(id: 7, name: "k8s"), agents: [Agent] = [], timeline: FakeTimeline? = nil) {
        var world = World(pool: pool)
        for agent in agents { world.agents[agent.id] = agent }
        state = Mutex(State(world: world))
        self.timeline = timeline
    }

    // MARK: Scripting and inspection

    /// Every call so far, in order.
    var calls: [AzureDevOpsCall] { state.withLock { $0.calls } }

    /// The organization as it is now.
    var world: World { state.withLock { $0.world } }

    /// Makes the `occurrence`-th call (1-based; every one when nil) of `method` (for `agentID`, when given) throw
    /// `error`.
    func fail(_ error: AzureDevOpsError, on method: AzureDevOpsCall.Method, agentID: Int? = nil, occurrence: Int? = nil) {
        react(occurrence: occurrence, when: { $0.method == method && (agentID == nil || $0.agentID == agentID) }, .fail(error))
    }

    /// Runs `change` on the organization just before the `occurrence`-th call (every one when nil) of `method` (for
    /// `agentID`, when given) is answered: "a job lands on agent 1 as it is disabled".
    func change(on method: AzureDevOpsCall.Method, agentID: Int? = nil, occurrence: Int? = nil, _ change: @escaping @Sendable (inout World) -> Void) {
        react(occurrence: occurrence, when: { $0.method == method && (agentID == nil || $0.agentID == agentID) }, .change(change))
    }

    /// Adds a rule with any matcher and reaction (see ``FakeScript``).
    func react(occurrence: Int? = nil, when matches: @escaping @Sendable (AzureDevOpsCall) -> Bool, _ reaction: FakeReaction<World, AzureDevOpsError>) {
        state.withLock { $0.script.add(occurrence: occurrence, matching: matches, reaction) }
    }

    /// Edits the organization directly (seeding, or a change a test makes between calls).
    func modify<Result>(_ body: (inout World) throws -> Result) rethrows -> Result {
        try state.withLock { try body(&$0.world) }
    }

    // MARK: AzureDevOpsAPI

    func resolvePool(named name: String) async throws(AzureDevOpsError) -> AgentPool {
        try answer(AzureDevOpsCall(method: .resolvePool, name: name)) { world throws(AzureDevOpsError) in
            guard world.pool.name == name else { throw .poolNotFound(name: name) }
            return world.pool
        }
    }

    func pool(id: Int) async throws(AzureDevOpsError) -> AgentPool {
        let call = AzureDevOpsCall(method: .pool, poolID: id)
        return try answer(call) { world throws(AzureDevOpsError) in
            try Self.checkPool(id, world, call)
            return world.pool
        }
    }

    func agents(poolID: Int, options: AgentQueryOptions) async throws(AzureDevOpsError) -> [Agent] {
        let call = AzureDevOpsCall(method: .agents, poolID: poolID, name: options.agentName)
        return try answer(call) { world throws(AzureDevOpsError) in
            try Self.checkPool(poolID, world, call)
            return world.agents.values.sorted { $0.id < $1.id }
                .filter { options.agentName == nil || $0.name == options.agentName }
                .map { $0.shaped(by: options) }
        }
    }

    func agent(poolID: Int, agentID: Int, options: AgentQueryOptions) async throws(AzureDevOpsError) -> Agent {
        let call = AzureDevOpsCall(method: .agent, poolID: poolID, agentID: agentID)
        return try answer(call) { world throws(AzureDevOpsError) in
            try Self.checkPool(poolID, world, call)
            guard let agent = world.agents[agentID] else { throw Self.agentNotFound(call, agentID) }
            return agent.shaped(by: options)
        }
    }

    func setAgentEnabled(poolID: Int, agentID: Int, enabled: Bool) async throws(AzureDevOpsError) -> Agent {
        let call = AzureDevOpsCall(method: .setAgentEnabled, poolID: poolID, agentID: agentID, enabled: enabled)
        return try answer(call) { world throws(AzureDevOpsError) in
            try Self.checkPool(poolID, world, call)
            guard let agent = world.agents[agentID] else { throw Self.agentNotFound(call, agentID) }
            let updated = agent.with(enabled: enabled)
            world.agents[agentID] = updated
            return updated
        }
    }

    func deleteAgent(poolID: Int, agentID: Int) async throws(AzureDevOpsError) -> DeletionOutcome {
        let call = AzureDevOpsCall(method: .deleteAgent, poolID: poolID, agentID: agentID)
        return try answer(call) { world throws(AzureDevOpsError) in
            try Self.checkPool(poolID, world, call)
            guard world.agents[agentID] != nil else { return .alreadyGone }
            guard !world.holdsJob(agentID: agentID) else {
                throw .badRequest(ServerError(
                    status: 400, route: call.description,
                    message: "The agent \(agentID) cannot be deleted because it is running a job.", typeKey: "TaskAgentBusyException"))
            }
            world.agents[agentID] = nil
            return .deleted
        }
    }

    func addAgent(poolID: Int, _ agent: NewAgent) async throws(AzureDevOpsError) -> Agent {
        let call = AzureDevOpsCall(method: .addAgent, poolID: poolID, newAgent: agent)
        return try answer(call) { world throws(AzureDevOpsError) in
            try Self.checkPool(poolID, world, call)
            guard world.agent(named: agent.name) == nil else {
                throw .conflict(ServerError(
                    status: 409, route: call.description, message: "An agent named \(agent.name) already exists in the pool.",
                    typeKey: "TaskAgentExistsException"))
            }
            let id = world.nextAgentID
            world.nextAgentID += 1
            var registered = Agent(
                id: id, name: agent.name, version: agent.version, enabled: agent.enabled, status: .offline,
                osDescription: agent.osDescription, systemCapabilities: agent.systemCapabilities)
            if agent.authorization != nil {
                // As the service: a body with a public key gets the agent's OAuth client back.
                registered.authorization = AgentAuthorization(
                    clientId: "00000000-0000-0000-0000-\(String(format: "%012d", id))",
                    authorizationUrl: "https://vstoken.dev.azure.com/fake/_apis/oauth2/token")
                registered.serverURL = "https://dev.azure.com/contoso/"
            }
            world.agents[id] = registered
            return registered
        }
    }

    func unfinishedJobRequests(poolID: Int) async throws(AzureDevOpsError) -> [JobRequest] {
        let call = AzureDevOpsCall(method: .unfinishedJobRequests, poolID: poolID)
        return try answer(call) { world throws(AzureDevOpsError) in
            try Self.checkPool(poolID, world, call)
            return world.jobRequests.filter { $0.phase != .finished }
        }
    }

    func newestAgentPackage(platform: String) async throws(AzureDevOpsError) -> AgentPackage? {
        try answer(AzureDevOpsCall(method: .newestAgentPackage, name: platform)) { world throws(AzureDevOpsError) in
            world.packages.filter { $0.platform == platform }.max { $0.version < $1.version }
        }
    }

    // MARK: Building values

    /// An agent reference as `reservedAgent` and `matchedAgents` carry it (the model has no memberwise init).
    static func reference(to agent: Agent) throws -> AgentReference {
        let json = #"{"id": \#(agent.id), "name": "\#(agent.name)", "enabled": \#(agent.enabled ?? true), "status": "\#(agent.status?.rawValue ?? "offline")"}"#
        return try AzureDevOpsClient.makeDecoder().decode(AgentReference.self, from: Data(json.utf8))
    }

    /// A job request reserved for `agent` (assigned; running when `received`).
    static func job(_ requestID: Int64, reservedFor agent: Agent, received: Bool = false, at time: Date = Date(timeIntervalSince1970: 1_800_000_000)) throws -> JobRequest {
        JobRequest(
            requestId: requestID, queueTime: time, assignTime: time, receiveTime: received ? time : nil, jobName: "job \(requestID)",
            reservedAgent: try reference(to: agent), poolId: nil)
    }

    // MARK: Internals

    /// Records `call`, runs the script, then answers from the world (or throws).
    private func answer<Result: Sendable>(_ call: AzureDevOpsCall, _ body: (inout World) throws(AzureDevOpsError) -> Result) throws(AzureDevOpsError) -> Result {
        try state.withLock { state throws(AzureDevOpsError) in
            state.calls.append(call)
            timeline?.append("azdo \(call)")
            if let failure = state.script.react(to: call, world: &state.world) { throw failure }
            return try body(&state.world)
        }
    }

    private static func checkPool(_ poolID: Int, _ world: World, _ call: AzureDevOpsCall) throws(AzureDevOpsError) {
        guard poolID == world.pool.id else {
            throw .notFound(ServerError(status: 404, route: call.description, message: "Agent pool \(poolID) not found.", typeKey: "TaskAgentPoolNotFoundException"))
        }
    }

    private static func agentNotFound(_ call: AzureDevOpsCall, _ agentID: Int) -> AzureDevOpsError {
        .notFound(ServerError(status: 404, route: call.description, message: "Agent \(agentID) not found.", typeKey: "TaskAgentNotFoundException"))
    }
}

extension AzureDevOpsError {
    /// The error the real client raises after its retries for an HTTP `status`: `.fake(500)` is `.serverFailure`,
    /// `.fake(400)` `.badRequest`, `.fake(429)` `.throttled`.
    static func fake(_ status: Int, route: String = "fake route", message: String? = nil) -> AzureDevOpsError {
        let error = ServerError(status: status, route: route, message: message ?? "scripted HTTP \(status)", typeKey: nil)
        return switch status {
        case 400: .badRequest(error)
        case 403: .forbidden(error)
        case 404: .notFound(error)
        case 409: .conflict(error)
        case 429: .throttled(error, retryAfter: nil)
        case 500...599: .serverFailure(error)
        default: .unexpectedStatus(error)
        }
    }
}

extension Agent {
    /// A copy with some fields replaced (the model's fields are `let`).
    func with(enabled: Bool? = nil, status: AgentStatus? = nil, assignedRequest: JobRequest?? = nil) -> Agent {
        Agent(
            id: id, name: name, version: version, enabled: enabled ?? self.enabled, status: status ?? self.status, createdOn: createdOn,
            statusChangedOn: statusChangedOn, osDescription: osDescription, provisioningState: provisioningState,
            systemCapabilities: systemCapabilities, userCapabilities: userCapabilities,
            assignedRequest: assignedRequest ?? self.assignedRequest, lastCompletedRequest: lastCompletedRequest)
    }

    /// The agent as the service returns it for `options`: optional parts only when asked for.
    fileprivate func shaped(by options: AgentQueryOptions) -> Agent {
        Agent(
            id: id, name: name, version: version, enabled: enabled, status: status, createdOn: createdOn, statusChangedOn: statusChangedOn,
            osDescription: osDescription, provisioningState: provisioningState,
            systemCapabilities: options.includeCapabilities ? systemCapabilities : nil,
            userCapabilities: options.includeCapabilities ? userCapabilities : nil,
            assignedRequest: options.includeAssignedRequest ? assignedRequest : nil,
            lastCompletedRequest: options.includeLastCompletedRequest ? lastCompletedRequest : nil)
    }
}
