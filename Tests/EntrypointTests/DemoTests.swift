import Foundation
import Testing

/// The README's demo command must keep working: it runs the real entrypoint on stand-in agents and exits 0 only
/// when every invariant held (every job served once, no registration left behind).
@Suite("The local demo", .timeLimit(.minutes(2)))
struct DemoTests {
    @Test("shoal-sim demo serves every job on its own agent and leaves nothing behind")
    func demo() async throws {
        let directory = try BuiltProducts.directory(holding: "shoal-sim")
        let process = Process()
        process.executableURL = directory.appendingPathComponent("shoal-sim")
        process.arguments = ["demo", "--agents", "2", "--jobs", "4", "--job-seconds", "0.2", "--timeout", "90"]
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
        #expect(text.contains("jobs served:            4/4 succeeded, each on its own agent"))
        #expect(text.contains("leftover registrations: 0"))
        #expect(text.contains("No agent found in pool demo which satisfies the specified demands: gpu -equals a100"))
    }
}
