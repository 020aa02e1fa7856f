import Logging

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

/// A swift-log handler writing one JSON object per line to stderr (`LOG_FORMAT=json`).
///
/// Fields: `time` (UTC, `WireTimestamp` format), `level`, `logger`, `message`, then the metadata keys.
/// Each line is written with a single `write(2)` so lines from threads never interleave.
package struct JSONLogHandler: LogHandler {
    /// Logger label (`agent-entrypoint`).
    package let label: String
    /// Metadata added to every line.
    package var metadata: Logger.Metadata = [:]
    /// Minimum level.
    package var logLevel: Logger.Level = .info
    /// Where lines go.
    package var fileDescriptor: Int32 = STDERR_FILENO

    /// Creates a handler for `label`.
    package init(label: String) { self.label = label }

    /// Per-key metadata access required by `LogHandler`.
    package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Formats and writes one line.
    package func log(event: LogEvent) {
        var fields: [(String, String)] = [
            ("time", Self.quote(WireTimestamp.format(Date()))),
            ("level", Self.quote(event.level.rawValue)),
            ("logger", Self.quote(label)),
            ("message", Self.quote(event.message.description)),
        ]
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            fields.append((key, Self.quote(value.description)))
        }
        let line = "{" + fields.map { "\(Self.quote($0.0)):\($0.1)" }.joined(separator: ",") + "}\n"
        RawOutput.writeAll(fileDescriptor, Array(line.utf8)[...])
    }

    /// A JSON string literal for `text`.
    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// Plain-text lines on stderr: `TIME LEVEL message key=value ...`.
package struct TextLogHandler: LogHandler {
    /// Logger label.
    package let label: String
    /// Metadata added to every line.
    package var metadata: Logger.Metadata = [:]
    /// Minimum level.
    package var logLevel: Logger.Level = .info

    /// Creates a handler for `label`.
    package init(label: String) { self.label = label }

    /// Per-key metadata access required by `LogHandler`.
    package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Formats and writes one line.
    package func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        var line = "\(WireTimestamp.format(Date())) \(event.level.rawValue) \(label): \(event.message)"
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            let text = value.description
            line += text.contains(" ") ? " \(key)=\(JSONLogHandler.quote(text))" : " \(key)=\(text)"
        }
        RawOutput.writeAll(STDERR_FILENO, Array((line + "\n").utf8)[...])
    }
}

/// Unbuffered writes to a file descriptor, for log lines that must not interleave or wait in a buffer.
package enum RawOutput {
    /// Writes every byte, retrying on EINTR and partial writes; gives up silently on other errors (a log line is
    /// not worth failing for).
    package static func writeAll(_ fd: Int32, _ bytes: ArraySlice<UInt8>) {
        var remaining = bytes
        while !remaining.isEmpty {
            let written = remaining.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0, errno == EINTR { continue }
            guard written > 0 else { return }
            remaining = remaining.dropFirst(written)
        }
    }
}

/// How Shoal's executables write log lines (`LOG_FORMAT`).
package enum LogFormat: String, Sendable, Equatable, CaseIterable {
    /// `2024-05-01T12:00:00Z info agent-entrypoint: message key=value`.
    case text
    /// One JSON object per line.
    case json

    /// A handler of this format at `level`, for `LoggingSystem.bootstrap` (called once, in `main`).
    package func handler(label: String, level: Logger.Level) -> any LogHandler {
        switch self {
        case .json:
            var handler = JSONLogHandler(label: label)
            handler.logLevel = level
            return handler
        case .text:
            var handler = TextLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
    }
}
