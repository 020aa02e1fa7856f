#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The three files `config.sh` leaves in the agent root after a registration, rendered byte for byte the way
/// the agent writes them (UTF-8 BOM, Newtonsoft indented JSON, LF, no trailing newline).
///
/// - `.agent`: `AgentSettings` with only the members `config.sh` sets for a build pool (every member is
///   `EmitDefaultValue=false`): `acceptTeeEula` (when true), `agentId`, `agentName`, `poolId`, `poolName`,
///   `serverUrl`, `workFolder`, in declaration order.
/// - `.credentials`: `CredentialData` with scheme `OAuth` and `clientId`, `authorizationUrl`, `oauthEndpointUrl`.
/// - `.credentials_rsaparams`: the private key, see `RSAParametersFile`.
///
/// Shoal's controller renders these from a REST registration; the agent stand-in renders them from `configure`.
package struct AgentRegistrationFiles: Sendable, Equatable {
    /// `<root>/.agent`.
    package static let agentFileName = ".agent"
    /// `<root>/.credentials`.
    package static let credentialsFileName = ".credentials"
    /// `<root>/.credentials_rsaparams`.
    package static let rsaParametersFileName = ".credentials_rsaparams"

    /// Contents of `.agent`.
    package var agent: Data
    /// Contents of `.credentials`.
    package var credentials: Data
    /// Contents of `.credentials_rsaparams`.
    package var rsaParameters: Data

    /// The files for a registered agent.
    ///
    /// `authorizationUrl` is copied verbatim from the registration response; `oauthEndpointUrl` repeats it, as
    /// config does against the hosted service. `acceptTeeEula` is written only when true.
    package init(
        agentId: Int, agentName: String, poolId: Int, poolName: String, serverUrl: String, workFolder: String,
        clientId: String, authorizationUrl: String, key: AgentKey, acceptTeeEula: Bool = false
    ) {
        var settings: [(String, IndentedJSON)] = []
        if acceptTeeEula { settings.append(("acceptTeeEula", .bool(true))) }
        settings += [
            ("agentId", .int(agentId)), ("agentName", .string(agentName)), ("poolId", .int(poolId)),
            ("poolName", .string(poolName)), ("serverUrl", .string(serverUrl)), ("workFolder", .string(workFolder)),
        ]
        self.agent = IndentedJSON.object(settings).fileContents()
        self.credentials = IndentedJSON.object([
            ("scheme", .string(CredentialsFile.oauthScheme)),
            ("data", .object([
                ("clientId", .string(clientId)),
                ("authorizationUrl", .string(authorizationUrl)),
                ("oauthEndpointUrl", .string(authorizationUrl)),
            ])),
        ]).fileContents()
        self.rsaParameters = key.parameters.encoded()
    }

    /// Files with these contents (for instance read back from a Secret).
    package init(agent: Data, credentials: Data, rsaParameters: Data) {
        self.agent = agent
        self.credentials = credentials
        self.rsaParameters = rsaParameters
    }

    /// (file name, contents) in a stable order: `.agent`, `.credentials`, `.credentials_rsaparams`.
    package var files: [(name: String, contents: Data)] {
        [
            (Self.agentFileName, agent),
            (Self.credentialsFileName, credentials),
            (Self.rsaParametersFileName, rsaParameters),
        ]
    }
}

