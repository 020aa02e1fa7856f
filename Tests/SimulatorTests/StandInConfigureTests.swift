import AgentIdentity
import Foundation
import Simulators
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `config.sh` of the agent stand-in against the simulator: the real agent's flags, env inputs and failures.
@Suite("Agent stand-in: configure", .timeLimit(.minutes(1)))
struct StandInConfigureTests {
    @Test("configure registers the agent with its environment as capabilities, minus ignored and input variables")
    func configureRegistersAgent() async throws {
        try await withStandInSimulator { simulator in
            let agent = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { agent.removeDirectory() }
            let outcome = try await agent.run(
                "config.sh",
                [
                    "--unattended", "--url", simulator.organizationURL, "--auth", "PAT", "--pool", "pool-a",
                    "--agent", "agent-1", "--acceptTeeEula",
                ],
                environment: [
                    "VSTS_AGENT_INPUT_TOKEN": StandInAgent.pat,
                    "STANDIN_VISIBLE": "visible-value",
                    "STANDIN_HIDDEN": "hidden-value",
                    "STANDIN_LONG": String(repeating: "x", count: 1024),
                    "VSO_AGENT_IGNORE": "STANDIN_HIDDEN,OTHER",
                ]
            )
            #expect(outcome.exitCode == 0, "\(outcome.output)")
            for line in [
                ">> Connect:", "Connecting to server ...", ">> Register Agent:", "Scanning for tool capabilities.",
                "Connecting to the server.", "Successfully added the agent", "Testing agent connection.",
                ": Settings Saved.",
            ] {
                #expect(outcome.output.contains(line), "missing '\(line)' in:\n\(outcome.output)")
            }
            #expect(outcome.output.range(of: #"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ: Settings Saved\."#, options: .regularExpression) != nil)

            let registered = try #require(await simulator.organization.snapshot().agent(named: "agent-1"))
            let capabilities = registered.systemCapabilities
            #expect(capabilities["STANDIN_VISIBLE"] == "visible-value")
            #expect(capabilities["STANDIN_HIDDEN"] == nil)
            #expect(capabilities["STANDIN_LONG"] == nil)
            #expect(capabilities["VSTS_AGENT_INPUT_TOKEN"] == nil)
            #expect(capabilities["Agent.Name"] == "agent-1")
            #expect(capabilities["Agent.OS"] == "Linux")
            #expect(["X64", "ARM64"].contains(capabilities["Agent.OSArchitecture"] ?? ""))
            #expect(capabilities["Agent.Version"] == "4.266.2")
            #expect(capabilities["Agent.HomeDirectory"] == agent.root.path)
            #expect(capabilities["InteractiveSession"] == "False")
            #expect(capabilities["sh"]?.hasSuffix("/sh") == true)
            #expect(registered.version == "4.266.2")

            let settings = try agent.settingsFile()
            #expect(settings["agentId"] as? Int == registered.id)
            #expect(settings["agentName"] as? String == "agent-1")
            #expect(settings["poolName"] as? String == "pool-a")
            #expect(settings["serverUrl"] as? String == simulator.organizationURL)
            #expect(settings["workFolder"] as? String == "_work")
            #expect(settings["acceptTeeEula"] as? Bool == true)
            let credentials = try agent.credentialsFile()
            #expect(credentials["scheme"] as? String == "OAuth")
            let data = try #require(credentials["data"] as? [String: String])
            #expect(data["clientId"] == registered.clientId)
            #expect(data["authorizationUrl"] == simulator.authorizationURL)
            #expect(data["oauthEndpointUrl"] == simulator.authorizationURL)

            // The RSA key: its public half is what was registered, the file is the owner's only.
            let keyData = try Data(contentsOf: agent.root.appendingPathComponent(".credentials_rsaparams"))
            #expect(keyData.starts(with: [0xEF, 0xBB, 0xBF]))
            let key = try AgentKey(parameters: RSAParametersFile.decode(keyData))
            #expect(key.publicKey.modulus == registered.publicKeyModulus)
            #expect(key.publicKey.exponent == registered.publicKeyExponent)
            for name in [".agent", ".credentials", ".credentials_rsaparams"] {
                #expect(try agent.fileAttributes(name)[.posixPermissions] as? Int == 0o600, "\(name)")
            }
            // configure's connection test fetched a token with it.
            #expect(await simulator.organization.snapshot().events.contains {
                $0.kind == .tokenIssued && $0.agentId == registered.id
            })
        }
    }

    @Test("every input also works as VSTS_AGENT_INPUT_<NAME> (any case); the command line wins")
    func environmentInputs() async throws {
        try await withStandInSimulator(pools: ["pool-a", "pool-b"]) { simulator in
            let agent = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { agent.removeDirectory() }
            let outcome = try await agent.run(
                "config.sh", ["--agent", "from-cli"],
                environment: [
                    "VSTS_AGENT_INPUT_URL": simulator.organizationURL,
                    "vsts_agent_input_Auth": "pat",
                    "VSTS_AGENT_INPUT_TOKEN": StandInAgent.pat,
                    "VSTS_AGENT_INPUT_POOL": "pool-b",
                    "VSTS_AGENT_INPUT_AGENT": "from-env",
                    "VSTS_AGENT_INPUT_WORK": "custom-work",
                    "VSTS_AGENT_INPUT_UNATTENDED": "true",
                    "VSTS_AGENT_INPUT_ACCEPTTEEEULA": "True",
                ]
            )
            #expect(outcome.exitCode == 0, "\(outcome.output)")
            let snapshot = await simulator.organization.snapshot()
            let registered = try #require(snapshot.agent(named: "from-cli"))
            #expect(snapshot.agent(named: "from-env") == nil)
            #expect(registered.poolId == snapshot.pool(named: "pool-b")?.id)
            let settings = try agent.settingsFile()
            #expect(settings["workFolder"] as? String == "custom-work")
            #expect(settings["acceptTeeEula"] as? Bool == true)
            #expect(registered.systemCapabilities.keys.contains { $0.uppercased().hasPrefix("VSTS_AGENT_INPUT_") } == false)
        }
    }

    @Test("unattended configure without --url fails with the real message")
    func missingURL() async throws {
        try await withStandInSimulator { simulator in
            let agent = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { agent.removeDirectory() }
            let outcome = try await agent.run(
                "config.sh", ["--unattended", "--auth", "pat", "--token", StandInAgent.pat, "--pool", "pool-a"]
            )
            #expect(outcome.exitCode == 1)
            #expect(outcome.output.contains("Invalid configuration provided for url. Terminating unattended configuration."))
            #expect(!agent.isConfigured)
        }
    }

    @Test("a bad PAT fails with VS30063")
    func badToken() async throws {
        try await withStandInSimulator { simulator in
            let agent = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { agent.removeDirectory() }
            let outcome = try await agent.run(
                "config.sh",
                ["--unattended", "--url", simulator.organizationURL, "--auth", "pat", "--token", "wrong", "--pool", "pool-a"]
            )
            #expect(outcome.exitCode == 1)
            #expect(outcome.output.contains("VS30063: You are not authorized to access \(simulator.organizationURL)."))
            #expect(await simulator.organization.snapshot().agents.isEmpty)
        }
    }

    @Test("without --auth on a plain-http URL the default is Negotiate, which the stand-in refuses")
    func negotiateDefault() async throws {
        try await withStandInSimulator { simulator in
            let agent = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { agent.removeDirectory() }
            let outcome = try await agent.run(
                "config.sh", ["--unattended", "--url", simulator.organizationURL, "--token", StandInAgent.pat, "--pool", "pool-a"]
            )
            #expect(outcome.exitCode == 1)
            #expect(outcome.output.contains("negotiate"))
            #expect(await simulator.organization.snapshot().agents.isEmpty)
        }
    }

    @Test("an unknown pool fails with 'Agent pool not found'")
    func unknownPool() async throws {
        try await withStandInSimulator { simulator in
            let agent = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { agent.removeDirectory() }
            let outcome = try await agent.run("config.sh", agent.configureArguments(pool: "nope", agent: "a"))
            #expect(outcome.exitCode == 1)
            #expect(outcome.output.contains("Agent pool not found: 'nope'"))
        }
    }

    @Test("--replace takes over an existing registration with a new OAuth client; without it configure fails")
    func replace() async throws {
        try await withStandInSimulator { simulator in
            let first = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { first.removeDirectory() }
            let second = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { second.removeDirectory() }
            let configured = try await first.run("config.sh", first.configureArguments(pool: "pool-a", agent: "same"))
            #expect(configured.exitCode == 0, "\(configured.output)")
            let original = try #require(await simulator.organization.snapshot().agent(named: "same"))

            let refused = try await second.run("config.sh", second.configureArguments(pool: "pool-a", agent: "same"))
            #expect(refused.exitCode == 1)
            #expect(refused.output.contains("Pool \(original.poolId) already contains an agent with name same."))
            #expect(!second.isConfigured)

            let replaced = try await second.run(
                "config.sh", second.configureArguments(pool: "pool-a", agent: "same", extra: ["--replace"])
            )
            #expect(replaced.exitCode == 0, "\(replaced.output)")
            #expect(replaced.output.contains("Successfully replaced the agent"))
            let snapshot = await simulator.organization.snapshot()
            #expect(snapshot.agents.filter { $0.name == "same" && $0.isRegistered }.count == 1)
            let now = try #require(snapshot.agent(named: "same"))
            #expect(now.id == original.id)
            #expect(now.clientId != original.clientId)
            #expect(now.publicKeyModulus != original.publicKeyModulus, "--replace registers a new key")
            let data = try #require(second.credentialsFile()["data"] as? [String: String])
            #expect(data["clientId"] == now.clientId)
        }
    }

    @Test("configuring an already configured directory fails")
    func alreadyConfigured() async throws {
        try await withStandInSimulator { simulator in
            let agent = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { agent.removeDirectory() }
            let first = try await agent.run("config.sh", agent.configureArguments(pool: "pool-a", agent: "twice"))
            #expect(first.exitCode == 0, "\(first.output)")
            let second = try await agent.run("config.sh", agent.configureArguments(pool: "pool-a", agent: "twice"))
            #expect(second.exitCode == 1)
            #expect(second.output.contains("Cannot configure the agent because it is already configured."))
        }
    }

    @Test("unknown arguments are reported and ignored; --version prints the layout's version")
    func unknownArgumentsAndVersion() async throws {
        try await withStandInSimulator { simulator in
            let agent = try StandInAgent.install(organizationURL: simulator.organizationURL)
            defer { agent.removeDirectory() }
            let outcome = try await agent.run(
                "config.sh", agent.configureArguments(pool: "pool-a", agent: "extra", extra: ["--bogus", "value"])
            )
            #expect(outcome.exitCode == 0, "\(outcome.output)")
            #expect(outcome.output.contains("Unrecognized command-line input arguments: 'bogus'"))
            let version = try await agent.run("config.sh", ["--version"])
            #expect(version.exitCode == 0)
            #expect(version.output.trimmingCharacters(in: .whitespacesAndNewlines) == "4.266.2")
        }
    }

    @Test("as root, config.sh and run.sh refuse to run without AGENT_ALLOW_RUNASROOT", .enabled(if: getuid() == 0))
    func rootRefusal() async throws {
        let agent = try StandInAgent.install(organizationURL: "http://127.0.0.1:1/none")
        defer { agent.removeDirectory() }
        var withoutOverride = agent
        withoutOverride.environment["AGENT_ALLOW_RUNASROOT"] = nil
        let config = try await withoutOverride.run("config.sh", ["--version"])
        #expect(config.exitCode == 1)
        #expect(config.output.contains("Must not run with sudo"))
        let run = try await withoutOverride.run("run.sh", ["--once"])
        #expect(run.exitCode == 1)
        #expect(run.output.contains("Must not run interactively with sudo"))
        let allowed = try await agent.run("config.sh", ["--version"])
        #expect(allowed.exitCode == 0)
    }
}
