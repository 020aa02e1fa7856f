import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Subprocess
import Testing

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// The standalone `shoal-sim azure-devops` process: prints its URL, serves, and exits on SIGTERM.
@Suite(.timeLimit(.minutes(1)))
struct SimulatorProcessTests {
    /// `shoal-sim` next to the test runner in `.build/<config>/`.
    static func shoalSimPath() throws -> String {
        let runner = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        var directory = URL(fileURLWithPath: runner).deletingLastPathComponent()
        // The runner may live inside an .xctest bundle directory.
        while !FileManager.default.fileExists(atPath: directory.appendingPathComponent("shoal-sim").path),
            directory.path != "/"
        {
            directory.deleteLastPathComponent()
        }
        let path = directory.appendingPathComponent("shoal-sim").path
        try #require(FileManager.default.isExecutableFile(atPath: path), "shoal-sim not built next to \(runner)")
        return path
    }

    @Test func standaloneProcessStartsAnswersAndStops() async throws {
        let path = try Self.shoalSimPath()
        let result = try await Subprocess.run(
            .path(FilePath(path)),
            arguments: ["azure-devops", "--port", "0", "--organization", "proc-org", "--token", "proc-pat", "--pool", "ci", "--print-url"],
            input: .none,
            output: .sequence,
            error: .discarded
        ) { execution in
            var lines = execution.standardOutput.strings().makeAsyncIterator()
            let url = try #require(try await lines.next()).trimmingCharacters(in: .whitespacesAndNewlines)
            var request = HTTPClientRequest(url: "\(url)/_apis/distributedtask/pools?poolName=ci")
            request.headers.add(name: "Authorization", value: "Basic \(Data(":proc-pat".utf8).base64EncodedString())")
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            let body = try await response.body.collect(upTo: 1 << 20)
            try execution.send(signal: .terminate)
            while try await lines.next() != nil {}
            return (url, Int(response.status.code), String(buffer: body))
        }
        let (url, status, body) = result.closureResult
        #expect(url.hasPrefix("http://127.0.0.1:"))
        #expect(url.hasSuffix("/proc-org"))
        #expect(status == 200)
        #expect(body.contains("\"name\":\"ci\""))
        #expect(result.terminationStatus == TerminationStatus.exited(0))
    }
}
