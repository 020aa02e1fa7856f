import Shared
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The API's error object (`kind: Status`), sent with every non-2xx answer and inside watch `ERROR` events.
package struct Status: Codable, Sendable, Hashable {
    /// `Success` or `Failure`.
    package var status: String?
    /// Human-readable description (names the user, verb and resource for RBAC denials).
    package var message: String?
    /// Machine-readable reason: `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `Forbidden`, `Expired`...
    package var reason: String?
    /// Extra detail: the object and, for `Invalid`, the field causes.
    package var details: Details?
    /// The HTTP status code this Status stands for.
    package var code: Int?

    /// Builds a Status (fakes and tests).
    package init(status: String? = "Failure", message: String? = nil, reason: String? = nil, details: Details? = nil, code: Int? = nil) {
        self.status = status
        self.message = message
        self.reason = reason
        self.details = details
        self.code = code
    }

    /// Detail of a Status.
    package struct Details: Codable, Sendable, Hashable {
        /// The object's name.
        package var name: String?
        /// The object's API group.
        package var group: String?
        /// The object's kind (or resource).
        package var kind: String?
        /// The object's uid.
        package var uid: String?
        /// Individual problems, e.g. one per invalid field.
        package var causes: [Cause]?
        /// Seconds the client should wait before retrying.
        package var retryAfterSeconds: Int?

        /// Builds details.
        package init(name: String? = nil, group: String? = nil, kind: String? = nil, causes: [Cause]? = nil, retryAfterSeconds: Int? = nil) {
            self.name = name
            self.group = group
            self.kind = kind
            self.causes = causes
            self.retryAfterSeconds = retryAfterSeconds
        }
    }

    /// One cause of a failure.
    package struct Cause: Codable, Sendable, Hashable {
        /// Machine-readable cause (`FieldValueInvalid`, `FieldValueRequired`...).
        package var reason: String?
        /// Human-readable message.
        package var message: String?
        /// The field path (`spec.replicas`).
        package var field: String?

        /// Builds a cause.
        package init(reason: String? = nil, message: String? = nil, field: String? = nil) {
            self.reason = reason
            self.message = message
            self.field = field
        }
    }
}

/// A non-2xx answer: the request, the HTTP code and the API's Status when it sent one.
package struct KubernetesFailure: Sendable, Hashable, CustomStringConvertible {
    /// Method and path, e.g. `GET /api/v1/namespaces/ci/pods`.
    package let request: String
    /// HTTP status code (for watch `ERROR` events, the Status's code).
    package let code: Int
    /// The API's Status, when the body held one.
    package let status: Status?
    /// The start of a body that was not a Status.
    package let bodyExcerpt: String?

    /// Builds a failure.
    package init(request: String, code: Int, status: Status?, bodyExcerpt: String? = nil) {
        self.request = request
        self.code = code
        self.status = status
        self.bodyExcerpt = bodyExcerpt
    }

    /// The Status message, the body excerpt or the code.
    package var message: String {
        if let message = status?.message, !message.isEmpty { return message }
        if let bodyExcerpt, !bodyExcerpt.isEmpty { return bodyExcerpt }
        return "HTTP \(code) with no message"
    }

    /// The Status reason (`AlreadyExists`, `Conflict`...).
    package var reason: String? { status?.reason }

    /// The field causes of an `Invalid` answer.
    package var causes: [Status.Cause] { status?.details?.causes ?? [] }

    package var description: String { "\(request): HTTP \(code) \(reason ?? ""): \(message)" }
}

