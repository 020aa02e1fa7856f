import Shared
import Yams
import NIOSSL
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Where and how to reach a Kubernetes API server: URL, TLS material, bearer token and default namespace.
///
/// Built from the Pod's ServiceAccount (``inCluster(paths:environment:)``), from a kubeconfig file
/// (``kubeconfig(path:context:)``), or by ``resolve(kubeconfigPath:context:environment:inClusterPaths:)``, which picks
/// the way `kubectl` and client-go do.
package struct KubernetesConfiguration: Sendable {
    /// The API server's base URL without a trailing slash, e.g. `https://10.96.0.1:443` or `https://[fd00::1]:443`.
    package var serverURL: String
    /// CA certificates (PEM) that the server certificate must chain to; nil uses the system trust store.
    package var certificateAuthority: PEMSource?
    /// Client certificate chain (PEM) for mutual TLS.
    package var clientCertificate: PEMSource?
    /// Client private key (PEM) for mutual TLS.
    package var clientKey: PEMSource?
    /// Skip verifying the server certificate (kubeconfig `insecure-skip-tls-verify`); for development only.
    package var insecureSkipTLSVerify: Bool
    /// Supplies `Authorization: Bearer ...`; nil when the client certificate authenticates.
    package var credentials: (any CredentialSource)?
    /// The default namespace (the ServiceAccount's namespace, or the context's, or `default`).
    package var namespace: String
    /// Where this configuration came from, for logs (never contains a secret).
    package var origin: String

    /// Builds a configuration by hand.
    package init(
        serverURL: String, certificateAuthority: PEMSource? = nil, clientCertificate: PEMSource? = nil, clientKey: PEMSource? = nil,
        insecureSkipTLSVerify: Bool = false, credentials: (any CredentialSource)? = nil, namespace: String = "default", origin: String = "explicit"
    ) {
        self.serverURL = serverURL.hasSuffix("/") ? String(serverURL.dropLast()) : serverURL
        self.certificateAuthority = certificateAuthority
        self.clientCertificate = clientCertificate
        self.clientKey = clientKey
        self.insecureSkipTLSVerify = insecureSkipTLSVerify
        self.credentials = credentials
        self.namespace = namespace
        self.origin = origin
    }

    /// The NIOSSL client configuration: only the given CA as trust root (like kubectl), the client certificate and
    /// key when present, no verification when `insecureSkipTLSVerify`.
    package func makeTLSConfiguration() throws(KubernetesConfigurationError) -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let certificateAuthority {
            let bytes = try certificateAuthority.bytes(what: "certificate-authority")
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(bytes))
            } catch {
                throw .invalidCertificate(what: "certificate authority \(certificateAuthority)", detail: "\(error)")
            }
        }
        switch (clientCertificate, clientKey) {
        case (nil, nil):
            break
        case (let certificate?, let key?):
            do {
                let chain = try NIOSSLCertificate.fromPEMBytes(try certificate.bytes(what: "client-certificate"))
                tls.certificateChain = chain.map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: try key.bytes(what: "client-key"), format: .pem))
            } catch let error as KubernetesConfigurationError {
                throw error
            } catch {
                throw .invalidCertificate(what: "client certificate/key", detail: "\(error)")
            }
        default:
            throw .invalidCertificate(what: "client certificate/key", detail: "both client-certificate and client-key are needed")
        }
        if insecureSkipTLSVerify { tls.certificateVerification = .none }
        return tls
    }
}

/// PEM material given as a file path or inline (the kubeconfig `*-data` forms, already base64-decoded).
package enum PEMSource: Sendable, Hashable, CustomStringConvertible {
    /// A file, read when the client is built.
    case file(String)
    /// The PEM bytes themselves.
    case data([UInt8])

    /// The PEM bytes.
    package func bytes(what: String) throws(KubernetesConfigurationError) -> [UInt8] {
        switch self {
        case .data(let bytes): return bytes
        case .file(let path):
            do {
                return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
            } catch {
                throw .fileUnreadable(path: path, reason: "\(what): \(error)")
            }
        }
    }

    package var description: String {
        switch self {
        case .file(let path): "file \(path)"
        case .data(let bytes): "inline data (\(bytes.count) bytes)"
        }
    }
}

