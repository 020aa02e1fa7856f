import Foundation
import Kubernetes
import Logging
import Simulators

/// The operations tests' view of the shared local cluster (``LocalCluster``).
enum OperationsTestCluster {
    /// Runs `body` with an admin client, a controller client (no RBAC: 403) and a fresh namespace deleted afterwards.
    static func withNamespace(_ body: (_ admin: KubernetesClient, _ controller: KubernetesClient, _ namespace: String) async throws -> Void) async throws {
        try await KubeTestContext.run { context in try await body(context.admin, context.controller, context.namespace) }
    }

    /// Polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
    static func waitUntil(timeout: Duration = .seconds(20), _ condition: () async throws -> Bool) async rethrows -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return try await condition()
    }

    /// A logger for tests: warnings and errors only, not bootstrapped globally.
    static func logger(_ label: String) -> Logger { quietLogger(label) }
}
