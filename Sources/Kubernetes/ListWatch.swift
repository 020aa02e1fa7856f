import Shared
import Logging

/// What a ``ListWatch`` reports: a full snapshot, then changes.
package enum ListWatchEvent<Object: KubernetesObject>: Sendable {
    /// A fresh list: replace the whole cache with these objects (first list, and after a 410 "too old").
    case relisted([Object], resourceVersion: String)
    /// An object was added.
    case added(Object)
    /// An object changed.
    case modified(Object)
    /// An object was deleted.
    case deleted(Object)
}

/// A small informer: list, then watch from the list's version, forever.
///
/// It tracks the last resourceVersion (from events and BOOKMARKs), watches again when the server ends a watch
/// (`timeoutSeconds`), lists again on 410 Gone (an `ERROR` event inside the stream or an HTTP 410) and reports
/// that as ``ListWatchEvent/relisted(_:resourceVersion:)``, and backs off on retryable failures. Errors that
/// retrying cannot fix (403 RBAC, 404 unknown resource) end the sequence by being thrown. Cancel the consuming task
/// to stop it. Single-pass.
package struct ListWatch<Object: KubernetesObject>: AsyncSequence, Sendable {
    /// Each element is a snapshot or a change.
    package typealias Element = ListWatchEvent<Object>

    private let api: any KubernetesAPI
    private let resource: KubernetesResource
    private let namespace: String?
    private let labelSelector: String?
    private let fieldSelector: String?
    private let pageSize: Int?
    private let watchTimeoutSeconds: Int
    private let retry: RetryPolicy
    private let clock: any ShoalClock
    private let logger: Logger

    /// Describes what to list and watch; nothing happens until iteration starts.
    package init(
        api: any KubernetesAPI, resource: KubernetesResource, namespace: String?, labelSelector: String? = nil, fieldSelector: String? = nil,
        pageSize: Int? = 500, watchTimeoutSeconds: Int = 240, retry: RetryPolicy = RetryPolicy(maxAttempts: .max),
        clock: any ShoalClock = SystemClock(), logger: Logger = Logger(label: "shoal.kubernetes.listwatch")
    ) {
        self.api = api
        self.resource = resource
        self.namespace = namespace
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
        self.pageSize = pageSize
        self.watchTimeoutSeconds = watchTimeoutSeconds
        self.retry = retry
        self.clock = clock
        self.logger = logger
    }

    /// Starts iterating.
    package func makeAsyncIterator() -> Iterator { Iterator(owner: self) }

    /// The list/watch state machine.
    package struct Iterator: AsyncIteratorProtocol {
        private let owner: ListWatch
        private var resourceVersion: String?
        private var needsList = true
        private var watch: WatchStream<Object>.Iterator?
        private var consecutiveFailures = 0
        private var watchStartedAt: Duration = .zero
        private var eventsInWatch = 0

        fileprivate init(owner: ListWatch) { self.owner = owner }

        /// The next snapshot or change; throws only errors that retrying cannot fix.
        package mutating func next() async throws -> Element? {
            while true {
                try Task.checkCancellation()
                do {
                    if needsList {
                        let list = try await owner.api.listAll(
                            Object.self, owner.resource, namespace: owner.namespace, labelSelector: owner.labelSelector,
                            fieldSelector: owner.fieldSelector, pageSize: owner.pageSize
                        )
                        needsList = false
                        watch = nil
                        consecutiveFailures = 0
                        let version = list.metadata.resourceVersion ?? ""
                        resourceVersion = version
                        return .relisted(list.items, resourceVersion: version)
                    }
                    if watch == nil {
                        let options = WatchOptions(
                            labelSelector: owner.labelSelector, fieldSelector: owner.fieldSelector, resourceVersion: resourceVersion,
                            timeoutSeconds: owner.watchTimeoutSeconds, allowWatchBookmarks: true
                        )
                        watch = owner.api.watch(Object.self, owner.resource, namespace: owner.namespace, options: options).makeAsyncIterator()
                        watchStartedAt = owner.clock.monotonicNow()
                        eventsInWatch = 0
                    }
                    guard let event = try await watch?.next() else {
                        owner.logger.debug("watch ended, watching again", metadata: ["resource": "\(owner.resource)", "resource_version": "\(resourceVersion ?? "")"])
                        watch = nil
                        // A server that ends watches at once without events would otherwise make this a hot loop.
                        if eventsInWatch == 0, owner.clock.monotonicNow() - watchStartedAt < .milliseconds(500) {
                            consecutiveFailures += 1
                            try await owner.clock.sleep(for: owner.retry.backoff(beforeRetry: consecutiveFailures, jitter: Double.random(in: 0.5...1.0)))
                        }
                        continue
                    }
                    eventsInWatch += 1
                    consecutiveFailures = 0
                    if let version = event.resourceVersion, !version.isEmpty { resourceVersion = version }
                    switch event {
                    case .added(let object): return .added(object)
                    case .modified(let object): return .modified(object)
                    case .deleted(let object): return .deleted(object)
                    case .bookmark: continue
                    }
                } catch let error as KubernetesError {
                    watch = nil
                    if case .gone = error, !needsList {
                        owner.logger.info("resourceVersion too old, listing again", metadata: ["resource": "\(owner.resource)", "resource_version": "\(resourceVersion ?? "")"])
                        needsList = true
                        continue
                    }
                    if case .cancelled = error { throw CancellationError() }
                    guard error.isRetryable else { throw error }  // a 410 on the list itself lands here: back off
                    consecutiveFailures += 1
                    guard consecutiveFailures < owner.retry.maxAttempts else { throw error }
                    let delay = owner.retry.backoff(beforeRetry: consecutiveFailures, jitter: Double.random(in: 0.5...1.0))
                    owner.logger.notice("list/watch failed, retrying", metadata: ["resource": "\(owner.resource)", "error": "\(error)", "delay_s": "\(delay.seconds)"])
                    try await owner.clock.sleep(for: delay)
                }
            }
        }
    }
}
