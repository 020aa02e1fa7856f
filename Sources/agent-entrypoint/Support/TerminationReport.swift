import Shared

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Writes the termination message (one JSON line) where Kubernetes reads it.
enum TerminationReport {
    /// Writes `message` to `path`, replacing what was there; returns an error text on failure.
    @discardableResult
    static func write(_ message: TerminationMessage, to path: String) -> String? {
        let line: String
        do {
            line = try message.jsonLine() + "\n"
        } catch {
            return "cannot encode the termination message: \(error)"
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { return "cannot open \(path): \(String(cString: strerror(errno)))" }
        defer { close(fd) }
        OutputRelay.writeAll(fd, Array(line.utf8)[...])
        return nil
    }

    /// This machine's host name (the pod name in Kubernetes), the default agent name.
    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "agent" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? "agent" : name
    }
}
