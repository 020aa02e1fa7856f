import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A process the demo started: spawned in its own process group, so a Ctrl-C at the terminal reaches only the demo,
/// which then stops its children in order (the controller first cleans up, then the node, then the cluster).
///
/// Output goes to a file; the exit is awaited by polling `waitpid(WNOHANG)`, so no cooperative thread blocks.
final class ChildProcess: Sendable {
    /// The process id.
    let pid: pid_t
    /// What was started, for messages.
    let label: String
    /// The file receiving stdout and stderr.
    let logFile: String

    private init(pid: pid_t, label: String, logFile: String) {
        self.pid = pid
        self.label = label
        self.logFile = logFile
    }

    /// Starts `arguments` (the first is the executable's path) with output appended to `logFile`.
    static func spawn(_ arguments: [String], label: String, logFile: String, environment: [String: String]? = nil) throws -> ChildProcess {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logFile, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let variables = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        let envp: [UnsafeMutablePointer<CChar>?] = variables.map { strdup($0) } + [nil]
        defer { envp.forEach { free($0) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, arguments[0], &actions, &attributes, argv, envp)
        guard status == 0 else {
            throw DemoFailure("cannot start \(label) (\(arguments[0])): \(String(cString: strerror(status)))")
        }
        return ChildProcess(pid: pid, label: label, logFile: logFile)
    }

    /// The exit status if the process has ended (128+signal when killed), nil while it runs. Reaps it once.
    func exitStatus() -> Int32? {
        reaped.withLock { state in
            if let code = state { return code }
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            guard result == pid else { return nil }
            let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            state = code
            return code
        }
    }

    private let reaped = Mutex<Int32?>(nil)

    /// Waits for the exit; nil if `timeout` passed first. Not cancellable on purpose: teardown must finish.
    func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let status = exitStatus() { return status }
            await sleepIgnoringCancellation(.milliseconds(50))
        }
        return exitStatus()
    }

    /// SIGTERM, then SIGKILL to the whole process group after `grace`; returns the exit status.
    @discardableResult
    func stop(grace: Duration) async -> Int32? {
        if let status = exitStatus() { return status }
        kill(pid, SIGTERM)
        if let status = await waitForExit(timeout: grace) {
            kill(-pid, SIGKILL)  // anything the process left in its group
            return status
        }
        kill(-pid, SIGKILL)
        return await waitForExit(timeout: .seconds(5))
    }

    /// The last `count` characters of the log, for error messages.
    func logTail(_ count: Int = 2000) -> String {
        String(((try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "").suffix(count))
    }
}

/// A sleep that still sleeps when the task is cancelled (teardown runs after Ctrl-C cancelled the scenario).
func sleepIgnoringCancellation(_ duration: Duration) async {
    if Task.isCancelled {
        var request = timespec(tv_sec: Int(duration.components.seconds), tv_nsec: Int(duration.components.attoseconds / 1_000_000_000))
        nanosleep(&request, nil)
    } else {
        try? await Task.sleep(for: duration)
    }
}

/// SIGKILLs every process whose working directory is under `directory` (a pod's processes on the local node);
/// returns how many were signalled.
@discardableResult
func killProcesses(under directory: String) -> Int {
    var killed = 0
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard let pid = Int32(entry), pid != getpid(),
            let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(entry)/cwd"), cwd.hasPrefix(directory)
        else { continue }
        if kill(pid, SIGKILL) == 0 { killed += 1 }
    }
    return killed
}

/// Why the demo could not run or an invariant it checks broke; the message says what to do.
struct DemoFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// What a process has used so far, from `/proc` (Linux only).
struct ProcessUsage {
    /// Peak resident set size (`VmHWM`), in MiB.
    var peakResidentMiB: Double
    /// User plus system CPU time, in seconds.
    var cpuSeconds: Double

    /// Reads the usage of a live process; nil when `/proc` has no such process.
    static func read(pid: pid_t) -> ProcessUsage? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")")
        else { return nil }
        let hwm = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }?.split(separator: " ").dropFirst().first.flatMap { Double($0) } ?? 0
        // Fields after the command: state is field 3, utime and stime are fields 14 and 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let utime = fields.count > 12 ? Double(fields[11]) ?? 0 : 0
        let stime = fields.count > 12 ? Double(fields[12]) ?? 0 : 0
        return ProcessUsage(peakResidentMiB: hwm / 1024, cpuSeconds: (utime + stime) / max(ticks, 1))
    }
}
