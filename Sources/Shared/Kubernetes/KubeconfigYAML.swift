/// A reader for the YAML subset kubeconfig files use, producing ``KubeJSON``.
///
/// Supported: block mappings and block sequences (also a sequence at its key's indentation, as kubectl writes
/// them), plain, single- and double-quoted scalars, comments, `null`/`~`, booleans, integers, and the empty flow
/// collections `{}` and `[]`. Not supported (an error names the line): anchors and aliases, block scalars (`|`, `>`),
/// non-empty flow collections, multi-document files, tabs for indentation. A full YAML library (Yams) imports
/// Foundation, which breaks `MemberImportVisibility` lookups of Glibc's `stat` elsewhere in this target.
package enum KubeconfigYAML {
    /// Why the text could not be read.
    package struct ParseError: Error, Equatable, CustomStringConvertible {
        /// 1-based line number.
        package let line: Int
        /// What is wrong.
        package let message: String

        package var description: String { "line \(line): \(message)" }
    }

    /// Parses a document.
    package static func parse(_ text: String) throws(ParseError) -> KubeJSON {
        var parser = Parser(lines: try logicalLines(text))
        guard !parser.lines.isEmpty else { return .null }
        let value = try parser.node(indent: parser.lines[0].indent)
        if parser.index < parser.lines.count {
            throw ParseError(line: parser.lines[parser.index].number, message: "unexpected content (bad indentation?)")
        }
        return value
    }

    private struct Line {
        var number: Int
        var indent: Int
        var text: Substring
    }

    private static func logicalLines(_ text: String) throws(ParseError) -> [Line] {
        var result: [Line] = []
        for (offset, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = raw
            if line.hasSuffix("\r") { line = line.dropLast() }
            let body = line.drop { $0 == " " }
            if body.hasPrefix("\t") { throw ParseError(line: offset + 1, message: "tabs are not allowed for indentation") }
            let stripped = stripComment(body)
            if stripped.isEmpty { continue }
            if stripped == "---" && result.isEmpty { continue }
            if stripped == "---" || stripped == "..." { throw ParseError(line: offset + 1, message: "only one YAML document is supported") }
            result.append(Line(number: offset + 1, indent: line.count - body.count, text: stripped))
        }
        return result
    }

    /// Drops a `#` comment that is outside quotes and at the start or after whitespace; trims trailing spaces.
    private static func stripComment(_ text: Substring) -> Substring {
        var quote: Character?
        var previous: Character = " "
        var end = text.endIndex
        for index in text.indices {
            let character = text[index]
            if let open = quote {
                if character == open { quote = nil }
            } else if character == "\"" || character == "'" {
                quote = character
            } else if character == "#" && (previous == " " || previous == "\t") {
                end = index
                break
            }
            previous = character
        }
        var result = text[..<end]
        while let last = result.last, last == " " || last == "\t" { result = result.dropLast() }
        return result
    }

    private struct Parser {
        var lines: [Line]
        var index = 0

        mutating func node(indent: Int) throws(ParseError) -> KubeJSON {
            let line = lines[index]
            if isSequenceItem(line.text) { return try sequence(indent: line.indent) }
            if try splitKey(line) != nil { return try mapping(indent: line.indent) }
            index += 1
            return try scalar(line.text, line: line.number)
        }

        func isSequenceItem(_ text: Substring) -> Bool { text == "-" || text.hasPrefix("- ") }

        mutating func sequence(indent: Int) throws(ParseError) -> KubeJSON {
            var items: [KubeJSON] = []
            while index < lines.count, lines[index].indent == indent, isSequenceItem(lines[index].text) {
                let line = lines[index]
                let rest = line.text.dropFirst().drop { $0 == " " }
                if rest.isEmpty {
                    index += 1
                    if index < lines.count, lines[index].indent > indent {
                        items.append(try node(indent: lines[index].indent))
                    } else {
                        items.append(.null)
                    }
                } else {
                    // "- key: value" opens a mapping whose keys sit where "key" starts.
                    let contentIndent = indent + (line.text.count - rest.count)
                    lines[index] = Line(number: line.number, indent: contentIndent, text: rest)
                    items.append(try node(indent: contentIndent))
                }
            }
            return .array(items)
        }

        mutating func mapping(indent: Int) throws(ParseError) -> KubeJSON {
            var members: [String: KubeJSON] = [:]
            while index < lines.count, lines[index].indent == indent, !isSequenceItem(lines[index].text) {
                let line = lines[index]
                guard let (key, value) = try splitKey(line) else {
                    throw ParseError(line: line.number, message: "expected 'key: value'")
                }
                index += 1
                if !value.isEmpty {
                    members[key] = try scalar(value, line: line.number)
                } else if index < lines.count, lines[index].indent > indent {
                    members[key] = try node(indent: lines[index].indent)
                } else if index < lines.count, lines[index].indent == indent, isSequenceItem(lines[index].text) {
                    members[key] = try sequence(indent: indent)
                } else {
                    members[key] = .null
                }
            }
            if index < lines.count, lines[index].indent > indent {
                throw ParseError(line: lines[index].number, message: "unexpected indentation")
            }
            return .object(members)
        }

        /// `key: value` or `key:` outside quotes; nil when the line is not a mapping entry.
        func splitKey(_ line: Line) throws(ParseError) -> (String, Substring)? {
            let text = line.text
            var quote: Character?
            for index in text.indices {
                let character = text[index]
                if let open = quote {
                    if character == open { quote = nil }
                    continue
                }
                if (character == "\"" || character == "'") && index == text.startIndex {
                    quote = character
                    continue
                }
                guard character == ":" else { continue }
                let next = text.index(after: index)
                guard next == text.endIndex || text[next] == " " else { continue }
                let rawKey = text[..<index]
                let key: String
                switch try scalar(rawKey, line: line.number) {
                case .string(let value): key = value
                default: key = String(rawKey)
                }
                return (key, text[next...].drop { $0 == " " })
            }
            return nil
        }

        func scalar(_ text: Substring, line: Int) throws(ParseError) -> KubeJSON {
            if text.hasPrefix("\"") {
                guard text.count >= 2, text.hasSuffix("\"") else { throw ParseError(line: line, message: "unterminated double-quoted string") }
                return .string(try unescape(text.dropFirst().dropLast(), line: line))
            }
            if text.hasPrefix("'") {
                guard text.count >= 2, text.hasSuffix("'") else { throw ParseError(line: line, message: "unterminated single-quoted string") }
                return .string(String(text.dropFirst().dropLast()).replacing("''", with: "'"))
            }
            switch text {
            case "{}": return .emptyObject
            case "[]": return .array([])
            case "null", "Null", "NULL", "~": return .null
            case "true", "True", "TRUE": return .bool(true)
            case "false", "False", "FALSE": return .bool(false)
            default: break
            }
            if let first = text.first, "{[&*!|>%@`".contains(first) {
                throw ParseError(line: line, message: "unsupported YAML construct '\(first)' (kubeconfig subset only)")
            }
            if let number = Int64(text) { return .int(number) }
            return .string(String(text))
        }

        func unescape(_ text: Substring, line: Int) throws(ParseError) -> String {
            var result = ""
            var escaping = false
            for character in text {
                if escaping {
                    switch character {
                    case "n": result.append("\n")
                    case "t": result.append("\t")
                    case "r": result.append("\r")
                    case "0": result.append("\0")
                    case "\"", "\\", "/": result.append(character)
                    default: throw ParseError(line: line, message: "unsupported escape \\\(character)")
                    }
                    escaping = false
                } else if character == "\\" {
                    escaping = true
                } else {
                    result.append(character)
                }
            }
            return result
        }
    }
}
