import Foundation
import Kubernetes
import Shared
import Synchronization

/// Facts about a running local cluster, from `DIR/cluster.json` written by `scripts/local-k8s start`.
package struct ClusterInfo: Decodable, Sendable {
    package var dir: String
    package var apiServerURL: String
    package var caFile: String
    package var adminToken: String
    package var controllerToken: String
    package var adminKubeconfig: String
    package var controllerKubeconfig: String
}

/// Why the harness could not provide a cluster.
package struct ClusterUnavailable: Error, CustomStringConvertible {
    package var description: String

    /// An error with this description.
    package init(description: String) { self.description = description }
}

/// The directory of a cluster this process started itself, stopped by the `atexit` hook.
private let clusterStartedByThisProcess = Mutex<String?>(nil)

/// Provides one cluster per test process: the one `scripts/test` started (`SHOAL_TEST_KUBE_DIR`), or one started
/// lazily on first use with `scripts/local-k8s start` and stopped when the process exits.
package actor LocalCluster {
    package static let shared = LocalCluster()

    private var starting: Task<ClusterInfo, any Error>?

    package static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    package func info() async throws -> ClusterInfo {
        if let starting { return try await starting.value }
        let task = Task { try await Self.obtain() }
        starting = task
        return try await task.value
    }

    private static func obtain() async throws -> ClusterInfo {
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
            LocalCluster.stopSynchronously(dir)
            try? FileManager.default.removeItem(atPath: dir)
        }
        let (status, output) = try await runScript(["start", dir])
        guard status == 0 else {
            throw ClusterUnavailable(description: "scripts/local-k8s start \(dir) failed (exit \(status)):\n\(output.suffix(3000))")
        }
        return try read(dir: dir)
    }

    private static func read(dir: String) throws -> ClusterInfo {
        let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/cluster.json"))
        return try JSONDecoder().decode(ClusterInfo.self, from: data)
    }

    /// Stops a cluster from the `atexit` hook: spawns `stop` and blocks in waitpid (no async context there).
    package static func stopSynchronously(_ dir: String) {
        guard let (pid, log) = try? spawnScript(["stop", dir]) else { return }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        try? FileManager.default.removeItem(atPath: log)
    }

    /// Runs `scripts/local-k8s ARGS` to the end and returns its exit status and combined output; polls with
    /// WNOHANG so no cooperative thread is blocked for the ~10 s a start takes (2-core machines have 2).
    package static func runScript(_ arguments: [String]) async throws -> (Int32, String) {
        let (pid, log) = try spawnScript(arguments)
        defer { try? FileManager.default.removeItem(atPath: log) }
        var status: Int32 = 0
        while true {
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid { break }
            if result == -1 && errno != EINTR { throw ClusterUnavailable(description: "waitpid failed: \(String(cString: strerror(errno)))") }
            try await Task.sleep(for: .milliseconds(100))
        }
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let exited = status & 0x7f == 0
        return (exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), output)
    }

    /// Starts `scripts/local-k8s ARGS` with posix_spawn, output to a temporary log file.
    ///
    /// Not Foundation's `Process`: its `waitUntilExit()` was seen never returning here after `start` left its
    /// daemons running, and the `atexit` hook needs a plain synchronous wait.
    private static func spawnScript(_ arguments: [String]) throws -> (pid_t, String) {
        let script = repositoryRoot.appendingPathComponent("scripts/local-k8s").path
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("local-k8s-\(UUID().uuidString).log").path
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = ([script] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, script, &actions, nil, argv, environ)
        guard spawned == 0 else { throw ClusterUnavailable(description: "cannot run \(script): \(String(cString: strerror(spawned)))") }
        return (pid, log)
    }
}

/// What a test gets: admin and controller clients, and a fresh namespace deleted afterwards.
package struct KubeTestContext: Sendable {
    package let cluster: ClusterInfo
    package let namespace: String
    /// Acts as `system:masters`.
    package let admin: KubernetesClient
    /// Acts as the `shoal-system/shoal-controller` ServiceAccount (no RBAC granted: 403 on everything).
    package let controller: KubernetesClient

    package static func client(_ cluster: ClusterInfo, token: String, namespace: String) throws -> KubernetesClient {
        let configuration = KubernetesConfiguration(
            serverURL: cluster.apiServerURL, certificateAuthority: .file(cluster.caFile),
            credentials: try StaticTokenSource(token: token, origin: "test", scheme: .bearer), namespace: namespace
        )
        return try KubernetesClient(configuration: configuration, options: KubernetesClientOptions(retry: RetryPolicy(maxAttempts: 3, initialBackoff: .milliseconds(100))))
    }

    /// Runs `body` with a fresh namespace `t-<random>`; deletes the namespace and shuts the clients down afterwards.
    package static func run(_ body: (KubeTestContext) async throws -> Void) async throws {
        let cluster = try await LocalCluster.shared.info()
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
package func eventually(timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(200))
    }
    return try await condition()
}

/// The package's built executables, found next to the running test binary (`.build/<config>/`).
package enum BuiltProducts {
    /// The directory holding the test bundle and the executables.
    package static func directory(holding name: String) throws -> URL {
        let testBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var directory = testBinary.deletingLastPathComponent()
        for _ in 0..<4 {
            if FileManager.default.isExecutableFile(atPath: directory.appendingPathComponent(name).path) { return directory }
            directory = directory.deletingLastPathComponent()
        }
        throw ClusterUnavailable(description: "\(name) not found next to \(testBinary.path); run `swift build --build-tests` first")
    }

    /// The path of the executable `name`.
    package static func path(_ name: String) throws -> URL {
        try directory(holding: name).appendingPathComponent(name)
    }

    /// `agent-entrypoint`.
    package static func entrypoint() throws -> URL { try path("agent-entrypoint") }

    /// `agent-standin`.
    package static func standIn() throws -> URL { try path("agent-standin") }
}
