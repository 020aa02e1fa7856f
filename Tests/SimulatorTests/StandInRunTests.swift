import Foundation
import Shared
import Simulators
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `run.sh` of the agent stand-in against the simulator: sessions, jobs, results, signals and refresh.
@Suite("Agent stand-in: run", .timeLimit(.minutes(1)))
struct StandInRunTests {
    /// Installs and configures an agent named `name` in `pool-a`.
    private func configuredAgent(_ simulator: AzureDevOpsSimulator, name: String) async throws -> StandInAgent {
        let agent = try StandInAgent.install(organizationURL: simulator.organizationURL)
        let outcome = try await agent.run("config.sh", agent.configureArguments(pool: "pool-a", agent: name))
        try #require(outcome.exitCode == 0, "configure failed:\n\(outcome.output)")
        return agent
    }

    private func waitOnline(_ simulator: AzureDevOpsSimulator, _ name: String) async throws {
        try await simulator.organization.waitUntil(timeout: .seconds(20)) { snapshot in
            snapshot.agent(named: name)?.status == .online
        }
    }

    @Test("run.sh --once runs one job, finishes it succeeded, goes offline and exits 0")
    func runOnceHappyPath() async throws {
        try await withStandInSimulator { simulator in
            let agent = try await configuredAgent(simulator, name: "once")
            defer { agent.removeDirectory() }
            let (outcome, requestId) = try await agent.start("run.sh", ["--once"]) { _, log in
                try await log.waitFor("Listening for Jobs")
                try await waitOnline(simulator, "once")
                return try await simulator.organization.queueJobOrThrow(
                    JobSpecification(pool: "pool-a", name: "Build", script: "echo hello-from-job; pwd")
                )
            }
            #expect(outcome.exitCode == 0, "\(outcome.output)")
            for line in ["Scanning for tool capabilities.", "Connecting to the server.", "Z: Listening for Jobs",
                         "Z: Running job: Build", "hello-from-job", "Z: Job Build completed with result: Succeeded"]
            {
                #expect(outcome.output.contains(line), "missing '\(line)' in:\n\(outcome.output)")
            }
            #expect(outcome.output.contains(agent.root.appendingPathComponent("_work/1/s").path))
            let snapshot = try await simulator.organization.waitUntil { snapshot in
                snapshot.agent(named: "once")?.status == .offline
            }
            let request = try #require(snapshot.request(requestId))
            #expect(request.result == .succeeded)
            #expect(request.receiveTime != nil)
            #expect(snapshot.sessions.isEmpty)
        }
    }

    @Test("a failing script finishes the job failed")
    func jobFailure() async throws {
        try await withStandInSimulator { simulator in
            let agent = try await configuredAgent(simulator, name: "failing")
            defer { agent.removeDirectory() }
            let (outcome, requestId) = try await agent.start("run.sh", ["--once"]) { _, log in
                try await log.waitFor("Listening for Jobs")
                try await waitOnline(simulator, "failing")
                return try await simulator.organization.queueJobOrThrow(
                    JobSpecification(pool: "pool-a", name: "Broken", script: "echo about-to-fail; exit 3")
                )
            }
            #expect(outcome.exitCode == 0, "\(outcome.output)")
            #expect(outcome.output.contains("Job Broken completed with result: Failed"))
            #expect(await simulator.organization.snapshot().request(requestId)?.result == .failed)
        }
    }

    @Test("the job sees the listener's environment plus its variables, but never VSTS_AGENT_INPUT_*")
    func jobEnvironment() async throws {
        try await withStandInSimulator { simulator in
            let agent = try await configuredAgent(simulator, name: "env")
            defer { agent.removeDirectory() }
            let script = #"echo "TOKEN=${VSTS_AGENT_INPUT_TOKEN:-absent}"; echo "JOBVAR=$STANDIN_JOB_VAR"; echo "LISTENERVAR=$STANDIN_LISTENER_VAR""#
            let (outcome, _) = try await agent.start(
                "run.sh", ["--once"],
                environment: ["VSTS_AGENT_INPUT_TOKEN": StandInAgent.pat, "STANDIN_LISTENER_VAR": "from-listener"]
            ) { _, log in
                try await log.waitFor("Listening for Jobs")
                try await waitOnline(simulator, "env")
                return try await simulator.organization.queueJobOrThrow(
                    JobSpecification(
                        pool: "pool-a", name: "Env", script: script, variables: ["STANDIN_JOB_VAR": "from-job"]
                    )
                )
            }
            #expect(outcome.exitCode == 0, "\(outcome.output)")
            #expect(outcome.output.contains("TOKEN=absent"))
            #expect(outcome.output.contains("JOBVAR=from-job"))
            #expect(outcome.output.contains("LISTENERVAR=from-listener"))
        }
    }

