import ArgumentParser
import Foundation
import Logging
import Shared
import Simulators
import Synchronization

/// `shoal-sim demo`: the local demo of what exists so far — a simulated organization and agent slots that each
/// run the real `agent-entrypoint` on a stand-in agent: register, exactly one job, unregister.
///
/// It ends with a summary and exits non-zero if any invariant broke (a job not served, a job served twice, a
/// registration left behind).
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run the local demo: a simulated Azure DevOps organization and agent-entrypoint processes running jobs.")

    @Option(help: "Number of agent slots running side by side.")
    var agents: Int = 3

    @Option(help: "Number of jobs to queue.")
    var jobs: Int = 8

    @Option(help: "Seconds each job runs.")
    var jobSeconds: Double = 1.5

    @Option(help: "Give up after this many seconds.")
    var timeout: Double = 120

    func validate() throws {
        guard (1...32).contains(agents) else { throw ValidationError("--agents must be between 1 and 32, got \(agents)") }
        guard (1...500).contains(jobs) else { throw ValidationError("--jobs must be between 1 and 500, got \(jobs)") }
        guard jobSeconds >= 0, jobSeconds <= 600 else { throw ValidationError("--job-seconds must be between 0 and 600, got \(jobSeconds)") }
    }

    func run() async throws {
        var logger = Logger(label: "shoal.demo")
        logger.logLevel = .warning
        let listener = try Self.standInExecutable()
        let workspace = FileManager.default.temporaryDirectory.appendingPathComponent("shoal-demo-\(getpid())")
        try FileManager.default.createDirectory(at: workspace, withIntermediateDirectories: true)
        var knobs = SimulatorKnobs()
        knobs.messageLongPollTimeout = .seconds(1)
        let configuration = SimulatorConfiguration(personalAccessTokens: ["demo-pat"], pools: ["demo"], knobs: knobs)

        print("Shoal local demo — Azure DevOps is simulated; each agent is the real agent-entrypoint on a stand-in agent")
        print("  workspace and agent logs: \(workspace.path)")
        let outcome = try await AzureDevOpsSimulator.withSimulator(configuration, logger: logger) { simulator in
            print("  organization: \(simulator.organizationURL)  pool: demo  agents: \(agents)  jobs: \(jobs)\n")
            return try await play(simulator: simulator, listener: listener, workspace: workspace)
        }
        print(outcome.report)
        if outcome.failures.isEmpty {
            try? FileManager.default.removeItem(at: workspace)
        } else {
            throw ExitCode(1)
        }
    }

    private struct Outcome {
        var report: String
        var failures: [String]
    }

    /// Runs the scenario: agent slots cycle register → one job → unregister while jobs are queued.
    private func play(simulator: AzureDevOpsSimulator, listener: URL, workspace: URL) async throws -> Outcome {
        let organization = simulator.organization
        let started = Date()
        let deadline = ContinuousClock.now + .seconds(timeout)
        let stop = StopFlag()

        return try await withThrowingTaskGroup(of: Void.self) { group in
            for slot in 1...agents {
                group.addTask {
                    try await AgentSlot(slot: slot, listener: listener, workspace: workspace, organizationURL: simulator.organizationURL)
                        .cycle(until: stop)
                }
            }
            // Wait for the first agent so the pool is not empty (an empty pool fails jobs at queue time).
            _ = try await organization.waitUntil(timeout: .seconds(60)) { $0.agents.contains { $0.isRegistered } }
            let unsatisfiable = await organization.queueJob(.init(pool: "demo", name: "needs-a-gpu", demands: ["gpu -equals a100"]))
            if case .failed(let failure) = unsatisfiable { print("  queue-time failure, as on the real service: \(failure.message)\n") }
            var queued: [Int] = []
            for index in 1...jobs {
                let demands = index % 3 == 0 ? ["Agent.OS -equals Linux"] : []
                let script = "echo \"job \(index) building on $(hostname)\"; sleep \(jobSeconds)"
                queued.append(try await organization.queueJobOrThrow(.init(pool: "demo", name: "build-\(index)", demands: demands, script: script)))
            }
            var printed = 0
            while ContinuousClock.now < deadline {
                let snapshot = await organization.snapshot()
                for event in snapshot.events.dropFirst(printed) where Self.shown.contains(event.kind) {
                    print(String(format: "  %6.1fs  %@", event.time.timeIntervalSince(started), event.message))
                }
                printed = snapshot.events.count
                let done = snapshot.requests.filter { queued.contains($0.requestId) && $0.isFinished }.count
                if done == queued.count { break }
                let seen = printed
                _ = try? await organization.waitUntil(timeout: .seconds(1)) { $0.events.count > seen }
            }
            stop.set()
            try await group.waitForAll()
            let final = try await organization.waitUntil(timeout: .seconds(30)) { $0.sessions.isEmpty }
            return Self.summarize(final, queued: queued, started: started)
        }
    }

    private static let shown: Set<SimulatorEvent.Kind> = [.agentRegistered, .jobAssigned, .jobFinished, .agentDeleted]

    private static func summarize(_ snapshot: OrganizationSnapshot, queued: [Int], started: Date) -> Outcome {
        let mine = snapshot.requests.filter { queued.contains($0.requestId) }
        let succeeded = mine.filter { $0.result == .succeeded }.count
        let waits = mine.compactMap { request in request.assignTime.map { $0.timeIntervalSince(request.queueTime) } }.sorted()
        func percentile(_ p: Double) -> String {
            guard !waits.isEmpty else { return "n/a" }
            return String(format: "%.2fs", waits[min(waits.count - 1, Int((Double(waits.count) * p).rounded(.up)) - 1)])
        }
        let agentsUsed = Set(mine.compactMap(\.reservedAgentId))
        let leftovers = snapshot.agents.filter(\.isRegistered)
        let minutes = max(Date().timeIntervalSince(started) / 60, 1.0 / 60)
        let apiCalls = snapshot.requestCounts.values.flatMap(\.values).reduce(0, +)
        var failures: [String] = []
        if succeeded != queued.count { failures.append("\(queued.count - succeeded) of \(queued.count) jobs did not succeed") }
        if agentsUsed.count != mine.count { failures.append("an agent ran more than one job") }
        if !leftovers.isEmpty { failures.append("registrations left behind: \(leftovers.map(\.name))") }
        let report = """

        Summary
          jobs served:            \(succeeded)/\(queued.count) succeeded, each on its own agent (\(agentsUsed.count) registrations)
          queue-to-assign:        p50 \(percentile(0.5)), p95 \(percentile(0.95))
          Azure DevOps requests:  \(apiCalls) (\(Int(Double(apiCalls) / minutes)) per minute)
          leftover registrations: \(leftovers.count)
          result:                 \(failures.isEmpty ? "OK — every invariant held" : "FAILED — " + failures.joined(separator: "; "))
        """
        return Outcome(report: report, failures: failures)
    }

    /// Finds `agent-standin` next to this executable (both are products of the same build).
    static func standInExecutable() throws -> URL {
        let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let candidate = me.deletingLastPathComponent().appendingPathComponent("agent-standin")
        guard FileManager.default.isExecutableFile(atPath: candidate.path) else {
            throw ValidationError("agent-standin not found next to \(me.path); build the package first (swift build)")
        }
        return candidate
    }
}

