import Foundation
import NIOSSL
import Kubernetes
import Simulators
import Shared
import Testing

/// A fresh temporary directory for one test.
func makeTemporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("shoal-kube-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// A self-signed certificate and its key in PEM, made with openssl.
func makeCertificate(in directory: URL) throws -> (certificate: String, key: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
        "-subj", "/CN=shoal-test", "-keyout", directory.appendingPathComponent("key.pem").path, "-out", directory.appendingPathComponent("cert.pem").path,
    ]
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    try #require(process.terminationStatus == 0, "openssl failed")
    return (
        try String(contentsOf: directory.appendingPathComponent("cert.pem"), encoding: .utf8),
        try String(contentsOf: directory.appendingPathComponent("key.pem"), encoding: .utf8)
    )
}

@Suite("Kubernetes configuration: kubeconfig and in-cluster")
struct KubernetesConfigurationTests {
    /// Written the way kubectl writes files: sequences at their key's indentation, quoted strings, comments.
    static let kubectlStyle = """
        apiVersion: v1
        kind: Config
        # the active context
        current-context: dev
        clusters:
        - cluster:
            certificate-authority: pki/ca.crt
            server: https://127.0.0.1:6443
          name: local
        - cluster:
            insecure-skip-tls-verify: true
            server: "https://[fd00::1]:443/"
          name: insecure
        contexts:
        - context:
            cluster: local
            namespace: ci-agents
            user: admin
          name: dev
        - context:
            cluster: insecure
            user: from-file
          name: other
        - context:
            cluster: local
            user: plugin
          name: exec
        preferences: {}
        users:
        - name: admin
          user:
            token: 'abc.def'   # inline comment
        - name: from-file
          user:
            tokenFile: secrets/token
        - name: plugin
          user:
            exec:
              apiVersion: client.authentication.k8s.io/v1beta1
              command: aws
              args:
              - eks
              - get-token
        """

    @Test func kubeconfigWithTokenAndCAFile() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("config").path
        try Self.kubectlStyle.write(toFile: path, atomically: true, encoding: .utf8)

