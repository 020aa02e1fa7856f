import ArgumentParser
import Foundation
import Kubernetes
import Logging
import Shared
import Simulators
import UnixSignals

/// `shoal-sim demo`: Shoal end to end on one machine — a real Kubernetes control plane, the real controller running
/// as its ServiceAccount, agent pods running the real `agent-entrypoint` on a local node; only Azure DevOps is
/// simulated. Plays a scenario (standby, a burst with demands, a pod killed mid-job, an orphan registration, the
/// return to standby), shows it live, and exits 0 only if every invariant held. See docs/demo.md.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run Shoal end to end locally: Kubernetes, pool-controller and agent pods for real, Azure DevOps simulated.",
        discussion: "Without --kubeconfig or --cluster-dir it starts (and stops) a local control plane; see docs/demo.md.")

    @Option(help: "Use this cluster instead of starting one (admin rights; agent pods still run as local processes).")
    var kubeconfig: String?

    @Option(help: "Use the local control plane started by `scripts/local-k8s start DIR`.")
    var clusterDir: String?

    @Option(help: "Jobs in the burst.")
    var jobs: Int = 16

    @Option(help: "Jobs queued per second.")
    var rate: Double = 4

    @Option(help: "Typical seconds a job runs (jobs take 0.5x, 1x or 1.5x of it).")
    var jobSeconds: Double = 3

    @Option(help: "Idle agents the AgentPool keeps ready.")
    var standby: Int = 2

    @Option(help: "The AgentPool's maximum number of agents.")
    var maxAgents: Int = 8

    @Option(help: "Give up after this many seconds.")
    var timeout: Double = 300

    @Flag(help: "Plain line output instead of the live table (also when stdout is not a terminal).")
    var noLive = false

    @Option(help: "Who registers the agents: controller (pods hold no PAT) or entrypoint (pods get the PAT).")
    var registration: String = RegistrationMode.controller.rawValue

    func validate() throws {
        guard kubeconfig == nil || clusterDir == nil else { throw ValidationError("--kubeconfig and --cluster-dir exclude each other") }
        guard (1...500).contains(jobs) else { throw ValidationError("--jobs must be between 1 and 500, got \(jobs)") }
        guard rate > 0, rate <= 100 else { throw ValidationError("--rate must be above 0 and at most 100 jobs per second, got \(rate)") }
        guard jobSeconds >= 0, jobSeconds <= 600 else { throw ValidationError("--job-seconds must be between 0 and 600, got \(jobSeconds)") }
        guard (1...20).contains(standby) else { throw ValidationError("--standby must be between 1 and 20, got \(standby)") }
        guard maxAgents >= standby + 1, maxAgents <= 50 else { throw ValidationError("--max-agents must be between --standby + 1 and 50, got \(maxAgents)") }
        guard timeout >= 30 else { throw ValidationError("--timeout must be at least 30 seconds, got \(timeout)") }
        guard RegistrationMode(rawValue: registration) != nil else {
            throw ValidationError("--registration must be controller or entrypoint, got \(registration)")
        }
    }

    /// How the run ended.
    private enum End: Sendable {
        case played(DemoFacts)
        case failed(String)
        case interrupted(String)
    }

    func run() async throws {
        let console = DemoConsole(live: !noLive && isatty(1) == 1)
        let executables = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().path
        let workspace = FileManager.default.temporaryDirectory.appendingPathComponent("shoal-demo-\(getpid())").path
        try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
        let logger = Logger(label: "shoal.demo", factory: { _ in SwiftLogNoOpLogHandler() })
        let stack = DemoStack(workspace: workspace, executables: executables, say: { console.say("  " + $0) }, logger: logger)
        let board = DemoBoard()
        let tracker = PodTracker()
        let workload = DemoWorkload(
            jobs: jobs, rate: rate, jobSeconds: jobSeconds, standby: standby, maxAgents: maxAgents,
            registration: RegistrationMode(rawValue: registration) ?? .controller)
        let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm)

        console.say("Shoal demo: Kubernetes, pool-controller and agent-entrypoint are real; Azure DevOps is simulated")
        console.say("  workspace (controller and pod logs): \(workspace)")
        let end: End = await withTaskGroup(of: End?.self) { group in
            group.addTask {
                do {
                    return .played(try await play(stack: stack, board: board, tracker: tracker, workload: workload, console: console))
                } catch is CancellationError {
                    return nil
                } catch {
                    return .failed("\(error)")
                }
            }
            group.addTask {
                for await signal in signals { return .interrupted("\(signal)") }
                return nil
            }
            var result: End = .interrupted("cancelled")
            if let first = await group.next(), let first { result = first }
            group.cancelAll()
            return result
        }
        console.finish()
        let organization = await stack.simulator?.organization
        let snapshot = await organization?.snapshot()
        let minutes = await board.elapsed / 60
        let peak = await tracker.peak
        let pods = await tracker.pods
        let tokenPods = (seen: await tracker.seen.count, holding: await tracker.holdingToken.count)
        let controllerUsage = await stack.controller.map { ProcessUsage.read(pid: $0.pid) } ?? nil
        console.say("  cleaning up: AgentPool, controller, local node\(await stack.startedClusterDirectory != nil ? ", control plane" : "")")
        await stack.tearDown()

        switch end {
        case .interrupted(let signal):
            console.say("interrupted (\(signal)): stopped everything the demo started")
            throw ExitCode(130)
        case .failed(let message):
            if let snapshot { console.say(DemoSummary(facts: DemoFacts(), snapshot: snapshot, pods: pods, peak: peak, workload: workload, minutes: minutes, tokenPods: tokenPods).report) }
            console.say("FAILED: \(message)\n  logs: \(workspace)")
            throw ExitCode(1)
        case .played(let facts):
            guard let snapshot else { throw ExitCode(1) }
            let summary = DemoSummary(facts: facts, snapshot: snapshot, pods: pods, peak: peak, workload: workload, minutes: minutes, tokenPods: tokenPods)
            console.say(summary.report)
            if let controllerUsage {
                console.say(String(format: "  pool-controller:         peak RSS %.1f MiB, CPU %.2f s over %.1f min", controllerUsage.peakResidentMiB, controllerUsage.cpuSeconds, minutes))
            }
            if summary.failures.isEmpty {
                try? FileManager.default.removeItem(atPath: workspace)
            } else {
                console.say("  logs: \(workspace)")
                throw ExitCode(1)
            }
        }
    }

    /// Starts the stack and plays the scenario while the observer shows it.
    private func play(stack: DemoStack, board: DemoBoard, tracker: PodTracker, workload: DemoWorkload, console: DemoConsole) async throws -> DemoFacts {
        let deadline = ContinuousClock.now + .seconds(timeout)
        let source: DemoClusterSource = kubeconfig.map { .kubeconfig($0) } ?? clusterDir.map { .localDirectory($0) } ?? .startLocal
        let (adminKubeconfig, controllerKubeconfig, identity) = try await stack.provideCluster(source)
        console.say("  cluster: \(await stack.clusterDescription)")
        let manifest = LocalCluster.repositoryRoot.appendingPathComponent("deploy/install.yaml").path
        let admin = try await stack.install(adminKubeconfig: adminKubeconfig, manifest: manifest)
        var knobs = SimulatorKnobs()
        knobs.sessionTimeout = .seconds(10)
        let simulator = try await stack.startSimulator(knobs: knobs)
        console.say("  Azure DevOps (simulated): \(simulator.organizationURL), pool '\(DemoNames.azurePool)'")
        try await stack.startNode(adminKubeconfig: adminKubeconfig)
        console.say("  local node \(DemoNames.nodeName): runs agent pods as processes; image \(DemoNames.agentImage) = shoal-sim agent-image (stand-in agent + agent-entrypoint)")
        try await stack.startController(kubeconfig: controllerKubeconfig)
        console.say("  pool-controller: running as \(identity), watching namespace \(DemoNames.agentNamespace)")
        try await stack.createPool(spec: poolSpec(organizationURL: simulator.organizationURL, nodeName: kubeconfig == nil ? nil : DemoNames.nodeName))
        console.say("  AgentPool \(DemoNames.agentNamespace)/\(DemoNames.pool): standby \(workload.standby), max \(workload.maxAgents), capabilities \(DemoWorkload.capabilities.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "))\n")

        let scenario = DemoScenario(
            organization: simulator.organization, workload: workload, board: board, tracker: tracker, nodeDirectory: stack.nodeDirectory,
            deadline: deadline, health: { await stack.crashedProcess() })
        let controllerLog = stack.controllerLog
        return try await withThrowingTaskGroup(of: DemoFacts?.self) { group in
            group.addTask {
                try await tracker.follow(admin)
                return nil
            }
            group.addTask {
                var reader = ControllerLogReader(path: controllerLog)
                while !Task.isCancelled {
                    for decision in reader.newDecisions() { await board.note(decision) }
                    let frame = await Self.frame(board: board, tracker: tracker, organization: simulator.organization, admin: admin, workload: workload)
                    console.show(frame, events: await board.events, total: await board.plannedJobs)
                    try? await Task.sleep(for: .milliseconds(500))
                }
                return nil
            }
            group.addTask { try await scenario.play() }
            while let next = try await group.next() {
                if let facts = next {
                    // A last frame with the final counts and decisions.
                    try? await Task.sleep(for: .milliseconds(600))
                    group.cancelAll()
                    return facts
                }
            }
            throw DemoFailure("the scenario ended without a result")
        }
    }

    /// The demo's AgentPool spec: the agent image the local node maps, fast timings, the demo's capabilities.
    private func poolSpec(organizationURL: String, nodeName: String?) -> KubeJSON {
        var environment: [KubeJSON] = [["name": "AZP_READY_FILE", "value": "ready"], ["name": "AZP_RELAUNCH_DELAY", "value": "0"]]
        for (name, value) in DemoWorkload.capabilities.sorted(by: { $0.key < $1.key }) {
            environment.append(["name": .string(name), "value": .string(value)])
        }
        var podSpec: KubeJSON = [
            "terminationGracePeriodSeconds": 30,
            "containers": [["name": "agent", "image": .string(DemoNames.agentImage), "env": .array(environment)]],
        ]
        // A real cluster's scheduler would place the pods on real nodes, where the demo image does not exist.
        if let nodeName { podSpec["nodeName"] = .string(nodeName) }
        return [
            "organizationUrl": .string(organizationURL), "poolName": .string(DemoNames.azurePool), "tokenSecretRef": ["name": "azdo"],
            // Controller registration (the default, recommended): no agent pod holds the PAT.
            "registration": .string(registration),
            "standby": .int(Int64(standby)), "maxAgents": .int(Int64(maxAgents)),
            "capabilities": .object(DemoWorkload.capabilities.mapValues { .string($0) }),
            "template": ["spec": podSpec],
            "timing": ["pollIntervalSeconds": 1, "idleScaleDownDelaySeconds": 3, "orphanGracePeriodSeconds": 5, "pendingTimeoutSeconds": 120],
        ]
    }

    /// Gathers one frame from the simulator, the pod watch and the AgentPool's status.
    private static func frame(
        board: DemoBoard, tracker: PodTracker, organization: SimulatedOrganization, admin: KubernetesClient, workload: DemoWorkload
    ) async -> DemoFrame {
        let snapshot = await organization.snapshot()
        let ids = Set(await board.requestIds)
        let mine = snapshot.requests.filter { ids.contains($0.requestId) }
        var frame = DemoFrame(elapsed: await board.elapsed, step: await board.step)
        frame.jobsTotal = await board.plannedJobs
        frame.jobsQueued = mine.count { $0.phase == .queued }
        frame.jobsRunning = mine.count { $0.phase == .assigned || $0.phase == .running }
        frame.jobsDone = mine.count(where: \.isFinished)
        let agents = DemoScenario.ours(snapshot)
        frame.agentsBusy = agents.count { $0.assignedRequestId != nil }
        frame.agentsIdle = agents.count { $0.status == .online && $0.assignedRequestId == nil }
        frame.agentsOffline = agents.count { $0.status != .online && $0.assignedRequestId == nil }
        frame.placeholder = snapshot.agent(named: DemoScenario.placeholder)?.isRegistered == true
        frame.pods = await tracker.byColumn()
        frame.peakPods = await tracker.peak
        frame.maxAgents = workload.maxAgents
        if let pool = try? await admin.get(DynamicObject.self, DemoNames.agentPools, namespace: DemoNames.agentNamespace, name: DemoNames.pool) {
            let status = pool.json["status"]
            func number(_ key: String) -> String { status?[key]?.intValue.map(String.init) ?? "-" }
            let ready = status?["conditions"]?.arrayValue?.first { $0["type"]?.stringValue == "Ready" }
            frame.poolStatus = "Queued \(number("queued"))  Busy \(number("busy"))  Idle \(number("idle"))  Starting \(number("starting"))  Ready \(ready?["status"]?.stringValue ?? "-")"
        }
        return frame
    }
}
