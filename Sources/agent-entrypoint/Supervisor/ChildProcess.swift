import Shared
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What to start: executable, arguments, environment and working directory.
struct ProcessSpecification: Sendable {
    /// Absolute path of the executable.
    var executable: String
    /// Arguments after `argv[0]`.
    var arguments: [String]
    /// The complete environment of the child (nothing is inherited implicitly).
    var environment: [String: String]
    /// Working directory, if not ours.
    var workingDirectory: String?
    /// Copy the child's stdout/stderr to ours unchanged (true) or only capture the lines (false).
    var forwardOutput: Bool = true
}

/// Why a process could not be started.
struct SpawnError: Error, CustomStringConvertible {
    /// The executable.
    let executable: String
    /// `errno` from `posix_spawn` or `pipe2`.
    let code: Int32

    /// `cannot start PATH: strerror`.
    var description: String { "cannot start \(executable): \(String(cString: strerror(code)))" }
}

/// Starts processes; the entrypoint's only way to create children (so the reaper knows all of them).
protocol ProcessLauncher: Sendable {
    /// Starts the process in a new process group and returns a handle.
    func launch(_ specification: ProcessSpecification) throws(SpawnError) -> ChildProcess
}

/// A running child in its own process group, with its output as lines.
struct ChildProcess: Sendable {
    /// The child's pid, which is also its process-group id.
    let pid: pid_t
    /// Every line the child prints on stdout or stderr (without the newline), until both are closed.
    let lines: AsyncStream<String>
    private let reaper: ProcessReaper

    fileprivate init(pid: pid_t, lines: AsyncStream<String>, reaper: ProcessReaper) {
        self.pid = pid
        self.lines = lines
        self.reaper = reaper
    }

    /// Waits for the child to exit. Cancelling the calling task sends SIGTERM to the group but still waits.
    func exitStatus() async -> ExitStatus {
        let pid = self.pid
        return await withTaskCancellationHandler {
            await reaper.status(of: pid)
        } onCancel: {
            kill(-pid, SIGTERM)
        }
    }

    /// Sends `signal` to the child's whole process group (the listener, its worker and job steps).
    func signalGroup(_ signal: Int32) {
        kill(-pid, signal)
    }
}

/// `posix_spawn` with a fresh process group, default signal dispositions and piped output.
struct PosixProcessLauncher: ProcessLauncher {
    /// The process-wide reaper that owns `wait()`.
    let reaper: ProcessReaper

    /// Starts `specification`; output is relayed line by line on two reader threads.
    func launch(_ specification: ProcessSpecification) throws(SpawnError) -> ChildProcess {
        var outPipe: [Int32] = [-1, -1]
        var errPipe: [Int32] = [-1, -1]
        guard makePipe(&outPipe) else { throw SpawnError(executable: specification.executable, code: errno) }
        guard makePipe(&errPipe) else {
            let code = errno
            close(outPipe[0]); close(outPipe[1])
            throw SpawnError(executable: specification.executable, code: code)
        }

        let pid: pid_t
        do {
            pid = try reaper.spawnTracked { () throws(SpawnError) -> pid_t in
                try Self.spawn(specification, stdout: outPipe[1], stderr: errPipe[1])
            }
        } catch {
            for fd in outPipe + errPipe { close(fd) }
            throw error
        }
        close(outPipe[1])
        close(errPipe[1])

        let (lines, sink) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingNewest(4096))
        let open = Mutex(2)
        for (source, target) in [(outPipe[0], Int32(STDOUT_FILENO)), (errPipe[0], Int32(STDERR_FILENO))] {
            let forward = specification.forwardOutput
            BlockingThread.start {
                OutputRelay.run(source: source, target: forward ? target : nil) { sink.yield($0) }
                close(source)
                if open.withLock({ count in count -= 1; return count }) == 0 { sink.finish() }
            }
        }
        return ChildProcess(pid: pid, lines: lines, reaper: reaper)
    }

    private static func spawn(_ specification: ProcessSpecification, stdout: Int32, stderr: Int32) throws(SpawnError) -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        // Our SIGTERM/SIGINT/SIGPIPE are ignored (handled by dispatch sources); children must get the defaults.
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, stdout, STDOUT_FILENO)
        posix_spawn_file_actions_adddup2(&actions, stderr, STDERR_FILENO)
        if let directory = specification.workingDirectory {
            // Not exported by the Glibc module (needs _GNU_SOURCE); glibc >= 2.29 and musl have it.
            if let addChdir = Self.addChdir { _ = addChdir(&actions, directory) }
        }

        let argv = [specification.executable] + specification.arguments
        let envp = specification.environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        var pid: pid_t = 0
        let result = withCStrings(argv) { argvPointers in
            withCStrings(envp) { envPointers in
                posix_spawn(&pid, specification.executable, &actions, &attributes, argvPointers, envPointers)
            }
        }
        guard result == 0 else { throw SpawnError(executable: specification.executable, code: result) }
        return pid
    }

    private typealias AddChdir = @convention(c) (
        UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>
    ) -> Int32

    /// `posix_spawn_file_actions_addchdir_np`, looked up once at run time.
    private static let addChdir: AddChdir? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addchdir_np") else {
            return nil
        }
        return unsafeBitCast(symbol, to: AddChdir.self)
    }()

    /// A pipe whose ends are close-on-exec (the child gets only the `dup2` copies).
    private func makePipe(_ fds: inout [Int32]) -> Bool {
        guard pipe(&fds) == 0 else { return false }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return true
    }

    private static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
        pointers.append(nil)
        defer { for pointer in pointers { free(pointer) } }
        return pointers.withUnsafeBufferPointer { buffer in
            body(buffer.baseAddress!)
        }
    }
}

/// Copies a child's output to ours byte for byte and splits it into lines for scanning.
enum OutputRelay {
    /// Longest line kept for scanning; longer lines are still forwarded in full but cut for matching.
    static let maximumLineBytes = 16 * 1024

    /// Reads `source` until EOF, writes every chunk to `target` (if any) and hands complete lines to `line`.
    static func run(source: Int32, target: Int32?, line: (String) -> Void) {
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        var pending: [UInt8] = []
        while true {
            let count = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            if let target { writeAll(target, buffer[0..<count]) }
            for byte in buffer[0..<count] {
                if byte == UInt8(ascii: "\n") {
                    line(String(decoding: pending, as: UTF8.self))
                    pending.removeAll(keepingCapacity: true)
                } else if pending.count < maximumLineBytes {
                    pending.append(byte)
                }
            }
        }
        if !pending.isEmpty { line(String(decoding: pending, as: UTF8.self)) }
    }

    /// Writes all of `bytes` to `fd`, retrying short writes; gives up silently if the log is gone.
    static func writeAll(_ fd: Int32, _ bytes: ArraySlice<UInt8>) {
        RawOutput.writeAll(fd, bytes)
    }
}
