#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A validated Azure DevOps organization URL, the base every REST route hangs off.
///
/// Accepts `https://dev.azure.com/ORG`, `https://ORG.visualstudio.com` and, for simulators and on-premises
/// servers, `http(s)://HOST[:PORT]/PATH`; a trailing slash is ignored.
package struct OrganizationURL: Sendable, Hashable, CustomStringConvertible {
    /// Why a URL was refused; the description names the problem and the value.
    package struct InvalidError: Error, CustomStringConvertible {
        /// The offending text.
        package let value: String
        /// What is wrong with it.
        package let reason: String
        package var description: String { "invalid organization URL '\(value)': \(reason)" }
    }

    /// `http` or `https`.
    package let scheme: String
    /// Host name or address, without brackets for IPv6.
    package let host: String
    /// Explicit port, if any.
    package let port: Int?
    /// Path segments after the host (the organization for dev.azure.com); empty for `ORG.visualstudio.com`.
    package let pathSegments: [String]

    /// Parses and validates an organization URL.
    package init(_ text: String) throws(InvalidError) {
        let trimmed = text.trimmingWhitespace()
        guard !trimmed.isEmpty else { throw InvalidError(value: text, reason: "it is empty") }
        guard let components = URLComponents(string: trimmed) else { throw InvalidError(value: text, reason: "not a URL") }
        guard let scheme = components.scheme?.lowercased() else {
            throw InvalidError(value: text, reason: "it has no scheme; the scheme must be https, as in https://dev.azure.com/ORGANIZATION")
        }
        guard scheme == "https" || scheme == "http" else {
            throw InvalidError(value: text, reason: "the scheme must be https (or http for a local simulator)")
        }
        guard var host = components.host, !host.isEmpty else { throw InvalidError(value: text, reason: "it has no host") }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard components.query == nil, components.fragment == nil else {
            throw InvalidError(value: text, reason: "it must not have a query or fragment")
        }
        let segments = components.path.split(separator: "/").map(String.init)
        let lowerHost = host.lowercased()
        if lowerHost == "dev.azure.com" {
            guard segments.count == 1 else {
                throw InvalidError(value: text, reason: "expected https://dev.azure.com/ORGANIZATION (exactly one path segment)")
            }
        } else if lowerHost.hasSuffix(".visualstudio.com") {
            guard segments.isEmpty else {
                throw InvalidError(value: text, reason: "expected https://ORGANIZATION.visualstudio.com with no path")
            }
        }
        self.scheme = scheme
        self.host = host
        self.port = components.port
        self.pathSegments = segments
    }

    /// The normalized URL without a trailing slash.
    package var description: String {
        var text = "\(scheme)://\(host.contains(":") ? "[\(host)]" : host)"
        if let port { text += ":\(port)" }
        for segment in pathSegments { text += "/" + Self.percentEncodePathSegment(segment) }
        return text
    }

    /// The organization's name: the path segment for dev.azure.com, the subdomain for visualstudio.com.
    package var organizationName: String {
        if host.lowercased().hasSuffix(".visualstudio.com") {
            return String(host.split(separator: ".").first ?? "")
        }
        return pathSegments.last ?? host
    }

    /// Whether the URL points at this machine (a simulator), where plain http is acceptable.
    package var isLoopback: Bool {
        let lower = host.lowercased()
        return lower == "localhost" || lower == "::1" || lower.hasPrefix("127.")
    }

    /// The URL of `_apis/<path>` with query items; each path segment and query value is percent-encoded.
    package func apiURL(_ segments: [String], query: [(String, String)] = []) -> String {
        var text = description + "/_apis"
        for segment in segments { text += "/" + Self.percentEncodePathSegment(segment) }
        if !query.isEmpty {
            text += "?" + query.map { "\(Self.percentEncodeQuery($0.0))=\(Self.percentEncodeQuery($0.1))" }.joined(separator: "&")
        }
        return text
    }

    private static let unreserved = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~".utf8)

    /// Percent-encodes everything but RFC 3986 unreserved characters (so a pool name `a b/c` stays one segment).
    package static func percentEncodePathSegment(_ text: String) -> String { percentEncode(text, keeping: unreserved) }

    /// Percent-encodes a query name or value; `$` is kept so `$top` reads as the service documents it.
    package static func percentEncodeQuery(_ text: String) -> String {
        percentEncode(text, keeping: unreserved.union("$,".utf8))
    }

    private static func percentEncode(_ text: String, keeping allowed: Set<UInt8>) -> String {
        var result = ""
        for byte in text.utf8 {
            if allowed.contains(byte) {
                result.append(Character(Unicode.Scalar(byte)))
            } else {
                let hex = String(byte, radix: 16, uppercase: true)
                result += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return result
    }
}