    @Test("SIGTERM mid-job terminates the job's process group, finishes it canceled and exits 0")
    func sigtermMidJob() async throws {
        try await withStandInSimulator { simulator in
            let agent = try await configuredAgent(simulator, name: "term")
            defer { agent.removeDirectory() }
            let script = "trap 'echo job-got-term; exit 143' TERM; echo job-started; sleep 30 & wait"
            let (outcome, requestId) = try await agent.start("run.sh", ["--once"]) { pid, log in
                try await log.waitFor("Listening for Jobs")
                try await waitOnline(simulator, "term")
                let requestId = try await simulator.organization.queueJobOrThrow(
                    JobSpecification(pool: "pool-a", name: "Long", script: script)
                )
                try await log.waitFor("job-started")
                let listener = try await ProcessTree.child(of: pid)
                kill(listener, SIGTERM)
                return requestId
            }
            #expect(outcome.exitCode == 0, "\(outcome.output)")
            #expect(outcome.output.contains("job-got-term"))
            #expect(outcome.output.contains("Job Long completed with result: Canceled"))
            let snapshot = try await simulator.organization.waitUntil { snapshot in
                snapshot.agent(named: "term")?.status == .offline
            }
            #expect(snapshot.request(requestId)?.result == .canceled)
        }
    }

    @Test("a JobCancel cancels the running job; without --once the listener keeps listening until SIGINT")
    func jobCancelAndSigint() async throws {
        try await withStandInSimulator { simulator in
            let agent = try await configuredAgent(simulator, name: "cancel")
            defer { agent.removeDirectory() }
            let (outcome, requestId) = try await agent.start("run.sh") { pid, log in
                try await log.waitFor("Listening for Jobs")
                try await waitOnline(simulator, "cancel")
                let requestId = try await simulator.organization.queueJobOrThrow(
                    JobSpecification(pool: "pool-a", name: "Cancellable", script: "echo cancellable-started; sleep 30")
                )
                try await log.waitFor("cancellable-started")
                try await simulator.organization.cancelJob(requestId: requestId)
                try await log.waitFor("Job Cancellable completed with result: Canceled")
                try await simulator.organization.waitUntil { $0.request(requestId)?.result == .canceled }
                // Still listening: a second job runs.
                let second = try await simulator.organization.queueJobOrThrow(
                    JobSpecification(pool: "pool-a", name: "Second", script: "echo second-ran")
                )
                try await log.waitFor("Job Second completed with result: Succeeded")
                try await simulator.organization.waitUntil { $0.request(second)?.result == .succeeded }
                kill(try await ProcessTree.child(of: pid), SIGINT)
                return requestId
            }
            #expect(outcome.exitCode == 0, "\(outcome.output)")
            #expect(outcome.output.contains("Exiting..."))
            #expect(await simulator.organization.snapshot().request(requestId)?.result == .canceled)
            try await simulator.organization.waitUntil { $0.agent(named: "cancel")?.status == .offline }
        }
    }

    @Test("AgentRefresh under --once exits 4; run.sh relaunches the listener, which then runs the job")
    func refreshRelaunch() async throws {
        try await withStandInSimulator { simulator in
            let agent = try await configuredAgent(simulator, name: "refresh")
            defer { agent.removeDirectory() }
            await simulator.organization.refreshNextSession()
            let (outcome, requestId) = try await agent.start(
                "run.sh", ["--once"], environment: ["AGENT_STANDIN_RELAUNCH_DELAY": "0"]
            ) { _, log in
                try await log.waitFor("Listening for Jobs", count: 2)
                try await waitOnline(simulator, "refresh")
                return try await simulator.organization.queueJobOrThrow(
                    JobSpecification(pool: "pool-a", name: "AfterRefresh", script: "echo after-refresh")
                )
            }
            #expect(outcome.exitCode == 0, "\(outcome.output)")
            #expect(outcome.output.contains("Agent will exit shortly for update"))
            #expect(outcome.output.contains("Job AfterRefresh completed with result: Succeeded"))
            #expect(await simulator.organization.snapshot().request(requestId)?.result == .succeeded)
        }
    }

