import AsyncHTTPClient
import Foundation
import NIOCore
import Kubernetes
import Simulators
import Shared
import Synchronization
import Testing

/// A response body delivered in the given chunks.
func body(_ chunks: [String]) -> HTTPClientResponse.Body {
    let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
    for chunk in chunks { continuation.yield(ByteBuffer(string: chunk)) }
    continuation.finish()
    return .stream(stream)
}

func podLine(_ type: String, name: String, version: String) -> String {
    #"{"type":"\#(type)","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"\#(name)","namespace":"ns","resourceVersion":"\#(version)","creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{"containers":[{"name":"agent","image":"i"}]},"status":{"phase":"Pending"}}}"#
}

/// The server's exact ERROR line for a compacted resourceVersion.
let goneLine = #"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 1 (2345)","reason":"Expired","code":410}}"#

/// The server's BOOKMARK line: a skeleton object carrying only the version.
let bookmarkLine = #"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"2001","creationTimestamp":null},"spec":{"containers":null},"status":{}}}"#

@Suite("Watch stream parsing, line splitting, Status and MicroTime")
struct WatchParsingTests {
    @Test func lineSplitterHandlesPartialChunksAndCRLF() throws {
        var splitter = LineSplitter(maximumLineBytes: 16)
        splitter.append(Array("ab".utf8))
        #expect(try splitter.nextLine() == nil)
        splitter.append(Array("c\r\nde\nf".utf8))
        #expect(try splitter.nextLine() == Array("abc".utf8))
        #expect(try splitter.nextLine() == Array("de".utf8))
        #expect(try splitter.nextLine() == nil)
        #expect(try splitter.finish() == Array("f".utf8))
        #expect(try splitter.finish() == nil)
    }

    @Test func lineSplitterRejectsOversizeLines() throws {
        var pending = LineSplitter(maximumLineBytes: 8)
        pending.append(Array("0123456789".utf8))  // no newline yet, already over the bound
        #expect(throws: LineSplitter.LineTooLong(limit: 8)) { try pending.nextLine() }

        var complete = LineSplitter(maximumLineBytes: 4)
        complete.append(Array("ok\n123456\n".utf8))
        #expect(try complete.nextLine() == Array("ok".utf8))
        #expect(throws: LineSplitter.LineTooLong(limit: 4)) { try complete.nextLine() }
    }

