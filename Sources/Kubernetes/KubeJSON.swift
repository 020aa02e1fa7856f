import Shared
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Any JSON value, decoded without a schema.
///
/// Kubernetes objects carry fields Shoal does not model (a pod template from a custom resource may use volumes,
/// affinity, probes...). Holding those parts as `KubeJSON` lets them round-trip intact: decode, change what is
/// known, encode, and nothing else is lost. Named `KubeJSON` so it does not clash with the simulator's `JSONValue`.
package enum KubeJSON: Sendable, Hashable, Codable {
    /// `null`.
    case null
    /// `true` / `false`.
    case bool(Bool)
    /// An integral number.
    case int(Int64)
    /// A number with a fraction or beyond the integer range.
    case double(Double)
    /// A string.
    case string(String)
    /// An array.
    case array([KubeJSON])
    /// An object.
    case object([String: KubeJSON])

    /// An empty object, `{}`.
    package static let emptyObject = KubeJSON.object([:])

    /// Decodes any JSON value.
    package init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .int(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([KubeJSON].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: KubeJSON].self))
        }
    }

    /// Encodes the value as it was decoded.
    package func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// Converts any `Encodable` value (a typed model) to its JSON tree.
    package init(encoding value: some Encodable) throws {
        let data = try KubernetesCoding.encoder().encode(value)
        self = try KubernetesCoding.decoder().decode(KubeJSON.self, from: data)
    }

    /// Parses JSON text.
    package init(parsing data: Data) throws {
        self = try JSONDecoder().decode(KubeJSON.self, from: data)
    }

    /// Decodes this tree as a typed model.
    package func decode<T: Decodable>(as type: T.Type = T.self) throws -> T {
        try KubernetesCoding.decoder().decode(T.self, from: KubernetesCoding.encoder().encode(self))
    }

    /// The member `key` of an object; nil for a missing key or a non-object. Setting on a non-object makes it one.
    package subscript(key: String) -> KubeJSON? {
        get {
            if case .object(let members) = self { return members[key] }
            return nil
        }
        set {
            var members: [String: KubeJSON] = [:]
            if case .object(let existing) = self { members = existing }
            members[key] = newValue
            self = .object(members)
        }
    }

    /// The string, if this is one.
    package var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// The integer, if this is an integral number.
    package var intValue: Int64? {
        switch self {
        case .int(let value): value
        case .double(let value) where value.rounded() == value && abs(value) < 9e15: Int64(value)
        default: nil
        }
    }

    /// The members, if this is an object.
    package var objectValue: [String: KubeJSON]? {
        if case .object(let value) = self { return value }
        return nil
    }

    /// The elements, if this is an array.
    package var arrayValue: [KubeJSON]? {
        if case .array(let value) = self { return value }
        return nil
    }

    /// Applies `patch` with JSON merge-patch semantics (RFC 7386): objects merge member by member, `null` removes a
    /// member, anything else replaces. Used to add typed fields to a pod built from a template.
    package func merging(_ patch: KubeJSON) -> KubeJSON {
        guard case .object(let patchMembers) = patch else { return patch }
        var members = objectValue ?? [:]
        for (key, value) in patchMembers {
            if value == .null {
                members[key] = nil
            } else {
                members[key] = (members[key] ?? .null).merging(value)
            }
        }
        return .object(members)
    }

    /// Compact JSON text, for messages and tests.
    package var jsonText: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(self) else { return "<unencodable>" }
        return String(decoding: data, as: UTF8.self)
    }
}

extension KubeJSON: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral, ExpressibleByFloatLiteral
{
    /// A string literal.
    package init(stringLiteral value: String) { self = .string(value) }
    /// An integer literal.
    package init(integerLiteral value: Int64) { self = .int(value) }
    /// A boolean literal.
    package init(booleanLiteral value: Bool) { self = .bool(value) }
    /// An array literal.
    package init(arrayLiteral elements: KubeJSON...) { self = .array(elements) }
    /// A dictionary literal (later duplicates win).
    package init(dictionaryLiteral elements: (String, KubeJSON)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { $1 }))
    }
    /// `nil` is JSON `null`.
    package init(nilLiteral: ()) { self = .null }
    /// A floating-point literal.
    package init(floatLiteral value: Double) { self = .double(value) }
}
