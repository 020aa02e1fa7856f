import Foundation
import Shared
import Simulators
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Failures of the test harness itself (not of the entrypoint under test).
enum HarnessError: Error, CustomStringConvertible {
    case timedOut(String, output: String)
    case notRunning

    var description: String {
        switch self {
        case .timedOut(let what, let output): "timed out waiting for \(what); output so far:\n\(output)"
        case .notRunning: "the entrypoint is not running"
        }
    }
}

/// One test's world: a temporary directory with a stand-in agent, and the entrypoint's environment.
struct EntrypointFixture: Sendable {
    /// Temporary root (deleted by `cleanUp`).
    let root: URL
    /// The agent directory (`AZP_AGENT_DIR`).
    let agentDirectory: URL
    /// The environment the entrypoint starts with.
    var environment: [String: String]
    /// Prefix of the command line (e.g. `unshare ...` or `setpriv ...`), empty to run the binary directly.
    var wrapper: [String] = []
    /// The entrypoint binary to run; nil for the one in the build directory.
    var entrypointBinary: URL?

    /// Copies the built entrypoint and stand-in into the fixture (mode 755) and re-installs the agent directory
    /// on the copy, so a non-root user can run them even when the build directory is private (CI clones live
    /// under `mktemp -d`, which is mode 700).
    mutating func useCopiedBinaries() throws {
        let bin = root.appendingPathComponent("bin")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        let entrypoint = bin.appendingPathComponent("agent-entrypoint")
        let standIn = bin.appendingPathComponent("agent-standin")
        try FileManager.default.copyItem(at: try BuiltProducts.entrypoint(), to: entrypoint)
        try FileManager.default.copyItem(at: try BuiltProducts.standIn(), to: standIn)
        for file in [bin, entrypoint, standIn] {
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: file.path)
        }
        try? FileManager.default.removeItem(at: agentDirectory)
        try AgentStandIn.install(at: agentDirectory, listenerExecutable: standIn)
        entrypointBinary = entrypoint
    }

    /// The PAT the simulator accepts by default.
    static let pat = "sim-pat"

    /// A fresh directory with the stand-in installed (unless `installAgent` is false) and a default environment.
    static func make(organizationURL: String?, agentName: String = "agent-\(UUID().uuidString.prefix(8).lowercased())", installAgent: Bool = true) throws -> EntrypointFixture {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("entrypoint-\(UUID().uuidString)")
        let agentDirectory = root.appendingPathComponent("agent")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        if installAgent {
            try AgentStandIn.install(at: agentDirectory, listenerExecutable: try BuiltProducts.standIn())
        }
        var environment: [String: String] = [
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin",
            "HOME": root.path,
            "AZP_TOKEN": pat,
            "AZP_POOL": "pool-a",
            "AZP_AGENT_NAME": agentName,
            "AZP_AGENT_DIR": agentDirectory.path,
            "AZP_TERMINATION_LOG": root.appendingPathComponent("termination-log").path,
            "AZP_READY_FILE": root.appendingPathComponent("ready").path,
            "AZP_RELAUNCH_DELAY": "0",
            "AZP_DOCKER_SOCKET": root.appendingPathComponent("no-docker.sock").path,
            "AGENT_ALLOW_RUNASROOT": "1",
            "AGENT_STANDIN_SESSION_RETRY_SECONDS": "20",
        ]
        if let organizationURL { environment["AZP_URL"] = organizationURL }
        return EntrypointFixture(root: root, agentDirectory: agentDirectory, environment: environment)
    }

    /// The agent name the entrypoint registers.
    var agentName: String { environment["AZP_AGENT_NAME"] ?? "" }

    /// A path inside the temporary root.
    func path(_ name: String) -> String { root.appendingPathComponent(name).path }

    /// Starts the entrypoint.
    func start(arguments: [String] = []) throws -> RunningEntrypoint {
        let stdout = root.appendingPathComponent("stdout-\(UUID().uuidString).log")
        let stderr = root.appendingPathComponent("stderr-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: stdout.path, contents: nil)
        FileManager.default.createFile(atPath: stderr.path, contents: nil)
        let process = Process()
        let binary = try entrypointBinary ?? BuiltProducts.entrypoint()
        if wrapper.isEmpty {
            process.executableURL = binary
            process.arguments = arguments
        } else {
            process.executableURL = URL(fileURLWithPath: wrapper[0])
            process.arguments = Array(wrapper.dropFirst()) + [binary.path] + arguments
        }
        process.environment = environment
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: stdout)
        process.standardError = try FileHandle(forWritingTo: stderr)
        try process.run()
        return RunningEntrypoint(process: process, stdout: stdout, stderr: stderr, terminationLog: URL(fileURLWithPath: environment["AZP_TERMINATION_LOG"] ?? "/dev/null"))
    }

    /// Deletes the temporary root.
    func cleanUp() {
        try? FileManager.default.removeItem(at: root)
    }
}

