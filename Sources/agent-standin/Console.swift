import Foundation
import Shared

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The listener's terminal: user-facing lines on stdout, errors on stderr, both unbuffered.
///
/// Unbuffered because job output is written straight to the same file descriptors by the child process;
/// buffering our own lines would reorder them relative to the job's output.
enum Console {
    /// Writes one line to stdout.
    static func line(_ text: String = "") {
        emit(text + "\n", to: STDOUT_FILENO)
    }

    /// Writes one line to stderr, like the real agent's `WriteError`.
    static func error(_ text: String) {
        emit(text + "\n", to: STDERR_FILENO)
    }

    /// Writes `{yyyy-MM-dd HH:mm:ssZ}: text`, the .NET `{0:u}` prefix the real listener uses.
    static func stamped(_ text: String, at date: Date = Date()) {
        line("\(WireTimestamp.agentLogPrefix(date)): \(text)")
    }

    /// Writes a section header the way the real configure flow does (blank line, `>> Title:`, blank line).
    static func section(_ title: String) {
        line()
        line(">> \(title):")
        line()
    }

    private static func emit(_ text: String, to descriptor: Int32) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { buffer -> Int in
                guard let base = buffer.baseAddress else { return 0 }
                return write(descriptor, base + offset, buffer.count - offset)
            }
            if written < 0 {
                if errno == EINTR { continue }
                return
            }
            offset += written
        }
    }
}
