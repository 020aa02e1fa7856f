import Shared

/// Which Azure DevOps organizations AgentPools may point the controller at.
///
/// The controller sends the token Secret to `spec.organizationUrl`, so whoever may write an AgentPool could
/// otherwise make it send that Secret to any host. The policy is the controller's setting, never the AgentPool's:
/// `https` only, and the host must match the allow-list (`dev.azure.com` and `*.visualstudio.com` by default).
struct OrganizationPolicy: Sendable, Equatable {
    /// The default allow-list: Azure DevOps Services' two host forms.
    static let defaultAllowedHosts = ["dev.azure.com", "*.visualstudio.com"]

    /// Host patterns: an exact host (`dev.azure.com`, `tfs.example.com:8443` with its port), or `*.suffix`
    /// matching any subdomain of `suffix` (not `suffix` itself). Compared ignoring case.
    var allowedHosts: [String]
    /// Whether `http://` URLs are accepted too (for tests against a local simulator; a controller flag only).
    var allowInsecure: Bool

    /// A policy; host patterns are validated by ``parse(_:)`` before they get here.
    init(allowedHosts: [String] = Self.defaultAllowedHosts, allowInsecure: Bool = false) {
        self.allowedHosts = allowedHosts.map { $0.lowercased() }
        self.allowInsecure = allowInsecure
    }

    /// Parses a comma-separated allow-list, naming the bad entry.
    static func parse(_ text: String) throws(SettingsError) -> [String] {
        let entries = text.split(separator: ",").map { $0.trimmingWhitespace() }.filter { !$0.isEmpty }
        guard !entries.isEmpty else {
            throw SettingsError(key: "--allowed-organization-hosts / SHOAL_ALLOWED_ORGANIZATION_HOSTS", problem: "is empty")
        }
        for entry in entries {
            let host = entry.hasPrefix("*.") ? String(entry.dropFirst(2)) : entry
            let valid = !host.isEmpty && !host.contains("*") && !host.contains("/") && !host.contains("@")
                && host.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == ":") }
            guard valid else {
                throw SettingsError(
                    key: "--allowed-organization-hosts / SHOAL_ALLOWED_ORGANIZATION_HOSTS",
                    problem: "'\(entry)' is not a host name, host:port or *.domain pattern")
            }
        }
        return entries
    }

    /// Checks an AgentPool's organization URL, naming the field and what to change.
    func check(_ url: OrganizationURL, field: String = "spec.organizationUrl") throws(SpecError) {
        if url.scheme != "https" && !allowInsecure {
            throw SpecError(
                field: field,
                problem: "'\(url)' must use https: the controller sends the pool's token there (plain http is only for tests, "
                    + "with the controller flag --allow-insecure-organization-urls)")
        }
        guard allows(host: url.host, port: url.port) else {
            throw SpecError(
                field: field,
                problem: "host '\(url.host)' is not in the controller's allow-list (\(allowedHosts.joined(separator: ", "))); "
                    + "an administrator can extend it with --allowed-organization-hosts / SHOAL_ALLOWED_ORGANIZATION_HOSTS")
        }
    }

    /// Whether a host (and port) matches one of the patterns.
    func allows(host: String, port: Int?) -> Bool {
        let host = host.lowercased()
        let withPort = port.map { "\(host):\($0)" }
        return allowedHosts.contains { pattern in
            if pattern.hasPrefix("*.") {
                let suffix = pattern.dropFirst(1)  // ".visualstudio.com"
                return host.hasSuffix(suffix) && host.count > suffix.count
            }
            return pattern == host || pattern == withPort
        }
    }
}