/// A running (or finished) entrypoint process and its captured output.
struct RunningEntrypoint: @unchecked Sendable {
    // `Process` is not Sendable; it is only read (pid, status) after `run()`, which Foundation guards internally.
    let process: Process
    /// Captured stdout (the agent's output, forwarded unchanged).
    let stdout: URL
    /// Captured stderr (the entrypoint's own log lines).
    let stderr: URL
    /// The termination message file.
    let terminationLog: URL

    /// The pid.
    var pid: pid_t { process.processIdentifier }

    /// stdout and stderr so far.
    var output: String {
        let out = (try? String(contentsOf: stdout, encoding: .utf8)) ?? ""
        let err = (try? String(contentsOf: stderr, encoding: .utf8)) ?? ""
        return "--- stdout ---\n\(out)\n--- stderr ---\n\(err)"
    }

    /// The entrypoint's own log (stderr).
    var log: String { (try? String(contentsOf: stderr, encoding: .utf8)) ?? "" }

    /// Waits until the combined output contains `text`.
    func waitForOutput(_ text: String, timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if output.contains(text) { return }
            if !process.isRunning, !output.contains(text) { throw HarnessError.timedOut("'\(text)' (process exited)", output: output) }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw HarnessError.timedOut("'\(text)'", output: output)
    }

    /// Waits for the process to exit and returns its exit code (128 + signal when killed).
    func waitForExit(timeout: Duration = .seconds(60)) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            guard ContinuousClock.now < deadline else {
                process.terminate()
                throw HarnessError.timedOut("exit", output: output)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    }

    /// Sends `signal` to the entrypoint process.
    func send(_ signal: Int32) {
        kill(pid, signal)
    }

    /// The termination message the entrypoint wrote.
    func terminationMessage() throws -> TerminationMessage {
        let text = try String(contentsOf: terminationLog, encoding: .utf8)
        return try TerminationMessage.parse(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// The pid of the `Agent.Listener` process among the entrypoint's children.
    func listenerPid(timeout: Duration = .seconds(10)) async throws -> pid_t {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
            for field in children.split(separator: " ") {
                guard let child = pid_t(field) else { continue }
                let commandLine = (try? String(contentsOfFile: "/proc/\(child)/cmdline", encoding: .utf8)) ?? ""
                if commandLine.contains("Agent.Listener") { return child }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw HarnessError.timedOut("the listener process", output: output)
    }
}

/// Knobs that keep the stand-in responsive: short long polls, so signals and cancellations act quickly.
func entrypointKnobs() -> SimulatorKnobs {
    var knobs = SimulatorKnobs()
    knobs.messageLongPollTimeout = .seconds(1)
    knobs.sessionTimeout = .seconds(10)
    knobs.sweepInterval = .milliseconds(100)
    return knobs
}

/// Runs `body` with a fresh simulator (pool `pool-a`, PAT `sim-pat`) and a fixture pointing at it.
func withEntrypointWorld<T: Sendable>(
    installAgent: Bool = true,
    _ body: (AzureDevOpsSimulator, EntrypointFixture) async throws -> T
) async throws -> T {
    try await AzureDevOpsSimulator.withSimulator(
        SimulatorConfiguration(personalAccessTokens: [EntrypointFixture.pat], pools: ["pool-a"], knobs: entrypointKnobs())
    ) { simulator in
        let fixture = try EntrypointFixture.make(organizationURL: simulator.organizationURL, installAgent: installAgent)
        defer { fixture.cleanUp() }
        return try await body(simulator, fixture)
    }
}

extension SimulatedOrganization {
    /// Waits until the agent is registered and online (its listener holds a session).
    func waitUntilOnline(_ name: String, timeout: Duration = .seconds(30)) async throws -> SimulatedAgent {
        let snapshot = try await waitUntil(timeout: timeout) { $0.agent(named: name)?.status == .online }
        return try #require(snapshot.agent(named: name))
    }

    /// Whether any agent with this name was ever registered (including deleted ones).
    func everRegistered(_ name: String) -> Bool {
        snapshot().agents.contains { $0.name.lowercased() == name.lowercased() }
    }
}
