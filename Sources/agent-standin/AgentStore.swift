import Foundation

/// The agent directory the listener belongs to: its root, version and the config files in it.
///
/// The root is the parent of the directory holding `bin/Agent.Listener` as invoked (the symlink is not resolved,
/// so one stand-in binary can serve many agent directories).
struct AgentDirectory: Sendable {
    /// The agent root (holds `config.sh`, `run.sh`, `bin/`, `.agent`, `.credentials`).
    let root: URL
    /// The agent version, read from the layout's version marker.
    let version: String

    /// The file in `bin/` that carries the stand-in's version (written by `install`).
    static let versionMarker = "agent-version"
    /// The version reported when no marker exists.
    static let defaultVersion = "4.266.2"

    /// Locates the directory from how the executable was invoked.
    static func locate(invokedAs executable: String, currentDirectory: String) -> AgentDirectory {
        let invoked = executable.hasPrefix("/")
            ? URL(fileURLWithPath: executable)
            : URL(fileURLWithPath: currentDirectory).appendingPathComponent(executable)
        let bin = invoked.standardizedFileURL.deletingLastPathComponent()
        let root = bin.lastPathComponent == "bin" ? bin.deletingLastPathComponent() : bin
        let marker = root.appendingPathComponent("bin").appendingPathComponent(versionMarker)
        let version = (try? String(contentsOf: marker, encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return AgentDirectory(root: root, version: version.flatMap { $0.isEmpty ? nil : $0 } ?? defaultVersion)
    }

    /// `.agent`: the settings written by a successful configure.
    var settingsFile: URL { root.appendingPathComponent(".agent") }
    /// `.credentials`: the OAuth client the listener uses for its own token.
    var credentialsFile: URL { root.appendingPathComponent(".credentials") }
    /// `.capabilities`: optional user-provided `name=value` lines added to the system capabilities.
    var userCapabilitiesFile: URL { root.appendingPathComponent(".capabilities") }

    /// Whether `.agent` exists (the real agent's "is configured" test).
    var isConfigured: Bool { FileManager.default.fileExists(atPath: settingsFile.path) }
    /// Whether `.credentials` exists.
    var hasCredentials: Bool { FileManager.default.fileExists(atPath: credentialsFile.path) }

    /// Reads `.agent`.
    func loadSettings() throws -> AgentSettings {
        try JSONDecoder().decode(AgentSettings.self, from: Data(contentsOf: settingsFile))
    }

    /// Reads `.credentials`.
    func loadCredentials() throws -> CredentialData {
        try JSONDecoder().decode(CredentialData.self, from: Data(contentsOf: credentialsFile))
    }

    /// Writes `.agent`.
    func save(_ settings: AgentSettings) throws {
        try Self.encoder.encode(settings).write(to: settingsFile, options: .atomic)
    }

    /// Writes `.credentials` readable by the owner only (it names the agent's OAuth client).
    func save(_ credentials: CredentialData) throws {
        try Self.encoder.encode(credentials).write(to: credentialsFile, options: .atomic)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: credentialsFile.path)
    }

    /// The absolute work folder (`workFolder` is kept relative to the root when given relative).
    func workFolder(_ settings: AgentSettings) -> URL {
        settings.workFolder.hasPrefix("/")
            ? URL(fileURLWithPath: settings.workFolder)
            : root.appendingPathComponent(settings.workFolder)
    }

    private static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return encoder
    }
}

/// The content of `.agent`, with the real agent's key names.
struct AgentSettings: Codable, Sendable, Equatable {
    /// The agent's id on the server.
    var agentId: Int
    /// The registered agent name.
    var agentName: String
    /// The pool's id on the server.
    var poolId: Int
    /// The pool's name.
    var poolName: String
    /// The organization URL given to configure.
    var serverUrl: String
    /// The work folder (relative to the agent root unless absolute).
    var workFolder: String
    /// Whether `--acceptTeeEula` was given.
    var acceptTeeEula: Bool
}

/// The content of `.credentials`: the OAuth client-credential the server handed out at registration.
struct CredentialData: Codable, Sendable, Equatable {
    /// Always `OAuth` for agents registered against a server that supports the key exchange.
    var scheme: String
    /// `clientId` and `authorizationUrl` (plus `oAuthEndpointUrl`, like the real file).
    var data: [String: String]
}
