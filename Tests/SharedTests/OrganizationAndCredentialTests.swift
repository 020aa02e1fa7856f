import Foundation
import Testing
@testable import Shared

@Suite("Organization URLs")
struct OrganizationURLTests {
    @Test("accepted forms normalize without a trailing slash", arguments: [
        ("https://dev.azure.com/contoso", "https://dev.azure.com/contoso", "contoso"),
        ("https://dev.azure.com/contoso/", "https://dev.azure.com/contoso", "contoso"),
        ("  https://dev.azure.com/contoso  ", "https://dev.azure.com/contoso", "contoso"),
        ("https://contoso.visualstudio.com", "https://contoso.visualstudio.com", "contoso"),
        ("https://contoso.visualstudio.com/", "https://contoso.visualstudio.com", "contoso"),
        ("http://127.0.0.1:8080/shoal-sim", "http://127.0.0.1:8080/shoal-sim", "shoal-sim"),
        ("http://127.0.0.1:8080/shoal-sim/", "http://127.0.0.1:8080/shoal-sim", "shoal-sim"),
        ("http://[::1]:8080/org", "http://[::1]:8080/org", "org"),
    ])
    func accepted(text: String, normalized: String, organization: String) throws {
        let url = try OrganizationURL(text)
        #expect(url.description == normalized)
        #expect(url.organizationName == organization)
    }

    @Test("refused forms say what is wrong", arguments: [
        ("", "empty"),
        ("dev.azure.com/contoso", "scheme"),
        ("ftp://dev.azure.com/contoso", "scheme"),
        ("https://dev.azure.com", "exactly one path segment"),
        ("https://dev.azure.com/contoso/project", "exactly one path segment"),
        ("https://contoso.visualstudio.com/project", "no path"),
        ("https://dev.azure.com/contoso?x=1", "query"),
    ])
    func refused(text: String, reason: String) {
        #expect {
            try OrganizationURL(text)
        } throws: { error in
            "\(error)".contains(reason) && "\(error)".contains("organization URL")
        }
    }

    @Test("route paths and query values are percent-encoded")
    func apiURL() throws {
        let url = try OrganizationURL("https://dev.azure.com/contoso/")
        #expect(url.apiURL(["distributedtask", "pools"], query: [("poolName", "Linux pool/1 & co"), ("api-version", "7.1")])
            == "https://dev.azure.com/contoso/_apis/distributedtask/pools?poolName=Linux%20pool%2F1%20%26%20co&api-version=7.1")
        #expect(url.apiURL(["distributedtask", "pools", "44", "jobrequests"], query: [("$top", "10")])
            == "https://dev.azure.com/contoso/_apis/distributedtask/pools/44/jobrequests?$top=10")
        #expect(url.apiURL(["x y"]) == "https://dev.azure.com/contoso/_apis/x%20y")
    }

    @Test("loopback detection")
    func loopback() throws {
        #expect(try OrganizationURL("http://127.0.0.1:1/o").isLoopback)
        #expect(try OrganizationURL("http://localhost:1/o").isLoopback)
        #expect(try !OrganizationURL("https://dev.azure.com/o").isLoopback)
    }
}

@Suite("Credentials")
struct CredentialTests {
    @Test("a PAT is Basic with an empty user name and no trailing newline")
    func basic() async throws {
        #expect(PersonalAccessToken.basicHeader("abc\n") == "Basic OmFiYw==")
        let source = try StaticTokenSource(token: "abc", origin: "AZDO_TOKEN")
        #expect(try await source.authorizationHeader() == "Basic OmFiYw==")
        #expect(source.summary == "PAT from AZDO_TOKEN")
        #expect(!source.summary.contains("abc"))
    }

    @Test("a blank token is refused")
    func blank() {
        #expect(throws: CredentialError.empty(source: "AZP_TOKEN")) { try StaticTokenSource(token: " \n", origin: "AZP_TOKEN") }
    }

    @Test("the token file is re-read when it changes, including an atomic symlink swap")
    func rotation() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("shoal-cred-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("token").path
        try "first\n".write(toFile: path, atomically: false, encoding: .utf8)
        let source = TokenFileSource(path: path)
        #expect(try await source.currentToken() == "first")
        try "second-token".write(toFile: path, atomically: false, encoding: .utf8)
        #expect(try await source.currentToken() == "second-token")

        // Kubernetes updates a mounted Secret by pointing a symlink at a new directory.
        let versioned = directory.appendingPathComponent("..v2")
        try FileManager.default.createDirectory(at: versioned, withIntermediateDirectories: true)
        try "third".write(to: versioned.appendingPathComponent("token"), atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: versioned.appendingPathComponent("token").path)
        #expect(try await source.currentToken() == "third")
        #expect(try await source.authorizationHeader() == PersonalAccessToken.basicHeader("third"))
    }

    @Test("a missing or empty token file names the file")
    func missing() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("shoal-missing-\(UUID().uuidString)").path
        let source = TokenFileSource(path: path)
        await #expect { try await source.currentToken() } throws: { error in
            guard case CredentialError.unreadable(let where_, _) = error else { return false }
            return where_ == path
        }
        try "\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        await #expect(throws: CredentialError.empty(source: "file \(path)")) { try await source.currentToken() }
    }
}

@Suite("Retry policy")
struct RetryPolicyTests {
    @Test("backoff doubles, is capped, and jitter keeps it within half to full")
    func backoff() {
        let policy = RetryPolicy(maxAttempts: 10, initialBackoff: .milliseconds(500), maxBackoff: .seconds(4))
        #expect(policy.backoff(beforeRetry: 1, jitter: 1) == .milliseconds(500))
        #expect(policy.backoff(beforeRetry: 2, jitter: 1) == .seconds(1))
        #expect(policy.backoff(beforeRetry: 3, jitter: 1) == .seconds(2))
        #expect(policy.backoff(beforeRetry: 4, jitter: 1) == .seconds(4))
        #expect(policy.backoff(beforeRetry: 9, jitter: 1) == .seconds(4))
        #expect(policy.backoff(beforeRetry: 3, jitter: 0.5) == .seconds(1))
        #expect(policy.backoff(beforeRetry: 3, jitter: 0) == .seconds(1))   // jitter is clamped to 0.5...1
        #expect(policy.backoff(beforeRetry: 100, jitter: 1) == .seconds(4))
        #expect(RetryPolicy(maxAttempts: 0).maxAttempts == 1)
    }
}
