#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One process as `/proc/<pid>/stat` describes it: enough to walk the process tree.
package struct ProcessEntry: Sendable, Equatable {
    /// The process id (a thread-group leader; `/proc` lists no other threads at its top level).
    package var pid: pid_t
    /// The parent's pid (after re-parenting: a subreaper or PID 1 for orphans).
    package var parent: pid_t
    /// The state letter: `R`, `S`, `D`, `T`, ... `Z` for a zombie, `X` for dead.
    package var state: Character

    /// Builds an entry.
    package init(pid: pid_t, parent: pid_t, state: Character) {
        self.pid = pid
        self.parent = parent
        self.state = state
    }

    /// Whether the process has exited (a zombie waiting for `wait()`, or already dead): signals cannot reach it.
    package var hasExited: Bool { state == "Z" || state == "X" || state == "x" }
}

/// The processes below a given one, from a snapshot of `/proc`: what the entrypoint must kill after the job.
///
/// The entrypoint is PID 1 or a child subreaper, so every process a job leaves behind (even after `setsid` and a
/// double fork) is re-parented to it and stays its descendant. The pure part (``descendants(of:in:)``,
/// ``parseStat(_:)``) is separate from reading `/proc` so it can be table-tested.
package enum ProcessTree {
    /// Parses the content of `/proc/<pid>/stat`: `pid (comm) state ppid ...`.
    ///
    /// `comm` may contain spaces and parentheses (a job chooses it), so the fields are read after the *last* `)`.
    package static func parseStat(_ text: String) -> ProcessEntry? {
        guard let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")") , open < close else { return nil }
        guard let pid = pid_t(text[..<open].trimmingCharacters(" ")) else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 2, let state = fields[0].first, fields[0].count == 1, let parent = pid_t(fields[1]) else {
            return nil
        }
        return ProcessEntry(pid: pid, parent: parent, state: state)
    }

    /// Every live (not yet exited) descendant of `root` in `entries`, `root` itself excluded, parents before
    /// children.
    ///
    /// Exited processes (zombies) are skipped: they cannot be signalled and the reaper collects them. Their
    /// children, if any were listed, are still walked.
    package static func descendants(of root: pid_t, in entries: [ProcessEntry]) -> [pid_t] {
        var children: [pid_t: [ProcessEntry]] = [:]
        for entry in entries where entry.pid != entry.parent {
            children[entry.parent, default: []].append(entry)
        }
        var result: [pid_t] = []
        var seen: Set<pid_t> = [root]
        var queue = [root]
        var index = 0
        while index < queue.count {
            let parent = queue[index]
            index += 1
            for child in children[parent] ?? [] where seen.insert(child.pid).inserted {
                queue.append(child.pid)
                if !child.hasExited { result.append(child.pid) }
            }
        }
        return result
    }

    /// Reads every `/proc/<pid>/stat` under `procRoot`; processes that vanish while reading are skipped.
    package static func snapshot(procRoot: String = "/proc") -> [ProcessEntry] {
        guard let directory = opendir(procRoot) else { return [] }
        defer { closedir(directory) }
        var entries: [ProcessEntry] = []
        while let item = readdir(directory) {
            let name = withUnsafeBytes(of: item.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let first = name.utf8.first, first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") else { continue }
            if let text = readSmallFile(procRoot + "/" + name + "/stat"), let entry = parseStat(text) {
                entries.append(entry)
            }
        }
        return entries
    }

    /// Reads a file of at most a few KiB (a `/proc` stat line), or nil if it cannot be opened.
    private static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        var length = 0
        while length < buffer.count {
            let count = buffer.withUnsafeMutableBytes { raw in
                read(fd, raw.baseAddress! + length, raw.count - length)
            }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            length += count
        }
        return String(decoding: buffer[..<length], as: UTF8.self)
    }
}

extension Substring {
    /// The substring without leading and trailing `character`s.
    fileprivate func trimmingCharacters(_ character: Character) -> Substring {
        var result = self
        while result.first == character { result.removeFirst() }
        while result.last == character { result.removeLast() }
        return result
    }
}
