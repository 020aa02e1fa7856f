#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The process environment, read straight from `environ`, and the token hygiene applied to it at start.
enum ProcessEnvironment {
    /// The current environment (first occurrence of a name wins).
    static func snapshot() -> [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                let name = String(text[..<equals])
                if result[name] == nil { result[name] = String(text[text.index(after: equals)...]) }
            }
            pointer += 1
        }
        return result
    }

    /// Removes `names` from the environment and overwrites their values in place first.
    ///
    /// `unsetenv` only drops the pointer; the original bytes stay in the initial environment block that
    /// `/proc/<pid>/environ` shows. Zeroing them means even a reader allowed to open that file (root, or the same
    /// user if the process were dumpable) sees no secret.
    static func scrub(_ names: [String]) {
        var pointer = environ
        while let entry = pointer.pointee {
            let length = strlen(entry)
            for name in names {
                let prefix = name + "="
                if length >= prefix.utf8.count, strncmp(entry, prefix, prefix.utf8.count) == 0 {
                    memset(entry + prefix.utf8.count, 0, length - prefix.utf8.count)
                }
            }
            pointer += 1
        }
        for name in names { unsetenv(name) }
    }

    /// Makes the process non-dumpable, so other processes of the same user (job steps) can neither read
    /// `/proc/<pid>/environ`, `/proc/<pid>/mem` nor ptrace it. Returns whether it worked.
    @discardableResult
    static func makeNonDumpable() -> Bool {
        prctl(option: 4 /* PR_SET_DUMPABLE */, 0)
    }

    /// Makes this process the reaper for orphaned descendants even when it is not PID 1.
    @discardableResult
    static func becomeChildSubreaper() -> Bool {
        prctl(option: 36 /* PR_SET_CHILD_SUBREAPER */, 1)
    }

    /// The environment the agent's processes get: ours minus every secret variable, plus `VSO_AGENT_IGNORE`
    /// naming the token variables so they never become agent capabilities.
    static func childEnvironment(from environment: [String: String], secrets: [String]) -> [String: String] {
        var result = environment
        for name in secrets { result[name] = nil }
        var ignored = (environment["VSO_AGENT_IGNORE"] ?? "").split(separator: ",").map(String.init)
        for name in secrets where !ignored.contains(name) { ignored.append(name) }
        result["VSO_AGENT_IGNORE"] = ignored.joined(separator: ",")
        return result
    }

    private typealias Prctl = @convention(c) (Int32, UInt, UInt, UInt, UInt) -> Int32

    /// `prctl(2)`, which the Glibc module does not export (it is variadic in C); looked up at run time.
    private static func prctl(option: Int32, _ argument: UInt) -> Bool {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "prctl") else { return false }
        return unsafeBitCast(symbol, to: Prctl.self)(option, argument, 0, 0, 0) == 0
    }

    /// Peak resident set size of this process in KiB (`VmHWM`), if readable.
    static func peakResidentKiB() -> Int? {
        guard let file = fopen("/proc/self/status", "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 256)
        while fgets(&buffer, Int32(buffer.count), file) != nil {
            let line = String(cString: buffer)
            if line.hasPrefix("VmHWM:") {
                return Int(line.dropFirst(6).filter(\.isNumber))
            }
        }
        return nil
    }
}
