#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One demand of a job request, as Azure DevOps serializes it: `name`, `name -equals value`, `name -gtVersion v`.
///
/// Demands travel as plain strings on the wire. Matching follows the service: the capability must exist;
/// `-equals` compares ignoring case; `-gtVersion` is satisfied when the capability's version is at least the
/// demanded one. Capability names are looked up ignoring case, so a demand `Docker` finds `docker`.
package struct Demand: Sendable, Hashable, CustomStringConvertible {
    /// What a demand asks of a capability.
    package enum Operation: Sendable, Hashable {
        /// The capability must be present, whatever its value.
        case exists
        /// The capability's value must equal this one, ignoring case.
        case equals(String)
        /// The capability's value, read as a dotted version, must be at least this one.
        case minimumVersion(String)
        /// An operator this code does not know; never satisfied, so an unknown demand cannot be met by accident.
        case unknown(operator: String, value: String)
    }

    /// A demand string that cannot be parsed (empty, or a name with no operator value).
    package struct ParseError: Error, CustomStringConvertible {
        /// The offending demand text.
        package let text: String
        package var description: String { "invalid demand '\(text)': expected 'name', 'name -equals value' or 'name -gtVersion x.y.z'" }
    }

    /// The capability name the demand refers to.
    package let name: String
    /// What the capability must satisfy.
    package let operation: Operation

    /// Builds a demand from its parts.
    package init(name: String, operation: Operation) {
        self.name = name
        self.operation = operation
    }

    /// Parses the wire form `name` or `name -op value`; the name cannot contain whitespace.
    package init(parsing text: String) throws(ParseError) {
        let trimmed = text.trimmingWhitespace()
        guard let nameEnd = trimmed.firstIndex(where: \.isWhitespace) else {
            guard !trimmed.isEmpty else { throw ParseError(text: text) }
            self.init(name: trimmed, operation: .exists)
            return
        }
        let name = String(trimmed[..<nameEnd])
        let rest = trimmed[nameEnd...].trimmingWhitespace()
        guard rest.hasPrefix("-"), let opEnd = rest.firstIndex(where: \.isWhitespace) else { throw ParseError(text: text) }
        let op = String(rest[rest.index(after: rest.startIndex)..<opEnd])
        let value = rest[opEnd...].trimmingWhitespace()
        switch op.lowercased() {
        case "equals": self.init(name: name, operation: .equals(value))
        case "gtversion": self.init(name: name, operation: .minimumVersion(value))
        default: self.init(name: name, operation: .unknown(operator: op, value: value))
        }
    }

    /// The wire form, e.g. `Agent.Version -gtVersion 2.163.1`.
    package var description: String {
        switch operation {
        case .exists: name
        case .equals(let value): "\(name) -equals \(value)"
        case .minimumVersion(let value): "\(name) -gtVersion \(value)"
        case .unknown(let op, let value): "\(name) -\(op) \(value)"
        }
    }

    /// Whether a set of capabilities (system and user merged) satisfies this demand.
    package func isSatisfied(by capabilities: [String: String]) -> Bool {
        guard let value = Self.lookup(name, in: capabilities) else { return false }
        switch operation {
        case .exists:
            return true
        case .equals(let expected):
            return value.lowercased() == expected.lowercased()
        case .minimumVersion(let minimum):
            guard let have = DottedVersion(value), let want = DottedVersion(minimum) else { return false }
            return have >= want
        case .unknown:
            return false
        }
    }

    /// Whether every demand is satisfied by the capabilities.
    package static func allSatisfied(_ demands: [Demand], by capabilities: [String: String]) -> Bool {
        demands.allSatisfy { $0.isSatisfied(by: capabilities) }
    }

    /// Parses a list of wire demand strings, failing on the first invalid one.
    package static func parseAll(_ texts: [String]) throws(ParseError) -> [Demand] {
        var result: [Demand] = []
        for text in texts { result.append(try Demand(parsing: text)) }
        return result
    }

    private static func lookup(_ name: String, in capabilities: [String: String]) -> String? {
        if let exact = capabilities[name] { return exact }
        let lowered = name.lowercased()
        return capabilities.first { $0.key.lowercased() == lowered }?.value
    }
}

/// A `System.Version`-like dotted version (`4.266.2`, `1.2.3.4`), compared numerically part by part.
///
/// Anything after the first `-` is ignored, as the service does (`4.0.0-preview` compares as `4.0.0`).
package struct DottedVersion: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The numeric parts, most significant first.
    package let parts: [Int]

    /// Parses `major.minor[.patch[.build]]`; returns nil for anything else.
    package init?(_ text: String) {
        let core = text.trimmingWhitespace().split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        let pieces = core.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...4).contains(pieces.count) else { return nil }
        var parts: [Int] = []
        for piece in pieces {
            guard let number = Int(piece), number >= 0 else { return nil }
            parts.append(number)
        }
        self.parts = parts
    }

    package var description: String { parts.map(String.init).joined(separator: ".") }

    package static func < (lhs: DottedVersion, rhs: DottedVersion) -> Bool {
        for index in 0..<max(lhs.parts.count, rhs.parts.count) {
            let left = index < lhs.parts.count ? lhs.parts[index] : 0
            let right = index < rhs.parts.count ? rhs.parts[index] : 0
            if left != right { return left < right }
        }
        return false
    }

    package static func == (lhs: DottedVersion, rhs: DottedVersion) -> Bool { !(lhs < rhs) && !(rhs < lhs) }
    package func hash(into hasher: inout Hasher) {
        var trimmed = parts
        while trimmed.last == 0 { trimmed.removeLast() }
        hasher.combine(trimmed)
    }
}

extension StringProtocol {
    /// The text without leading and trailing whitespace and newlines.
    package func trimmingWhitespace() -> String {
        guard let start = firstIndex(where: { !$0.isWhitespace }),
              let end = lastIndex(where: { !$0.isWhitespace }) else { return "" }
        return String(self[start...end])
    }
}
