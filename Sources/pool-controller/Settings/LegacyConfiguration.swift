import Kubernetes
import Logging
import Shared

/// The original project's configuration, read unchanged from its environment variables, so its users switch by
/// changing the controller image.
///
/// When set, the controller manages that one pool: the AgentPool in `TARGET_NAMESPACE` (the first by name) is the
/// template and the variables override its organization, pool, standby and max; without one, pods run
/// ``PoolSpec/defaultAgentImage``. The token goes into a Secret the controller keeps in `TARGET_NAMESPACE`
/// (``secretName``), so pods reference it instead of carrying it as a literal as the original did.
struct LegacyConfiguration: Sendable, Equatable {
    /// The variables, in the order the original documented them.
    static let variables = ["AZDO_ORG_URI", "AZDO_TOKEN", "AZDO_POOLNAME", "TARGET_NAMESPACE", "STANDBY_AGENT_COUNT", "MAX_AGENT_COUNT"]
    /// The Secret holding `AZDO_TOKEN` for the pods.
    static let secretName = "shoal-legacy-azdo-token"
    /// The AgentPool name used when `TARGET_NAMESPACE` has none.
    static let defaultPoolName = "shoal-legacy"

    /// `AZDO_ORG_URI`.
    var organization: OrganizationURL
    /// `AZDO_TOKEN`.
    var token: String
    /// `AZDO_POOLNAME`.
    var poolName: String
    /// `TARGET_NAMESPACE`.
    var namespace: String
    /// `STANDBY_AGENT_COUNT`.
    var standby: Int
    /// `MAX_AGENT_COUNT`.
    var maxAgents: Int
    /// Whether `APPINSIGHT_CONN_STR` was set (accepted, not supported yet).
    var applicationInsightsRequested: Bool

    /// Reads the variables: nil when none is set, an error naming each missing or bad one when only some are.
    static func fromEnvironment(_ environment: [String: String]) throws(SettingsError) -> LegacyConfiguration? {
        let present = variables.filter { !(environment[$0] ?? "").isEmpty }
        guard !present.isEmpty else { return nil }
        let missing = variables.filter { !present.contains($0) }
        guard missing.isEmpty else {
            throw SettingsError(key: missing.joined(separator: ", "), problem: "the original project's configuration needs all of \(variables.joined(separator: ", ")); these are missing")
        }
        let organization: OrganizationURL
        do { organization = try OrganizationURL(environment["AZDO_ORG_URI"]!) } catch {
            throw SettingsError(key: "AZDO_ORG_URI", problem: "\(error)")
        }
        func count(_ key: String, minimum: Int) throws(SettingsError) -> Int {
            let text = environment[key]!
            guard let value = Int(text.filter { !$0.isWhitespace }), value >= minimum, value <= 1000 else {
                throw SettingsError(key: key, problem: "'\(text)' is not a whole number between \(minimum) and 1000")
            }
            return value
        }
        let standby = try count("STANDBY_AGENT_COUNT", minimum: 0)
        let maxAgents = try count("MAX_AGENT_COUNT", minimum: 1)
        guard standby <= maxAgents else {
            throw SettingsError(key: "STANDBY_AGENT_COUNT", problem: "\(standby) is more than MAX_AGENT_COUNT (\(maxAgents))")
        }
        let namespace = environment["TARGET_NAMESPACE"]!
        guard PoolSpec.isDNSLabel(namespace) else { throw SettingsError(key: "TARGET_NAMESPACE", problem: "'\(namespace)' is not a namespace name") }
        return LegacyConfiguration(
            organization: organization, token: environment["AZDO_TOKEN"]!, poolName: environment["AZDO_POOLNAME"]!, namespace: namespace,
            standby: standby, maxAgents: maxAgents, applicationInsightsRequested: !(environment["APPINSIGHT_CONN_STR"] ?? "").isEmpty)
    }

    /// The one AgentPool to reconcile: the first of `objects` (by name) with the variables applied, or a synthetic one.
    func pool(from objects: [AgentPoolObject]) -> AgentPoolObject {
        let base = objects.filter { $0.metadata.namespace == namespace }.min { ($0.metadata.name ?? "") < ($1.metadata.name ?? "") }
        var object = base ?? AgentPoolObject(
            metadata: ObjectMeta(name: Self.defaultPoolName, namespace: namespace), spec: ["image": .string(PoolSpec.defaultAgentImage)])
        var spec = object.spec ?? .object([:])
        spec["organizationUrl"] = .string(organization.description)
        spec["poolName"] = .string(poolName)
        spec["standby"] = .int(Int64(standby))
        spec["maxAgents"] = .int(Int64(maxAgents))
        spec["tokenSecretRef"] = ["name": .string(Self.secretName), "key": "token"]
        object.spec = spec
        return object
    }

    /// Creates or updates the token Secret in `TARGET_NAMESPACE`.
    func ensureSecret(_ kube: any KubernetesAPI) async throws(KubernetesError) {
        let desired = Secret(
            metadata: ObjectMeta(
                name: Self.secretName, namespace: namespace,
                labels: [AgentPodLabels.managedBy: AgentPodLabels.managedByValue, AgentPodLabels.tokenSecret: "true"]),
            stringData: ["token": token])
        do {
            let existing = try await kube.secret(named: Self.secretName, namespace: namespace)
            if existing.string(forKey: "token") == token, existing.metadata.labels?[AgentPodLabels.tokenSecret] == "true" { return }
            var updated = desired
            updated.metadata.resourceVersion = existing.metadata.resourceVersion
            _ = try await kube.update(updated, .secrets, namespace: namespace, subresource: nil)
        } catch .notFound {
            _ = try await kube.create(desired, .secrets, namespace: namespace)
        }
    }
}

/// A setting that is missing or wrong: names the flag or variable and the problem.
struct SettingsError: Error, Sendable, CustomStringConvertible {
    /// The flag or environment variable.
    var key: String
    /// What is wrong.
    var problem: String
    var description: String { "\(key): \(problem)" }
}
