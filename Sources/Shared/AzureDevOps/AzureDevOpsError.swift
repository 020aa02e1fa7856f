/// A failed Azure DevOps call, classified once: retryable (throttling, 5xx, network) or terminal.
///
/// Every case carries the route (`GET pools/{poolId}/agents`) and, when the service sent one, its
/// WrappedException message, so status conditions and Events can say exactly what went wrong.
package enum AzureDevOpsError: Error, CustomStringConvertible, Sendable {
    /// The credentials were refused (401, 203 sign-in page, or an HTML body).
    case authentication(route: String, status: Int, credential: String, serverMessage: String?)
    /// 400: the request was invalid; the server's message says why.
    case badRequest(ServerError)
    /// 403: the identity lacks a permission.
    case forbidden(ServerError)
    /// 404: the pool, agent or request does not exist.
    case notFound(ServerError)
    /// 409: conflicts with current state (e.g. an agent name already taken).
    case conflict(ServerError)
    /// Another 4xx the client has no special meaning for.
    case unexpectedStatus(ServerError)
    /// 429 still returned after every retry.
    case throttled(ServerError, retryAfter: Duration?)
    /// 5xx still returned after every retry.
    case serverFailure(ServerError)
    /// Connection refused/dropped or timed out, after every retry.
    case transport(route: String, detail: String)
    /// A 2xx body that is not what the route returns.
    case decoding(route: String, detail: String, bodyExcerpt: String)
    /// No pool has this name.
    case poolNotFound(name: String)
    /// More than one pool has this name.
    case ambiguousPool(name: String, ids: [Int])
    /// The credential source could not produce a token.
    case credential(CredentialError)
    /// The calling task was cancelled (shutdown); not a failure of the service.
    case cancelled

    /// Whether trying again later can succeed without anyone changing anything.
    package var isRetryable: Bool {
        switch self {
        case .throttled, .serverFailure, .transport: true
        case .conflict: true
        default: false
        }
    }

    /// A short, stable reason for status conditions, Events and metric labels.
    package var reason: String {
        switch self {
        case .authentication: "AuthenticationFailed"
        case .badRequest: "BadRequest"
        case .forbidden: "Forbidden"
        case .notFound: "NotFound"
        case .conflict: "Conflict"
        case .unexpectedStatus: "UnexpectedStatus"
        case .throttled: "Throttled"
        case .serverFailure: "ServerError"
        case .transport: "Unreachable"
        case .decoding: "InvalidResponse"
        case .poolNotFound: "PoolNotFound"
        case .ambiguousPool: "AmbiguousPool"
        case .credential: "CredentialUnavailable"
        case .cancelled: "Cancelled"
        }
    }

    /// The WrappedException `typeKey`, when the service sent one.
    package var typeKey: String? {
        switch self {
        case .badRequest(let e), .forbidden(let e), .notFound(let e), .conflict(let e), .unexpectedStatus(let e),
             .throttled(let e, _), .serverFailure(let e):
            e.typeKey
        default: nil
        }
    }

    package var description: String {
        switch self {
        case .authentication(let route, let status, let credential, let serverMessage):
            let what = status == 203 ? "answered with a sign-in page (HTTP 203)" : "answered HTTP \(status)"
            let detail = serverMessage.map { " (\($0))" } ?? ""
            return "Azure DevOps refused the credentials (\(credential)) for \(route): it \(what)\(detail). "
                + "Check that the token has not expired or been revoked and that it has the Agent Pools (Read & manage) scope."
        case .badRequest(let e): return "Azure DevOps rejected \(e.route) as invalid: \(e.messageOrStatus)"
        case .forbidden(let e):
            return "Azure DevOps denied \(e.route) (HTTP 403): \(e.messageOrStatus). The token's identity needs the Administrator or Service Account role on the agent pool."
        case .notFound(let e): return "Azure DevOps has no such resource for \(e.route): \(e.messageOrStatus)"
        case .conflict(let e): return "Azure DevOps reported a conflict for \(e.route): \(e.messageOrStatus)"
        case .unexpectedStatus(let e): return "Azure DevOps answered \(e.route) with HTTP \(e.status): \(e.messageOrStatus)"
        case .throttled(let e, let retryAfter):
            let wait = retryAfter.map { " (Retry-After \(Int($0.seconds.rounded())) s)" } ?? ""
            return "Azure DevOps is throttling this identity\(wait) on \(e.route): \(e.messageOrStatus)"
        case .serverFailure(let e): return "Azure DevOps failed \(e.route) with HTTP \(e.status): \(e.messageOrStatus)"
        case .transport(let route, let detail): return "could not reach Azure DevOps for \(route): \(detail)"
        case .decoding(let route, let detail, let excerpt):
            return "unexpected response from Azure DevOps for \(route): \(detail); body starts with: \(excerpt)"
        case .poolNotFound(let name):
            return "agent pool '\(name)' not found in the organization; check the pool name and that the token can read agent pools"
        case .ambiguousPool(let name, let ids): return "more than one agent pool is named '\(name)' (ids \(ids))"
        case .credential(let error): return "no Azure DevOps credential: \(error)"
        case .cancelled: return "the Azure DevOps call was cancelled"
        }
    }
}

/// A non-2xx answer from the service: the status, the route and the WrappedException message if any.
package struct ServerError: Sendable, Equatable {
    /// HTTP status.
    package let status: Int
    /// The route template with method, e.g. `DELETE pools/{poolId}/agents/{agentId}`.
    package let route: String
    /// The WrappedException message.
    package let message: String?
    /// The WrappedException type key, e.g. `TaskAgentNotFoundException`.
    package let typeKey: String?

    /// Builds a server error.
    package init(status: Int, route: String, message: String?, typeKey: String?) {
        self.status = status
        self.route = route
        self.message = message
        self.typeKey = typeKey
    }

    var messageOrStatus: String { message ?? "HTTP \(status) with no message" }
}
