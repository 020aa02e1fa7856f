import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Computes the system capabilities the way the real agent does on Linux.
///
/// Sources, later ones overriding earlier ones: every environment variable (minus long values, a fixed deny
/// list and the names in `VSO_AGENT_IGNORE`), the `Agent.*` facts, tools found on `PATH`, and the optional
/// `.capabilities` file. Demand matching in the simulator runs against exactly this dictionary.
struct CapabilityScanner: Sendable {
    /// The agent name to report as `Agent.Name`.
    let agentName: String
    /// The agent directory (`Agent.HomeDirectory`, `.capabilities`).
    let directory: AgentDirectory

    /// Environment variables the real agent never reports (matched case-sensitively, as on Linux).
    static let excludedVariables: Set<String> = [
        "comp_wordbreaks", "ls_colors", "TERM", "TERM_PROGRAM", "TERM_PROGRAM_VERSION", "SHLVL", "PSMODULEPATH",
        "SYSTEM_ACCESSTOKEN",
    ]

    /// Capability name → executable looked up on `PATH` (a subset of the real NixCapabilitiesProvider).
    static let tools: [(capability: String, executable: String)] = [
        ("ant", "ant"), ("bundler", "bundle"), ("clang", "clang"), ("cmake", "cmake"), ("curl", "curl"),
        ("docker", "docker"), ("dotnet", "dotnet"), ("git", "git"), ("gulp", "gulp"), ("java", "java"),
        ("make", "make"), ("maven", "mvn"), ("node.js", "node"), ("npm", "npm"), ("python", "python"),
        ("python3", "python3"), ("rake", "rake"), ("ruby", "ruby"), ("sh", "sh"), ("svn", "svn"),
        ("subversion", "svn"), ("AzureGuestAgent", "waagent"),
    ]

    /// Scans the current process environment and file system.
    func scan(environment: [String: String] = ProcessEnvironment.current()) -> [String: String] {
        var capabilities: [String: String] = [:]

        let ignored = Set(
            (environment["VSO_AGENT_IGNORE"] ?? "").split(separator: ",")
                .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        )
        for (name, value) in environment
        where value.count < 1024 && !Self.excludedVariables.contains(name) && !ignored.contains(name) {
            capabilities[name] = value
        }

        capabilities["Agent.Name"] = agentName
        capabilities["Agent.OS"] = "Linux"
        capabilities["Agent.OSArchitecture"] = Self.architecture
        capabilities["Agent.Version"] = directory.version
        capabilities["Agent.ComputerName"] = Self.hostName
        capabilities["Agent.HomeDirectory"] = directory.root.path
        capabilities["InteractiveSession"] = "False"

        let path = (environment["PATH"] ?? "").split(separator: ":").map(String.init)
        for tool in Self.tools {
            if let found = Self.find(tool.executable, in: path) {
                capabilities[tool.capability] = found
            }
        }

        if let text = try? String(contentsOf: directory.userCapabilitiesFile, encoding: .utf8) {
            for line in text.split(whereSeparator: \.isNewline) {
                guard let equals = line.firstIndex(of: "=") else { continue }
                let name = line[..<equals].trimmingCharacters(in: .whitespaces)
                if !name.isEmpty {
                    capabilities[name] = String(line[line.index(after: equals)...])
                }
            }
        }
        return capabilities
    }

    /// `X64`, `ARM64`, ... like .NET's `RuntimeInformation.OSArchitecture`.
    static var architecture: String {
        #if arch(x86_64)
        "X64"
        #elseif arch(arm64)
        "ARM64"
        #elseif arch(arm)
        "ARM"
        #else
        "X86"
        #endif
    }

    /// The machine's host name (`Environment.MachineName`).
    static var hostName: String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "localhost" }
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// `uname -srv`-like description, the agent's `osDescription`.
    static var osDescription: String {
        var info = utsname()
        guard uname(&info) == 0 else { return "Linux" }
        func field<T>(_ value: T) -> String {
            withUnsafeBytes(of: value) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
        }
        return "\(field(info.sysname)) \(field(info.release)) \(field(info.version))"
    }

    private static func find(_ executable: String, in path: [String]) -> String? {
        for directory in path where !directory.isEmpty {
            let candidate = directory + "/" + executable
            if access(candidate, X_OK) == 0 {
                var isDirectory: ObjCBool = false
                if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDirectory), !isDirectory.boolValue {
                    return candidate
                }
            }
        }
        return nil
    }
}
