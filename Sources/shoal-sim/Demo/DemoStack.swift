import Foundation
import Kubernetes
import Logging
import Shared
import Simulators

/// Where the demo's Kubernetes API server comes from.
enum DemoClusterSource: Sendable {
    /// Start a local control plane with `scripts/local-k8s start` and stop it at the end.
    case startLocal
    /// A cluster started by `scripts/local-k8s start DIR` (its `cluster.json`).
    case localDirectory(String)
    /// Any cluster through a kubeconfig (admin rights needed to install the CRD and RBAC).
    case kubeconfig(String)
}

/// Names the demo uses in the cluster and in the simulated organization.
enum DemoNames {
    /// The namespace of agent pods (as `deploy/install.yaml` creates it).
    static let agentNamespace = "shoal-agents"
    /// The controller's own namespace (leader-election Lease).
    static let systemNamespace = "shoal-system"
    /// The AgentPool's name, also the pod and agent name prefix.
    static let pool = "demo"
    /// The Azure DevOps pool.
    static let azurePool = "demo"
    /// The image the local node maps to `shoal-sim agent-image`.
    static let agentImage = "shoal.dev/demo-agent:local"
    /// The PAT the simulator accepts, stored in Secret `azdo`.
    static let token = "demo-pat"
    /// The local node's Node name.
    static let nodeName = "shoal-demo-node"
    /// The AgentPool resource (the controller's CRD).
    static let agentPools = KubernetesResource(group: "shoal.dev", version: "v1alpha1", plural: "agentpools", namespaced: true)
}

