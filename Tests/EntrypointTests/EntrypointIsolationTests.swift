import Foundation
import Shared
import Simulators
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Token hygiene and PID 1 duties, checked from inside a job the way a hostile build step would look.
@Suite("agent-entrypoint isolation", .timeLimit(.minutes(2)))
struct EntrypointIsolationTests {
    /// Replaces `config.sh` with a wrapper that records its arguments, then runs the real script.
    private func recordConfigArguments(_ fixture: EntrypointFixture) throws -> String {
        let directory = fixture.agentDirectory
        let log = fixture.path("config-argv.log")
        try FileManager.default.moveItem(
            at: directory.appendingPathComponent("config.sh"), to: directory.appendingPathComponent("config-real.sh"))
        let wrapper = """
            #!/bin/bash
            echo "$0 $*" >> '\(log)'
            exec "$(dirname "$0")/config-real.sh" "$@"

            """
        let path = directory.appendingPathComponent("config.sh").path
        try Data(wrapper.utf8).write(to: URL(fileURLWithPath: path))
        chmod(path, 0o755)
        return log
    }

    @Test(
        "the job sees no token: not in its environment, the listener's, /proc/<entrypoint>/environ or cmdline; config.sh never gets it on argv and never runs after the job",
        arguments: [false, true])
    func tokenIsInvisibleToJobs(runAsNobody: Bool) async throws {
        let nobody = runAsNobody && getuid() == 0
        try await withEntrypointWorld { simulator, fixture in
            var fixture = fixture
            let secret = "pat-\(UUID().uuidString)"
            await simulator.organization.addPersonalAccessToken(secret)
            fixture.environment["AZP_TOKEN"] = secret
            if nobody { try fixture.useCopiedBinaries() }
            let argvLog = try recordConfigArguments(fixture)
            // Same user for the entrypoint and the job, and not root (root may read any /proc/<pid>/environ).
            if nobody { try await fixture.runAsNobody() }
            let running = try fixture.start()
            _ = try await simulator.organization.waitUntilOnline(fixture.agentName)
            let out = fixture.root.path
            let script = """
                cat /proc/\(running.pid)/environ > \(out)/ep-environ 2>/dev/null; echo $? > \(out)/ep-environ.rc
                cat /proc/\(running.pid)/cmdline > \(out)/ep-cmdline 2>/dev/null
                cat /proc/$PPID/environ > \(out)/listener-environ 2>/dev/null
                env > \(out)/job-env
                """
            let requestId = try await simulator.organization.queueJobOrThrow(
                JobSpecification(pool: "pool-a", name: "Snoop", script: script))
            #expect(try await running.waitForExit() == 0, "\(running.output)")
            #expect(await simulator.organization.snapshot().request(requestId)?.result == .succeeded, "\(running.output)")

            func read(_ name: String) -> String {
                (try? String(contentsOfFile: "\(out)/\(name)", encoding: .isoLatin1)) ?? ""
            }
            let jobEnvironment = read("job-env")
            #expect(jobEnvironment.contains("PATH="), "the job ran and wrote its environment")
            #expect(!jobEnvironment.contains(secret))
            #expect(!jobEnvironment.contains("AZP_TOKEN="))
            #expect(jobEnvironment.contains("VSO_AGENT_IGNORE=AZP_TOKEN,AZP_TOKEN_FILE"))
            #expect(!read("listener-environ").contains(secret))
            #expect(!read("ep-environ").contains(secret))
            #expect(!read("ep-cmdline").contains(secret))
            let readStatus = read("ep-environ.rc").trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(Int(readStatus) != nil, "the job tried to read /proc/<entrypoint>/environ")
            if nobody {
                // Non-dumpable: the same, non-root user cannot open the entrypoint's environ at all.
                #expect(readStatus != "0")
            } else if getuid() == 0 {
                // Root may read it; the token's bytes were wiped from the environment block, the rest is there.
                #expect(readStatus == "0")
                #expect(read("ep-environ").contains("AZP_POOL=pool-a"))
            }
            let argv = read("config-argv.log")
            #expect(argv.contains("--auth pat"), "config.sh was called: \(argv)")
            // After the job the agent directory is the job's: config.sh never runs again (unregistration is REST).
            #expect(!argv.contains(" remove"), "config.sh ran after the job: \(argv)")
            #expect(!argv.contains(secret))
            #expect(!running.output.contains(secret))
        }
    }

    @Test("PID 1: orphans left by job steps are reaped (unshare --pid --fork --mount-proc)", .enabled(if: getuid() == 0))
    func orphansAreReapedAsPidOne() async throws {
        try await withEntrypointWorld { simulator, fixture in
            var fixture = fixture
            fixture.wrapper = ["/usr/bin/unshare", "--pid", "--fork", "--mount-proc"]
            let running = try fixture.start()
            _ = try await simulator.organization.waitUntilOnline(fixture.agentName)
            let out = fixture.root.path
            // Three grandchildren orphaned at once (their parents exit immediately), re-parented to PID 1.
            let script = """
                (sleep 0.3 &) ; (sleep 0.3 &) ; (sleep 0.3 &)
                cat /proc/1/comm > \(out)/pid1
                sleep 1.5
                awk '{ print $3, $4 }' /proc/[0-9]*/stat 2>/dev/null | grep -c '^Z 1$' > \(out)/zombies
                true
                """
            let requestId = try await simulator.organization.queueJobOrThrow(
                JobSpecification(pool: "pool-a", name: "Orphans", script: script))
            #expect(try await running.waitForExit() == 0, "\(running.output)")
            #expect(await simulator.organization.snapshot().request(requestId)?.result == .succeeded)
            let pid1 = (try? String(contentsOfFile: "\(out)/pid1", encoding: .utf8)) ?? ""
            #expect(pid1.hasPrefix("agent-entrypoin"), "the entrypoint is PID 1 in the namespace: \(pid1)")
            let zombies = (try? String(contentsOfFile: "\(out)/zombies", encoding: .utf8)) ?? "missing"
            #expect(zombies.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "zombie children of PID 1: \(zombies)")
            let reaped = running.log.split(separator: " ").first { $0.hasPrefix("orphans_reaped=") }
                .flatMap { Int($0.dropFirst("orphans_reaped=".count)) } ?? 0
            #expect(reaped >= 3, "\(running.log)")
            #expect(await simulator.organization.snapshot().agent(named: fixture.agentName) == nil)
        }
    }
}