/// Why no Kubernetes configuration could be built.
package enum KubernetesConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A file could not be read.
    case fileUnreadable(path: String, reason: String)
    /// The kubeconfig is not valid YAML or lacks required fields.
    case invalidKubeconfig(path: String, detail: String)
    /// The kubeconfig has no context of this name (or no current-context and none was given).
    case contextNotFound(name: String, path: String)
    /// The context names a cluster or user the kubeconfig does not define.
    case referenceNotFound(kind: String, name: String, path: String)
    /// The user authenticates in a way this client does not implement (exec plugins, auth providers, basic auth).
    case unsupportedAuthentication(user: String, method: String, path: String)
    /// Not running in a Pod: a ServiceAccount file or `KUBERNETES_SERVICE_HOST`/`_PORT` is missing.
    case notInCluster(missing: String)
    /// Nowhere to get a configuration from.
    case noConfiguration(tried: [String])
    /// A certificate or key is not valid PEM.
    case invalidCertificate(what: String, detail: String)

    package var description: String {
        switch self {
        case .fileUnreadable(let path, let reason): "cannot read \(path): \(reason)"
        case .invalidKubeconfig(let path, let detail): "invalid kubeconfig \(path): \(detail)"
        case .contextNotFound(let name, let path): "kubeconfig \(path) has no context '\(name)'"
        case .referenceNotFound(let kind, let name, let path): "kubeconfig \(path) has no \(kind) '\(name)'"
        case .unsupportedAuthentication(let user, let method, let path):
            "kubeconfig \(path): user '\(user)' uses \(method), which Shoal does not support; use a token, tokenFile or client certificate"
        case .notInCluster(let missing): "not running in a Kubernetes Pod: \(missing) is missing"
        case .noConfiguration(let tried): "no Kubernetes configuration found (tried \(tried.joined(separator: ", ")))"
        case .invalidCertificate(let what, let detail): "invalid \(what): \(detail)"
        }
    }
}

// MARK: - In-cluster

/// Where a Pod finds its ServiceAccount credentials; injectable for tests.
package struct InClusterPaths: Sendable, Hashable {
    /// The projected token, rotated by the kubelet.
    package var tokenFile: String
    /// The cluster CA bundle.
    package var caFile: String
    /// The Pod's namespace.
    package var namespaceFile: String

    /// The standard mount under `/var/run/secrets/kubernetes.io/serviceaccount`.
    package static let standard = InClusterPaths(directory: "/var/run/secrets/kubernetes.io/serviceaccount")

    /// The three files in `directory`.
    package init(directory: String) {
        tokenFile = directory + "/token"
        caFile = directory + "/ca.crt"
        namespaceFile = directory + "/namespace"
    }
}

