import Foundation
import Shared
import Simulators
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `config.sh remove` of the agent stand-in against the simulator.
@Suite("Agent stand-in: remove", .timeLimit(.minutes(1)))
struct StandInRemoveTests {
    private let removeArguments = ["remove", "--unattended", "--auth", "pat", "--token", StandInAgent.pat]

    @Test("remove deletes the agent and the config files")
    func removeSucceeds() async throws {
        try await withStandInSimulator { simulator in
            let agent = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { agent.removeDirectory() }
            let configured = try await agent.run("config.sh", agent.configureArguments(pool: "pool-a", agent: "gone"))
            try #require(configured.exitCode == 0, "\(configured.output)")

            let outcome = try await agent.run("config.sh", removeArguments)
            #expect(outcome.exitCode == 0, "\(outcome.output)")
            let expected = [
                "Removing agent from the server", "Connecting to server ...",
                "Succeeded: Removing agent from the server", "Removing .credentials",
                "Succeeded: Removing .credentials", "Removing .agent", "Succeeded: Removing .agent",
            ]
            let lines = outcome.output.split(separator: "\n").map(String.init)
            #expect(lines == expected, "\(outcome.output)")
            #expect(await simulator.organization.snapshot().agent(named: "gone") == nil)
            #expect(!agent.isConfigured)
            #expect(!FileManager.default.fileExists(atPath: agent.root.appendingPathComponent(".credentials").path))
            #expect(!FileManager.default.fileExists(
                atPath: agent.root.appendingPathComponent(".credentials_rsaparams").path))
        }
    }

    @Test("remove takes the token from VSTS_AGENT_INPUT_TOKEN")
    func removeWithEnvironmentToken() async throws {
        try await withStandInSimulator { simulator in
            let agent = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { agent.removeDirectory() }
            let configured = try await agent.run("config.sh", agent.configureArguments(pool: "pool-a", agent: "envrm"))
            try #require(configured.exitCode == 0, "\(configured.output)")
            let outcome = try await agent.run(
                "config.sh", ["REMOVE", "--unattended", "--auth", "pat"],
                environment: ["VSTS_AGENT_INPUT_TOKEN": StandInAgent.pat]
            )
            #expect(outcome.exitCode == 0, "\(outcome.output)")
            #expect(await simulator.organization.snapshot().agent(named: "envrm") == nil)
        }
    }

    @Test("remove is refused while the agent runs a job: exit 1, files kept")
    func removeRefusedWhileRunning() async throws {
        try await withStandInSimulator { simulator in
            let agent = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { agent.removeDirectory() }
            let configured = try await agent.run("config.sh", agent.configureArguments(pool: "pool-a", agent: "busy"))
            try #require(configured.exitCode == 0, "\(configured.output)")

            let (run, refused) = try await agent.start("run.sh", ["--once"]) { pid, log in
                try await log.waitFor("Listening for Jobs")
                try await simulator.organization.waitUntil { $0.agent(named: "busy")?.status == .online }
                _ = try await simulator.organization.queueJobOrThrow(
                    JobSpecification(pool: "pool-a", name: "Busy", script: "echo busy-started; sleep 30")
                )
                try await log.waitFor("busy-started")
                let refused = try await agent.run("config.sh", removeArguments)
                kill(try await ProcessTree.child(of: pid), SIGTERM)
                return refused
            }
            #expect(run.exitCode == 0, "\(run.output)")
            #expect(refused.exitCode == 1, "\(refused.output)")
            #expect(refused.output.contains("Failed: Removing agent from the server"))
            #expect(refused.output.contains("is currently running a job and cannot be deleted"))
            #expect(agent.isConfigured)
            #expect(await simulator.organization.snapshot().agent(named: "busy") != nil)
        }
    }

    @Test("remove is idempotent: agent already gone on the server, then config files already gone")
    func removeIdempotent() async throws {
        try await withStandInSimulator { simulator in
            let first = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { first.removeDirectory() }
            let second = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { second.removeDirectory() }
            let a = try await first.run("config.sh", first.configureArguments(pool: "pool-a", agent: "twin"))
            try #require(a.exitCode == 0, "\(a.output)")
            let b = try await second.run(
                "config.sh", second.configureArguments(pool: "pool-a", agent: "twin", extra: ["--replace"])
            )
            try #require(b.exitCode == 0, "\(b.output)")
            let removedBySecond = try await second.run("config.sh", removeArguments)
            try #require(removedBySecond.exitCode == 0, "\(removedBySecond.output)")

            let outcome = try await first.run("config.sh", removeArguments)
            #expect(outcome.exitCode == 0, "\(outcome.output)")
            #expect(outcome.output.contains("Does not exist. Skipping Removing agent from the server"))
            #expect(!first.isConfigured)

            let again = try await first.run("config.sh", removeArguments)
            #expect(again.exitCode == 0, "\(again.output)")
            #expect(again.output.contains(
                "Cannot connect to server, because config files are missing. Skipping removing agent from the server."
            ))
            #expect(again.output.contains("Does not exist. Skipping Removing .agent"))
        }
    }

    @Test("remove with a bad PAT fails with VS30063 and keeps the files")
    func removeBadToken() async throws {
        try await withStandInSimulator { simulator in
            let agent = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { agent.removeDirectory() }
            let configured = try await agent.run("config.sh", agent.configureArguments(pool: "pool-a", agent: "kept"))
            try #require(configured.exitCode == 0, "\(configured.output)")
            let outcome = try await agent.run("config.sh", ["remove", "--unattended", "--auth", "pat", "--token", "bad"])
            #expect(outcome.exitCode == 1)
            #expect(outcome.output.contains("VS30063"))
            #expect(agent.isConfigured)
        }
    }
}
