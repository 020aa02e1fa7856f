import Kubernetes
import Shared

/// Builds an agent pod from a pool's template: the template intact, plus what the entrypoint contract needs.
///
/// Added: `generateName: <prefix>-`, the `shoal.dev/pool` and managed-by labels, an owner reference to the
/// AgentPool, `restartPolicy: Never`, and in the agent container `spec.capabilities` as environment variables (unless
/// the template sets them), `AZP_URL`, `AZP_POOL`, `AZP_AGENT_NAME` (the pod's name, through the downward API) and
/// `AZP_TOKEN` from the Secret through `secretKeyRef`, never as a literal.
enum PodFactory {
    /// The variables the controller owns in the agent container; the template's own values for them are replaced.
    static let ownedVariables: Set<String> = [
        EntrypointEnvironment.url, EntrypointEnvironment.pool, EntrypointEnvironment.agentName, EntrypointEnvironment.token,
        EntrypointEnvironment.tokenFile,
    ]

    /// The pod to create for `pool` (whose `metadata.uid` becomes the owner reference when known).
    static func makePod(spec: PoolSpec, pool: PoolKey, poolUID: String?) -> KubeJSON {
        var pod = KubeJSON.object([:])
        pod["apiVersion"] = "v1"
        pod["kind"] = "Pod"

        var metadata = spec.template["metadata"] ?? .object([:])
        metadata["name"] = nil
        metadata["generateName"] = .string(spec.prefix + "-")
        metadata["namespace"] = .string(pool.namespace)
        var labels = metadata["labels"]?.objectValue ?? [:]
        labels[AgentPodLabels.pool] = .string(pool.name)
        labels[AgentPodLabels.managedBy] = .string(AgentPodLabels.managedByValue)
        metadata["labels"] = .object(labels)
        if let poolUID {
            metadata["ownerReferences"] = [[
                "apiVersion": .string(AgentPoolResource.apiVersion), "kind": .string(AgentPoolResource.kind), "name": .string(pool.name),
                "uid": .string(poolUID), "controller": true, "blockOwnerDeletion": true,
            ]]
        }
        pod["metadata"] = metadata

        var podSpec = spec.template["spec"] ?? .object([:])
        podSpec["restartPolicy"] = "Never"
        var containers = podSpec["containers"]?.arrayValue ?? []
        let agentIndex = containers.firstIndex { $0["name"]?.stringValue == "agent" } ?? 0
        if containers.indices.contains(agentIndex) {
            var container = containers[agentIndex]
            var env = (container["env"]?.arrayValue ?? []).filter { !ownedVariables.contains($0["name"]?.stringValue ?? "") }
            // Declared capabilities become environment variables, which the agent reports as capabilities: what
            // the controller matches demands against is what Azure DevOps will see. The template's own values win.
            let present = Set(env.compactMap { $0["name"]?.stringValue })
            for (name, value) in spec.capabilities.sorted(by: { $0.key < $1.key }) where !present.contains(name) {
                env.append(["name": .string(name), "value": .string(value)])
            }
            env.append(["name": .string(EntrypointEnvironment.url), "value": .string(spec.organization.description)])
            env.append(["name": .string(EntrypointEnvironment.pool), "value": .string(spec.poolName)])
            env.append(["name": .string(EntrypointEnvironment.agentName), "valueFrom": ["fieldRef": ["fieldPath": "metadata.name"]]])
            env.append([
                "name": .string(EntrypointEnvironment.token),
                "valueFrom": ["secretKeyRef": ["name": .string(spec.tokenSecretName), "key": .string(spec.tokenSecretKey)]],
            ])
            container["env"] = .array(env)
            containers[agentIndex] = container
        }
        podSpec["containers"] = .array(containers)
        pod["spec"] = podSpec
        return pod
    }
}
