import Foundation
import Shared
import Simulators
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `AZP_REGISTRATION=controller`: the pool controller registered the agent and mounted its identity; the pod holds
/// no token, runs one job, and leaves the registration for the controller to delete.
@Suite("agent-entrypoint in controller registration mode", .timeLimit(.minutes(2)))
struct EntrypointControllerModeTests {
    /// The fixture's environment for controller mode: no token at all, the registration directory set.
    private func controllerMode(_ fixture: inout EntrypointFixture, registration: URL) {
        fixture.environment["AZP_TOKEN"] = nil
        fixture.environment["AZP_TOKEN_FILE"] = nil
        fixture.environment["AZP_REGISTRATION"] = "controller"
        fixture.environment["AZP_REGISTRATION_DIR"] = registration.path
    }

    /// A registration directory with placeholder files (for the checks that fail before any is used).
    private func placeholderRegistration(_ fixture: EntrypointFixture, without missing: String? = nil) throws -> URL {
        let directory = fixture.root.appendingPathComponent("registration")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for name in [".agent", ".credentials", ".credentials_rsaparams"] where name != missing {
            try Data(#"{"agentId": 41, "agentName": "placeholder", "poolId": 1}"#.utf8).write(to: directory.appendingPathComponent(name))
        }
        return directory
    }

    @Test("one job on the controller's registration: exit 0, unregistered false, the registration left in place, leftovers killed")
    func runsOneJob() async throws {
        try await withEntrypointWorld { simulator, fixture in
            var fixture = fixture
            let registration = try await ControllerRegistration.make(simulator, fixture)
            controllerMode(&fixture, registration: registration.directory)
            // What a previous occupant of the agent directory may have left: a symlink where a file goes.
            let elsewhere = fixture.root.appendingPathComponent("elsewhere")
            try Data("untouched".utf8).write(to: elsewhere)
            try FileManager.default.createSymbolicLink(
                atPath: fixture.agentDirectory.appendingPathComponent(".credentials").path, withDestinationPath: elsewhere.path)

            let running = try fixture.start()
            let agent = try await simulator.organization.waitUntilOnline(fixture.agentName)
            #expect(agent.id == registration.agentId)
            let out = fixture.root.path
            let script = """
                setsid sh -c 'echo $$ > "$0/bgpid.tmp"; mv "$0/bgpid.tmp" "$0/bgpid"; while [ -d "$0" ]; do sleep 0.05; done' '\(out)' &
                while [ ! -s '\(out)/bgpid' ]; do sleep 0.01; done
                env > '\(out)/job-env'
                """
            let requestId = try await simulator.organization.queueJobOrThrow(
                JobSpecification(pool: "pool-a", name: "OnControllerIdentity", script: script))
            #expect(try await running.waitForExit() == 0, "\(running.output)")

            let snapshot = await simulator.organization.snapshot()
            #expect(snapshot.request(requestId)?.result == .succeeded, "\(running.output)")
            #expect(snapshot.agent(named: fixture.agentName)?.id == registration.agentId, "the controller deletes it, not the pod")
            #expect(snapshot.count("DELETE pools/{poolId}/agents/{agentId}") == 0)
            let message = try running.terminationMessage()
            #expect(message.exitCode == 0)
            #expect(message.reason == .jobCompleted)
            #expect(!message.unregistered)
            #expect(message.agentId == registration.agentId)
            #expect(message.agentName == fixture.agentName)
            #expect(message.jobResult == "Succeeded")

            let leftover = try #require(pid_t(((try? String(contentsOfFile: "\(out)/bgpid", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)))
            #expect(processHasEnded(leftover), "the job's leftover process \(leftover) is still running")
            killIfStillRunning(leftover, commandContaining: "bgpid.tmp")  // a regression must not leak it
            let jobEnvironment = (try? String(contentsOfFile: "\(out)/job-env", encoding: .utf8)) ?? ""
            #expect(jobEnvironment.contains("PATH="))
            #expect(!jobEnvironment.contains(EntrypointFixture.pat))
            #expect(!running.output.contains(EntrypointFixture.pat))
            // The identity was copied as private files, replacing the symlink rather than writing through it.
            for name in [".agent", ".credentials", ".credentials_rsaparams"] {
                let attributes = try FileManager.default.attributesOfItem(atPath: fixture.agentDirectory.appendingPathComponent(name).path)
                #expect(attributes[.type] as? FileAttributeType == .typeRegular, "\(name)")
                #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600, "\(name)")
                #expect(FileManager.default.fileExists(atPath: registration.directory.appendingPathComponent(name).path), "mounted \(name) untouched")
            }
            #expect(try String(contentsOf: elsewhere, encoding: .utf8) == "untouched")
        }
    }

    @Test("SIGTERM while idle: the listener stops, exit 0 within seconds, the registration is left for the controller")
    func sigtermWhileIdle() async throws {
        try await withEntrypointWorld { simulator, fixture in
            var fixture = fixture
            let registration = try await ControllerRegistration.make(simulator, fixture)
            controllerMode(&fixture, registration: registration.directory)
            let running = try fixture.start()
            _ = try await simulator.organization.waitUntilOnline(fixture.agentName)
            try await running.waitForOutput("Listening for Jobs")
            let signalled = ContinuousClock.now
            running.send(SIGTERM)
            #expect(try await running.waitForExit() == 0, "\(running.output)")
            // Only tells "stops at once" from "waits out a timeout" (see sigtermWhileIdle in the lifecycle tests).
            #expect(ContinuousClock.now - signalled < .seconds(20))
            let message = try running.terminationMessage()
            #expect(message.reason == .stoppedWhileIdle)
            #expect(!message.unregistered)
            let snapshot = await simulator.organization.snapshot()
            #expect(snapshot.agent(named: fixture.agentName)?.id == registration.agentId)
            #expect(snapshot.agent(named: fixture.agentName)?.status == .offline, "the listener closed its session")
            #expect(snapshot.count("DELETE pools/{poolId}/agents/{agentId}") == 0)
        }
    }

    @Test("a token in controller mode: exit 2 naming the variable", arguments: ["AZP_TOKEN", "AZP_TOKEN_FILE"])
    func tokenIsRefused(variable: String) async throws {
        var fixture = try EntrypointFixture.make(organizationURL: "http://127.0.0.1:9/org", installAgent: false)
        defer { fixture.cleanUp() }
        controllerMode(&fixture, registration: try placeholderRegistration(fixture))
        fixture.environment[variable] = variable == "AZP_TOKEN" ? EntrypointFixture.pat : fixture.path("token")
        let running = try fixture.start()
        #expect(try await running.waitForExit() == EntrypointExitCode.invalidConfiguration.rawValue, "\(running.output)")
        #expect(running.log.contains("\(variable) ") && running.log.contains("must not be set"), "\(running.log)")
        #expect(!running.log.contains(EntrypointFixture.pat))
        let message = try running.terminationMessage()
        #expect(message.reason == .invalidConfiguration)
        #expect(!message.unregistered)
    }

    @Test("a missing identity file: exit 2 naming it", arguments: [".agent", ".credentials", ".credentials_rsaparams"])
    func missingFile(name: String) async throws {
        var fixture = try EntrypointFixture.make(organizationURL: "http://127.0.0.1:9/org")
        defer { fixture.cleanUp() }
        let registration = try placeholderRegistration(fixture, without: name)
        controllerMode(&fixture, registration: registration)
        let running = try fixture.start()
        #expect(try await running.waitForExit() == EntrypointExitCode.invalidConfiguration.rawValue, "\(running.output)")
        #expect(running.log.contains(registration.appendingPathComponent(name).path + " is missing"), "\(running.log)")
        #expect(try running.terminationMessage().reason == .invalidConfiguration)
    }

    @Test("an unreadable identity file: exit 2 naming it")
    func unreadableFile() async throws {
        var fixture = try EntrypointFixture.make(organizationURL: "http://127.0.0.1:9/org")
        defer { fixture.cleanUp() }
        let registration = try placeholderRegistration(fixture, without: ".credentials")
        // A directory where the file should be: unreadable as a file, for root too.
        try FileManager.default.createDirectory(at: registration.appendingPathComponent(".credentials"), withIntermediateDirectories: false)
        controllerMode(&fixture, registration: registration)
        let running = try fixture.start()
        #expect(try await running.waitForExit() == EntrypointExitCode.invalidConfiguration.rawValue, "\(running.output)")
        #expect(running.log.contains("cannot read \(registration.appendingPathComponent(".credentials").path)"), "\(running.log)")
    }

    @Test("no agent in the image: no download without a token, exit 7 saying to bake it in")
    func noAgentNoDownload() async throws {
        try await withEntrypointWorld(installAgent: false) { simulator, fixture in
            var fixture = fixture
            controllerMode(&fixture, registration: try placeholderRegistration(fixture))
            let running = try fixture.start()
            #expect(try await running.waitForExit() == EntrypointExitCode.agentDownloadFailed.rawValue, "\(running.output)")
            #expect(await simulator.organization.snapshot().count("GET packages/{packageType}/{platform}") == 0)
            let message = try running.terminationMessage()
            #expect(message.message?.contains("bake it into the image") == true, "\(String(describing: message.message))")
            #expect(message.reason == .agentDownloadFailed)
            #expect(!message.unregistered)
        }
    }
}
