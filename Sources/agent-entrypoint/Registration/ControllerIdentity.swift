import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Why the controller's identity files cannot be used; the entrypoint exits 2 with this line.
package struct IdentityError: Error, CustomStringConvertible, Equatable {
    /// One line naming the file (or directory) and the reason.
    package let description: String
}

/// The agent identity the pool controller made and mounted (`AZP_REGISTRATION=controller`): the three files
/// `config.sh` would have written — `.agent`, `.credentials`, `.credentials_rsaparams` — read from
/// `AZP_REGISTRATION_DIR` (a read-only Secret volume) and copied into the agent directory for the listener.
package struct ControllerIdentity: Sendable {
    /// One identity file's name and content.
    package struct File: Sendable, Equatable {
        /// `.agent`, `.credentials` or `.credentials_rsaparams`.
        package var name: String
        /// Its bytes, exactly as mounted.
        package var contents: [UInt8]
    }

    /// The files, in ``fileNames`` order.
    package let files: [File]
    /// `agentId` from `.agent`, for logs and the termination message.
    package let agentId: Int?
    /// `agentName` from `.agent`.
    package let agentName: String?
    /// `poolId` from `.agent`.
    package let poolId: Int?

    /// The files the controller mounts, all required.
    package static let fileNames = [".agent", ".credentials", ".credentials_rsaparams"]
    /// Largest identity file accepted (they are a few KiB).
    static let maximumFileBytes = 1 << 20

    /// Reads and checks the three files in `directory`; throws a line naming the missing, unreadable or invalid
    /// file.
    package static func load(from directory: String) throws(IdentityError) -> ControllerIdentity {
        var files: [File] = []
        for name in fileNames {
            let path = directory + "/" + name
            files.append(File(name: name, contents: try readFile(path)))
        }
        struct AgentFile: Decodable {
            let agentId: Int?
            let agentName: String?
            let poolId: Int?
        }
        var settings = Data(files[0].contents)
        if settings.starts(with: [0xEF, 0xBB, 0xBF]) { settings = settings.dropFirst(3) }  // .NET writes a UTF-8 BOM
        let parsed: AgentFile
        do {
            parsed = try JSONDecoder().decode(AgentFile.self, from: settings)
        } catch {
            throw IdentityError(
                description: "\(directory)/.agent (\(EntrypointEnvironment.registrationDirectory)) is not an agent settings "
                    + "file (JSON with agentId, agentName, poolId, serverUrl)")
        }
        return ControllerIdentity(files: files, agentId: parsed.agentId, agentName: parsed.agentName, poolId: parsed.poolId)
    }

    /// Writes the files into `agentDirectory` with mode 0600, replacing whatever is there: each goes to a new
    /// temporary file first and is renamed over the target, so a symlink a previous occupant left is replaced,
    /// never followed.
    package func install(into agentDirectory: String) throws(IdentityError) {
        for file in files {
            let target = agentDirectory + "/" + file.name
            let temporary = target + ".shoal-\(getpid())"
            unlink(temporary)
            let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw Self.failure("cannot create", temporary) }
            var written = 0
            while written < file.contents.count {
                let count = file.contents.withUnsafeBytes { raw in
                    write(fd, raw.baseAddress! + written, raw.count - written)
                }
                if count < 0, errno == EINTR { continue }
                guard count > 0 else {
                    let error = Self.failure("cannot write", temporary)
                    close(fd)
                    unlink(temporary)
                    throw error
                }
                written += count
            }
            fchmod(fd, 0o600)
            close(fd)
            guard rename(temporary, target) == 0 else {
                let error = Self.failure("cannot replace", target)
                unlink(temporary)
                throw error
            }
        }
    }

    private static func readFile(_ path: String) throws(IdentityError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT {
                throw IdentityError(
                    description: "\(path) is missing: with \(EntrypointEnvironment.registration)=controller the pool controller "
                        + "mounts the agent's .agent, .credentials and .credentials_rsaparams into "
                        + "\(EntrypointEnvironment.registrationDirectory)")
            }
            throw failure("cannot read", path)
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            if count < 0 { throw failure("cannot read", path) }
            if count == 0 { break }
            bytes += buffer[0..<count]
            guard bytes.count <= maximumFileBytes else {
                throw IdentityError(description: "cannot read \(path): larger than \(maximumFileBytes) bytes")
            }
        }
        guard !bytes.isEmpty else { throw IdentityError(description: "\(path) is empty") }
        return bytes
    }

    private static func failure(_ what: String, _ path: String) -> IdentityError {
        IdentityError(description: "\(what) \(path): \(String(cString: strerror(errno)))")
    }
}
