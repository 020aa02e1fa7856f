import AsyncHTTPClient
import Logging
import NIOCore
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

/// Why the agent could not be downloaded.
struct AgentDownloadError: Error, CustomStringConvertible {
    /// What went wrong, naming the platform or URL.
    let description: String
}

/// Puts an agent into an empty agent directory: newest package for this platform from the organization's
/// packages API, downloaded and extracted with `tar`.
///
/// Baking the agent into the image is better (no download per pod, a pinned version); this keeps a bare image
/// working.
struct AgentInstaller: Sendable {
    /// The organization's API.
    let api: any AzureDevOpsAPI
    /// HTTP client for the tarball.
    let http: HTTPClient
    /// Spawns `tar`.
    let launcher: any ProcessLauncher
    /// Logger.
    let logger: Logger

    /// Whether `directory` already holds an agent (`config.sh` and `bin/Agent.Listener`).
    static func hasAgent(in directory: String) -> Bool {
        access(directory + "/config.sh", X_OK) == 0 && access(directory + "/bin/Agent.Listener", X_OK) == 0
    }

    /// The agent platform of this machine: `linux-x64`, `linux-arm64`, `linux-arm` or `linux-musl-x64`.
    static func detectPlatform() -> String {
        var name = utsname()
        uname(&name)
        let machine = withUnsafeBytes(of: &name.machine) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        let architecture: String
        switch machine {
        case "aarch64", "arm64": architecture = "arm64"
        case let value where value.hasPrefix("arm"): architecture = "arm"
        default: architecture = "x64"
        }
        let musl = access("/etc/alpine-release", F_OK) == 0 || access("/lib/ld-musl-x86_64.so.1", F_OK) == 0
        return musl && architecture == "x64" ? "linux-musl-x64" : "linux-\(architecture)"
    }

    /// Downloads and extracts the newest agent for `platform` into `directory`.
    func install(into directory: String, platform: String) async throws(AgentDownloadError) {
        logger.warning(
            "the agent directory holds no agent; downloading one (bake the agent into the image instead: faster pods, pinned version)",
            metadata: ["agent_dir": "\(directory)", "platform": "\(platform)"])
        let package: AgentPackage?
        do {
            package = try await api.newestAgentPackage(platform: platform)
        } catch {
            throw AgentDownloadError(description: "cannot list agent packages for \(platform): \(error)")
        }
        guard let package else {
            throw AgentDownloadError(description: "the organization offers no agent package for platform \(platform) (set AZP_AGENT_PLATFORM?)")
        }
        guard mkdirAll(directory) else {
            throw AgentDownloadError(description: "cannot create the agent directory \(directory): \(String(cString: strerror(errno)))")
        }
        let archive = directory + "/.agent-package.tar.gz"
        defer { unlink(archive) }
        logger.info("downloading agent", metadata: ["version": "\(package.version)", "url": "\(package.downloadUrl)"])
        try await download(package.downloadUrl, to: archive)
        if let expected = package.hashValue?.lowercased(), !expected.isEmpty {
            try await verify(archive, sha256: expected)
        }

        let tar = access("/bin/tar", X_OK) == 0 ? "/bin/tar" : "/usr/bin/tar"
        let process: ChildProcess
        do {
            process = try launcher.launch(
                ProcessSpecification(
                    executable: tar, arguments: ["-xzf", archive, "-C", directory],
                    environment: ["PATH": "/usr/local/bin:/usr/bin:/bin"], workingDirectory: directory))
        } catch {
            throw AgentDownloadError(description: error.description)
        }
        for await _ in process.lines {}
        let status = await process.exitStatus()
        guard status == .exited(0) else { throw AgentDownloadError(description: "tar -xzf \(archive) ended with \(status)") }
        guard Self.hasAgent(in: directory) else {
            throw AgentDownloadError(description: "the package \(package.downloadUrl) holds no config.sh / bin/Agent.Listener")
        }
        logger.info("agent installed", metadata: ["version": "\(package.version)", "agent_dir": "\(directory)"])
    }

    private func download(_ url: String, to path: String) async throws(AgentDownloadError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw AgentDownloadError(description: "cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        do {
            let response = try await http.execute(HTTPClientRequest(url: url), timeout: .seconds(1500))
            // `HTTPResponseStatus` lives in NIOHTTP1, which this target does not import; its description is "CODE ...".
            let status = String(describing: response.status)
            guard status.hasPrefix("200") else {
                throw AgentDownloadError(description: "GET \(url) answered \(status)")
            }
            for try await chunk in response.body {
                OutputRelay.writeAll(fd, Array(chunk.readableBytesView)[...])
            }
        } catch let error as AgentDownloadError {
            throw error
        } catch {
            throw AgentDownloadError(description: "downloading \(url) failed: \(error)")
        }
    }

    /// Compares the archive's SHA-256 (via `sha256sum`, no crypto library needed) with the published hash.
    private func verify(_ archive: String, sha256 expected: String) async throws(AgentDownloadError) {
        let candidates: [String] = ["/usr/bin/sha256sum", "/bin/sha256sum"]
        let tool = candidates.first { access($0, X_OK) == 0 }
        guard let tool else {
            logger.warning("sha256sum not found; the agent package's hash is not verified")
            return
        }
        let process: ChildProcess
        do {
            process = try launcher.launch(
                ProcessSpecification(
                    executable: tool, arguments: [archive], environment: [:], workingDirectory: nil, forwardOutput: false))
        } catch {
            throw AgentDownloadError(description: error.description)
        }
        var output: [String] = []
        for await line in process.lines { output.append(line) }
        guard await process.exitStatus() == .exited(0), let actual = output.first?.split(separator: " ").first else {
            throw AgentDownloadError(description: "cannot compute the SHA-256 of \(archive)")
        }
        guard actual.lowercased() == expected else {
            throw AgentDownloadError(description: "the agent package's SHA-256 is \(actual), but the organization published \(expected)")
        }
        logger.info("agent package hash verified", metadata: ["sha256": "\(expected)"])
    }

    private func mkdirAll(_ path: String) -> Bool {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o755) != 0, errno != EEXIST { return false }
        }
        return true
    }
}
