import Shared
import AsyncHTTPClient
import NIOCore
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One change seen by a watch.
package enum WatchEvent<Object: KubernetesObject>: Sendable {
    /// The object was created (or existed when a watch without resourceVersion started).
    case added(Object)
    /// The object changed.
    case modified(Object)
    /// The object was deleted; this is its last state.
    case deleted(Object)
    /// No object change; the collection's version advanced to this (resume from here).
    case bookmark(resourceVersion: String)

    /// The resourceVersion to resume a watch from after this event.
    package var resourceVersion: String? {
        switch self {
        case .added(let object), .modified(let object), .deleted(let object): object.metadata.resourceVersion
        case .bookmark(let version): version
        }
    }
}

/// Splits a byte stream into lines, holding at most `maximumLineBytes` of an unfinished line.
///
/// Watch responses are newline-delimited JSON arriving in arbitrary chunks; a line may span chunks, and a chunk
/// may hold several lines. The bound keeps a broken or hostile server from growing the buffer without limit.
package struct LineSplitter: Sendable {
    /// The longest line accepted, in bytes (without the newline).
    package let maximumLineBytes: Int
    private var buffer: [UInt8] = []
    private var start = 0

    /// Why a line could not be produced.
    package struct LineTooLong: Error, Equatable {
        /// The limit that was exceeded.
        package let limit: Int

        /// An error for `limit`.
        package init(limit: Int) { self.limit = limit }
    }

    /// A splitter with the given bound.
    package init(maximumLineBytes: Int) {
        self.maximumLineBytes = max(1, maximumLineBytes)
    }

    /// Adds received bytes.
    package mutating func append(_ bytes: some Sequence<UInt8>) {
        if start > 0, start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete line without its `\n` (and a trailing `\r`), or nil when none is complete yet.
    /// Throws when the unfinished or found line is longer than the bound.
    package mutating func nextLine() throws(LineTooLong) -> [UInt8]? {
        guard let newline = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.count - start > maximumLineBytes { throw LineTooLong(limit: maximumLineBytes) }
            return nil
        }
        var end = newline
        if end > start, buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        guard end - start <= maximumLineBytes else { throw LineTooLong(limit: maximumLineBytes) }
        let line = Array(buffer[start..<end])
        start = newline + 1
        return line
    }

    /// At end of stream: the unterminated last line, if any (empty lines are skipped by callers).
    package mutating func finish() throws(LineTooLong) -> [UInt8]? {
        guard start < buffer.count else { return nil }
        guard buffer.count - start <= maximumLineBytes else { throw LineTooLong(limit: maximumLineBytes) }
        let line = Array(buffer[start...])
        start = buffer.count
        return line
    }
}

