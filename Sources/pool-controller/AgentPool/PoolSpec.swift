import Kubernetes
import Shared

/// A spec field that is missing or wrong: names the field (`spec.maxAgents`) and the problem.
struct SpecError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The JSON path of the offending field.
    var field: String
    /// What is wrong and what is expected.
    var problem: String
    var description: String { "\(field): \(problem)" }
}

/// How long the controller waits for things, per pool; `spec.timing` in seconds.
struct PoolTiming: Sendable, Hashable {
    /// How often the pool is reconciled when nothing else wakes it (`pollIntervalSeconds`, default 5).
    var pollInterval: Duration = .seconds(5)
    /// How long a pod may stay Pending before it is deleted as stuck (`pendingTimeoutSeconds`, default 600).
    var pendingTimeout: Duration = .seconds(600)
    /// How long an offline registration named like our pods may exist without a pod (`orphanGracePeriodSeconds`,
    /// default 300).
    var orphanGracePeriod: Duration = .seconds(300)
    /// How long idle agents must exceed the standby before the surplus is removed (`idleScaleDownDelaySeconds`,
    /// default 180).
    var idleScaleDownDelay: Duration = .seconds(180)
}

/// A validated AgentPool spec with every default applied: what the decision function and the pod factory read.
struct PoolSpec: Sendable, Hashable {
    /// The default agent image for the `image` shorthand's absence in legacy mode.
    static let defaultAgentImage = "ghcr.io/shoal-dev/shoal-agent:latest"
    /// `terminationGracePeriodSeconds` given to pods built from the `image` shorthand: one hour for a job to end.
    static let shorthandGracePeriodSeconds: Int64 = 3600

    /// `spec.organizationUrl`.
    var organization: OrganizationURL
    /// `spec.poolName`.
    var poolName: String
    /// `spec.tokenSecretRef.name`.
    var tokenSecretName: String
    /// `spec.tokenSecretRef.key` (default `token`).
    var tokenSecretKey: String
    /// `spec.standby`: idle agents to keep ready (default 1).
    var standby: Int
    /// `spec.maxAgents`: never more pods than this (default 10).
    var maxAgents: Int
    /// The pod template (`spec.template`, or one built from `spec.image`), passed through intact.
    var template: KubeJSON
    /// Pod and agent names are `<prefix>-<5 random characters>` (`spec.prefix`, default the AgentPool's name).
    var prefix: String
    /// `spec.capabilities`: capabilities the agents advertise (set as environment variables of the agent container),
    /// used to match demands and given to the placeholder.
    var capabilities: [String: String]
    /// `spec.timing`.
    var timing: PoolTiming
    /// `spec.registration` (default `entrypoint`): who registers each pod's agent. In `controller` mode the pods
    /// hold no PAT: the controller registers the agent and mounts its identity files.
    var registration: RegistrationMode = .entrypoint

    /// Capabilities an agent from this template reports (besides `Agent.Version`): the declared ones, the agent
    /// container's literal environment variables (the agent reports its environment as capabilities) and the OS.
    var templateCapabilities: [String: String] {
        let architecture = template["spec"]?["nodeSelector"]?["kubernetes.io/arch"]?.stringValue == "arm64" ? "ARM64" : "X64"
        var result: [String: String] = ["Agent.OS": "Linux", "Agent.OSArchitecture": architecture]
        for variable in agentContainer?["env"]?.arrayValue ?? [] {
            if let name = variable["name"]?.stringValue, let value = variable["value"]?.stringValue { result[name] = value }
        }
        for (name, value) in capabilities { result[name] = value }
        return result
    }

    /// The agent's container in the template: the one named `agent`, else the first.
    var agentContainer: KubeJSON? {
        let containers = template["spec"]?["containers"]?.arrayValue ?? []
        return containers.first { $0["name"]?.stringValue == "agent" } ?? containers.first
    }

