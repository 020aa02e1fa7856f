import CoreMetrics
import Prometheus
import Testing

@testable import pool_controller

@Suite("Controller metrics")
struct ControllerMetricsTests {
    /// A fresh registry and metrics writing to it (no global bootstrap).
    static func make() -> (PrometheusCollectorRegistry, ControllerMetrics) {
        let registry = PrometheusCollectorRegistry()
        return (registry, ControllerMetrics(factory: ControllerMetrics.prometheusFactory(registry: registry)))
    }

    static func render(_ registry: PrometheusCollectorRegistry) -> Set<String> {
        var bytes: [UInt8] = []
        registry.emit(into: &bytes)
        return Set(String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init))
    }

    @Test func countsSetEveryStateAndPhaseIncludingZeros() {
        let (registry, metrics) = Self.make()
        metrics.recordCounts(pool: "ci/linux", queued: 3, busy: 2, idle: 1, starting: 0, desired: 4, podsByPhase: ["Running": 3, "Pending": 1])
        let lines = Self.render(registry)
        for expected in [
            #"shoal_pool_queued_jobs{pool="ci/linux"} 3.0"#,
            #"shoal_pool_desired_agents{pool="ci/linux"} 4.0"#,
            #"shoal_pool_agents{pool="ci/linux",state="busy"} 2.0"#,
            #"shoal_pool_agents{pool="ci/linux",state="idle"} 1.0"#,
            #"shoal_pool_agents{pool="ci/linux",state="starting"} 0.0"#,
            #"shoal_pool_pods{pool="ci/linux",phase="Running"} 3.0"#,
            #"shoal_pool_pods{pool="ci/linux",phase="Pending"} 1.0"#,
            #"shoal_pool_pods{pool="ci/linux",phase="Succeeded"} 0.0"#,
            #"shoal_pool_pods{pool="ci/linux",phase="Failed"} 0.0"#,
            #"shoal_pool_pods{pool="ci/linux",phase="Terminating"} 0.0"#,
            "# TYPE shoal_pool_agents gauge",
            "shoal_leader 0.0",
        ] {
            #expect(lines.contains(expected), "missing \(expected)")
        }
    }

    @Test func countersAndLeader() {
        let (registry, metrics) = Self.make()
        metrics.podCreated(pool: "ci/linux")
        metrics.podCreated(pool: "ci/linux")
        metrics.podDeleted(pool: "ci/linux", reason: "idle-surplus")
        metrics.registrationDeleted(pool: "ci/linux", reason: "orphan")
        metrics.placeholder(pool: "ci/linux", action: "created")
        metrics.rateLimitRemaining(pool: "ci/linux", value: 180)
        metrics.azureDevOpsRequest(route: "jobrequests", status: 200, duration: .milliseconds(30))
        metrics.azureDevOpsRequest(route: "jobrequests", status: nil, duration: .seconds(2))
        metrics.setLeader(true)
        let lines = Self.render(registry)
        for expected in [
            #"shoal_pods_created_total{pool="ci/linux"} 2"#,
            #"shoal_pods_deleted_total{pool="ci/linux",reason="idle-surplus"} 1"#,
            #"shoal_registrations_deleted_total{pool="ci/linux",reason="orphan"} 1"#,
            #"shoal_placeholder_registrations_total{pool="ci/linux",action="created"} 1"#,
            #"shoal_azure_devops_rate_limit_remaining{pool="ci/linux"} 180.0"#,
            #"shoal_azure_devops_requests_total{route="jobrequests",status="200"} 1"#,
            #"shoal_azure_devops_requests_total{route="jobrequests",status="error"} 1"#,
            #"shoal_azure_devops_request_duration_seconds_count{route="jobrequests"} 2"#,
            #"shoal_azure_devops_request_duration_seconds_bucket{route="jobrequests",le="0.05"} 1"#,
            "# TYPE shoal_pods_created_total counter",
            "shoal_leader 1.0",
        ] {
            #expect(lines.contains(expected), "missing \(expected)")
        }
    }

    @Test func histogramsUseTheirBuckets() {
        let (registry, metrics) = Self.make()
        metrics.reconciled(pool: "ci/linux", duration: .milliseconds(40), error: nil)
        metrics.reconciled(pool: "ci/linux", duration: .milliseconds(70), error: "Forbidden")
        metrics.queueToAssign(pool: "ci/linux", seconds: 7)
        let lines = Self.render(registry)
        for expected in [
            #"shoal_reconcile_duration_seconds_count{pool="ci/linux"} 2"#,
            #"shoal_reconcile_duration_seconds_bucket{pool="ci/linux",le="0.05"} 1"#,
            #"shoal_reconcile_duration_seconds_bucket{pool="ci/linux",le="0.1"} 2"#,
            #"shoal_reconcile_errors_total{pool="ci/linux",reason="Forbidden"} 1"#,
            #"shoal_queue_to_assign_seconds_bucket{pool="ci/linux",le="5.0"} 0"#,
            #"shoal_queue_to_assign_seconds_bucket{pool="ci/linux",le="10.0"} 1"#,
            #"shoal_queue_to_assign_seconds_bucket{pool="ci/linux",le="600.0"} 1"#,
            #"shoal_queue_to_assign_seconds_bucket{pool="ci/linux",le="+Inf"} 1"#,
            #"shoal_queue_to_assign_seconds_sum{pool="ci/linux"} 7.0"#,
            "# TYPE shoal_queue_to_assign_seconds histogram",
        ] {
            #expect(lines.contains(expected), "missing \(expected)")
        }
        let buckets = lines.filter { $0.hasPrefix("shoal_queue_to_assign_seconds_bucket") }
        #expect(buckets.count == 12)  // 11 bounds + +Inf
    }

    @Test func forgetRemovesOnlyThatPoolsSeries() {
        let (registry, metrics) = Self.make()
        metrics.recordCounts(pool: "ci/linux", queued: 1, busy: 0, idle: 0, starting: 1, desired: 1, podsByPhase: [:])
        metrics.recordCounts(pool: "ci/windows", queued: 2, busy: 0, idle: 0, starting: 0, desired: 0, podsByPhase: [:])
        metrics.podCreated(pool: "ci/linux")
        metrics.forget(pool: "ci/linux")
        let lines = Self.render(registry)
        #expect(!lines.contains { $0.contains(#"pool="ci/linux""#) })
        #expect(lines.contains(#"shoal_pool_queued_jobs{pool="ci/windows"} 2.0"#))
        // Recording again after forgetting brings the series back.
        metrics.podCreated(pool: "ci/linux")
        #expect(Self.render(registry).contains(#"shoal_pods_created_total{pool="ci/linux"} 1"#))
    }
}