/// The events of one watch request, decoded line by line as the response streams in.
///
/// The request starts on the first `next()`; the sequence ends when the server ends the response (its
/// `timeoutSeconds` elapsed) — watch again from the last ``WatchEvent/resourceVersion``. An `ERROR` event is thrown as
/// the matching ``KubernetesError`` (410 → ``KubernetesError/gone(_:)``: list again). ``ListWatch`` does all of that.
/// Single-pass: iterate it once.
package struct WatchStream<Object: KubernetesObject>: AsyncSequence, Sendable {
    /// Each element is one event.
    package typealias Element = WatchEvent<Object>

    private enum Source: Sendable {
        case http(request: String, maximumLineBytes: Int, open: @Sendable () async throws(KubernetesError) -> HTTPClientResponse.Body)
        case events(AsyncThrowingStream<Element, any Error>)
    }

    private let source: Source

    /// A watch over an HTTP response body that `open` returns (after checking for 200). `request` names it in errors.
    package init(request: String, maximumLineBytes: Int, open: @escaping @Sendable () async throws(KubernetesError) -> HTTPClientResponse.Body) {
        source = .http(request: request, maximumLineBytes: maximumLineBytes, open: open)
    }

    /// A watch that replays given events: for fakes of ``KubernetesAPI``.
    package init(events: AsyncThrowingStream<Element, any Error>) {
        source = .events(events)
    }

    /// Starts iterating.
    package func makeAsyncIterator() -> Iterator {
        switch source {
        case .http(let request, let limit, let open):
            Iterator(mode: .http(request: request, open: open, splitter: LineSplitter(maximumLineBytes: limit), body: nil, finished: false))
        case .events(let stream):
            Iterator(mode: .events(stream.makeAsyncIterator()))
        }
    }

    /// Reads events; not thread-safe, like every iterator.
    package struct Iterator: AsyncIteratorProtocol {
        fileprivate enum Mode {
            case http(
                request: String, open: @Sendable () async throws(KubernetesError) -> HTTPClientResponse.Body, splitter: LineSplitter,
                body: HTTPClientResponse.Body.AsyncIterator?, finished: Bool
            )
            case events(AsyncThrowingStream<Element, any Error>.AsyncIterator)
        }

        fileprivate var mode: Mode

        /// The next event, nil when the server ended the watch; throws ``KubernetesError``.
        package mutating func next() async throws -> Element? {
            switch mode {
            case .events(var iterator):
                let event = try await iterator.next()
                mode = .events(iterator)
                return event
            case .http(let request, let open, var splitter, var body, var finished):
                defer { mode = .http(request: request, open: open, splitter: splitter, body: body, finished: finished) }
                while true {
                    let line: [UInt8]?
                    do {
                        line = finished ? try splitter.finish() : try splitter.nextLine()
                    } catch {
                        throw KubernetesError.lineTooLong(request: request, limit: error.limit)
                    }
                    if let line {
                        if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: "\r") }) { continue }
                        return try WatchLineDecoder.decode(line, as: Object.self, request: request)
                    }
                    if finished { return nil }
                    if body == nil { body = try await open().makeAsyncIterator() }
                    let chunk: ByteBuffer?
                    do {
                        chunk = try await body?.next()
                    } catch {
                        if Task.isCancelled { throw KubernetesError.cancelled }
                        throw KubernetesError.transport(request: request, detail: "watch stream broke: \(error)")
                    }
                    if let chunk {
                        splitter.append(chunk.readableBytesView)
                    } else {
                        finished = true
                    }
                }
            }
        }
    }
}

/// Decodes one watch line (`{"type":"ADDED","object":{...}}`).
package enum WatchLineDecoder {
    /// The event on `line`; an `ERROR` event is thrown as the error its Status stands for.
    package static func decode<Object: KubernetesObject>(_ line: [UInt8], as type: Object.Type, request: String) throws(KubernetesError) -> WatchEvent<Object> {
        let parsed: Line<Object>
        do {
            parsed = try KubernetesCoding.decoder().decode(Line<Object>.self, from: Data(line))
        } catch {
            throw .decoding(request: request, detail: "watch line: \(error)", bodyExcerpt: String(decoding: line.prefix(300), as: UTF8.self))
        }
        switch parsed.event {
        case .event(let event): return event
        case .error(let status):
            throw KubernetesError.classify(KubernetesFailure(request: request, code: status.code ?? 500, status: status))
        }
    }

    private struct Line<Object: KubernetesObject>: Decodable {
        enum Parsed {
            case event(WatchEvent<Object>)
            case error(Status)
        }

        let event: Parsed

        private enum CodingKeys: String, CodingKey { case type, object }

        private struct Bookmark: Decodable { var metadata: ObjectMeta }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            let type = try container.decode(String.self, forKey: .type)
            switch type {
            case "ADDED": event = .event(.added(try container.decode(Object.self, forKey: .object)))
            case "MODIFIED": event = .event(.modified(try container.decode(Object.self, forKey: .object)))
            case "DELETED": event = .event(.deleted(try container.decode(Object.self, forKey: .object)))
            case "BOOKMARK":
                let bookmark = try container.decode(Bookmark.self, forKey: .object)
                event = .event(.bookmark(resourceVersion: bookmark.metadata.resourceVersion ?? ""))
            case "ERROR": event = .error(try container.decode(Status.self, forKey: .object))
            default:
                throw DecodingError.dataCorruptedError(forKey: .type, in: container, debugDescription: "unknown watch event type \(type)")
            }
        }
    }
}
