import Foundation
import Shared
import Simulators
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What a job can do to the entrypoint once it runs as the agent's user (issue 12): rewrite the agent directory,
/// read `/proc`, leave processes behind, point `.agent` at another agent. None of it may reach the token or
/// steer the unregistration.
@Suite("agent-entrypoint against hostile jobs", .timeLimit(.minutes(2)))
struct EntrypointHostileJobTests {
    /// The route of `DELETE pools/{poolId}/agents/{agentId}` in the simulator's request counts.
    private static let deleteRoute = "DELETE pools/{poolId}/agents/{agentId}"

    /// A job that replaces every file of the agent directory by a script recording its environment and argv,
    /// dumps every `/proc/*/environ` and `cmdline`, greps the agent directory for anything token-shaped and
    /// leaves a process behind that keeps reading `/proc` (with a heartbeat) until it is killed (or, should the
    /// entrypoint regress, until the fixture's directory is gone).
    /// Built at run time by the job (`REWRITTEN-%s-RAN` + `FILE`), so the job's own command line, which it
    /// dumps from `/proc`, does not contain it.
    private static let rewrittenMarker = "REWRITTEN-FILE-RAN"

    private static func hostileScript(agentDirectory: String, out: String) -> String {
        """
        agent='\(agentDirectory)'
        out='\(out)'
        loot="$out/loot"
        : >> "$loot"
        find "$agent" -path "$agent/_work" -prune -o \\( -type f -o -type l \\) -print > "$out/files"
        while IFS= read -r file; do
            mv "$file" "$file.orig-by-job"
            printf '#!/bin/sh\\n{ echo "REWRITTEN-%s-RAN $0 $*"; env; } >> %s\\nexit 0\\n' FILE "$loot" > "$file"
            chmod 755 "$file"
            echo "$file" >> "$out/replaced"
        done < "$out/files"
        for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do cat "$f" >> "$loot" 2>/dev/null; echo >> "$loot"; done
        grep -rao 'pat-[0-9A-Fa-f-]*' "$agent" >> "$loot" 2>/dev/null
        setsid sh -c 'echo $$ > "$0/bgpid.tmp"; mv "$0/bgpid.tmp" "$0/bgpid"; while [ -d "$0" ]; do cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline >> "$0/loot" 2>/dev/null; date +%s.%N > "$0/heartbeat"; sleep 0.05; done' "$out" &
        while [ ! -s "$out/bgpid" ] || [ ! -s "$out/heartbeat" ]; do sleep 0.01; done
        echo hostile job done
        """
    }