extension KubernetesConfiguration {
    /// The configuration of a Pod: `KUBERNETES_SERVICE_HOST`/`_PORT`, the ServiceAccount CA and namespace, and the
    /// token file re-read whenever the kubelet rotates it.
    package static func inCluster(
        paths: InClusterPaths = .standard, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(KubernetesConfigurationError) -> KubernetesConfiguration {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty else {
            throw .notInCluster(missing: "KUBERNETES_SERVICE_HOST")
        }
        guard let port = environment["KUBERNETES_SERVICE_PORT"], !port.isEmpty else {
            throw .notInCluster(missing: "KUBERNETES_SERVICE_PORT")
        }
        guard FileManager.default.fileExists(atPath: paths.tokenFile) else { throw .notInCluster(missing: paths.tokenFile) }
        guard FileManager.default.fileExists(atPath: paths.caFile) else { throw .notInCluster(missing: paths.caFile) }
        var namespace = "default"
        if let text = try? String(contentsOfFile: paths.namespaceFile, encoding: .utf8), !text.trimmingWhitespace().isEmpty {
            namespace = text.trimmingWhitespace()
        }
        let bracketed = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return KubernetesConfiguration(
            serverURL: "https://\(bracketed):\(port)",
            certificateAuthority: .file(paths.caFile),
            credentials: TokenFileSource(path: paths.tokenFile, scheme: .bearer),
            namespace: namespace,
            origin: "in-cluster ServiceAccount (\(paths.tokenFile))"
        )
    }

    /// Picks a configuration like kubectl: `kubeconfigPath` (a `--kubeconfig` flag), else the first file of
    /// `KUBECONFIG` (later entries of a colon-separated list are ignored, not merged), else the in-cluster
    /// ServiceAccount when `KUBERNETES_SERVICE_HOST` is set, else `~/.kube/config`.
    package static func resolve(
        kubeconfigPath: String? = nil, context: String? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment, inClusterPaths: InClusterPaths = .standard
    ) throws(KubernetesConfigurationError) -> KubernetesConfiguration {
        if let kubeconfigPath, !kubeconfigPath.isEmpty {
            return try kubeconfig(path: kubeconfigPath, context: context)
        }
        if let list = environment["KUBECONFIG"],
            let first = list.split(separator: ":", omittingEmptySubsequences: true).first.map(String.init)
        {
            return try kubeconfig(path: first, context: context)
        }
        if environment["KUBERNETES_SERVICE_HOST"] != nil {
            return try inCluster(paths: inClusterPaths, environment: environment)
        }
        if let home = environment["HOME"], FileManager.default.fileExists(atPath: home + "/.kube/config") {
            return try kubeconfig(path: home + "/.kube/config", context: context)
        }
        throw .noConfiguration(tried: ["--kubeconfig", "KUBECONFIG", "in-cluster (KUBERNETES_SERVICE_HOST)", "~/.kube/config"])
    }
}

// MARK: - kubeconfig

extension KubernetesConfiguration {
    /// Reads a kubeconfig file; relative file references resolve against the file's directory, like kubectl.
    package static func kubeconfig(path: String, context: String? = nil) throws(KubernetesConfigurationError) -> KubernetesConfiguration {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw .fileUnreadable(path: path, reason: "\(error)")
        }
        var directory = "."
        if let slash = path.lastIndex(of: "/") { directory = slash == path.startIndex ? "/" : String(path[..<slash]) }
        return try kubeconfig(yaml: text, path: path, baseDirectory: directory, context: context)
    }

