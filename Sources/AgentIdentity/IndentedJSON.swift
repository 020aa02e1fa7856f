#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A JSON value written the way the agent's `StringUtil.ConvertToJson` (Newtonsoft, `Formatting.Indented`) writes
/// it, with members in the order given.
///
/// Hand-rolled because `JSONEncoder` neither keeps member order nor spaces `"key": value` like Newtonsoft, and
/// escapes `/` in URLs.
enum IndentedJSON: Sendable {
    /// A string.
    case string(String)
    /// An integer.
    case int(Int)
    /// A boolean.
    case bool(Bool)
    /// An object whose members are written in this order.
    case object([(String, IndentedJSON)])

    /// The UTF-8 byte order mark `File.WriteAllText(path, text, Encoding.UTF8)` starts the file with.
    static let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]

    /// The document as the agent writes it: BOM, 2-space indent, LF, no trailing newline.
    func fileContents() -> Data {
        var text = ""
        write(into: &text, indent: 0)
        return Data(Self.byteOrderMark + Array(text.utf8))
    }

    private func write(into text: inout String, indent: Int) {
        switch self {
        case .string(let value): text += Self.quoted(value)
        case .int(let value): text += String(value)
        case .bool(let value): text += value ? "true" : "false"
        case .object(let members):
            guard !members.isEmpty else {
                text += "{}"
                return
            }
            let inner = String(repeating: " ", count: indent + 2)
            text += "{\n"
            for (index, (name, value)) in members.enumerated() {
                text += inner + Self.quoted(name) + ": "
                value.write(into: &text, indent: indent + 2)
                text += index == members.count - 1 ? "\n" : ",\n"
            }
            text += String(repeating: " ", count: indent) + "}"
        }
    }

    /// A JSON string literal with Newtonsoft's default escaping (quote, backslash, control characters).
    private static func quoted(_ value: String) -> String {
        var result = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case "\u{08}": result += "\\b"
            case "\u{0C}": result += "\\f"
            case _ where scalar.value < 0x20 || scalar.value == 0x85 || scalar.value == 0x2028 || scalar.value == 0x2029:
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}

/// Any JSON value, read leniently the way Newtonsoft reads the agent's files: member names match ignoring case
/// (an exact match wins), numbers and booleans may also arrive as strings.
enum LooseJSON: Decodable, Sendable, Equatable {
    /// `null`.
    case null
    /// `true` / `false`.
    case bool(Bool)
    /// A number without fraction that fits an `Int`.
    case int(Int)
    /// Any other number.
    case double(Double)
    /// A string.
    case string(String)
    /// An array.
    case array([LooseJSON])
    /// An object (member names as written).
    case object([String: LooseJSON])

    /// Decodes whatever JSON value is there.
    init(from decoder: any Decoder) throws {
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
        } else if let value = try? container.decode([LooseJSON].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: LooseJSON].self))
        }
    }

    /// Parses a file's contents, skipping a UTF-8 BOM; the error names `file`.
    static func parseObject(_ data: Data, file: String) throws(AgentIdentityError) -> [String: LooseJSON] {
        var bytes = Array(data)
        if bytes.starts(with: IndentedJSON.byteOrderMark) { bytes.removeFirst(IndentedJSON.byteOrderMark.count) }
        let value: LooseJSON
        do {
            value = try JSONDecoder().decode(LooseJSON.self, from: Data(bytes))
        } catch {
            throw AgentIdentityError(.invalidFile, "\(file) is not valid JSON: \(error)")
        }
        guard case .object(let members) = value else {
            throw AgentIdentityError(.invalidFile, "\(file) is not a JSON object")
        }
        return members
    }

    /// The member called `name`: exact spelling first, then ignoring case (as `OrdinalIgnoreCase`).
    static func member(_ name: String, of object: [String: LooseJSON]) -> LooseJSON? {
        if let exact = object[name] { return exact }
        let lowered = name.lowercased()
        return object.first { $0.key.lowercased() == lowered }?.value
    }

    /// The value as a string (numbers and booleans in their JSON spelling); nil for null, arrays and objects.
    var stringValue: String? {
        switch self {
        case .string(let value): value
        case .int(let value): String(value)
        case .double(let value): String(value)
        case .bool(let value): value ? "true" : "false"
        default: nil
        }
    }

    /// The value as an integer, also from a string such as `"123"` (Newtonsoft converts those).
    var intValue: Int? {
        switch self {
        case .int(let value): value
        case .double(let value): Int(exactly: value)
        case .string(let value): Int(value.trimmedOfSpaces)
        default: nil
        }
    }

    /// The value as a boolean, also from `"True"`/`"false"` strings (any case).
    var boolValue: Bool? {
        switch self {
        case .bool(let value): value
        case .string(let value):
            switch value.trimmedOfSpaces.lowercased() {
            case "true": true
            case "false": false
            default: nil
            }
        default: nil
        }
    }
}

extension String {
    /// The string without leading and trailing spaces, tabs and line breaks (FoundationEssentials has no
    /// `trimmingCharacters(in:)`).
    var trimmedOfSpaces: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        return String(drop(while: isSpace).reversed().drop(while: isSpace).reversed())
    }
}
