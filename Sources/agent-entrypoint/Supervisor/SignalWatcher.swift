import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Turns SIGTERM and SIGINT into an async stream instead of letting them kill the process.
///
/// The dispositions become `SIG_IGN` (dispatch sources still see the signals); children get default
/// dispositions back at spawn (`POSIX_SPAWN_SETSIGDEF`), so the listener reacts to a forwarded signal normally.
enum SignalWatcher {
    /// Starts watching `signals` for the rest of the process's life.
    static func watch(_ signals: [Int32]) -> AsyncStream<Int32> {
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        let sources = signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            return source
        }
        let holder = SourceHolder(sources)
        continuation.onTermination = { _ in holder.cancelAll() }
        return stream
    }

    /// `SIGTERM`, `SIGINT`, ... for logs.
    static func name(_ number: Int32) -> String {
        switch number {
        case SIGTERM: "SIGTERM"
        case SIGINT: "SIGINT"
        case SIGKILL: "SIGKILL"
        default: "signal \(number)"
        }
    }
}

/// Keeps the dispatch sources alive until the stream ends.
private final class SourceHolder: Sendable {
    private let sources: Mutex<[any DispatchSourceSignal]>

    init(_ sources: sending [any DispatchSourceSignal]) { self.sources = Mutex(sources) }

    func cancelAll() {
        sources.withLock { sources in
            for source in sources { source.cancel() }
            sources.removeAll()
        }
    }
}
