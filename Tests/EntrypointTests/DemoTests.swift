import Foundation
import Simulators
import Testing

/// The README's demo command must keep working: the real controller, local node and agent-entrypoint against the
/// local API server and the simulator; it exits 0 only when every invariant of its scenario held.
@Suite("The local demo", .timeLimit(.minutes(3)))
struct DemoTests {
    @Test("shoal-sim demo serves every job on its own agent, cleans up a killed pod and an orphan, and returns to standby")
    func demo() async throws {
        let cluster = try await LocalCluster.shared.info()
        let directory = try BuiltProducts.directory(holding: "shoal-sim")
        let process = Process()
        process.executableURL = directory.appendingPathComponent("shoal-sim")
        // A small workload on the tests' cluster (scripts/test exports SHOAL_TEST_KUBE_DIR): about 30 seconds.
        process.arguments = [
            "demo", "--cluster-dir", cluster.dir, "--jobs", "4", "--rate", "10", "--job-seconds", "1", "--standby", "2", "--max-agents", "4",
            "--timeout", "150", "--no-live",
        ]
        // Output goes to a file and the exit is awaited, so no thread of the test pool blocks on a pipe.
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("shoal-demo-test-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do { try process.run() } catch { continuation.resume(throwing: error) }
        }
        try handle.close()
        let text = try String(contentsOf: log, encoding: .utf8)
        #expect(status == 0, "\(text)")
        #expect(text.contains("result:                  OK: every invariant held"), "\(text)")
        #expect(text.contains("jobs served:             4/4 burst jobs succeeded"))
        #expect(text.contains("refused at queue time:   No agent found in pool demo which satisfies the specified demands: gpu -equals a100"))
        #expect(text.contains("leftovers:               0 offline registrations, 0 completed pods, 0 pods above standby"))
        #expect(text.contains("controller: created"), "the controller's decisions are shown")
        #expect(text.contains("controller: deleted registration"), "the orphan and the killed pod's registration were deleted by the controller")
    }
}
