import AgentIdentity
import Foundation
import Shared

/// The listener's exit codes (the real agent's `Constants.Agent.ReturnCode`).
enum ExitCode: Int32 {
    /// Normal exit, `--once` done, configure/remove OK, shutdown by signal.
    case success = 0
    /// Configuration or removal failed, not configured, non-retriable session failure.
    case terminatedError = 1
    /// Unexpected failure during startup.
    case retryableError = 2
    /// Self-update requested; relaunch needed.
    case agentUpdating = 3
    /// Self-update requested while in `--once` mode; `run.sh` relaunches.
    case runOnceAgentUpdating = 4
}

/// A failure that ends configure/remove with exit code 1 after printing `message` to stderr.
struct TerminatingError: Error {
    /// The line printed to stderr.
    let message: String
}

/// The credential inputs shared by configure and remove (`--url`, `--auth`, `--token`).
struct CredentialInputs {
    /// Resolves the PAT for `serverURL`, failing like the real agent when the auth type or token is unusable.
    ///
    /// The default auth is PAT only for https URLs with a dotted host (the hosted service); elsewhere it is
    /// Negotiate, which the stand-in cannot do — so callers must always pass `--auth pat`, as they should with the
    /// real agent too.
    static func personalAccessToken(_ settings: CommandSettings, serverURL: URL) throws -> String {
        let host = serverURL.host ?? ""
        let defaultAuth = serverURL.scheme?.lowercased() == "https" && host.contains(".") ? "pat" : "negotiate"
        let auth = (settings.value("auth") ?? defaultAuth).lowercased()
        guard auth == "pat" else {
            throw TerminatingError(
                message: "The agent stand-in only supports PAT authentication; auth type '\(auth)' is not "
                    + "supported. Pass --auth pat --token <PAT>."
            )
        }
        guard let token = settings.value("token") else {
            throw TerminatingError(message: Messages.invalidConfiguration("token"))
        }
        return token
    }
}

/// The real agent's fixed strings the stand-in prints.
enum Messages {
    /// Missing required input in unattended mode.
    static func invalidConfiguration(_ name: String) -> String {
        "Invalid configuration provided for \(name). Terminating unattended configuration."
    }

    /// Configure on an already configured directory.
    static let alreadyConfigured =
        "Cannot configure the agent because it is already configured. To reconfigure the agent, run 'config.cmd remove' or './config.sh remove' first."
    /// Remove without `.agent`/`.credentials`.
    static let missingConfig =
        "Cannot connect to server, because config files are missing. Skipping removing agent from the server."
    /// Prefixes of the remove steps.
    static let succeeded = "Succeeded: "
    /// Printed before the step name when the thing to remove does not exist.
    static let skipping = "Does not exist. Skipping "
    /// Printed before the step name when a step fails.
    static let failed = "Failed: "
}

/// `configure`: makes an RSA key, registers the agent and its public key with the pool, and writes `.agent`,
/// `.credentials` and `.credentials_rsaparams`.
struct ConfigureCommand {
    /// Parsed inputs.
    let settings: CommandSettings
    /// The agent directory being configured.
    let directory: AgentDirectory

    /// Runs the configure flow and returns the exit code.
    func run() async -> ExitCode {
        do {
            try await configure()
            return .success
        } catch let error as TerminatingError {
            Console.error(error.message)
        } catch let error as ServerError {
            Console.error(error.description)
        } catch {
            Console.error(String(describing: error))
        }
        return .terminatedError
    }

