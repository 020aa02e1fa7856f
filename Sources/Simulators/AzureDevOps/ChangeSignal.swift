import Synchronization

/// A version counter that tasks can wait on until it moves, with a deadline and cancellation.
///
/// Long polls and `waitUntil` read the version, check their condition, and then wait for the next change; a
/// change between the read and the wait is not lost because the wait returns at once when the version moved.
final class ChangeSignal: Sendable {
    private struct State {
        var version = 0
        var nextWaiter = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    private let state = Mutex(State())

    /// The current version.
    var version: Int { state.withLock { $0.version } }

    /// Bumps the version and wakes every waiter.
    func signal() {
        let waiters = state.withLock { state in
            state.version += 1
            let waiters = state.waiters
            state.waiters = [:]
            return waiters
        }
        for waiter in waiters.values { waiter.resume() }
    }

    /// Returns when the version differs from `version`, the deadline passes, or the task is cancelled.
    func wait(afterVersion version: Int, until deadline: ContinuousClock.Instant) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForChange(afterVersion: version) }
            group.addTask { try? await Task.sleep(until: deadline, clock: .continuous) }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitForChange(afterVersion version: Int) async {
        let id = state.withLock { state in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state in
                    if state.version != version || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }
}