/// A flag set once by the scenario to tell agent slots to stop after their current cycle.
final class StopFlag: Sendable {
    private let state = Mutex(false)
    func set() { state.withLock { $0 = true } }
    var isSet: Bool { state.withLock { $0 } }
}

/// One agent slot, as a pod would be: lays out a stand-in agent and runs `agent-entrypoint` on it, which
/// registers the agent, runs exactly one job and unregisters it; then the slot starts over with a new name.
struct AgentSlot: Sendable {
    let slot: Int
    let listener: URL
    let workspace: URL
    let organizationURL: String

    func cycle(until stop: StopFlag) async throws {
        let entrypoint = listener.deletingLastPathComponent().appendingPathComponent("agent-entrypoint")
        guard FileManager.default.isExecutableFile(atPath: entrypoint.path) else {
            throw ValidationError("agent-entrypoint not found at \(entrypoint.path); build it first (swift build)")
        }
        var round = 0
        while !stop.isSet {
            round += 1
            let name = "demo-agent-\(slot)-\(round)"
            let directory = workspace.appendingPathComponent(name)
            try AgentStandIn.install(at: directory, listenerExecutable: listener)
            let log = workspace.appendingPathComponent("\(name).log")
            FileManager.default.createFile(atPath: log.path, contents: nil)
            let output = try FileHandle(forWritingTo: log)
            defer { try? output.close() }
            var environment = ProcessInfo.processInfo.environment
            environment["AZP_URL"] = organizationURL
            environment["AZP_TOKEN"] = "demo-pat"
            environment["AZP_POOL"] = "demo"
            environment["AZP_AGENT_NAME"] = name
            environment["AZP_AGENT_DIR"] = directory.path
            environment["AZP_TERMINATION_LOG"] = workspace.appendingPathComponent("\(name).termination").path
            let readyFile = workspace.appendingPathComponent("\(name).ready").path
            environment["AZP_READY_FILE"] = readyFile
            environment["AZP_RELAUNCH_DELAY"] = "0"
            environment["AGENT_ALLOW_RUNASROOT"] = "1"
            // A safety net, as in production: an agent that never gets a job unregisters and exits by itself.
            environment["AZP_IDLE_TIMEOUT"] = "60"
            let process = Process()
            process.executableURL = entrypoint
            process.environment = environment
            process.standardOutput = output
            process.standardError = output
            // Once every job is done, idle entrypoints get SIGTERM: they unregister their agent and exit 0.
            let status: Int32 = try await withThrowingTaskGroup(of: Int32?.self) { group in
                group.addTask { try await Self.run(process) }
                group.addTask {
                    while !stop.isSet && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(200)) }
                    // The entrypoint may still be starting when the demo ends: stop it once its agent listens
                    // (the readiness file), like a pod past its readiness probe. This task is cancelled as soon as
                    // the entrypoint has exited.
                    while !Task.isCancelled {
                        if process.isRunning, FileManager.default.fileExists(atPath: readyFile) {
                            process.terminate()
                            return nil
                        }
                        try? await Task.sleep(for: .milliseconds(50))
                    }
                    return nil
                }
                while let next = try await group.next() {
                    if let status = next {
                        group.cancelAll()
                        return status
                    }
                }
                return -1
            }
            guard status == 0 else { throw ValidationError("\(name): agent-entrypoint exited \(status); see \(log.path)") }
        }
    }

    private static func run(_ process: Process) async throws -> Int32 {
        try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do { try process.run() } catch { continuation.resume(throwing: error) }
        }
    }
}