    /// Decodes and validates `spec`, naming the first bad field. `name` is the AgentPool's name (default prefix).
    static func resolve(_ spec: KubeJSON?, name: String) throws(SpecError) -> PoolSpec {
        guard let spec, spec.objectValue != nil else { throw SpecError(field: "spec", problem: "is missing") }
        let reader = FieldReader(root: spec, path: "spec")

        let urlText = try reader.requiredString("organizationUrl")
        let organization: OrganizationURL
        do { organization = try OrganizationURL(urlText) } catch {
            throw SpecError(field: "spec.organizationUrl", problem: "\(error.reason) (got '\(urlText)'); expected https://dev.azure.com/ORG")
        }
        let poolName = try reader.requiredString("poolName")

        guard let secretRef = spec["tokenSecretRef"] else {
            throw SpecError(field: "spec.tokenSecretRef", problem: "is required: the Secret holding the Azure DevOps token")
        }
        let secretReader = FieldReader(root: secretRef, path: "spec.tokenSecretRef")
        let secretName = try secretReader.requiredString("name")
        let secretKey = try secretReader.optionalString("key") ?? "token"

        let standby = try reader.optionalInt("standby", range: 0...1000) ?? 1
        let maxAgents = try reader.optionalInt("maxAgents", range: 1...1000) ?? 10
        guard standby <= maxAgents else {
            throw SpecError(field: "spec.standby", problem: "\(standby) is more than spec.maxAgents (\(maxAgents))")
        }

        let prefix = try reader.optionalString("prefix") ?? name
        guard prefix.count <= 57, isDNSLabel(prefix) else {
            throw SpecError(
                field: spec["prefix"] == nil ? "metadata.name" : "spec.prefix",
                problem: "'\(prefix)' must be a lowercase DNS label (a-z, 0-9, '-') of at most 57 characters, as pod and agent names are '<prefix>-xxxxx'")
        }

        let image = try reader.optionalString("image")
        let pullSecret = try reader.optionalString("imagePullSecretName")
        let template: KubeJSON
        switch (spec["template"], image) {
        case (.some, .some):
            throw SpecError(field: "spec.image", problem: "set either spec.template or spec.image, not both")
        case (nil, nil):
            throw SpecError(field: "spec.template", problem: "is required (or the shorthand spec.image)")
        case (.some(let given), nil):
            guard given.objectValue != nil else { throw SpecError(field: "spec.template", problem: "must be a PodTemplateSpec object") }
            if pullSecret != nil {
                throw SpecError(field: "spec.imagePullSecretName", problem: "only goes with spec.image; put imagePullSecrets in spec.template.spec")
            }
            template = given
        case (nil, .some(let image)):
            template = shorthandTemplate(image: image, pullSecret: pullSecret)
        }
        let containers = template["spec"]?["containers"]?.arrayValue ?? []
        guard !containers.isEmpty else {
            throw SpecError(field: "spec.template.spec.containers", problem: "must list at least the agent container")
        }
        for (index, container) in containers.enumerated() where container["name"]?.stringValue?.isEmpty ?? true {
            throw SpecError(field: "spec.template.spec.containers[\(index)].name", problem: "is required")
        }
        if let policy = template["spec"]?["restartPolicy"]?.stringValue, policy != "Never" {
            throw SpecError(field: "spec.template.spec.restartPolicy", problem: "'\(policy)' is not allowed: an agent pod runs one job, so it must be 'Never' (or unset)")
        }

        let agentIndex = containers.firstIndex { $0["name"]?.stringValue == "agent" } ?? 0
        for variable in containers[agentIndex]["env"]?.arrayValue ?? [] {
            let variableName = variable["name"]?.stringValue ?? ""
            if variableName == EntrypointEnvironment.token || variableName == EntrypointEnvironment.tokenFile {
                throw SpecError(
                    field: "spec.template.spec.containers[\(agentIndex)].env",
                    problem: "\(variableName) must not be set: the controller passes the token from spec.tokenSecretRef through a secretKeyRef")
            }
        }

        let registrationText = try reader.optionalString("registration") ?? RegistrationMode.entrypoint.rawValue
        guard let registration = RegistrationMode(rawValue: registrationText) else {
            throw SpecError(field: "spec.registration", problem: "'\(registrationText)' is not one of entrypoint, controller")
        }
        if registration == .entrypoint, let socket = runtimeSocketMount(in: template) {
            throw SpecError(
                field: socket.field,
                problem: "mounts the container runtime socket \(socket.path): a job with that socket is root on the node and can read "
                    + "every pod's environment, so the pool must use spec.registration: controller (its pods hold no PAT)")
        }

        var capabilities: [String: String] = [:]
        if let given = spec["capabilities"] {
            guard let members = given.objectValue else { throw SpecError(field: "spec.capabilities", problem: "must be a map of capability name to value") }
            for (key, value) in members {
                guard let text = value.stringValue else {
                    throw SpecError(field: "spec.capabilities.\(key)", problem: "must be a string (quote numbers and booleans)")
                }
                guard isEnvironmentName(key) else {
                    throw SpecError(
                        field: "spec.capabilities.\(key)",
                        problem: "must be usable as an environment variable name (letters, digits, '_', '-', '.', not starting with a digit): the agent learns its capabilities from its environment")
                }
                capabilities[key] = text
            }
        }

        var timing = PoolTiming()
        if let timingJSON = spec["timing"] {
            let timingReader = FieldReader(root: timingJSON, path: "spec.timing")
            if let value = try timingReader.optionalInt("pollIntervalSeconds", range: 1...3600) { timing.pollInterval = .seconds(value) }
            if let value = try timingReader.optionalInt("pendingTimeoutSeconds", range: 10...86_400) { timing.pendingTimeout = .seconds(value) }
            if let value = try timingReader.optionalInt("orphanGracePeriodSeconds", range: 0...86_400) { timing.orphanGracePeriod = .seconds(value) }
            if let value = try timingReader.optionalInt("idleScaleDownDelaySeconds", range: 0...86_400) { timing.idleScaleDownDelay = .seconds(value) }
        }

        return PoolSpec(
            organization: organization, poolName: poolName, tokenSecretName: secretName, tokenSecretKey: secretKey, standby: standby,
            maxAgents: maxAgents, template: template, prefix: prefix, capabilities: capabilities, timing: timing,
            registration: registration)
    }

