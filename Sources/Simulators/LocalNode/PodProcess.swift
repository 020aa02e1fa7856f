import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a pod's process could not be started.
package struct PodProcessError: Error, Sendable, CustomStringConvertible {
    /// The program that was to run.
    package var executable: String
    /// What went wrong.
    package var detail: String

    /// Describes the failure with the program's path.
    package var description: String { "cannot start \(executable): \(detail)" }
}

/// How a pod's process ended, in the terms a container status uses.
package struct ProcessExit: Sendable, Hashable {
    /// The exit status, or 128 + signal number when a signal ended it (like a container runtime reports).
    package var exitCode: Int32
    /// The signal that ended the process, if any.
    package var signal: Int32?
}

/// One child process running a pod's container, in its own process group.
///
/// The local node owns it: it is started with `posix_spawn` (its own process group so that signals reach the whole
/// tree a shell script forks) and must be reaped with ``waitForExit(pollInterval:)`` or ``kill()``.
package struct PodProcess: Sendable {
    /// The child's process id, which is also its process group id.
    package let pid: pid_t

    /// Starts `arguments[0]` (looked up in the node's PATH when it has no slash) with exactly `environment`,
    /// in `workingDirectory`, stdin from /dev/null and stdout/stderr appended to `logFile`.
    package static func spawn(arguments: [String], environment: [String: String], workingDirectory: String, logFile: String) throws(PodProcessError) -> PodProcess {
        guard let executable = arguments.first, !executable.isEmpty else {
            throw PodProcessError(executable: "", detail: "the container has no command and its image has no known entrypoint")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logFile, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        guard let addChdir = Self.addChdir else {
            throw PodProcessError(executable: executable, detail: "posix_spawn_file_actions_addchdir_np is not available")
        }
        let chdirResult = addChdir(&actions, workingDirectory)
        guard chdirResult == 0 else { throw PodProcessError(executable: executable, detail: "working directory \(workingDirectory): \(String(cString: strerror(chdirResult)))") }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A new process group (pgid = pid), and default dispositions and an empty mask for the signals the node
        // sends, whatever the node process itself blocks or ignores.
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let envp: [UnsafeMutablePointer<CChar>?] = environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { envp.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawnp(&pid, executable, &actions, &attributes, argv, envp)
        guard result == 0 else { throw PodProcessError(executable: executable, detail: String(cString: strerror(result))) }
        return PodProcess(pid: pid)
    }

    /// Sends `signal` to the whole process group; false if it is already gone.
    ///
    /// SIGKILL goes to every descendant too, wherever its process group: in a container, killing it kills every
    /// process in it, and an agent listener in a process group of its own must not outlive its "container".
    @discardableResult
    package func signal(_ signal: Int32) -> Bool {
        if signal == SIGKILL {
            for descendant in Self.descendants(of: pid) { _ = sendSignal(descendant, SIGKILL) }
        }
        return sendSignal(-pid, signal)
    }

    private func sendSignal(_ target: pid_t, _ signal: Int32) -> Bool {
        #if canImport(Glibc)
        Glibc.kill(target, signal) == 0
        #else
        Darwin.kill(target, signal) == 0
        #endif
    }

    /// Every process below `root` in the process tree, from `/proc` (empty where there is no `/proc`).
    static func descendants(of root: pid_t) -> [pid_t] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var children: [pid_t: [pid_t]] = [:]
        for entry in entries {
            guard let pid = pid_t(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            // After "pid (comm) state ppid ...": the comm may contain spaces and parentheses, so split after the last ')'.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, let parent = pid_t(fields[1]) { children[parent, default: []].append(pid) }
        }
        var result: [pid_t] = []
        var queue = children[root] ?? []
        while let next = queue.popLast() {
            result.append(next)
            queue += children[next] ?? []
        }
        return result
    }

    /// Reaps the child if it has exited, without blocking.
    package func exitIfFinished() -> ProcessExit? {
        var status: Int32 = 0
        while true {
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid { return Self.decode(status) }
            if result == -1 && errno == EINTR { continue }
            // -1 (ECHILD: reaped elsewhere) is reported as a failure rather than waited on forever.
            return result == 0 ? nil : ProcessExit(exitCode: 255, signal: nil)
        }
    }

    /// Waits for the child to exit, polling so that no cooperative thread blocks in `waitpid`.
    ///
    /// Cancellation does not stop the wait: the caller decides whether to signal first.
    package func waitForExit(pollInterval: Duration = .milliseconds(50)) async -> ProcessExit {
        while true {
            if let exit = exitIfFinished() { return exit }
            try? await Task.sleep(for: pollInterval)
            // A cancelled sleep returns at once; pace the loop anyway.
            if Task.isCancelled {
                let (seconds, attoseconds) = pollInterval.components
                usleep(UInt32(seconds * 1_000_000 + attoseconds / 1_000_000_000_000))
            }
        }
    }

    /// SIGKILLs the process group and reaps the child (used on cancellation: nothing may outlive the node).
    package func kill() async -> ProcessExit {
        signal(SIGKILL)
        return await waitForExit(pollInterval: .milliseconds(10))
    }

    /// `posix_spawn_file_actions_addchdir_np` (glibc 2.29+, macOS 10.15+), looked up at run time because the C
    /// headers only declare it under `_GNU_SOURCE`, which Swift's Glibc module does not define.
    private static let addChdir: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32)? = {
        guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "posix_spawn_file_actions_addchdir_np") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32).self)
    }()

    private static func decode(_ status: Int32) -> ProcessExit {
        let signal = status & 0x7f
        if signal == 0 { return ProcessExit(exitCode: (status >> 8) & 0xff, signal: nil) }
        return ProcessExit(exitCode: 128 + signal, signal: signal)
    }
}
