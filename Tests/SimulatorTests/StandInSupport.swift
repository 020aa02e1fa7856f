import Foundation
import Simulators
import Subprocess
import Testing

#if canImport(System)
import System
#else
import SystemPackage
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How a stand-in script ended: its exit code (or 128 + signal) and everything it printed (stdout and stderr).
struct ScriptOutcome: Sendable {
    /// Exit code, or 128 + signal number when killed by a signal.
    let exitCode: Int32
    /// Combined stdout and stderr.
    let output: String
}

/// One installed agent directory plus the environment its scripts run with.
///
/// Every test builds its own (temporary directory, own simulator), so tests run in parallel.
struct StandInAgent: Sendable {
    /// The agent root holding `config.sh` and `run.sh`.
    let root: URL
    /// The organization URL the agent talks to.
    let organizationURL: String
    /// Base environment for every script run: PATH, HOME and `AGENT_ALLOW_RUNASROOT=1`.
    var environment: [String: String]

    /// The PAT the simulator accepts by default.
    static let pat = "sim-pat"

    /// Installs a fresh layout in a new temporary directory.
    static func install(organizationURL: String) throws -> StandInAgent {
        let root = FileManager.default.temporaryDirectory
            .appendingPathComponent("standin-\(UUID().uuidString)")
            .appendingPathComponent("agent")
        try AgentStandIn.install(at: root, listenerExecutable: try standInExecutable())
        let inherited = ProcessInfo.processInfo.environment
        return StandInAgent(
            root: root,
            organizationURL: organizationURL,
            environment: [
                "PATH": inherited["PATH"] ?? "/usr/local/bin:/usr/bin:/bin",
                "HOME": inherited["HOME"] ?? "/root",
                "AGENT_ALLOW_RUNASROOT": "1",
                "AGENT_STANDIN_SESSION_RETRY_SECONDS": "20",
            ]
        )
    }

    /// The built `agent-standin` next to the test bundle (`/proc/self/exe`, resolved).
    static func standInExecutable() throws -> URL {
        let testBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var directory = testBinary.deletingLastPathComponent()
        // On Linux the test binary is `.build/<triple>/debug/<name>.xctest` (a file); be tolerant of bundles.
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("agent-standin")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        throw StandInTestError.executableNotFound(testBinary.path)
    }

    /// Arguments of an unattended PAT configure against `pool` for `agentName`.
    func configureArguments(pool: String, agent agentName: String, extra: [String] = []) -> [String] {
        [
            "--unattended", "--url", organizationURL, "--auth", "pat", "--token", Self.pat, "--pool", pool,
            "--agent", agentName, "--acceptTeeEula",
        ] + extra
    }

    /// Runs `script` (e.g. `config.sh`) to completion.
    func run(
        _ script: String, _ arguments: [String] = [], environment extra: [String: String] = [:]
    ) async throws -> ScriptOutcome {
        try await start(script, arguments, environment: extra) { _, _ in }.outcome
    }

