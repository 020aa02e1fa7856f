import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How a child process ended.
enum ExitStatus: Sendable, Equatable, CustomStringConvertible {
    /// Exited normally with this code.
    case exited(Int32)
    /// Killed by this signal.
    case signaled(Int32)

    /// Decodes a `waitpid` status word.
    init(waitStatus status: Int32) {
        if status & 0x7f == 0 {
            self = .exited((status >> 8) & 0xff)
        } else {
            self = .signaled(status & 0x7f)
        }
    }

    /// `exit N` or `signal N`.
    var description: String {
        switch self {
        case .exited(let code): "exit \(code)"
        case .signaled(let signal): "signal \(signal)"
        }
    }

    /// The exit code, if the process exited normally.
    var code: Int32? {
        if case .exited(let code) = self { return code }
        return nil
    }
}

/// The one and only owner of `wait()` in this process: reaps every child, ours and orphans alike.
///
/// As PID 1 (or a child subreaper) the entrypoint inherits every orphan a job step leaves behind; if nobody
/// waits for them they stay zombies forever. A single thread blocks in `waitpid(-1)`, so no other component
/// may call `wait*` — children we spawn are registered under the same lock that delivers statuses, which closes
/// the race where a child exits before anyone asked for its status. Orphans are reaped and counted.
final class ProcessReaper: Sendable {
    private struct State {
        var tracked: Set<pid_t> = []
        var finished: [pid_t: ExitStatus] = [:]
        var waiters: [pid_t: [CheckedContinuation<ExitStatus, Never>]] = [:]
        var orphansReaped = 0
        var started = false
    }

    private let state = Mutex(State())
    private let childAdded = DispatchSemaphore(value: 0)

    /// Creates a reaper; nothing is reaped until `start()`.
    init() {}

    /// Starts the reaping thread (idempotent).
    func start() {
        let shouldStart = state.withLock { state in
            defer { state.started = true }
            return !state.started
        }
        guard shouldStart else { return }
        BlockingThread.start { [self] in reapForever() }
    }

    /// How many processes that were not ours (orphans re-parented to us) have been reaped.
    var orphansReaped: Int { state.withLock { $0.orphansReaped } }

    /// Runs `spawn` (which must return the new child's pid) under the reaper's lock and tracks the child.
    ///
    /// Holding the lock means the reaping thread cannot deliver the child's status before it is tracked.
    func spawnTracked<E: Error>(_ spawn: () throws(E) -> pid_t) throws(E) -> pid_t {
        let pid = try state.withLock { (state: inout State) throws(E) -> pid_t in
            let pid = try spawn()
            state.tracked.insert(pid)
            return pid
        }
        childAdded.signal()
        return pid
    }

    /// Waits until the tracked child `pid` has exited and returns its status (exactly once per pid).
    func status(of pid: pid_t) async -> ExitStatus {
        await withCheckedContinuation { (continuation: CheckedContinuation<ExitStatus, Never>) in
            let ready = state.withLock { state -> ExitStatus? in
                if let status = state.finished.removeValue(forKey: pid) { return status }
                state.waiters[pid, default: []].append(continuation)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    private func reapForever() {
        while true {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, 0)
            if pid > 0 {
                deliver(pid: pid, status: ExitStatus(waitStatus: status))
            } else if errno == ECHILD {
                // No children at all: sleep until the next spawn instead of spinning.
                childAdded.wait()
            }
            // EINTR: just wait again.
        }
    }

    private func deliver(pid: pid_t, status: ExitStatus) {
        let waiters = state.withLock { state -> [CheckedContinuation<ExitStatus, Never>] in
            guard state.tracked.remove(pid) != nil else {
                state.orphansReaped += 1
                return []
            }
            if let waiters = state.waiters.removeValue(forKey: pid) { return waiters }
            state.finished[pid] = status
            return []
        }
        for waiter in waiters { waiter.resume(returning: status) }
    }
}

/// Starts detached OS threads for work that blocks in system calls (reads, `waitpid`).
///
/// Blocking calls must not run on Swift's cooperative pool (two cores: two threads); these threads are few and
/// live as long as the thing they wait for.
enum BlockingThread {
    private final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    /// Runs `body` on a new detached thread.
    static func start(_ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { argument in
            guard let argument else { return nil }
            let box = Unmanaged<Box>.fromOpaque(argument).takeRetainedValue()
            box.body()
            return nil
        }, box)
        if result == 0 {
            pthread_detach(thread)
        } else {
            // Could not start a thread (resource exhaustion): run inline rather than lose the work.
            Unmanaged<Box>.fromOpaque(box).takeRetainedValue().body()
        }
    }
}
