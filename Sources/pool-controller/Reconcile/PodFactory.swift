import Kubernetes
import Shared

/// Builds an agent pod from a pool's template: the template intact, plus what the entrypoint contract needs, with
/// hardened defaults for whatever the template leaves unset.
///
/// Added: `generateName: <prefix>-` (or the name the controller chose, in controller registration), the
/// `shoal.dev/pool` and managed-by labels, an owner reference to the AgentPool, `restartPolicy: Never`, and in the
/// agent container `spec.capabilities` as environment variables (unless the template sets them), `AZP_URL`,
/// `AZP_POOL` and `AZP_AGENT_NAME` (the pod's name, through the downward API). The credential depends on
/// ``RegistrationMode``: `AZP_TOKEN` from the Secret through `secretKeyRef` (never a literal) in entrypoint mode;
/// in controller mode no token at all, only the agent's identity files from the per-pod Secret.
///
/// Hardened defaults (a template that sets the field keeps its value): `automountServiceAccountToken: false`, pod
/// `securityContext.runAsNonRoot: true` and `seccompProfile: RuntimeDefault`, agent container
/// `allowPrivilegeEscalation: false` and `capabilities.drop: [ALL]`. These satisfy the `restricted` Pod Security
/// level as far as the controller can; the image must also run as a non-root user.
enum PodFactory {
    /// The variables the controller owns in the agent container; the template's own values for them are replaced.
    static let ownedVariables: Set<String> = [
        EntrypointEnvironment.url, EntrypointEnvironment.pool, EntrypointEnvironment.agentName, EntrypointEnvironment.token,
        EntrypointEnvironment.tokenFile, EntrypointEnvironment.registration, EntrypointEnvironment.registrationDirectory,
    ]
    /// The volume carrying the agent's identity files in controller registration.
    static let registrationVolume = "shoal-registration"

    /// The per-pod Secret holding the agent's identity in controller registration.
    static func registrationSecretName(podName: String) -> String { "\(podName)-registration" }

    /// The pod to create for `pool` (whose `metadata.uid` becomes the owner reference when known). `name` is set in
    /// controller registration, where the agent is registered under that name before the pod exists.
    static func makePod(spec: PoolSpec, pool: PoolKey, poolUID: String?, name: String? = nil) -> KubeJSON {
        var pod = KubeJSON.object([:])
        pod["apiVersion"] = "v1"
        pod["kind"] = "Pod"

        var metadata = spec.template["metadata"] ?? .object([:])
        if let name {
            metadata["name"] = .string(name)
            metadata["generateName"] = nil
        } else {
            metadata["name"] = nil
            metadata["generateName"] = .string(spec.prefix + "-")
        }
        metadata["namespace"] = .string(pool.namespace)
        var labels = metadata["labels"]?.objectValue ?? [:]
        labels[AgentPodLabels.pool] = .string(pool.name)
        labels[AgentPodLabels.managedBy] = .string(AgentPodLabels.managedByValue)
        if spec.registration == .controller { labels[AgentPodLabels.registration] = .string(RegistrationMode.controller.rawValue) }
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
        // A job is untrusted code: it gets no Kubernetes credential unless the template asks for one explicitly.
        if podSpec["automountServiceAccountToken"] == nil { podSpec["automountServiceAccountToken"] = false }
        var podSecurity = podSpec["securityContext"] ?? .object([:])
        if podSecurity["runAsNonRoot"] == nil && podSecurity["runAsUser"]?.intValue != 0 { podSecurity["runAsNonRoot"] = true }
        if podSecurity["seccompProfile"] == nil { podSecurity["seccompProfile"] = ["type": "RuntimeDefault"] }
        podSpec["securityContext"] = podSecurity

        var containers = podSpec["containers"]?.arrayValue ?? []
        let agentIndex = containers.firstIndex { $0["name"]?.stringValue == "agent" } ?? 0
        if containers.indices.contains(agentIndex) {
            containers[agentIndex] = agentContainer(containers[agentIndex], spec: spec)
        }
        podSpec["containers"] = .array(containers)
        if spec.registration == .controller, let name {
            var volumes = (podSpec["volumes"]?.arrayValue ?? []).filter { $0["name"]?.stringValue != registrationVolume }
            // 0444: the files belong to root in the volume and the agent's user must read them; every process of the
            // agent container runs as that user anyway, so a narrower mode would protect nothing.
            volumes.append([
                "name": .string(registrationVolume),
                "secret": ["secretName": .string(registrationSecretName(podName: name)), "defaultMode": 0o444],
            ])
            podSpec["volumes"] = .array(volumes)
        }
        pod["spec"] = podSpec
        return pod
    }

    /// The agent container with the contract's environment, the credential and the hardened defaults.
    private static func agentContainer(_ original: KubeJSON, spec: PoolSpec) -> KubeJSON {
        var container = original
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
        switch spec.registration {
        case .entrypoint:
            env.append([
                "name": .string(EntrypointEnvironment.token),
                "valueFrom": ["secretKeyRef": ["name": .string(spec.tokenSecretName), "key": .string(spec.tokenSecretKey)]],
            ])
        case .controller:
            env.append(["name": .string(EntrypointEnvironment.registration), "value": .string(RegistrationMode.controller.rawValue)])
            env.append([
                "name": .string(EntrypointEnvironment.registrationDirectory),
                "value": .string(RegistrationMode.defaultRegistrationDirectory),
            ])
            var mounts = (container["volumeMounts"]?.arrayValue ?? []).filter { $0["name"]?.stringValue != registrationVolume }
            mounts.append([
                "name": .string(registrationVolume), "mountPath": .string(RegistrationMode.defaultRegistrationDirectory), "readOnly": true,
            ])
            container["volumeMounts"] = .array(mounts)
        }
        container["env"] = .array(env)

        var security = container["securityContext"] ?? .object([:])
        if security["allowPrivilegeEscalation"] == nil && security["privileged"] != .bool(true) {
            security["allowPrivilegeEscalation"] = false
        }
        if security["capabilities"] == nil { security["capabilities"] = ["drop": ["ALL"]] }
        container["securityContext"] = security
        return container
    }
}