    /// The first hostPath volume of `template` that exposes a container runtime's socket (Docker, containerd,
    /// CRI-O), or a directory holding one (`/var/run`, `/run`), with the field that names it.
    static func runtimeSocketMount(in template: KubeJSON) -> (field: String, path: String)? {
        let sockets = ["docker.sock", "containerd.sock", "crio.sock", "cri-dockerd.sock"]
        let runDirectories: Set<String> = ["/var/run", "/run", "/var/run/docker", "/run/containerd", "/var/run/containerd"]
        for (index, volume) in (template["spec"]?["volumes"]?.arrayValue ?? []).enumerated() {
            guard let path = volume["hostPath"]?["path"]?.stringValue else { continue }
            let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
            if sockets.contains(where: { trimmed.hasSuffix("/" + $0) }) || runDirectories.contains(trimmed) || trimmed == "/" {
                return ("spec.template.spec.volumes[\(index)].hostPath.path", path)
            }
        }
        return nil
    }

    /// The template the `image` shorthand stands for: one `agent` container, the pull secret, a one-hour grace period.
    static func shorthandTemplate(image: String, pullSecret: String?) -> KubeJSON {
        var podSpec: KubeJSON = [
            "containers": [["name": "agent", "image": .string(image)]],
            "terminationGracePeriodSeconds": .int(shorthandGracePeriodSeconds),
        ]
        if let pullSecret { podSpec["imagePullSecrets"] = [["name": .string(pullSecret)]] }
        return ["spec": podSpec]
    }

    /// Whether `text` is a valid container environment variable name (Kubernetes' rule).
    static func isEnvironmentName(_ text: String) -> Bool {
        guard let first = text.first, !("0"..."9").contains(first) else { return false }
        return text.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == ".") }
    }

    /// Whether `text` is an RFC 1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric.
    static func isDNSLabel(_ text: String) -> Bool {
        guard let first = text.first, let last = text.last, text.count <= 63 else { return false }
        let allowed = text.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
        return allowed && first != "-" && last != "-"
    }
}

/// Reads typed members of a JSON object, throwing ``SpecError`` with the member's full path.
private struct FieldReader {
    let root: KubeJSON
    let path: String

    func requiredString(_ key: String) throws(SpecError) -> String {
        guard let value = try optionalString(key) else { throw SpecError(field: "\(path).\(key)", problem: "is required") }
        return value
    }

    func optionalString(_ key: String) throws(SpecError) -> String? {
        guard let value = root[key], value != .null else { return nil }
        guard let text = value.stringValue else { throw SpecError(field: "\(path).\(key)", problem: "must be a string, got \(value.jsonText)") }
        guard !text.trimmingSpaces.isEmpty else { throw SpecError(field: "\(path).\(key)", problem: "must not be empty") }
        return text
    }

    func optionalInt(_ key: String, range: ClosedRange<Int>) throws(SpecError) -> Int? {
        guard let value = root[key], value != .null else { return nil }
        guard let number = value.intValue, let int = Int(exactly: number) else {
            throw SpecError(field: "\(path).\(key)", problem: "must be an integer, got \(value.jsonText)")
        }
        guard range.contains(int) else {
            throw SpecError(field: "\(path).\(key)", problem: "\(int) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return int
    }
}

extension String {
    /// The string without leading and trailing spaces, tabs and newlines.
    fileprivate var trimmingSpaces: Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let start = firstIndex(where: { !isSpace($0) }), let end = lastIndex(where: { !isSpace($0) }) else { return "" }
        return self[start...end]
    }
}
