import Logging
import Shared

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Ends every process a job left behind, once the listener's last instance has exited.
///
/// A job runs as the agent's user and may leave processes running (`setsid`, double forks, daemons). Before the
/// entrypoint does anything else with the token (the REST unregistration), none of them may be alive: they
/// could watch `/proc` or the agent directory. The entrypoint is PID 1 or a child subreaper, so orphans are
/// re-parented to it: every leftover is its descendant. Each round SIGKILLs the live descendants found in
/// `/proc`, until none remain or ``limit`` passes; the ``ProcessReaper`` reaps them.
///
/// Only as PID 1 does it also `kill(-1, SIGKILL)`: that reaches every process the caller may signal, which is
/// only safe inside the pod's own PID namespace — never on a shared machine, where tests run the entrypoint as
/// a subreaper.
struct LeftoverProcesses: Sendable {
    /// Logger.
    let logger: Logger
    /// Time source for the bound and the pause between rounds.
    let clock: any ShoalClock
    /// How long to keep killing (a job that forks in a loop is outrun within this bound).
    var limit: Duration = .seconds(2)
    /// Pause between rounds, so processes just killed can turn into zombies.
    var pause: Duration = .milliseconds(20)
    /// The process whose descendants are killed (this one); never killed itself.
    var root: pid_t = getpid()

    /// Kills every descendant of ``root`` (and, as PID 1, every other process in the namespace); returns how many
    /// distinct processes were sent SIGKILL.
    @discardableResult
    func killAll() async -> Int {
        let deadline = clock.monotonicNow() + limit
        var killed: Set<pid_t> = []
        var survivors = 0
        while true {
            let live = ProcessTree.descendants(of: root, in: ProcessTree.snapshot())
            if live.isEmpty { break }
            for pid in live where pid != root && pid > 1 {
                // A pid between the snapshot and here could only be reused after the kernel wrapped around the
                // whole pid space; the window is a few microseconds.
                if kill(pid, SIGKILL) == 0 { killed.insert(pid) }
            }
            if root == 1 { _ = kill(-1, SIGKILL) }
            guard clock.monotonicNow() < deadline else {
                survivors = ProcessTree.descendants(of: root, in: ProcessTree.snapshot()).count
                break
            }
            try? await clock.sleep(for: pause)
        }
        if root == 1 {
            // Processes outside our tree (e.g. `kubectl exec` sessions) share the namespace: end them too.
            _ = kill(-1, SIGKILL)
        }
        if survivors == 0 {
            logger.info("ended the processes left behind", metadata: ["leftover_processes_killed": "\(killed.count)"])
        } else {
            logger.warning(
                "processes left behind survived SIGKILL",
                metadata: ["leftover_processes_killed": "\(killed.count)", "still_running": "\(survivors)"])
        }
        return killed.count
    }
}