    @Test(
        "a job that rewrites every file of the agent directory, reads all of /proc and leaves a process behind gets no token; the leftover dies before the REST delete",
        arguments: [false, true])
    func hostileJobGetsNoToken(runAsNobody: Bool) async throws {
        let nobody = runAsNobody && getuid() == 0
        try await withEntrypointWorld { simulator, fixture in
            var fixture = fixture
            let secret = "pat-\(UUID().uuidString)"
            await simulator.organization.addPersonalAccessToken(secret)
            fixture.environment["AZP_TOKEN"] = secret
            if nobody { try await fixture.runAsNobody() }
            let running = try fixture.start()
            let agent = try await simulator.organization.waitUntilOnline(fixture.agentName)
            let out = fixture.root.path
            let requestId = try await simulator.organization.queueJobOrThrow(
                JobSpecification(pool: "pool-a", name: "Hostile", script: Self.hostileScript(agentDirectory: fixture.agentDirectory.path, out: out)))

            #expect(try await running.waitForExit() == 0, "\(running.output)")
            let snapshot = await simulator.organization.snapshot()
            #expect(snapshot.request(requestId)?.result == .succeeded, "\(running.output)")
            #expect(running.output.contains("hostile job done"))

            func read(_ name: String) -> String {
                (try? String(contentsOfFile: "\(out)/\(name)", encoding: .isoLatin1)) ?? ""
            }
            let replaced = read("replaced")
            for file in ["config.sh", "env.sh", "run.sh", "bin/Agent.Listener", ".agent", ".credentials"] {
                #expect(replaced.contains("\(fixture.agentDirectory.path)/\(file)\n"), "the job replaced \(file): \(replaced)")
            }
            let loot = read("loot")
            #expect(loot.contains("PATH="), "the job and its leftover read /proc/*/environ")
            #expect(!loot.contains(secret), "the token leaked to the job")
            #expect(!loot.contains(Self.rewrittenMarker), "a file the job rewrote was run after the job")
            #expect(!running.output.contains(secret))
            for path in FileManager.default.subpaths(atPath: out) ?? [] {
                let url = fixture.root.appendingPathComponent(path)
                guard (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true,
                    let data = FileManager.default.contents(atPath: url.path)
                else { continue }
                #expect(data.range(of: Data(secret.utf8)) == nil, "the token is in \(path)")
            }

            // The process the job left behind is dead, and its last heartbeat came before the delete.
            let leftover = try #require(pid_t(read("bgpid").trimmingCharacters(in: .whitespacesAndNewlines)), "the job started its leftover")
            #expect(processHasEnded(leftover), "the job's leftover process \(leftover) is still running")
            killIfStillRunning(leftover, commandContaining: "bgpid.tmp")  // a regression must not leak it
            let heartbeat = try #require(Double(read("heartbeat").trimmingCharacters(in: .whitespacesAndNewlines)))
            let deletion = try #require(snapshot.events.first { $0.kind == .agentDeleted && $0.agentId == agent.id })
            #expect(heartbeat < deletion.time.timeIntervalSince1970, "the leftover was still running when the agent was deleted")
            #expect(running.log.contains("leftover_processes_killed="), "\(running.log)")
            #expect(!running.log.contains("leftover_processes_killed=0"), "\(running.log)")

            #expect(snapshot.agent(named: fixture.agentName) == nil, "unregistered")
            #expect((snapshot.requestCounts[Self.deleteRoute]?[204] ?? 0) >= 1)
            let message = try running.terminationMessage()
            #expect(message.unregistered)
            #expect(message.reason == .jobCompleted)
        }
    }

    @Test("unregistration deletes the id the service assigned, even when the job points .agent at another agent")
    func rewrittenAgentFileCannotRedirectTheDelete() async throws {
        try await withEntrypointWorld { simulator, fixture in
            let organization = simulator.organization
            let decoy = try await organization.registerAgent(pool: "pool-a", .init(name: "decoy-\(UUID().uuidString.prefix(8).lowercased())"))
            let running = try fixture.start()
            let agent = try await organization.waitUntilOnline(fixture.agentName)
            #expect(agent.id != decoy.id)
            let forged = """
                {"agentId": \(decoy.id), "agentName": "\(decoy.name)", "poolId": \(decoy.poolId), "poolName": "pool-a", \
                "serverUrl": "\(simulator.organizationURL)", "workFolder": "_work", "acceptTeeEula": false}
                """
            let script = "printf '%s' '\(forged)' > '\(fixture.agentDirectory.path)/.agent'"
            let requestId = try await organization.queueJobOrThrow(JobSpecification(pool: "pool-a", name: "Forge", script: script))
            #expect(try await running.waitForExit() == 0, "\(running.output)")

            let snapshot = await organization.snapshot()
            #expect(snapshot.request(requestId)?.result == .succeeded)
            let written = (try? String(contentsOf: fixture.agentDirectory.appendingPathComponent(".agent"), encoding: .utf8)) ?? ""
            #expect(!written.contains("\"agentId\""), "the forged .agent is removed after the delete: \(written)")
            #expect(snapshot.agents.first { $0.id == decoy.id }?.isRegistered == true, "the decoy survives")
            #expect(snapshot.agents.first { $0.id == agent.id }?.isRegistered == false, "our agent is gone")
            #expect(snapshot.events.contains { $0.kind == .agentDeleted && $0.agentId == agent.id })
            #expect(!snapshot.events.contains { $0.kind == .agentDeleted && $0.agentId == decoy.id })
            #expect(snapshot.count(Self.deleteRoute) >= 1, "DELETE …/agents/\(agent.id) over REST")
            #expect(try running.terminationMessage().unregistered)
        }
    }

    @Test("SIGTERM while idle, and the DELETE is refused with a status and text never seen before: treated as busy, the job runs")
    func unknownRefusalMeansBusy() async throws {
        try await withEntrypointWorld { simulator, fixture in
            let organization = simulator.organization
            let running = try fixture.start()
            _ = try await organization.waitUntilOnline(fixture.agentName)
            try await running.waitForOutput("Listening for Jobs")
            organization.addFault(FaultRule(
                .errorStatus(status: 422, typeKey: "AgentPoolQuantumFluxException", message: "The flux capacitor is charging."),
                route: "pools/{poolId}/agents/{agentId}", method: "DELETE", count: 1))
            running.send(SIGTERM)
            try await running.waitForOutput("keeping the listener running")
            #expect(await organization.snapshot().agent(named: fixture.agentName) != nil, "still registered")
            let requestId = try await organization.queueJobOrThrow(
                JobSpecification(pool: "pool-a", name: "JustInTime", script: "echo arrived"))
            #expect(try await running.waitForExit() == 0, "\(running.output)")

            let snapshot = await organization.snapshot()
            #expect(snapshot.request(requestId)?.result == .succeeded, "\(running.output)")
            #expect(snapshot.agent(named: fixture.agentName) == nil, "unregistered after the job")
            #expect(snapshot.requestCounts[Self.deleteRoute]?[422] == 1)
            let message = try running.terminationMessage()
            #expect(message.reason == .drained)
            #expect(message.jobResult == "Succeeded")
            #expect(message.unregistered)
        }
    }
}