/// A failed Kubernetes call, classified once by HTTP status and the API's Status.
package enum KubernetesError: Error, Sendable, CustomStringConvertible {
    /// 400: a malformed request (e.g. a Lease time without six fractional digits).
    case badRequest(KubernetesFailure)
    /// 401: the token was not accepted.
    case unauthorized(KubernetesFailure)
    /// 403: RBAC denies the verb on the resource; the message names both.
    case forbidden(KubernetesFailure)
    /// 404: no such object (or namespace, or resource type).
    case notFound(KubernetesFailure)
    /// 409: stale resourceVersion, failed precondition, or `AlreadyExists` (see ``isAlreadyExists``).
    case conflict(KubernetesFailure)
    /// 410: the resourceVersion is too old (compacted); list again.
    case gone(KubernetesFailure)
    /// 422: the object fails validation; ``KubernetesFailure/causes`` names the fields.
    case invalid(KubernetesFailure)
    /// 429 still returned after every retry.
    case throttled(KubernetesFailure)
    /// 5xx still returned after every retry.
    case serverFailure(KubernetesFailure)
    /// Another status the client has no meaning for.
    case unexpectedStatus(KubernetesFailure)
    /// Could not connect, the TLS handshake failed, or the connection dropped, after every retry.
    case transport(request: String, detail: String)
    /// A 2xx body (or watch line) that is not what the request returns.
    case decoding(request: String, detail: String, bodyExcerpt: String)
    /// A watch line longer than the client accepts.
    case lineTooLong(request: String, limit: Int)
    /// The bearer token could not be read.
    case credential(CredentialError)
    /// The calling task was cancelled.
    case cancelled

    /// Maps an HTTP code and Status to a case.
    package static func classify(_ failure: KubernetesFailure) -> KubernetesError {
        switch failure.code {
        case 400: .badRequest(failure)
        case 401: .unauthorized(failure)
        case 403: .forbidden(failure)
        case 404: .notFound(failure)
        case 409: .conflict(failure)
        case 410: .gone(failure)
        case 422: .invalid(failure)
        case 429: .throttled(failure)
        case 500...599: .serverFailure(failure)
        default: .unexpectedStatus(failure)
        }
    }

    /// The failure detail, for cases that have one.
    package var failure: KubernetesFailure? {
        switch self {
        case .badRequest(let f), .unauthorized(let f), .forbidden(let f), .notFound(let f), .conflict(let f), .gone(let f),
             .invalid(let f), .throttled(let f), .serverFailure(let f), .unexpectedStatus(let f):
            f
        default: nil
        }
    }

    /// The API's Status, when there was one.
    package var status: Status? { failure?.status }

    /// The HTTP status code, when there was a response.
    package var code: Int? { failure?.code }

    /// Whether this is a 409 because the object already exists (create with a taken name).
    package var isAlreadyExists: Bool {
        if case .conflict(let failure) = self { return failure.reason == "AlreadyExists" }
        return false
    }

    /// Whether trying again later can succeed without anyone changing anything: throttling, 5xx, the network, a
    /// resourceVersion conflict (re-read and retry) and 410 (re-list). Not `AlreadyExists` or other 4xx.
    package var isRetryable: Bool {
        switch self {
        case .throttled, .serverFailure, .transport, .gone: true
        case .conflict: !isAlreadyExists
        default: false
        }
    }

    /// A short, stable reason for conditions, Events and metric labels.
    package var reason: String {
        switch self {
        case .badRequest: "BadRequest"
        case .unauthorized: "Unauthorized"
        case .forbidden: "Forbidden"
        case .notFound: "NotFound"
        case .conflict: isAlreadyExists ? "AlreadyExists" : "Conflict"
        case .gone: "Expired"
        case .invalid: "Invalid"
        case .throttled: "Throttled"
        case .serverFailure: "ServerError"
        case .unexpectedStatus: "UnexpectedStatus"
        case .transport: "Unreachable"
        case .decoding: "InvalidResponse"
        case .lineTooLong: "WatchLineTooLong"
        case .credential: "CredentialUnavailable"
        case .cancelled: "Cancelled"
        }
    }

    package var description: String {
        switch self {
        case .forbidden(let f):
            return "Kubernetes denied \(f.request) (HTTP 403): \(f.message). "
                + "Check the ServiceAccount's Role/ClusterRole and binding in deploy/ grant this verb on this resource."
        case .unauthorized(let f):
            return "Kubernetes did not accept the credentials for \(f.request) (HTTP 401): \(f.message). "
                + "Check the token (ServiceAccount token file or kubeconfig user)."
        case .invalid(let f):
            let causes = f.causes.map { "\($0.field ?? "?"): \($0.message ?? $0.reason ?? "invalid")" }
            let detail = causes.isEmpty ? "" : " [" + causes.joined(separator: "; ") + "]"
            return "Kubernetes rejected \(f.request) as invalid: \(f.message)\(detail)"
        case .badRequest(let f): return "Kubernetes rejected \(f.request) as malformed: \(f.message)"
        case .notFound(let f): return "Kubernetes has no such object for \(f.request): \(f.message)"
        case .conflict(let f): return "Kubernetes reported a conflict for \(f.request): \(f.message)"
        case .gone(let f): return "Kubernetes resourceVersion expired for \(f.request): \(f.message)"
        case .throttled(let f): return "Kubernetes is throttling \(f.request): \(f.message)"
        case .serverFailure(let f): return "Kubernetes failed \(f.request) with HTTP \(f.code): \(f.message)"
        case .unexpectedStatus(let f): return "Kubernetes answered \(f.request) with HTTP \(f.code): \(f.message)"
        case .transport(let request, let detail): return "could not reach the Kubernetes API for \(request): \(detail)"
        case .decoding(let request, let detail, let excerpt):
            return "unexpected response from Kubernetes for \(request): \(detail); body starts with: \(excerpt)"
        case .lineTooLong(let request, let limit): return "a watch event of \(request) exceeded \(limit) bytes"
        case .credential(let error): return "no Kubernetes credential: \(error)"
        case .cancelled: return "the Kubernetes call was cancelled"
        }
    }
}