    /// Parses kubeconfig YAML: `current-context` (or `context`), the cluster's `server`, `certificate-authority(-data)`,
    /// `insecure-skip-tls-verify`, the user's `token`, `tokenFile`, `client-certificate(-data)`, `client-key(-data)`,
    /// and the context's namespace.
    package static func kubeconfig(
        yaml: String, path: String, baseDirectory: String, context: String? = nil
    ) throws(KubernetesConfigurationError) -> KubernetesConfiguration {
        let file: KubeconfigFile
        do {
            file = try YAMLDecoder().decode(KubeconfigFile.self, from: yaml)
        } catch {
            throw .invalidKubeconfig(path: path, detail: "\(error)")
        }
        guard let contextName = context ?? file.currentContext.flatMap({ $0.isEmpty ? nil : $0 }) else {
            throw .contextNotFound(name: "(current-context not set)", path: path)
        }
        guard let selected = file.contexts?.first(where: { $0.name == contextName })?.context else {
            throw .contextNotFound(name: contextName, path: path)
        }
        guard let cluster = file.clusters?.first(where: { $0.name == selected.cluster })?.cluster else {
            throw .referenceNotFound(kind: "cluster", name: selected.cluster, path: path)
        }
        guard let server = cluster.server, !server.isEmpty else {
            throw .invalidKubeconfig(path: path, detail: "cluster '\(selected.cluster)' has no server")
        }
        func resolve(_ file: String) -> String { file.hasPrefix("/") ? file : baseDirectory + "/" + file }
        func pem(data: String?, file: String?, field: String) throws(KubernetesConfigurationError) -> PEMSource? {
            if let data, !data.isEmpty {
                guard let decoded = Data(base64Encoded: data.filter { !$0.isWhitespace }) else {
                    throw .invalidKubeconfig(path: path, detail: "\(field)-data is not base64")
                }
                return .data(Array(decoded))
            }
            return file.flatMap { $0.isEmpty ? nil : .file(resolve($0)) }
        }

        var configuration = KubernetesConfiguration(
            serverURL: server,
            certificateAuthority: try pem(data: cluster.certificateAuthorityData, file: cluster.certificateAuthority, field: "certificate-authority"),
            insecureSkipTLSVerify: cluster.insecureSkipTLSVerify ?? false,
            namespace: selected.namespace.flatMap { $0.isEmpty ? nil : $0 } ?? "default",
            origin: "kubeconfig \(path) context \(contextName)"
        )
        guard let userName = selected.user, !userName.isEmpty else { return configuration }
        guard let user = file.users?.first(where: { $0.name == userName })?.user else {
            throw .referenceNotFound(kind: "user", name: userName, path: path)
        }
        if user.exec != nil { throw .unsupportedAuthentication(user: userName, method: "an exec credential plugin", path: path) }
        if user.authProvider != nil { throw .unsupportedAuthentication(user: userName, method: "an auth-provider", path: path) }
        if user.username != nil || user.password != nil {
            throw .unsupportedAuthentication(user: userName, method: "basic authentication", path: path)
        }
        configuration.clientCertificate = try pem(data: user.clientCertificateData, file: user.clientCertificate, field: "client-certificate")
        configuration.clientKey = try pem(data: user.clientKeyData, file: user.clientKey, field: "client-key")
        if let token = user.token, !token.isEmpty {
            do {
                configuration.credentials = try StaticTokenSource(token: token, origin: "kubeconfig \(path) user \(userName)", scheme: .bearer)
            } catch {
                throw .invalidKubeconfig(path: path, detail: "user '\(userName)' has an empty token")
            }
        } else if let tokenFile = user.tokenFile, !tokenFile.isEmpty {
            configuration.credentials = TokenFileSource(path: resolve(tokenFile), scheme: .bearer)
        }
        return configuration
    }
}

/// The parts of a kubeconfig file Shoal reads.
private struct KubeconfigFile: Decodable {
    var currentContext: String?
    var clusters: [NamedCluster]?
    var users: [NamedUser]?
    var contexts: [NamedContext]?

    enum CodingKeys: String, CodingKey {
        case currentContext = "current-context"
        case clusters, users, contexts
    }

    struct NamedCluster: Decodable {
        var name: String
        var cluster: Cluster
    }

    struct Cluster: Decodable {
        var server: String?
        var certificateAuthority: String?
        var certificateAuthorityData: String?
        var insecureSkipTLSVerify: Bool?

        enum CodingKeys: String, CodingKey {
            case server
            case certificateAuthority = "certificate-authority"
            case certificateAuthorityData = "certificate-authority-data"
            case insecureSkipTLSVerify = "insecure-skip-tls-verify"
        }
    }

    struct NamedUser: Decodable {
        var name: String
        var user: User
    }

    struct User: Decodable {
        var token: String?
        var tokenFile: String?
        var clientCertificate: String?
        var clientCertificateData: String?
        var clientKey: String?
        var clientKeyData: String?
        var username: String?
        var password: String?
        var exec: Present?
        var authProvider: Present?

        enum CodingKeys: String, CodingKey {
            case token, tokenFile, username, password, exec
            case clientCertificate = "client-certificate"
            case clientCertificateData = "client-certificate-data"
            case clientKey = "client-key"
            case clientKeyData = "client-key-data"
            case authProvider = "auth-provider"
        }
    }

    struct NamedContext: Decodable {
        var name: String
        var context: Context
    }

    struct Context: Decodable {
        var cluster: String
        var user: String?
        var namespace: String?
    }

    /// Any value; only its presence matters.
    struct Present: Decodable {
        init(from decoder: any Decoder) throws {}
    }
}

