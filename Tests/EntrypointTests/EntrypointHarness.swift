import Foundation
import Shared
import Simulators
import Testing

@testable import agent_entrypoint

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

    /// Runs the entrypoint as `nobody` (65534) when the tests run as root: the same, non-root user for the
    /// entrypoint and the job, as in a real pod (root may read any `/proc/<pid>/environ`). Copies the binaries
    /// first (unless ``useCopiedBinaries()`` already did) and hands the whole fixture to that user.
    mutating func runAsNobody() async throws {
        if entrypointBinary == nil { try useCopiedBinaries() }
        environment["AGENT_ALLOW_RUNASROOT"] = nil
        wrapper = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        let chown = try await runTool("/bin/chown", ["-R", "65534:65534", root.path])
        try #require(chown.status == 0, "\(chown.output)")
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

/// Runs a helper program to completion (waiting for its exit, not polling) and returns its status and output.
func runTool(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) async throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let output = FileManager.default.temporaryDirectory.appendingPathComponent("tool-\(UUID().uuidString).log")
    FileManager.default.createFile(atPath: output.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: output) }
    let handle = try FileHandle(forWritingTo: output)
    defer { try? handle.close() }
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = handle
    process.standardError = handle
    let status: Int32 = try await withCheckedThrowingContinuation { continuation in
        process.terminationHandler = { finished in continuation.resume(returning: finished.terminationStatus) }
        do {
            try process.run()
        } catch {
            process.terminationHandler = nil
            continuation.resume(throwing: error)
        }
    }
    return (status, (try? String(contentsOf: output, encoding: .utf8)) ?? "")
}

/// Whether the process `pid` has ended: gone from `/proc`, or a zombie nobody reaped yet.
func processHasEnded(_ pid: pid_t) -> Bool {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let entry = ProcessTree.parseStat(text)
    else { return true }
    return entry.hasExited
}

/// SIGKILLs `pid` if it still runs and its command line contains `marker` (so a recycled pid is left alone).
func killIfStillRunning(_ pid: pid_t, commandContaining marker: String) {
    guard !processHasEnded(pid),
        let commandLine = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .isoLatin1), commandLine.contains(marker)
    else { return }
    kill(pid, SIGKILL)
}

/// The agent's identity as the pool controller mounts it (`AZP_REGISTRATION=controller`): the stand-in's own
/// `config.sh` registers `name` in a scratch agent directory with the PAT, exactly as the real agent writes its
/// files, and `.agent`, `.credentials`, `.credentials_rsaparams` are moved into a registration directory.
struct ControllerRegistration: Sendable {
    /// The directory holding the three files (`AZP_REGISTRATION_DIR`).
    let directory: URL
    /// The agent id the service assigned.
    let agentId: Int

    /// Registers `fixture.agentName` with the simulator and prepares the registration directory.
    static func make(_ simulator: AzureDevOpsSimulator, _ fixture: EntrypointFixture) async throws -> ControllerRegistration {
        let scratch = fixture.root.appendingPathComponent("controller-scratch-agent")
        try AgentStandIn.install(at: scratch, listenerExecutable: try BuiltProducts.standIn())
        let configure = try await runTool(
            scratch.appendingPathComponent("config.sh").path,
            [
                "--unattended", "--url", simulator.organizationURL, "--auth", "pat", "--pool", "pool-a", "--agent",
                fixture.agentName, "--work", "_work", "--acceptTeeEula",
            ],
            environment: [
                "PATH": fixture.environment["PATH"] ?? "/usr/bin:/bin", "HOME": fixture.root.path, "AGENT_ALLOW_RUNASROOT": "1",
                "VSTS_AGENT_INPUT_TOKEN": EntrypointFixture.pat,
            ])
        try #require(configure.status == 0, "config.sh configure: \(configure.output)")
        let directory = fixture.root.appendingPathComponent("registration")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for name in [".agent", ".credentials", ".credentials_rsaparams"] {
            try FileManager.default.moveItem(at: scratch.appendingPathComponent(name), to: directory.appendingPathComponent(name))
        }
        try? FileManager.default.removeItem(at: scratch)
        let agent = try #require(await simulator.organization.snapshot().agent(named: fixture.agentName))
        return ControllerRegistration(directory: directory, agentId: agent.id)
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
