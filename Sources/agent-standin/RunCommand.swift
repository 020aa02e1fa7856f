import AgentIdentity
import Foundation

/// `run [--once]`: checks the configuration, then hands over to the `Listener`.
struct RunCommand {
    /// Parsed inputs.
    let settings: CommandSettings
    /// The configured agent directory.
    let directory: AgentDirectory

    /// Environment knob: seconds to keep retrying a session conflict (the real agent: 240).
    static let sessionRetryVariable = "AGENT_STANDIN_SESSION_RETRY_SECONDS"

    /// Runs the listener and returns its exit code.
    func run() async -> ExitCode {
        guard directory.isConfigured, directory.hasCredentials,
            let agentSettings = try? directory.loadSettings(),
            let credentials = try? directory.loadCredentials()
        else {
            Console.error("Agent is not configured.")
            Console.line(Usage.text)
            return .terminatedError
        }
        // `OAuthCredential`: clientId and authorizationUrl are required, oauthEndpointUrl defaults to the latter.
        guard credentials.isOAuth, let clientId = credentials.clientId,
            let authorizationURL = credentials.authorizationUrl, let tokenEndpoint = credentials.tokenEndpointUrl
        else {
            Console.error(
                "The agent stand-in supports only OAuth credentials with clientId and authorizationUrl in .credentials.")
            return .terminatedError
        }
        guard directory.hasKey else {
            Console.error("\(AgentRegistrationFiles.rsaParametersFileName) is missing; reconfigure the agent.")
            return .terminatedError
        }

        Console.line("Scanning for tool capabilities.")
        _ = CapabilityScanner(agentName: agentSettings.agentName, directory: directory).scan()
        Console.line("Connecting to the server.")

        let server = AgentServer(organizationURL: agentSettings.serverUrl)
        let connection = AgentConnection(
            server: server,
            tokens: AgentTokenSource(
                server: server, directory: directory, clientId: clientId, audience: authorizationURL,
                tokenEndpoint: tokenEndpoint),
            settings: agentSettings,
            agentVersion: directory.version
        )
        let retrySeconds = ProcessEnvironment.current()[Self.sessionRetryVariable].flatMap(Int.init) ?? 240
        let listener = Listener(
            connection: connection,
            once: settings.flag("once"),
            runner: JobRunner(workFolder: directory.workFolder(agentSettings)),
            sessionConflictRetry: .seconds(max(0, retrySeconds))
        )
        return await listener.run()
    }
}

/// The `--help` text.
enum Usage {
    /// Printed by `--help` and after `Agent is not configured.`.
    static let text = """
        Commands:
         ./config.sh        Configures the agent
         ./config.sh remove Unconfigures the agent
         ./run.sh           Runs the agent interactively. Requires the agent to be configured.

        Options:
         --version  Prints the agent version
         --commit   Prints the agent commit
         --help     Prints the help for each command

        Configure (unattended): ./config.sh --unattended --url <url> --auth pat --token <token> [--pool <pool>]
          [--agent <name>] [--work <dir>] [--replace] [--acceptTeeEula]
        Every option is also read from VSTS_AGENT_INPUT_<NAME>.
        Remove: ./config.sh remove [--unattended] [--auth pat] [--token <token>]
        Run: ./run.sh [--once]

        Stand-in: agent-standin install <directory> [--version <x.y.z>] lays out an agent directory.
        """
}
