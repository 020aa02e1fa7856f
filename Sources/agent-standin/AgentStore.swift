import AgentIdentity
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The agent directory the listener belongs to: its root, version and the config files in it.
///
/// The root is the parent of the directory holding `bin/Agent.Listener` as invoked (the symlink is not resolved,
/// so one stand-in binary can serve many agent directories).
struct AgentDirectory: Sendable {
    /// The agent root (holds `config.sh`, `run.sh`, `bin/`, `.agent`, `.credentials`, `.credentials_rsaparams`).
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
    var settingsFile: URL { root.appendingPathComponent(AgentRegistrationFiles.agentFileName) }
    /// `.credentials`: the OAuth client the listener uses for its own token.
    var credentialsFile: URL { root.appendingPathComponent(AgentRegistrationFiles.credentialsFileName) }
    /// `.credentials_rsaparams`: the agent's RSA private key, which signs the listener's client assertions.
    var rsaParametersFile: URL { root.appendingPathComponent(AgentRegistrationFiles.rsaParametersFileName) }
    /// `.capabilities`: optional user-provided `name=value` lines added to the system capabilities.
    var userCapabilitiesFile: URL { root.appendingPathComponent(".capabilities") }

    /// Whether `.agent` exists (the real agent's "is configured" test).
    var isConfigured: Bool { FileManager.default.fileExists(atPath: settingsFile.path) }
    /// Whether `.credentials` exists.
    var hasCredentials: Bool { FileManager.default.fileExists(atPath: credentialsFile.path) }
    /// Whether `.credentials_rsaparams` exists.
    var hasKey: Bool { FileManager.default.fileExists(atPath: rsaParametersFile.path) }

    /// Reads `.agent` (BOM tolerant, member names in any case, as the agent reads it).
    func loadSettings() throws -> AgentSettingsFile {
        try AgentSettingsFile.decode(Data(contentsOf: settingsFile))
    }

    /// Reads `.credentials` (BOM tolerant, member names in any case).
    func loadCredentials() throws -> CredentialsFile {
        try CredentialsFile.decode(Data(contentsOf: credentialsFile))
    }

    /// Reads `.credentials_rsaparams`; the agent re-reads it for every signature, so it must stay in place.
    func loadKey() throws -> AgentKey {
        try AgentKey(parameters: RSAParametersFile.decode(Data(contentsOf: rsaParametersFile)))
    }

    /// Writes `.credentials_rsaparams` and `.credentials`, readable by the owner only.
    func saveCredentials(_ files: AgentRegistrationFiles) throws {
        try Self.writePrivately(files.rsaParameters, to: rsaParametersFile)
        try Self.writePrivately(files.credentials, to: credentialsFile)
    }

    /// Writes `.agent`, readable by the owner only; written last, since it marks the directory configured.
    func saveSettings(_ files: AgentRegistrationFiles) throws {
        try Self.writePrivately(files.agent, to: settingsFile)
    }

    /// The absolute work folder (`workFolder` is kept relative to the root when given relative).
    func workFolder(_ settings: AgentSettingsFile) -> URL {
        settings.workFolder.hasPrefix("/")
            ? URL(fileURLWithPath: settings.workFolder)
            : root.appendingPathComponent(settings.workFolder)
    }

    /// Writes `data` to a temporary file created with mode 0600, then renames it over `file`, so the file never
    /// exists with wider permissions or half written.
    private static func writePrivately(_ data: Data, to file: URL) throws {
        let temporary = file.deletingLastPathComponent().appendingPathComponent(".\(file.lastPathComponent).\(getpid()).tmp")
        let descriptor = open(temporary.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw FileWriteError(path: temporary.path, errno: errno) }
        let written = data.withUnsafeBytes { buffer -> Int in
            guard let base = buffer.baseAddress else { return 0 }
            var offset = 0
            while offset < buffer.count {
                let count = write(descriptor, base + offset, buffer.count - offset)
                if count < 0 {
                    if errno == EINTR { continue }
                    return -1
                }
                offset += count
            }
            return offset
        }
        let writeErrno = errno
        close(descriptor)
        guard written == data.count else {
            unlink(temporary.path)
            throw FileWriteError(path: temporary.path, errno: writeErrno)
        }
        guard rename(temporary.path, file.path) == 0 else {
            let renameErrno = errno
            unlink(temporary.path)
            throw FileWriteError(path: file.path, errno: renameErrno)
        }
    }
}

/// A config file could not be written.
struct FileWriteError: Error, CustomStringConvertible {
    /// The file.
    let path: String
    /// The failing call's `errno`.
    let errno: Int32

    var description: String { "cannot write \(path): \(String(cString: strerror(errno)))" }
}