/// `.agent` as the listener reads it: BOM tolerant, member names in any case, numbers also as strings (agent
/// clouds and Microsoft's Kubernetes sample write `"AgentId":"123"`).
package struct AgentSettingsFile: Sendable, Equatable {
    /// The agent's id on the server.
    package var agentId: Int
    /// The registered agent name.
    package var agentName: String
    /// The pool's id on the server.
    package var poolId: Int
    /// The pool's name (empty when the file has none).
    package var poolName: String
    /// The organization URL.
    package var serverUrl: String
    /// The work folder, relative to the agent root unless absolute; never empty (the agent asserts that).
    package var workFolder: String
    /// Whether `--acceptTeeEula` was given.
    package var acceptTeeEula: Bool

    /// Settings with these values.
    package init(
        agentId: Int, agentName: String, poolId: Int, poolName: String, serverUrl: String, workFolder: String,
        acceptTeeEula: Bool = false
    ) {
        self.agentId = agentId
        self.agentName = agentName
        self.poolId = poolId
        self.poolName = poolName
        self.serverUrl = serverUrl
        self.workFolder = workFolder
        self.acceptTeeEula = acceptTeeEula
    }

    /// Reads `.agent`; the error names the missing or malformed member.
    package static func decode(_ data: Data) throws(AgentIdentityError) -> AgentSettingsFile {
        let file = AgentRegistrationFiles.agentFileName
        let object = try LooseJSON.parseObject(data, file: file)
        func integer(_ name: String) throws(AgentIdentityError) -> Int {
            guard let value = LooseJSON.member(name, of: object)?.intValue else {
                throw AgentIdentityError(.invalidFile, "\(file) has no integer '\(name)'")
            }
            return value
        }
        func text(_ name: String, required: Bool) throws(AgentIdentityError) -> String {
            let value = LooseJSON.member(name, of: object)?.stringValue ?? ""
            if required && value.isEmpty { throw AgentIdentityError(.invalidFile, "\(file) has no '\(name)'") }
            return value
        }
        return AgentSettingsFile(
            agentId: try integer("agentId"), agentName: try text("agentName", required: true),
            poolId: try integer("poolId"), poolName: try text("poolName", required: false),
            serverUrl: try text("serverUrl", required: true), workFolder: try text("workFolder", required: true),
            acceptTeeEula: LooseJSON.member("acceptTeeEula", of: object)?.boolValue ?? false)
    }
}

/// `.credentials` as the listener reads it: BOM tolerant, member names and `data` keys in any case (the agent's
/// `CredentialData.Data` uses `OrdinalIgnoreCase`), extra keys ignored.
package struct CredentialsFile: Sendable, Equatable {
    /// The scheme config writes when the server hands out an OAuth client.
    package static let oauthScheme = "OAuth"

    /// `OAuth`, `PAT`, ... (compared ignoring case).
    package var scheme: String
    /// The scheme's data, keys as written.
    package var data: [String: String]

    /// Credentials with this scheme and data.
    package init(scheme: String, data: [String: String]) {
        self.scheme = scheme
        self.data = data
    }

    /// A `data` entry, name compared exactly first, then ignoring case.
    package func value(_ name: String) -> String? {
        if let exact = data[name] { return exact }
        let lowered = name.lowercased()
        return data.first { $0.key.lowercased() == lowered }?.value
    }

    /// Whether the scheme is `OAuth` (any case).
    package var isOAuth: Bool { scheme.lowercased() == Self.oauthScheme.lowercased() }

    /// `clientId` (required for OAuth).
    package var clientId: String? { value("clientId").flatMap { $0.isEmpty ? nil : $0 } }
    /// `authorizationUrl`: the assertion's audience (required for OAuth).
    package var authorizationUrl: String? { value("authorizationUrl").flatMap { $0.isEmpty ? nil : $0 } }
    /// Where the token request goes: `oauthEndpointUrl`, defaulting to `authorizationUrl` as `OAuthCredential` does.
    package var tokenEndpointUrl: String? {
        value("oauthEndpointUrl").flatMap { $0.isEmpty ? nil : $0 } ?? authorizationUrl
    }

    /// Reads `.credentials`; the error names the missing or malformed member.
    package static func decode(_ data: Data) throws(AgentIdentityError) -> CredentialsFile {
        let file = AgentRegistrationFiles.credentialsFileName
        let object = try LooseJSON.parseObject(data, file: file)
        guard let scheme = LooseJSON.member("scheme", of: object)?.stringValue, !scheme.isEmpty else {
            throw AgentIdentityError(.invalidFile, "\(file) has no 'scheme'")
        }
        var entries: [String: String] = [:]
        switch LooseJSON.member("data", of: object) {
        case .object(let members)?:
            for (key, value) in members {
                if let text = value.stringValue { entries[key] = text }
            }
        case nil, .null?:
            break
        default:
            throw AgentIdentityError(.invalidFile, "\(file): 'data' is not an object")
        }
        return CredentialsFile(scheme: scheme, data: entries)
    }
}
