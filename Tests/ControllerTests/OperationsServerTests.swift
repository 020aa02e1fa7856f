import AsyncHTTPClient
import CoreMetrics
import Logging
import NIOCore
import Prometheus
import Synchronization
import Testing

@testable import pool_controller

@Suite("Operations server", .timeLimit(.minutes(1)))
struct OperationsServerTests {
    /// One GET: status, content type and body.
    static func get(_ client: HTTPClient, _ url: String) async throws -> (status: UInt, contentType: String?, body: String) {
        let response = try await client.execute(HTTPClientRequest(url: url), timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 20)
        // The test target does not list NIOHTTP1, so the status is read through its description ("200 OK").
        let code = UInt("\(response.status)".prefix { $0.isNumber }) ?? 0
        let contentType = response.headers.first { $0.name.lowercased() == "content-type" }?.value
        return (code, contentType, String(buffer: body))
    }

    @Test func servesHealthReadinessAndMetricsThenStops() async throws {
        let registry = PrometheusCollectorRegistry()
        let metrics = ControllerMetrics(factory: ControllerMetrics.prometheusFactory(registry: registry))
        metrics.setLeader(true)
        metrics.podCreated(pool: "ci/linux")
        let alive = Mutex(true)
        let readiness = Mutex((ready: false, reason: "waiting for the first AgentPool list"))
        let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
        let server = OperationsServer(
            host: "127.0.0.1", port: 0, registry: registry, liveness: { alive.withLock { $0 } },
            readiness: { readiness.withLock { $0 } }, logger: OperationsTestCluster.logger("operations"),
            onListening: { portContinuation.yield($0) })
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        let serverEnding = await withTaskGroup(of: (any Error)?.self) { group -> (any Error)?? in
            group.addTask {
                do { try await server.run(); return nil } catch { return error }
            }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else {
                Issue.record("the server reported no port")
                group.cancelAll()
                return nil
            }
            #expect(port > 0)
            let base = "http://127.0.0.1:\(port)"
            do {
                let health = try await Self.get(client, base + "/healthz")
                #expect(health.status == 200)
                #expect(health.body == "ok")

                let notReady = try await Self.get(client, base + "/readyz")
                #expect(notReady.status == 503)
                #expect(notReady.body == "waiting for the first AgentPool list")
                readiness.withLock { $0 = (true, "") }
                let ready = try await Self.get(client, base + "/readyz")
                #expect(ready.status == 200)
                #expect(ready.body == "ok")

                let scrape = try await Self.get(client, base + "/metrics")
                #expect(scrape.status == 200)
                #expect(scrape.contentType == "text/plain; version=0.0.4; charset=utf-8")
                let lines = Set(scrape.body.split(separator: "\n").map(String.init))
                #expect(lines.contains("shoal_leader 1.0"))
                #expect(lines.contains(#"shoal_pods_created_total{pool="ci/linux"} 1"#))

                alive.withLock { $0 = false }
                let dead = try await Self.get(client, base + "/healthz")
                #expect(dead.status == 503)

                let missing = try await Self.get(client, base + "/nothing")
                #expect(missing.status == 404)
            } catch {
                Issue.record("request failed: \(error)")
            }
            // Cancellation stops `run` (the group returns only once it has); it must end without an error.
            group.cancelAll()
            return await group.next()
        }
        if case .some(.some(let error)) = serverEnding { Issue.record("the server ended with \(error)") }
        try await client.shutdown()
    }
}
