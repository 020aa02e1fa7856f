import Foundation
import Simulators
import Testing

@Suite("Local node processes", .timeLimit(.minutes(1)))
struct PodProcessTests {
    /// Regression: an agent listener runs in a process group of its own, so killing the pod's process group left it
    /// running after its pod was gone (found by the demo: listeners outlived the local node).
    @Test("SIGKILL of a pod kills descendants in other process groups too, as a container runtime does")
    func killReachesOtherProcessGroups() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("podprocess-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let process = try PodProcess.spawn(
            arguments: ["/bin/sh", "-c", "setsid sleep 300 & echo $! > child.pid; wait"], environment: ["PATH": "/usr/bin:/bin"],
            workingDirectory: directory.path, logFile: directory.appendingPathComponent("log").path)
        let pidFile = directory.appendingPathComponent("child.pid").path
        let written = try await eventually(timeout: .seconds(10)) { FileManager.default.fileExists(atPath: pidFile) && ((try? String(contentsOfFile: pidFile, encoding: .utf8)) ?? "").hasSuffix("\n") }
        #expect(written)
        let child = try #require(pid_t((try String(contentsOfFile: pidFile, encoding: .utf8)).filter(\.isNumber)))
        // `$!` is written before the child has called setsid(): wait for its own process group.
        let ownGroup = try await eventually(timeout: .seconds(10)) { getpgid(child) == child }
        #expect(ownGroup, "the child is in a process group of its own")

        _ = await process.kill()
        let gone = try await eventually(timeout: .seconds(10)) {
            // Dead (ESRCH) or a zombie waiting for init: either way no longer running.
            guard kill(child, 0) == 0 else { return true }
            let stat = (try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8)) ?? ""
            return stat.contains(") Z ")
        }
        #expect(gone, "the setsid child \(child) survived its pod")
        if !gone { kill(child, SIGKILL) }
    }
}
