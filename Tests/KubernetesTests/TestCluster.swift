import Foundation
import Shared
import Synchronization
import Testing

/// Facts about a running local cluster, from `DIR/cluster.json` written by `scripts/local-k8s start`.
struct ClusterInfo: Decodable, Sendable {
    var dir: String
    var apiServerURL: String
    var caFile: String
    var adminToken: String
    var controllerToken: String
    var adminKubeconfig: String
    var controllerKubeconfig: String
}

/// Why the harness could not provide a cluster.
struct ClusterUnavailable: Error, CustomStringConvertible {
    var description: String
}

/// The directory of a cluster this process started itself, stopped by the `atexit` hook.
private let clusterStartedByThisProcess = Mutex<String?>(nil)

/// Provides one cluster per test process: the one `scripts/test` started (`SHOAL_TEST_KUBE_DIR`), or one started
/// lazily on first use with `scripts/local-k8s start` and stopped when the process exits.
actor TestCluster {
    static let shared = TestCluster()

    private var starting: Task<ClusterInfo, any Error>?

    static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func info() async throws -> ClusterInfo {
        if let starting { return try await starting.value }
        let task = Task { try Self.obtain() }
        starting = task
        return try await task.value
    }

    private static func obtain() throws -> ClusterInfo {
        if let dir = ProcessInfo.processInfo.environment["SHOAL_TEST_KUBE_DIR"], !dir.isEmpty {
            return try read(dir: dir)
        }
        let cache = ProcessInfo.processInfo.environment["SHOAL_CACHE"] ?? (NSHomeDirectory() + "/.cache/shoal")
        let binary = cache + "/kubernetes-v1.20.2/bin/kube-apiserver"
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw ClusterUnavailable(description: "no kube-apiserver at \(binary): run 'scripts/local-k8s install' once (10-15 min), or run the tests through scripts/test")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("shoal-k8s-tests-\(getpid())-\(UUID().uuidString.prefix(8))").path
        clusterStartedByThisProcess.withLock { $0 = dir }
        atexit {
            guard let dir = clusterStartedByThisProcess.withLock({ $0 }) else { return }
            _ = try? TestCluster.runScript(["stop", dir])
            try? FileManager.default.removeItem(atPath: dir)
        }
        let (status, output) = try runScript(["start", dir])
        guard status == 0 else {
            throw ClusterUnavailable(description: "scripts/local-k8s start \(dir) failed (exit \(status)):\n\(output.suffix(3000))")
        }
        return try read(dir: dir)
    }

    private static func read(dir: String) throws -> ClusterInfo {
        let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/cluster.json"))
        return try JSONDecoder().decode(ClusterInfo.self, from: data)
    }

    /// Runs `scripts/local-k8s ARGS`, returning its exit status and combined output.
    static func runScript(_ arguments: [String]) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = repositoryRoot.appendingPathComponent("scripts/local-k8s")
        process.arguments = arguments
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("local-k8s-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        defer { try? FileManager.default.removeItem(at: log) }
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        try? handle.close()
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        return (process.terminationStatus, output)
    }
}

/// What a test gets: admin and controller clients, and a fresh namespace deleted afterwards.
struct KubeTestContext: Sendable {
    let cluster: ClusterInfo
    let namespace: String
    /// Acts as `system:masters`.
    let admin: KubernetesClient
    /// Acts as the `shoal-system/shoal-controller` ServiceAccount (no RBAC granted: 403 on everything).
    let controller: KubernetesClient

    static func client(_ cluster: ClusterInfo, token: String, namespace: String) throws -> KubernetesClient {
        let configuration = KubernetesConfiguration(
            serverURL: cluster.apiServerURL, certificateAuthority: .file(cluster.caFile),
            credentials: try StaticBearerTokenSource(token: token, origin: "test"), namespace: namespace
        )
        return try KubernetesClient(configuration: configuration, options: KubernetesClientOptions(retry: RetryPolicy(maxAttempts: 3, initialBackoff: .milliseconds(100))))
    }

    /// Runs `body` with a fresh namespace `t-<random>`; deletes the namespace and shuts the clients down afterwards.
    static func run(_ body: (KubeTestContext) async throws -> Void) async throws {
        let cluster = try await TestCluster.shared.info()
        let namespace = "t-" + UUID().uuidString.prefix(8).lowercased()
        let admin = try client(cluster, token: cluster.adminToken, namespace: namespace)
        let controller = try client(cluster, token: cluster.controllerToken, namespace: namespace)
        let context = KubeTestContext(cluster: cluster, namespace: namespace, admin: admin, controller: controller)
        var failure: (any Error)?
        do {
            _ = try await admin.create(Namespace(name: namespace), .namespaces, namespace: nil)
            // Pods can be created once the controller-manager gave the namespace's `default` ServiceAccount a token.
            let serviceAccounts = KubernetesResource(group: "", version: "v1", plural: "serviceaccounts", namespaced: true)
            let ready = try await eventually(timeout: .seconds(30)) {
                let account = try? await admin.get(DynamicObject.self, serviceAccounts, namespace: namespace, name: "default")
                return account?.json["secrets"]?.arrayValue?.isEmpty == false
            }
            guard ready else { throw ClusterUnavailable(description: "namespace \(namespace): the default ServiceAccount got no token in 30 s") }
            try await body(context)
        } catch {
            failure = error
        }
        _ = try? await admin.delete(.namespaces, namespace: nil, name: namespace, options: DeleteOptions())
        try? await admin.shutdown()
        try? await controller.shutdown()
        if let failure { throw failure }
    }
}

/// Polls `condition` until it holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(200))
    }
    return try await condition()
}