    @Test("run without configuration fails with 'Agent is not configured.'")
    func notConfigured() async throws {
        let agent = try StandInAgent.install(organizationURL: "http://127.0.0.1:1/none")
        defer { agent.removeDirectory() }
        let outcome = try await agent.run("run.sh", ["--once"])
        #expect(outcome.exitCode == 1)
        #expect(outcome.output.contains("Agent is not configured."))
    }

    @Test("a second listener for the same agent retries the session conflict, then gives up with exit 1")
    func sessionConflict() async throws {
        try await withStandInSimulator { simulator in
            let agent = try await configuredAgent(simulator, name: "conflict")
            defer { agent.removeDirectory() }
            let (first, second) = try await agent.start("run.sh") { pid, log in
                try await log.waitFor("Listening for Jobs")
                try await waitOnline(simulator, "conflict")
                let second = try await agent.run(
                    "run.sh", ["--once"], environment: ["AGENT_STANDIN_SESSION_RETRY_SECONDS": "2"]
                )
                kill(try await ProcessTree.child(of: pid), SIGTERM)
                return second
            }
            #expect(first.exitCode == 0, "\(first.output)")
            #expect(second.exitCode == 1, "\(second.output)")
            #expect(second.output.contains("A session for this agent already exists."))
        }
    }

    @Test("transient poll failures print 'Agent connect error', then 'Agent reconnected.' and jobs still run")
    func reconnect() async throws {
        var knobs = SimulatorKnobs()
        knobs.messageLongPollTimeout = .milliseconds(500)
        try await withStandInSimulator(knobs: knobs) { simulator in
            let agent = try await configuredAgent(simulator, name: "flaky")
            defer { agent.removeDirectory() }
            let (outcome, requestId) = try await agent.start("run.sh", ["--once"]) { _, log in
                try await log.waitFor("Listening for Jobs")
                simulator.organization.addFault(
                    FaultRule(.serverError(status: 503), route: "pools/{poolId}/messages", method: "GET", count: 2)
                )
                try await log.waitFor("Agent connect error: ")
                try await log.waitFor("Agent reconnected.")
                try await waitOnline(simulator, "flaky")
                return try await simulator.organization.queueJobOrThrow(
                    JobSpecification(pool: "pool-a", name: "AfterOutage", script: "echo after-outage")
                )
            }
            #expect(outcome.exitCode == 0, "\(outcome.output)")
            #expect(outcome.output.contains("Retrying until reconnected."))
            #expect(outcome.output.contains("Job AfterOutage completed with result: Succeeded"))
            #expect(await simulator.organization.snapshot().request(requestId)?.result == .succeeded)
        }
    }

    @Test("the listener renews the job lock, so a job longer than the lock duration still succeeds")
    func lockRenewal() async throws {
        var knobs = SimulatorKnobs()
        knobs.lockDuration = .seconds(2)
        try await withStandInSimulator(knobs: knobs) { simulator in
            let agent = try await configuredAgent(simulator, name: "renewer")
            defer { agent.removeDirectory() }
            let (outcome, requestId) = try await agent.start("run.sh", ["--once"]) { _, log in
                try await log.waitFor("Listening for Jobs")
                try await waitOnline(simulator, "renewer")
                return try await simulator.organization.queueJobOrThrow(
                    JobSpecification(pool: "pool-a", name: "Slow", durationSeconds: 4.5)
                )
            }
            #expect(outcome.exitCode == 0, "\(outcome.output)")
            #expect(outcome.output.contains("Job Slow completed with result: Succeeded"))
            let request = try #require(await simulator.organization.snapshot().request(requestId))
            #expect(request.result == .succeeded)
            let queued = request.receiveTime ?? .distantFuture
            #expect((request.finishTime ?? .distantPast).timeIntervalSince(queued) >= 4.4)
        }
    }
}
