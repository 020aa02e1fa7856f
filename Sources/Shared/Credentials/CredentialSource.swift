#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Supplies the `Authorization` header for Azure DevOps requests.
///
/// A protocol so other schemes (Entra ID bearer tokens for service principals or workload identity) can be
/// added without touching the client. Implementations must never log the secret.
package protocol CredentialSource: Sendable {
    /// The full header value, e.g. `Basic OnBhdA==` or `Bearer eyJ...`.
    func authorizationHeader() async throws(CredentialError) -> String
    /// A short description for logs and errors that never contains the secret (e.g. `PAT from /var/run/token`).
    var summary: String { get }
}

/// Why a credential could not be produced.
package enum CredentialError: Error, CustomStringConvertible, Equatable {
    /// The token file is missing or unreadable.
    case unreadable(path: String, reason: String)
    /// The token source holds no token.
    case empty(source: String)

    package var description: String {
        switch self {
        case .unreadable(let path, let reason): "cannot read the token file \(path): \(reason)"
        case .empty(let source): "the token from \(source) is empty"
        }
    }
}

/// How a token goes into the `Authorization` header.
package enum TokenScheme: Sendable, Equatable {
    /// An Azure DevOps personal access token: HTTP Basic with an empty user name, as the service expects.
    case personalAccessToken
    /// A bearer token (Kubernetes ServiceAccount tokens, later Entra ID access tokens).
    case bearer

    /// The header value for a token; surrounding whitespace (a trailing newline) is dropped.
    package func header(_ token: String) -> String {
        switch self {
        case .personalAccessToken: PersonalAccessToken.basicHeader(token)
        case .bearer: "Bearer " + token.trimmingWhitespace()
        }
    }

    /// What to call the token in messages.
    var noun: String {
        switch self {
        case .personalAccessToken: "PAT"
        case .bearer: "bearer token"
        }
    }
}

/// A personal access token sent as HTTP Basic with an empty user name, as the service expects.
package enum PersonalAccessToken {
    /// The `Authorization` header value for a PAT; surrounding whitespace (a trailing newline) is dropped.
    package static func basicHeader(_ token: String) -> String {
        let credential = ":" + token.trimmingWhitespace()
        return "Basic " + Data(credential.utf8).base64EncodedString()
    }
}

/// A token given directly (from an environment variable, a flag or a kubeconfig).
package struct StaticTokenSource: CredentialSource {
    private let token: String
    /// Where the token came from, for messages (e.g. `AZDO_TOKEN`).
    package let origin: String
    /// How the token is sent.
    package let scheme: TokenScheme

    /// Wraps a token; fails when it is blank.
    package init(token: String, origin: String, scheme: TokenScheme = .personalAccessToken) throws(CredentialError) {
        guard !token.trimmingWhitespace().isEmpty else { throw .empty(source: origin) }
        self.token = token
        self.origin = origin
        self.scheme = scheme
    }

    package func authorizationHeader() async throws(CredentialError) -> String { scheme.header(token) }
    package var summary: String { "\(scheme.noun) from \(origin)" }
}

/// A token read from a file (a mounted Secret, a projected ServiceAccount token) and re-read whenever the file
/// changes, so rotation needs no restart; reading on every request would be wasteful, reading once would keep
/// using an expired token.
package actor TokenFileSource: CredentialSource {
    /// The token file's path.
    package nonisolated let path: String
    /// How the token is sent.
    package nonisolated let scheme: TokenScheme
    private var cached: (stamp: FileStamp, token: String)?

    /// Reads from `path` lazily; the first use fails if the file is missing or empty.
    package init(path: String, scheme: TokenScheme = .personalAccessToken) {
        self.path = path
        self.scheme = scheme
    }

    package nonisolated var summary: String { "\(scheme.noun) from file \(path)" }

    package func authorizationHeader() async throws(CredentialError) -> String {
        scheme.header(try currentToken())
    }

    /// The token as the file holds it now, trimmed; re-read only when the file's stamp changed.
    package func currentToken() throws(CredentialError) -> String {
        let stamp = try FileStamp(path: path)
        if let cached, cached.stamp == stamp { return cached.token }
        let token: String
        do {
            token = try String(contentsOfFile: path, encoding: .utf8).trimmingWhitespace()
        } catch {
            throw .unreadable(path: path, reason: "\(error)")
        }
        guard !token.isEmpty else { throw .empty(source: "file \(path)") }
        cached = (stamp, token)
        return token
    }
}

/// What identifies a version of a file cheaply: Kubernetes rotates mounted Secrets by swapping a symlink, so the
/// path is resolved first and the target's inode, size and modification time are compared.
package struct FileStamp: Equatable {
    package let target: String
    package let inode: UInt64
    package let size: UInt64
    package let modified: Date

    package init(path: String) throws(CredentialError) {
        target = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        let attributes: [FileAttributeKey: Any]
        do {
            attributes = try FileManager.default.attributesOfItem(atPath: target)
        } catch {
            throw .unreadable(path: path, reason: "\(error)")
        }
        inode = Self.unsigned(attributes[.systemFileNumber])
        size = Self.unsigned(attributes[.size])
        modified = attributes[.modificationDate] as? Date ?? .distantPast
    }

    private static func unsigned(_ value: Any?) -> UInt64 {
        (value as? any BinaryInteger).map { UInt64(truncatingIfNeeded: $0) } ?? 0
    }
}
