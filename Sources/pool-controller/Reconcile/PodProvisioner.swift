import AgentIdentity
import Kubernetes
import Logging
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Why one pod could not be provisioned.
enum ProvisioningFailure: Error, Sendable {
    /// The API server throttled (429): the rest waits for the next reconcile.
    case throttled
    /// Anything else: which step failed and why. Whatever the earlier steps made was removed again.
    case failed(step: String, error: any Error & Sendable)
}

/// What one pod creation needs to know about its pool.
struct ProvisioningContext: Sendable {
    /// The validated spec.
    var spec: PoolSpec
    /// The AgentPool.
    var pool: PoolReference
    /// The Azure DevOps pool's id.
    var poolID: Int
    /// The agent version our agents report (sent with a registration: the service checks it).
    var agentVersion: String
    /// Azure DevOps, with the pool's credential.
    var api: any AzureDevOpsAPI
}

/// Makes one agent pod, and whatever its agent needs to register: the seam between registration modes.
///
/// ``EntrypointProvisioner`` creates the pod alone (its entrypoint registers with the PAT);
/// ``ControllerProvisioner`` registers the agent itself and hands the pod only that agent's identity. Later modes
/// (another identity provider, Windows agents) are one more conformance.
protocol PodProvisioner: Sendable {
    /// Creates one pod; returns its name. On failure nothing it made is left behind.
    func provision(_ context: ProvisioningContext) async throws(ProvisioningFailure) -> Pod
}

/// The provisioner for a registration mode.
func provisioner(for mode: RegistrationMode, kube: any KubernetesAPI, logger: Logger) -> any PodProvisioner {
    switch mode {
    case .entrypoint: EntrypointProvisioner(kube: kube)
    case .controller: ControllerProvisioner(kube: kube, logger: logger)
    }
}

/// Entrypoint registration: the pod from the template with `generateName`; its entrypoint registers with the PAT.
struct EntrypointProvisioner: PodProvisioner {
    /// Kubernetes API.
    var kube: any KubernetesAPI

    func provision(_ context: ProvisioningContext) async throws(ProvisioningFailure) -> Pod {
        let body = DynamicObject(PodFactory.makePod(spec: context.spec, pool: context.pool.key, poolUID: context.pool.uid))
        do {
            return try await createPod(body, kube: kube, namespace: context.pool.key.namespace)
        } catch .throttled {
            throw .throttled
        } catch {
            throw .failed(step: "create pod", error: error)
        }
    }
}

/// Controller registration: the controller makes the agent's RSA key, registers the agent over REST as `config.sh`
/// does, stores `.agent`, `.credentials` and `.credentials_rsaparams` in a Secret the pod mounts, and creates the
/// pod under the registered name. The pod holds no PAT; the Secret is owned by the pod, so it goes with it.
///
/// Order: register → Secret (owned by the AgentPool until the pod exists) → pod → the Secret's owner becomes the
/// pod. A failed step undoes the earlier ones; a crash in between leaves a registration without a pod (the orphan
/// collection deletes it) and at worst a Secret owned by the AgentPool (deleted with it).
struct ControllerProvisioner: PodProvisioner {
    /// Kubernetes API.
    var kube: any KubernetesAPI
    /// Logger with the pool's metadata.
    var logger: Logger
    /// Picks the five random characters of a pod name (Kubernetes' `generateName` alphabet).
    var suffix: @Sendable () -> String = { randomNameSuffix() }
    /// Makes the agent's key (RSA-2048, as `config.sh`).
    var makeKey: @Sendable () throws(AgentIdentityError) -> AgentKey = { () throws(AgentIdentityError) in try AgentKey.generate() }

