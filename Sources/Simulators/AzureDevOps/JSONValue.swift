import Foundation
import Shared

/// A JSON document with ordered object keys, used to write the simulator's wire format by hand.
///
/// The real service omits null fields on some objects and prints explicit `null` on others, and its field order
/// is stable; a hand-built tree states both exactly instead of relying on `Codable` defaults.
package indirect enum JSONValue: Sendable, Equatable {
    /// `null`.
    case null
    /// `true` / `false`.
    case bool(Bool)
    /// An integral number.
    case int(Int)
    /// A floating-point number.
    case double(Double)
    /// A string.
    case string(String)
    /// An array.
    case array([JSONValue])
    /// An object; keys keep their insertion order.
    case object(JSONObject)

    /// The string value, if this is a string.
    package var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// The integer value of an integral number or a numeric string (`"42"`).
    package var intValue: Int? {
        switch self {
        case .int(let value): value
        case .double(let value) where value.rounded() == value && abs(value) < 1e15: Int(value)
        case .string(let value): Int(value)
        default: nil
        }
    }

    /// The number as a double, also from numeric strings.
    package var doubleValue: Double? {
        switch self {
        case .int(let value): Double(value)
        case .double(let value): value
        case .string(let value): Double(value)
        default: nil
        }
    }

    /// A boolean, also from the strings `"true"` / `"false"` (any case), which third-party scripts send.
    package var boolValue: Bool? {
        switch self {
        case .bool(let value): value
        case .string(let value):
            switch value.lowercased() {
            case "true": true
            case "false": false
            default: nil
            }
        default: nil
        }
    }

    /// The object, if this is one.
    package var objectValue: JSONObject? {
        if case .object(let value) = self { return value }
        return nil
    }

    /// The elements, if this is an array.
    package var arrayValue: [JSONValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    /// An object's string values, skipping non-strings; nil when this is not an object.
    package var stringDictionary: [String: String]? {
        guard let object = objectValue else { return nil }
        var result: [String: String] = [:]
        for (key, value) in object.entries {
            switch value {
            case .string(let text): result[key] = text
            case .int(let number): result[key] = String(number)
            case .bool(let flag): result[key] = flag ? "true" : "false"
            default: continue
            }
        }
        return result
    }

    /// Looks up a key of an object; nil for other kinds of value.
    package subscript(key: String) -> JSONValue? {
        objectValue?[key]
    }

    /// Compact JSON text.
    package var serialized: String {
        var output = ""
        write(to: &output)
        return output
    }

    /// UTF-8 bytes of the compact JSON text.
    package var bytes: [UInt8] { Array(serialized.utf8) }

    private func write(to output: inout String) {
        switch self {
        case .null: output += "null"
        case .bool(let value): output += value ? "true" : "false"
        case .int(let value): output += String(value)
        case .double(let value):
            if value.isFinite {
                output += value.rounded() == value && abs(value) < 1e15 ? String(Int(value)) : String(value)
            } else {
                output += "null"
            }
        case .string(let value): Self.writeString(value, to: &output)
        case .array(let values):
            output += "["
            for (index, value) in values.enumerated() {
                if index > 0 { output += "," }
                value.write(to: &output)
            }
            output += "]"
        case .object(let object):
            output += "{"
            for (index, entry) in object.entries.enumerated() {
                if index > 0 { output += "," }
                Self.writeString(entry.key, to: &output)
                output += ":"
                entry.value.write(to: &output)
            }
            output += "}"
        }
    }

    private static func writeString(_ value: String, to output: inout String) {
        output += "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            case let control where control.value < 0x20:
                output += "\\u" + String(repeating: "0", count: 4 - String(control.value, radix: 16).count)
                    + String(control.value, radix: 16)
            default: output.unicodeScalars.append(scalar)
            }
        }
        output += "\""
    }

    /// Parses JSON bytes; throws when they are not a JSON document.
    package static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(bytes))
    }
}

extension JSONValue: Decodable {
    /// Decodes any JSON document; booleans stay booleans and integral numbers become `.int`.
    package init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int.self) {
            self = .int(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            let dictionary = try container.decode([String: JSONValue].self)
            self = .object(JSONObject(dictionary.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }))
        }
    }
}

/// The members of a JSON object in insertion order.
package struct JSONObject: Sendable, Equatable {
    /// The members, in the order they are written.
    package private(set) var entries: [(key: String, value: JSONValue)]

    /// An empty object.
    package init() { entries = [] }

    /// An object with these members, in this order.
    package init(_ entries: [(String, JSONValue)]) {
        self.entries = entries.map { (key: $0.0, value: $0.1) }
    }

    /// Reads a member (exact key); setting nil omits the member, which is how null fields are left out.
    package subscript(key: String) -> JSONValue? {
        get { entries.first { $0.key == key }?.value }
        set {
            if let index = entries.firstIndex(where: { $0.key == key }) {
                if let newValue { entries[index].value = newValue } else { entries.remove(at: index) }
            } else if let newValue {
                entries.append((key: key, value: newValue))
            }
        }
    }

    /// Reads a member ignoring the key's case, as the service's JSON reader does.
    package func value(forKeyIgnoringCase key: String) -> JSONValue? {
        let lowered = key.lowercased()
        return entries.first { $0.key.lowercased() == lowered }?.value
    }

    package static func == (lhs: JSONObject, rhs: JSONObject) -> Bool {
        lhs.entries.count == rhs.entries.count
            && zip(lhs.entries, rhs.entries).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    /// A string literal becomes `.string`.
    package init(stringLiteral value: String) { self = .string(value) }
    /// An integer literal becomes `.int`.
    package init(integerLiteral value: Int) { self = .int(value) }
    /// A boolean literal becomes `.bool`.
    package init(booleanLiteral value: Bool) { self = .bool(value) }
}

extension JSONValue {
    /// A string dictionary as a JSON object with sorted keys (stable output).
    package static func stringMap(_ dictionary: [String: String]) -> JSONValue {
        .object(JSONObject(dictionary.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) }))
    }

    /// A timestamp in the service's format, or nil (omitted) for nil.
    package static func timestamp(_ date: Date?) -> JSONValue? {
        date.map { .string(WireTimestamp.format($0)) }
    }
}