    @Test func watchStreamDecodesEventsSplitAcrossChunks() async throws {
        let text = podLine("ADDED", name: "a", version: "10") + "\n" + bookmarkLine + "\n\n" + podLine("DELETED", name: "a", version: "12")
        // Cut into 7-byte chunks so every line spans several chunks; the last line has no trailing newline.
        var chunks: [String] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            chunks.append(String(rest.prefix(7)))
            rest = rest.dropFirst(7)
        }
        let pieces = chunks
        let stream = WatchStream<Pod>(request: "WATCH test", maximumLineBytes: 4096) { () async throws(KubernetesError) in body(pieces) }
        var seen: [String] = []
        for try await event in stream {
            switch event {
            case .added(let pod): seen.append("added \(pod.metadata.name ?? "") \(event.resourceVersion ?? "")")
            case .modified(let pod): seen.append("modified \(pod.metadata.name ?? "")")
            case .deleted(let pod): seen.append("deleted \(pod.metadata.name ?? "") \(event.resourceVersion ?? "")")
            case .bookmark(let version): seen.append("bookmark \(version)")
            }
        }
        #expect(seen == ["added a 10", "bookmark 2001", "deleted a 12"])
    }

    @Test func errorEventWith410IsGone() async throws {
        let stream = WatchStream<Pod>(request: "WATCH test", maximumLineBytes: 4096) { () async throws(KubernetesError) in
            body([podLine("MODIFIED", name: "a", version: "5") + "\n", goneLine + "\n"])
        }
        var iterator = stream.makeAsyncIterator()
        guard case .modified = try await iterator.next() else { Issue.record("expected MODIFIED first"); return }
        do {
            _ = try await iterator.next()
            Issue.record("expected the ERROR event to throw")
        } catch let error as KubernetesError {
            guard case .gone(let failure) = error else { Issue.record("expected gone, got \(error)"); return }
            #expect(failure.code == 410 && failure.reason == "Expired")
            #expect(error.isRetryable)
        }
    }

    @Test func oversizeWatchLineIsAnError() async throws {
        let stream = WatchStream<Pod>(request: "WATCH test", maximumLineBytes: 64) { () async throws(KubernetesError) in
            body([podLine("ADDED", name: String(repeating: "x", count: 100), version: "1") + "\n"])
        }
        let error = await #expect(throws: KubernetesError.self) { for try await _ in stream {} }
        guard case .lineTooLong(_, let limit) = error else { Issue.record("expected lineTooLong, got \(String(describing: error))"); return }
        #expect(limit == 64)
    }

    @Test func statusDecodingAndClassification() throws {
        let json = #"""
            {"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Widget.test.shoal.dev \"w\" is invalid: spec.replicas: Invalid value: 20: spec.replicas in body should be less than or equal to 10","reason":"Invalid","details":{"name":"w","group":"test.shoal.dev","kind":"Widget","causes":[{"reason":"FieldValueInvalid","message":"Invalid value: 20: spec.replicas in body should be less than or equal to 10","field":"spec.replicas"}]},"code":422}
            """#
        let status = try JSONDecoder().decode(Status.self, from: Data(json.utf8))
        #expect(status.code == 422 && status.reason == "Invalid")
        #expect(status.details?.causes?.first?.field == "spec.replicas")
        let error = KubernetesError.classify(KubernetesFailure(request: "POST /apis/test.shoal.dev/v1alpha1/namespaces/x/widgets", code: 422, status: status))
        guard case .invalid = error else { Issue.record("expected invalid"); return }
        #expect(error.description.contains("spec.replicas: Invalid value: 20"))
        #expect(!error.isRetryable)

        let forbidden = KubernetesError.classify(KubernetesFailure(
            request: "GET /api/v1/namespaces/ci/pods", code: 403,
            status: Status(message: #"pods is forbidden: User "system:serviceaccount:shoal-system:shoal-controller" cannot list resource "pods" in API group "" in the namespace "ci""#, reason: "Forbidden", code: 403)
        ))
        #expect(forbidden.description.contains(#"cannot list resource "pods""#))
        #expect(forbidden.description.contains("deploy/"))
        let expectations: [(Int, String, Bool)] = [
            (400, "BadRequest", false), (401, "Unauthorized", false), (404, "NotFound", false), (409, "Conflict", true),
            (410, "Expired", true), (429, "Throttled", true), (500, "ServerError", true), (503, "ServerError", true), (418, "UnexpectedStatus", false),
        ]
        for (code, reason, retryable) in expectations {
            let classified = KubernetesError.classify(KubernetesFailure(request: "GET /x", code: code, status: nil, bodyExcerpt: "body"))
            #expect(classified.reason == reason, "\(code)")
            #expect(classified.isRetryable == retryable, "\(code)")
        }
        let exists = KubernetesError.classify(KubernetesFailure(request: "POST /x", code: 409, status: Status(reason: "AlreadyExists", code: 409)))
        #expect(exists.isAlreadyExists && !exists.isRetryable && exists.reason == "AlreadyExists")
    }

    @Test(arguments: [
        (0.0, "1970-01-01T00:00:00.000000Z"),
        (1_767_225_600.5, "2026-01-01T00:00:00.500000Z"),
        (1_767_225_600.123456, "2026-01-01T00:00:00.123456Z"),
        (1_767_225_659.000001, "2026-01-01T00:00:59.000001Z"),
    ])
    func microTimeHasSixDigits(seconds: Double, expected: String) {
        #expect(MicroTime.format(Date(timeIntervalSince1970: seconds)) == expected)
        #expect(MicroTime.parse(expected).map { abs($0.timeIntervalSince1970 - seconds) < 0.000_001 } == true)
    }

    @Test func leaseEncodesMicroTimes() throws {
        let lease = Lease(metadata: ObjectMeta(name: "l"), spec: LeaseSpec(holderIdentity: "me", renewTime: Date(timeIntervalSince1970: 1_767_225_600)))
        let text = String(decoding: try KubernetesCoding.encoder().encode(lease), as: UTF8.self)
        #expect(text.contains(#""renewTime":"2026-01-01T00:00:00.000000Z""#))
    }

    @Test func dynamicObjectKeepsUnknownFields() throws {
        let template: KubeJSON = [
            "metadata": ["labels": ["app": "agent"], "annotations": ["keep": "me"], "somethingNew": "x"],
            "spec": ["containers": [["name": "agent", "image": "i", "volumeMounts": [["name": "work", "mountPath": "/w"]], "startupProbe": ["exec": ["command": ["true"]]]]],
                     "volumes": [["name": "work", "emptyDir": [:]]], "runtimeClassName": "gvisor"],
        ]
        var pod = DynamicObject(template)
        pod.json["apiVersion"] = "v1"
        pod.json["kind"] = "Pod"
        var metadata = pod.metadata
        metadata.generateName = "agent-"
        metadata.labels?["shoal.dev/pool"] = "p"
        pod.metadata = metadata
        pod.json = pod.json.merging(["spec": ["restartPolicy": "Never"]])
        #expect(pod.json["metadata"]?["somethingNew"] == "x")
        #expect(pod.json["metadata"]?["annotations"]?["keep"] == "me")
        #expect(pod.metadata.labels == ["app": "agent", "shoal.dev/pool": "p"])
        #expect(pod.json["spec"]?["runtimeClassName"] == "gvisor")
        #expect(pod.json["spec"]?["restartPolicy"] == "Never")
        // Typed view of the same object for code that reads it.
        let typed = try pod.decode(as: Pod.self)
        #expect(typed.spec?.containers.first?.volumeMounts?.count == 1)
        #expect(typed.spec?.volumes?.first?["emptyDir"] == .emptyObject)
    }
}

/// A scripted ``KubernetesAPI``: list answers and watch streams are consumed in order; calls are recorded.
final class ScriptedAPI: KubernetesAPI {
    struct Script {
        var lists: [ObjectList<Pod>] = []
        var watches: [[Result<WatchEvent<Pod>, KubernetesError>]] = []
        var watchVersions: [String?] = []
        var listCount = 0
    }

    let script: Mutex<Script>

    init(_ script: Script) { self.script = Mutex(script) }

    var defaultNamespace: String { "ns" }

    func list<Object: KubernetesObject>(_ type: Object.Type, _ resource: KubernetesResource, namespace: String?, options: ListOptions) async throws(KubernetesError) -> ObjectList<Object> {
        let next = script.withLock { script -> ObjectList<Pod>? in
            script.listCount += 1
            return script.lists.isEmpty ? nil : script.lists.removeFirst()
        }
        guard let next, let typed = next as? ObjectList<Object> else { throw .notFound(KubernetesFailure(request: "LIST", code: 404, status: nil)) }
        return typed
    }

    func watch<Object: KubernetesObject>(_ type: Object.Type, _ resource: KubernetesResource, namespace: String?, options: WatchOptions) -> WatchStream<Object> {
        let events = script.withLock { script -> [Result<WatchEvent<Pod>, KubernetesError>] in
            script.watchVersions.append(options.resourceVersion)
            return script.watches.isEmpty ? [.failure(.forbidden(KubernetesFailure(request: "WATCH", code: 403, status: nil)))] : script.watches.removeFirst()
        }
        let (stream, continuation) = AsyncThrowingStream<WatchEvent<Object>, any Error>.makeStream()
        for event in events {
            switch event {
            case .success(let event):
                if let typed = event as? WatchEvent<Object> { continuation.yield(typed) }
            case .failure(let error):
                continuation.finish(throwing: error)
            }
        }
        continuation.finish()
        return WatchStream(events: stream)
    }

    func get<Object: KubernetesObject>(_ type: Object.Type, _ resource: KubernetesResource, namespace: String?, name: String) async throws(KubernetesError) -> Object { throw Self.unused }
    func create<Object: KubernetesObject>(_ object: Object, _ resource: KubernetesResource, namespace: String?) async throws(KubernetesError) -> Object { throw Self.unused }
    func update<Object: KubernetesObject>(_ object: Object, _ resource: KubernetesResource, namespace: String?, subresource: String?) async throws(KubernetesError) -> Object { throw Self.unused }
    func patch<Object: KubernetesObject>(_ type: Object.Type, _ resource: KubernetesResource, namespace: String?, name: String, patch: KubernetesPatch, subresource: String?) async throws(KubernetesError) -> Object { throw Self.unused }
    func delete(_ resource: KubernetesResource, namespace: String?, name: String, options: DeleteOptions) async throws(KubernetesError) -> DeletionResult { throw Self.unused }
    func createSubresource<Body: Encodable & Sendable>(_ body: Body, _ resource: KubernetesResource, namespace: String?, name: String, subresource: String) async throws(KubernetesError) -> KubeJSON { throw Self.unused }

    static let unused = KubernetesError.unexpectedStatus(KubernetesFailure(request: "unused", code: 0, status: nil))
}

@Suite("ListWatch state machine")
struct ListWatchTests {
    static func pod(_ name: String, _ version: String) -> Pod {
        Pod(metadata: ObjectMeta(name: name, namespace: "ns", resourceVersion: version), spec: PodSpec(containers: [Container(name: "c")]))
    }

    @Test func rewatchesFromLastVersionAndRelistsOnGone() async throws {
        let gone = KubernetesError.gone(KubernetesFailure(request: "WATCH", code: 410, status: Status(reason: "Expired", code: 410)))
        let api = ScriptedAPI(.init(
            lists: [
                ObjectList(metadata: ListMeta(resourceVersion: "10"), items: [Self.pod("a", "9")]),
                ObjectList(metadata: ListMeta(resourceVersion: "20"), items: [Self.pod("a", "9"), Self.pod("b", "11")]),
            ],
            watches: [
                [.success(.added(Self.pod("b", "11")))],  // then the server ends the watch
                [.success(.bookmark(resourceVersion: "15")), .failure(gone)],
                [.success(.modified(Self.pod("a", "21")))],
            ]
        ))
        var events = ListWatch<Pod>(api: api, resource: .pods, namespace: "ns").makeAsyncIterator()
        var seen: [String] = []
        for _ in 0..<4 {
            switch try await events.next() {
            case .relisted(let items, let version): seen.append("relisted \(items.compactMap(\.metadata.name)) @\(version)")
            case .added(let pod): seen.append("added \(pod.metadata.name ?? "")")
            case .modified(let pod): seen.append("modified \(pod.metadata.name ?? "")")
            case .deleted(let pod): seen.append("deleted \(pod.metadata.name ?? "")")
            case nil: seen.append("end")
            }
        }
        #expect(seen == ["relisted [\"a\"] @10", "added b", "relisted [\"a\", \"b\"] @20", "modified a"])
        // Watches resumed from the list, then from the last event, then from the new list after the 410.
        #expect(api.script.withLock { $0.watchVersions } == ["10", "11", "20"])
        // A non-retryable failure (403 from the exhausted script) ends the sequence with that error.
        await #expect(throws: KubernetesError.self) { _ = try await events.next() }
    }
}