    func provision(_ context: ProvisioningContext) async throws(ProvisioningFailure) -> Pod {
        let namespace = context.pool.key.namespace
        let name = "\(context.spec.prefix)-\(suffix())"
        let key: AgentKey
        do { key = try makeKey() } catch { throw .failed(step: "make the key of agent \(name)", error: error) }

        // 1. The registration, with the public key: the service answers with the agent's OAuth client.
        let registered: Agent
        do {
            registered = try await context.api.addAgent(poolID: context.poolID, registrationBody(name: name, key: key, context: context))
        } catch {
            throw .failed(step: "register agent \(name)", error: error)
        }
        guard let clientId = registered.authorization?.clientId, let authorizationURL = registered.authorization?.authorizationUrl else {
            await removeRegistration(registered.id, name: name, context: context)
            throw .failed(
                step: "register agent \(name)",
                error: AzureDevOpsError.decoding(
                    route: "POST pools/{poolId}/agents", detail: "the response has no authorization.clientId / authorizationUrl",
                    bodyExcerpt: ""))
        }
        let files = AgentRegistrationFiles(
            agentId: registered.id, agentName: name, poolId: context.poolID, poolName: context.spec.poolName,
            serverUrl: registered.serverURL ?? context.spec.organization.description + "/", workFolder: "_work",
            clientId: clientId, authorizationUrl: authorizationURL, key: key)

        // 2. The Secret, owned by the AgentPool until the pod exists.
        let secretName = PodFactory.registrationSecretName(podName: name)
        do {
            _ = try await kube.create(registrationSecret(name: secretName, podName: name, files: files, context: context), .secrets, namespace: namespace)
        } catch {
            await removeRegistration(registered.id, name: name, context: context)
            if case .throttled = error { throw .throttled }
            throw .failed(step: "create Secret \(namespace)/\(secretName)", error: error)
        }

        // 3. The pod, under the registered name.
        let pod: Pod
        do {
            let body = DynamicObject(PodFactory.makePod(spec: context.spec, pool: context.pool.key, poolUID: context.pool.uid, name: name))
            pod = try await createPod(body, kube: kube, namespace: namespace)
        } catch {
            _ = try? await kube.delete(.secrets, namespace: namespace, name: secretName, options: DeleteOptions())
            await removeRegistration(registered.id, name: name, context: context)
            if case .throttled = error { throw .throttled }
            throw .failed(step: "create pod \(name)", error: error)
        }

        // 4. The Secret now goes with the pod. If this fails the Secret stays owned by the AgentPool: reported, not undone.
        if let uid = pod.metadata.uid {
            let owner: KubeJSON = [[
                "apiVersion": "v1", "kind": "Pod", "name": .string(name), "uid": .string(uid), "controller": true, "blockOwnerDeletion": true,
            ]]
            do {
                _ = try await kube.patch(
                    DynamicObject.self, .secrets, namespace: namespace, name: secretName, patch: .merge(["metadata": ["ownerReferences": owner]]),
                    subresource: nil)
            } catch {
                logger.warning(
                    "registration Secret stays owned by the AgentPool", metadata: ["secret": "\(secretName)", "error": "\(error)"])
            }
        }
        logger.debug("agent registered by the controller", metadata: ["pod": "\(name)", "agent.id": "\(registered.id)"])
        return pod
    }

    /// The `POST agents` body: what `config.sh` sends, with the pool's declared capabilities so that queued jobs
    /// can match the agent before its listener reports the full set.
    func registrationBody(name: String, key: AgentKey, context: ProvisioningContext) -> NewAgent {
        var capabilities = context.spec.capabilities
        capabilities["Agent.Name"] = name
        capabilities["Agent.Version"] = context.agentVersion
        var body = NewAgent(
            name: name, version: context.agentVersion, osDescription: "Linux (registered by Shoal)", enabled: true, maxParallelism: 1,
            systemCapabilities: capabilities)
        body.provisioningState = "Provisioned"
        body.authorization = NewAgentAuthorization(exponent: key.publicKey.exponent, modulus: key.publicKey.modulus)
        return body
    }

    /// The per-pod Secret: the three files under their file names, immutable, labelled for the pool.
    func registrationSecret(name: String, podName: String, files: AgentRegistrationFiles, context: ProvisioningContext) -> DynamicObject {
        var data: [String: KubeJSON] = [:]
        for file in files.files { data[file.name] = .string(file.contents.base64EncodedString()) }
        var metadata: KubeJSON = [
            "name": .string(name), "namespace": .string(context.pool.key.namespace),
            "labels": [
                AgentPodLabels.pool: .string(context.pool.key.name), AgentPodLabels.managedBy: .string(AgentPodLabels.managedByValue),
                AgentPodLabels.agentName: .string(podName),
            ],
        ]
        if let uid = context.pool.uid {
            metadata["ownerReferences"] = [[
                "apiVersion": .string(AgentPoolResource.apiVersion), "kind": .string(AgentPoolResource.kind), "name": .string(context.pool.key.name),
                "uid": .string(uid), "controller": true, "blockOwnerDeletion": true,
            ]]
        }
        return DynamicObject(["apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": true, "metadata": metadata, "data": .object(data)])
    }

    private func removeRegistration(_ agentID: Int, name: String, context: ProvisioningContext) async {
        do {
            _ = try await context.api.deleteAgent(poolID: context.poolID, agentID: agentID)
        } catch {
            // The orphan collection deletes it later: it is named like our pods, offline and without a pod.
            logger.warning("could not undo the registration of agent \(name)", metadata: ["agent.id": "\(agentID)", "error": "\(error)"])
        }
    }
}

/// Creates a pod from a JSON body and decodes the answer.
private func createPod(_ body: DynamicObject, kube: any KubernetesAPI, namespace: String) async throws(KubernetesError) -> Pod {
    let created = try await kube.create(body, .pods, namespace: namespace)
    do {
        return try created.json.decode(as: Pod.self)
    } catch {
        throw .decoding(request: "POST pods", detail: "the created pod: \(error)", bodyExcerpt: "")
    }
}

/// Five characters from the alphabet Kubernetes' `generateName` uses (no vowels, no look-alikes).
func randomNameSuffix() -> String {
    let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
    return String((0..<5).map { _ in alphabet[Int.random(in: alphabet.indices)] })
}