/// Everything the demo starts, and its teardown in reverse order: AgentPool (so the controller removes its pods and
/// registrations), controller, local node, leftover objects, simulator, and the control plane if the demo started it.
actor DemoStack {
    /// Prints one progress line.
    typealias Say = @Sendable (String) -> Void

    let workspace: String
    let executables: String
    private let say: Say
    private let logger: Logger

    private(set) var startedClusterDirectory: String?
    private(set) var admin: KubernetesClient?
    private(set) var simulator: AzureDevOpsSimulator?
    private(set) var node: ChildProcess?
    private(set) var controller: ChildProcess?
    private(set) var poolCreated = false
    private(set) var clusterDescription = ""

    init(workspace: String, executables: String, say: @escaping Say, logger: Logger) {
        self.workspace = workspace
        self.executables = executables
        self.say = say
        self.logger = logger
    }

    /// The controller's log file (JSON lines).
    nonisolated var controllerLog: String { workspace + "/controller.log" }
    /// The local node's log file.
    nonisolated var nodeLog: String { workspace + "/local-node.log" }
    /// The local node's work directory (one directory per pod).
    nonisolated var nodeDirectory: String { workspace + "/node" }

    // MARK: - Start

    /// Provides the cluster and returns the admin and controller kubeconfig paths.
    func provideCluster(_ source: DemoClusterSource) async throws -> (admin: String, controller: String, controllerIdentity: String) {
        switch source {
        case .kubeconfig(let path):
            clusterDescription = "existing cluster (\(path)); agent pods still run as local processes on node \(DemoNames.nodeName)"
            return (path, path, "the kubeconfig's user")
        case .localDirectory(let directory):
            let info = try Self.readCluster(directory)
            clusterDescription = "local control plane in \(directory) (\(info.apiServerURL))"
            return (info.adminKubeconfig, info.controllerKubeconfig, "ServiceAccount shoal-system/shoal-controller")
        case .startLocal:
            let cache = ProcessInfo.processInfo.environment["SHOAL_CACHE"] ?? (NSHomeDirectory() + "/.cache/shoal")
            guard FileManager.default.isExecutableFile(atPath: cache + "/kubernetes-v1.20.2/bin/kube-apiserver") else {
                throw DemoFailure("""
                    no local Kubernetes control plane in \(cache): run `scripts/local-k8s install` once (builds it from Debian's \
                    source, about 15 minutes on 2 cores) or use scripts/demo, which does; or pass --kubeconfig / --cluster-dir
                    """)
            }
            let directory = workspace + "/cluster"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            startedClusterDirectory = directory
            say("starting the local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager; ~10 s)")
            let started = ContinuousClock.now
            let script = try ChildProcess.spawn(
                [LocalCluster.repositoryRoot.appendingPathComponent("scripts/local-k8s").path, "start", directory],
                label: "scripts/local-k8s start", logFile: workspace + "/local-k8s.log")
            guard let status = await script.waitForExit(timeout: .seconds(120)) else {
                await script.stop(grace: .seconds(5))
                throw DemoFailure("scripts/local-k8s start did not finish in 120 s:\n\(script.logTail())")
            }
            guard status == 0 else { throw DemoFailure("scripts/local-k8s start failed (exit \(status)):\n\(script.logTail())") }
            let info = try Self.readCluster(directory)
            clusterDescription = "local control plane started in \(Self.seconds(since: started)) (\(info.apiServerURL))"
            return (info.adminKubeconfig, info.controllerKubeconfig, "ServiceAccount shoal-system/shoal-controller")
        }
    }

    private static func readCluster(_ directory: String) throws -> ClusterInfo {
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/cluster.json"))
            return try JSONDecoder().decode(ClusterInfo.self, from: data)
        } catch {
            throw DemoFailure("no usable \(directory)/cluster.json (\(error)); start the cluster with `scripts/local-k8s start \(directory)`")
        }
    }

    /// Connects as admin, applies `deploy/install.yaml` (without the Deployment: the controller runs locally, and
    /// without the PodDisruptionBudget), clears what an interrupted run left, and creates the token Secret.
    func install(adminKubeconfig: String, manifest: String) async throws -> KubernetesClient {
        let configuration = try KubernetesConfiguration.resolve(kubeconfigPath: adminKubeconfig)
        let client = try KubernetesClient(
            configuration: configuration, options: KubernetesClientOptions(retry: RetryPolicy(maxAttempts: 3, initialBackoff: .milliseconds(200))),
            logger: logger)
        admin = client
        let text: String
        do { text = try String(contentsOfFile: manifest, encoding: .utf8) } catch { throw DemoFailure("cannot read \(manifest): \(error)") }
        let applied = try await ManifestApplier(api: client, logger: logger).apply(
            try ManifestApplier.documents(text), skipKinds: ["Deployment", "PodDisruptionBudget"])
        say("applied \(URL(fileURLWithPath: manifest).lastPathComponent): \(applied.count) objects (CRD, RBAC, namespaces; not the Deployment: the controller runs here)")
        try await removeLeftovers(client)
        let secret = Secret(
            metadata: ObjectMeta(name: "azdo", namespace: DemoNames.agentNamespace, labels: [AgentPodLabels.tokenSecret: "true"]),
            stringData: ["token": DemoNames.token])
        _ = try? await client.delete(.secrets, namespace: DemoNames.agentNamespace, name: "azdo", options: DeleteOptions())
        _ = try await client.create(secret, .secrets, namespace: DemoNames.agentNamespace)
        // Pods can only be created once the namespace's default ServiceAccount has its token.
        let serviceAccounts = KubernetesResource(group: "", version: "v1", plural: "serviceaccounts", namespaced: true)
        for _ in 0..<150 {
            let account = try? await client.get(DynamicObject.self, serviceAccounts, namespace: DemoNames.agentNamespace, name: "default")
            if account?.json["secrets"]?.arrayValue?.isEmpty == false || (account != nil && configurationIsExternal) { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        return client
    }

    /// Clusters from 1.24 on create no token Secrets: do not wait for one there.
    private var configurationIsExternal: Bool { clusterDescription.hasPrefix("existing") }

    /// Deletes an AgentPool and pods a previous, interrupted demo left in `shoal-agents`.
    private func removeLeftovers(_ client: KubernetesClient) async throws {
        if (try? await client.get(DynamicObject.self, DemoNames.agentPools, namespace: DemoNames.agentNamespace, name: DemoNames.pool)) != nil {
            say("removing the AgentPool '\(DemoNames.pool)' an earlier run left behind")
            await forceDeletePool(client)
        }
        await forceDeletePods(client)
    }

    /// Starts the simulated organization with pool `demo`.
    func startSimulator(knobs: SimulatorKnobs) async throws -> AzureDevOpsSimulator {
        let simulator = try await AzureDevOpsSimulator.start(
            SimulatorConfiguration(personalAccessTokens: [DemoNames.token], pools: [DemoNames.azurePool], knobs: knobs), logger: logger)
        self.simulator = simulator
        return simulator
    }

    /// Starts `shoal-sim local-node` for the agent namespace, mapping the agent image to `shoal-sim agent-image`.
    func startNode(adminKubeconfig: String) throws {
        try FileManager.default.createDirectory(atPath: nodeDirectory, withIntermediateDirectories: true)
        let shoalSim = executables + "/shoal-sim"
        node = try ChildProcess.spawn(
            [
                shoalSim, "local-node", "--kubeconfig", adminKubeconfig, "--node-name", DemoNames.nodeName,
                "--namespace", DemoNames.agentNamespace, "--selector", AgentPodLabels.pool,
                "--image", "\(DemoNames.agentImage)=\(shoalSim) agent-image", "--work-dir", nodeDirectory, "--log-level", "warning",
            ], label: "local node", logFile: nodeLog)
    }

    /// Starts `pool-controller run` with the controller's own kubeconfig, JSON logs into ``controllerLog``.
    func startController(kubeconfig: String) throws {
        let controllerPath = executables + "/pool-controller"
        guard FileManager.default.isExecutableFile(atPath: controllerPath) else {
            throw DemoFailure("pool-controller not found at \(controllerPath); build it (swift build --product pool-controller) or use scripts/demo")
        }
        controller = try ChildProcess.spawn(
            [
                controllerPath, "run", "--kubeconfig", kubeconfig, "--namespace", DemoNames.agentNamespace,
                "--leader-election-namespace", DemoNames.systemNamespace, "--identity", "shoal-demo-\(getpid())",
                "--http-host", "127.0.0.1", "--http-port", "0", "--log-format", "json",
                // The simulator serves plain http on loopback: allowed only with this test flag.
                "--allowed-organization-hosts", "127.0.0.1", "--allow-insecure-organization-urls", "true",
            ], label: "pool-controller", logFile: controllerLog)
    }

    /// Creates the demo AgentPool.
    func createPool(spec: KubeJSON) async throws {
        guard let admin else { return }
        let object: KubeJSON = [
            "apiVersion": "shoal.dev/v1alpha1", "kind": "AgentPool",
            "metadata": ["name": .string(DemoNames.pool), "namespace": .string(DemoNames.agentNamespace)], "spec": spec,
        ]
        _ = try await admin.create(DynamicObject(object), DemoNames.agentPools, namespace: DemoNames.agentNamespace)
        poolCreated = true
    }

    /// A process that ended although the demo still needs it, with its log's tail.
    func crashedProcess() -> String? {
        for process in [controller, node].compactMap({ $0 }) {
            if let status = process.exitStatus() {
                return "\(process.label) exited with status \(status) (log \(process.logFile)):\n\(process.logTail())"
            }
        }
        return nil
    }

    // MARK: - Stop

    /// Stops everything started, in order; safe to call after a partial start or a Ctrl-C. Never throws.
    func tearDown() async {
        if let admin, poolCreated {
            // The controller deletes the pods and registrations and then removes its finalizer.
            _ = try? await admin.delete(DemoNames.agentPools, namespace: DemoNames.agentNamespace, name: DemoNames.pool, options: DeleteOptions())
            if controller?.exitStatus() == nil {
                for _ in 0..<100 {
                    if (try? await admin.get(DynamicObject.self, DemoNames.agentPools, namespace: DemoNames.agentNamespace, name: DemoNames.pool)) == nil { break }
                    await sleepIgnoringCancellation(.milliseconds(200))
                }
            }
        }
        if let controller { await controller.stop(grace: .seconds(10)) }
        if let admin, poolCreated { await forceDeletePool(admin) }
        if let node {
            await node.stop(grace: .seconds(10))
            // The node kills each pod's process group, but the agent listener runs in a group of its own and would
            // outlive its killed entrypoint.
            killProcesses(under: nodeDirectory)
        }
        if let admin {
            await forceDeletePods(admin)
            if node != nil { _ = try? await admin.delete(.nodes, namespace: nil, name: DemoNames.nodeName, options: DeleteOptions()) }
            try? await admin.shutdown()
        }
        try? await simulator?.shutdown()
        if let directory = startedClusterDirectory {
            say("stopping the local control plane")
            if let script = try? ChildProcess.spawn(
                [LocalCluster.repositoryRoot.appendingPathComponent("scripts/local-k8s").path, "stop", directory],
                label: "scripts/local-k8s stop", logFile: workspace + "/local-k8s.log")
            {
                _ = await script.waitForExit(timeout: .seconds(60))
            }
        }
    }

    private func forceDeletePool(_ client: KubernetesClient) async {
        _ = try? await client.patch(
            DynamicObject.self, DemoNames.agentPools, namespace: DemoNames.agentNamespace, name: DemoNames.pool,
            patch: .merge(["metadata": ["finalizers": .null]]), subresource: nil)
        _ = try? await client.delete(DemoNames.agentPools, namespace: DemoNames.agentNamespace, name: DemoNames.pool, options: DeleteOptions())
    }

    private func forceDeletePods(_ client: KubernetesClient) async {
        guard let pods = try? await client.listAll(Pod.self, .pods, namespace: DemoNames.agentNamespace, labelSelector: AgentPodLabels.pool) else { return }
        for pod in pods.items {
            guard let name = pod.metadata.name else { continue }
            _ = try? await client.delete(.pods, namespace: DemoNames.agentNamespace, name: name, options: DeleteOptions(gracePeriodSeconds: 0))
        }
    }

    static func seconds(since start: ContinuousClock.Instant) -> String {
        let elapsed = ContinuousClock.now - start
        return String(format: "%.1f s", Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }
}