    /// Starts `script`, runs `body` while it runs (with its pid and a live view of its output), then waits for exit.
    func start<T: Sendable>(
        _ script: String, _ arguments: [String] = [], environment extra: [String: String] = [:],
        body: (pid_t, OutputLog) async throws -> T
    ) async throws -> (outcome: ScriptOutcome, value: T) {
        let log = OutputLog(file: root.deletingLastPathComponent().appendingPathComponent("\(script)-\(UUID()).log"))
        let descriptor = try FileDescriptor.open(
            FilePath(log.file.path), .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite]
        )
        var environmentValues: [Subprocess.Environment.Key: String] = [:]
        for (name, value) in environment.merging(extra, uniquingKeysWith: { _, new in new }) {
            if let key = Subprocess.Environment.Key(rawValue: name) { environmentValues[key] = value }
        }
        let result = try await Subprocess.run(
            .path(FilePath(root.appendingPathComponent(script).path)),
            arguments: Arguments(arguments),
            environment: .custom(environmentValues),
            workingDirectory: FilePath(root.deletingLastPathComponent().path),
            input: .none,
            output: .fileDescriptor(descriptor, closeAfterSpawningProcess: true),
            error: .combinedWithOutput
        ) { execution in
            try await body(execution.processIdentifier.value, log)
        }
        let exitCode: Int32
        switch result.terminationStatus {
        case .exited(let code): exitCode = Int32(code)
        case .signaled(let signal): exitCode = 128 + Int32(signal)
        }
        return (ScriptOutcome(exitCode: exitCode, output: log.contents()), result.closureResult)
    }

    /// `.agent` decoded as a dictionary.
    func settingsFile() throws -> [String: Any] {
        try jsonObject(at: root.appendingPathComponent(".agent"))
    }

    /// `.credentials` decoded as a dictionary.
    func credentialsFile() throws -> [String: Any] {
        try jsonObject(at: root.appendingPathComponent(".credentials"))
    }

    /// Deletes the temporary directory holding the layout and the logs.
    func removeDirectory() {
        try? FileManager.default.removeItem(at: root.deletingLastPathComponent())
    }

    /// Whether `.agent` exists.
    var isConfigured: Bool { FileManager.default.fileExists(atPath: root.appendingPathComponent(".agent").path) }

    /// The file's bytes, permissions and all; `.credentials_rsaparams` is the agent's private key.
    func fileAttributes(_ name: String) throws -> [FileAttributeKey: Any] {
        try FileManager.default.attributesOfItem(atPath: root.appendingPathComponent(name).path)
    }

    private func jsonObject(at url: URL) throws -> [String: Any] {
        var data = try Data(contentsOf: url)
        if data.starts(with: [0xEF, 0xBB, 0xBF]) { data = Data(data.dropFirst(3)) }  // the agent's files have a BOM
        let object = try JSONSerialization.jsonObject(with: data)
        guard let dictionary = object as? [String: Any] else { throw StandInTestError.notAnObject(url.path) }
        return dictionary
    }
}

/// The live output of a running script (a file the script writes to).
struct OutputLog: Sendable {
    /// The log file.
    let file: URL

    /// Everything written so far.
    func contents() -> String {
        (try? String(contentsOf: file, encoding: .utf8)) ?? ""
    }

    /// Waits until the output contains `text` at least `count` times; throws with the output on timeout.
    func waitFor(_ text: String, count: Int = 1, timeout: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if contents().components(separatedBy: text).count - 1 >= count { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw StandInTestError.outputTimedOut(waitingFor: text, output: contents())
    }
}

/// Failures of the stand-in test harness itself.
enum StandInTestError: Error, CustomStringConvertible {
    case executableNotFound(String)
    case notAnObject(String)
    case outputTimedOut(waitingFor: String, output: String)
    case processNotFound(parent: pid_t)

    var description: String {
        switch self {
        case .executableNotFound(let path): "agent-standin not found next to \(path); run `swift build` first"
        case .notAnObject(let path): "\(path) is not a JSON object"
        case .outputTimedOut(let text, let output): "output never contained '\(text)'; output:\n\(output)"
        case .processNotFound(let parent): "no child process of \(parent)"
        }
    }
}

/// Process helpers for signalling the listener under `run.sh`.
enum ProcessTree {
    /// The first child of `parent` (the listener under `run.sh`), waiting briefly for it to appear.
    static func child(of parent: pid_t, timeout: Duration = .seconds(10)) async throws -> pid_t {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let path = "/proc/\(parent)/task/\(parent)/children"
            if let text = try? String(contentsOfFile: path, encoding: .utf8),
                let first = text.split(separator: " ").first, let pid = pid_t(first)
            {
                return pid
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw StandInTestError.processNotFound(parent: parent)
    }
}

/// A fresh simulator with one pool, shut down after `body`.
func withStandInSimulator<T: Sendable>(
    pools: [String] = ["pool-a"],
    knobs: SimulatorKnobs = .init(),
    _ body: (AzureDevOpsSimulator) async throws -> T
) async throws -> T {
    try await AzureDevOpsSimulator.withSimulator(SimulatorConfiguration(pools: pools, knobs: knobs), body)
}
