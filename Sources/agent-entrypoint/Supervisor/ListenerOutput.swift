import Shared

/// What a line of the listener's output means for the lifecycle.
///
/// The listener's console lines are its only public progress signal (fact sheet §4.2):
/// `{0:u}: Listening for Jobs`, `{0:u}: Running job: {name}`, `{0:u}: Job {name} completed with result: {result}`.
enum ListenerLine: Sendable, Equatable {
    /// The session is open and the agent waits for a job.
    case listening
    /// A job started.
    case jobStarted(name: String)
    /// The job finished with this `TaskResult` (PascalCase, e.g. `Succeeded`).
    case jobCompleted(name: String, result: String)
    /// Anything else.
    case other

    /// Classifies one line of listener output.
    init(parsing line: String) {
        if line.hasSuffix(": Listening for Jobs") || line == "Listening for Jobs" {
            self = .listening
        } else if let range = line.firstRange(of: ": Running job: ") {
            self = .jobStarted(name: String(line[range.upperBound...]))
        } else if let start = line.firstRange(of: ": Job "),
            let end = line[start.upperBound...].firstRange(of: " completed with result: ")
        {
            self = .jobCompleted(
                name: String(line[start.upperBound..<end.lowerBound]),
                result: line[end.upperBound...].trimmingWhitespace())
        } else {
            self = .other
        }
    }
}