        let configuration = try KubernetesConfiguration.kubeconfig(path: path)
        #expect(configuration.serverURL == "https://127.0.0.1:6443")
        #expect(configuration.namespace == "ci-agents")
        #expect(configuration.certificateAuthority == .file(directory.path + "/pki/ca.crt"))
        #expect(configuration.insecureSkipTLSVerify == false)
        #expect(try await configuration.credentials?.authorizationHeader() == "Bearer abc.def")
        #expect(configuration.credentials?.summary.contains("abc") == false)
    }

    @Test func kubeconfigWithTokenFileAndInsecureCluster() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("secrets"), withIntermediateDirectories: true)
        try "file-token\n".write(to: directory.appendingPathComponent("secrets/token"), atomically: true, encoding: .utf8)
        let path = directory.appendingPathComponent("config").path
        try Self.kubectlStyle.write(toFile: path, atomically: true, encoding: .utf8)

        let configuration = try KubernetesConfiguration.kubeconfig(path: path, context: "other")
        #expect(configuration.serverURL == "https://[fd00::1]:443")
        #expect(configuration.insecureSkipTLSVerify)
        #expect(configuration.namespace == "default")
        #expect(try await configuration.credentials?.authorizationHeader() == "Bearer file-token")
        let tls = try configuration.makeTLSConfiguration()
        #expect(tls.certificateVerification == .none)
    }

    @Test func kubeconfigWithInlineCertificateData() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (certificate, key) = try makeCertificate(in: directory)
        let base64 = { (text: String) in Data(text.utf8).base64EncodedString() }
        let yaml = """
            current-context: c
            clusters:
            - name: k
              cluster:
                server: https://127.0.0.1:1
                certificate-authority-data: \(base64(certificate))
            users:
            - name: u
              user:
                client-certificate-data: \(base64(certificate))
                client-key-data: \(base64(key))
            contexts:
            - name: c
              context: {cluster: k, user: u}
            """
        let configuration = try KubernetesConfiguration.kubeconfig(yaml: yaml, path: "inline", baseDirectory: "/")
        #expect(configuration.certificateAuthority == .data(Array(certificate.utf8)))
        #expect(configuration.clientCertificate == .data(Array(certificate.utf8)))
        #expect(configuration.clientKey == .data(Array(key.utf8)))
        #expect(configuration.credentials == nil)
        let tls = try configuration.makeTLSConfiguration()
        #expect(tls.certificateChain.count == 1)
        #expect(tls.privateKey != nil)

        var broken = configuration
        broken.clientKey = .data(Array("not a key".utf8))
        #expect(throws: KubernetesConfigurationError.self) { try broken.makeTLSConfiguration() }
    }

    @Test func kubeconfigErrors() throws {
        #expect(throws: KubernetesConfigurationError.contextNotFound(name: "nope", path: "inline")) {
            try KubernetesConfiguration.kubeconfig(yaml: Self.kubectlStyle, path: "inline", baseDirectory: "/", context: "nope")
        }
        #expect(throws: KubernetesConfigurationError.unsupportedAuthentication(user: "plugin", method: "an exec credential plugin", path: "inline")) {
            try KubernetesConfiguration.kubeconfig(yaml: Self.kubectlStyle, path: "inline", baseDirectory: "/", context: "exec")
        }
        #expect(throws: KubernetesConfigurationError.self) {
            try KubernetesConfiguration.kubeconfig(yaml: "clusters:\n\t- bad", path: "inline", baseDirectory: "/")
        }
        let unreadable = #expect(throws: KubernetesConfigurationError.self) { try KubernetesConfiguration.kubeconfig(path: "/nonexistent/kubeconfig") }
        guard case .fileUnreadable(let path, _) = unreadable else { Issue.record("expected fileUnreadable"); return }
        #expect(path == "/nonexistent/kubeconfig")
    }

    @Test func resolvePrefersFlagThenFirstKUBECONFIGEntry() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let first = directory.appendingPathComponent("first").path
        try Self.kubectlStyle.write(toFile: first, atomically: true, encoding: .utf8)
        let fromEnvironment = try KubernetesConfiguration.resolve(environment: ["KUBECONFIG": "\(first):/nonexistent/second"])
        #expect(fromEnvironment.origin.contains(first))
        #expect(fromEnvironment.namespace == "ci-agents")
        let fromFlag = try KubernetesConfiguration.resolve(kubeconfigPath: first, context: "other", environment: ["KUBECONFIG": "/nonexistent"])
        #expect(fromFlag.serverURL == "https://[fd00::1]:443")
        #expect(throws: KubernetesConfigurationError.self) { try KubernetesConfiguration.resolve(environment: [:]) }
    }

    @Test func inClusterConfigurationAndTokenRotation() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let paths = InClusterPaths(directory: directory.path)
        try "token-1\n".write(toFile: paths.tokenFile, atomically: true, encoding: .utf8)
        try "-----BEGIN CERTIFICATE-----\n".write(toFile: paths.caFile, atomically: true, encoding: .utf8)
        try "shoal-system\n".write(toFile: paths.namespaceFile, atomically: true, encoding: .utf8)

        let ipv6 = try KubernetesConfiguration.inCluster(paths: paths, environment: ["KUBERNETES_SERVICE_HOST": "fd00:10:96::1", "KUBERNETES_SERVICE_PORT": "443"])
        #expect(ipv6.serverURL == "https://[fd00:10:96::1]:443")
        #expect(ipv6.namespace == "shoal-system")
        #expect(ipv6.certificateAuthority == .file(paths.caFile))
        let ipv4 = try KubernetesConfiguration.inCluster(paths: paths, environment: ["KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "6443"])
        #expect(ipv4.serverURL == "https://10.96.0.1:6443")

        let credentials = try #require(ipv4.credentials)
        #expect(try await credentials.authorizationHeader() == "Bearer token-1")
        // The kubelet rotates by swapping the file (new inode): the next request uses the new token.
        try "token-2".write(toFile: paths.tokenFile, atomically: true, encoding: .utf8)
        #expect(try await credentials.authorizationHeader() == "Bearer token-2")

        #expect(throws: KubernetesConfigurationError.notInCluster(missing: "KUBERNETES_SERVICE_HOST")) {
            try KubernetesConfiguration.inCluster(paths: paths, environment: [:])
        }
        try FileManager.default.removeItem(atPath: paths.tokenFile)
        #expect(throws: KubernetesConfigurationError.notInCluster(missing: paths.tokenFile)) {
            try KubernetesConfiguration.inCluster(paths: paths, environment: ["KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "1"])
        }
        let resolved = try? KubernetesConfiguration.resolve(environment: ["KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "1"], inClusterPaths: paths)
        #expect(resolved == nil)
    }

    @Test("kubeconfig YAML as kubectl and people write it: anchors, flow maps, block scalars, numeric-looking tokens")
    func yamlForms() async throws {
        let yaml = """
            apiVersion: v1
            kind: Config
            current-context: dev
            clusters:
            - name: c1
              cluster: &c {server: "https://10.0.0.1:6443", insecure-skip-tls-verify: true}
            contexts:
            - name: dev
              context:
                cluster: c1
                user: u1
                namespace: team-a   # trailing comment
            users:
            - name: u1
              user:
                token: 12345
            """
        let configuration = try KubernetesConfiguration.kubeconfig(yaml: yaml, path: "inline", baseDirectory: "/tmp")
        #expect(configuration.serverURL == "https://10.0.0.1:6443")
        #expect(configuration.insecureSkipTLSVerify)
        #expect(configuration.namespace == "team-a")
        #expect(try await configuration.credentials?.authorizationHeader() == "Bearer 12345")
        #expect(throws: KubernetesConfigurationError.self) {
            try KubernetesConfiguration.kubeconfig(yaml: "clusters: [", path: "broken", baseDirectory: "/tmp")
        }
    }
}