    private func configure() async throws {
        if directory.isConfigured {
            throw TerminatingError(message: Messages.alreadyConfigured)
        }

        Console.line("agent-standin v\(directory.version) (stand-in for the Azure Pipelines agent)")
        Console.section("End User License Agreements")
        Console.line("The stand-in bundles no Team Explorer Everywhere; the EULA flag is recorded only.")

        Console.section("Connect")
        guard let urlText = settings.value("url") else {
            throw TerminatingError(message: Messages.invalidConfiguration("url"))
        }
        guard let serverURL = URL(string: urlText), let scheme = serverURL.scheme?.lowercased(),
            scheme == "http" || scheme == "https", serverURL.host != nil
        else {
            throw TerminatingError(message: Messages.invalidConfiguration("url"))
        }
        let pat = try CredentialInputs.personalAccessToken(settings, serverURL: serverURL)
        let credential = ServerCredential.personalAccessToken(pat)
        let server = AgentServer(organizationURL: urlText)
        let poolName = settings.value("pool") ?? "default"

        Console.line("Connecting to server ...")
        let pools = try await server.pools(named: poolName, credential: credential)

        Console.section("Register Agent")
        guard let pool = pools.first else {
            throw TerminatingError(message: "Agent pool not found: '\(poolName)'")
        }
        let agentName = settings.value("agent") ?? CapabilityScanner.hostName
        let workFolder = settings.value("work") ?? "_work"

        Console.line("Scanning for tool capabilities.")
        let capabilities = CapabilityScanner(agentName: agentName, directory: directory).scan()

        // Like `RSAFileKeyManager.CreateKey`: a new RSA-2048 key for every registration (also on --replace).
        let key = try AgentKey.generate()

        Console.line("Connecting to the server.")
        var registration = AgentRegistration(
            name: agentName, version: directory.version, osDescription: CapabilityScanner.osDescription,
            systemCapabilities: capabilities,
            authorization: .init(publicKey: key.publicKey)
        )
        let existing = try await server.agents(named: agentName, poolId: pool.id, credential: credential)
        let agent: AgentRecord
        if let found = existing.first {
            guard settings.flag("replace") else {
                throw TerminatingError(
                    message: "Pool \(pool.id) already contains an agent with name \(agentName)."
                )
            }
            registration.id = found.id
            agent = try await server.replaceAgent(registration, poolId: pool.id, credential: credential)
            Console.line("Successfully replaced the agent")
        } else {
            agent = try await server.addAgent(registration, poolId: pool.id, credential: credential)
            Console.line("Successfully added the agent")
        }

        guard let clientId = agent.authorization?.clientId,
            let authorizationURL = agent.authorization?.authorizationUrl
        else {
            throw TerminatingError(message: "The server did not return an OAuth client for agent \(agentName).")
        }
        let files = AgentRegistrationFiles(
            agentId: agent.id, agentName: agentName, poolId: pool.id, poolName: pool.name, serverUrl: urlText,
            workFolder: workFolder, clientId: clientId, authorizationUrl: authorizationURL, key: key,
            acceptTeeEula: settings.flag("acceptTeeEula")
        )
        try directory.saveCredentials(files)

        Console.line("Testing agent connection.")
        let assertion = try key.clientAssertion(clientId: clientId, audience: authorizationURL, now: Date())
        _ = try await server.accessToken(assertion: assertion, tokenEndpoint: authorizationURL)

        try directory.saveSettings(files)
        Console.stamped("Settings Saved.")
    }
}

/// `remove`: deletes the agent from the server and the config files from disk.
struct RemoveCommand {
    /// Parsed inputs.
    let settings: CommandSettings
    /// The agent directory being unconfigured.
    let directory: AgentDirectory

    /// Runs the remove flow and returns the exit code.
    func run() async -> ExitCode {
        var currentAction = "Removing agent from the server"
        do {
            Console.line(currentAction)
            let isConfigured = directory.isConfigured
            let hasCredentials = directory.hasCredentials
            if isConfigured && hasCredentials {
                let agentSettings = try directory.loadSettings()
                guard let serverURL = URL(string: agentSettings.serverUrl) else {
                    throw TerminatingError(message: "Invalid server URL in .agent: \(agentSettings.serverUrl)")
                }
                let pat = try CredentialInputs.personalAccessToken(settings, serverURL: serverURL)
                let credential = ServerCredential.personalAccessToken(pat)
                let server = AgentServer(organizationURL: agentSettings.serverUrl)

                Console.line("Connecting to server ...")
                let found = try await server.agents(
                    named: agentSettings.agentName, poolId: agentSettings.poolId, credential: credential
                )
                if found.isEmpty {
                    Console.line(Messages.skipping + currentAction)
                } else {
                    do {
                        try await server.deleteAgent(
                            id: agentSettings.agentId, poolId: agentSettings.poolId, credential: credential
                        )
                        Console.line(Messages.succeeded + currentAction)
                    } catch let error as ServerError where error.status == 404 {
                        Console.line(Messages.skipping + currentAction)
                    }
                }
            } else {
                Console.line(Messages.missingConfig)
            }

            // Like `UnconfigureAsync`: the RSA key goes together with `.credentials`, under the same step.
            currentAction = "Removing .credentials"
            Console.line(currentAction)
            if directory.hasKey {
                try FileManager.default.removeItem(at: directory.rsaParametersFile)
            }
            if hasCredentials {
                try FileManager.default.removeItem(at: directory.credentialsFile)
                Console.line(Messages.succeeded + currentAction)
            } else {
                Console.line(Messages.skipping + currentAction)
            }

            currentAction = "Removing .agent"
            Console.line(currentAction)
            if isConfigured {
                try FileManager.default.removeItem(at: directory.settingsFile)
                Console.line(Messages.succeeded + currentAction)
            } else {
                Console.line(Messages.skipping + currentAction)
            }
            return .success
        } catch {
            Console.line(Messages.failed + currentAction)
            switch error {
            case let error as TerminatingError: Console.error(error.message)
            case let error as ServerError: Console.error(error.description)
            default: Console.error(String(describing: error))
            }
            return .terminatedError
        }
    }
}
