import Foundation

/// An error the simulated service answers with: an HTTP status plus a WrappedException body.
///
/// The state machine throws these so that the HTTP layer only has to serialize them, and Swift callers of the
/// control API see the same type key and message a client of the real service would.
package struct SimulatorFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// HTTP status code.
    package let status: Int
    /// The exception's short type name, e.g. `TaskAgentNotFoundException`.
    package let typeKey: String
    /// The human-readable message.
    package let message: String
    /// The .NET namespace and assembly the type lives in, for `typeName`.
    package let assembly: String

    /// A failure with a DistributedTask exception type unless another assembly is given.
    package init(
        status: Int,
        typeKey: String,
        message: String,
        assembly: String = "Microsoft.TeamFoundation.DistributedTask.WebApi"
    ) {
        self.status = status
        self.typeKey = typeKey
        self.message = message
        self.assembly = assembly
    }

    package var description: String { "\(status) \(typeKey): \(message)" }

    /// The WrappedException JSON the service returns.
    package var body: JSONValue {
        .object(JSONObject([
            ("$id", "1"),
            ("innerException", .null),
            ("message", .string(message)),
            ("typeName", .string("\(assembly).\(typeKey), \(assembly)")),
            ("typeKey", .string(typeKey)),
            ("errorCode", 0),
            ("eventId", 3000),
        ]))
    }

    /// 404 for a pool id that does not exist.
    package static func poolNotFound(_ poolId: Int) -> SimulatorFailure {
        .init(status: 404, typeKey: "TaskAgentPoolNotFoundException", message: "Agent pool \(poolId) could not be found.")
    }

    /// 404 for an agent id that does not exist in the pool.
    package static func agentNotFound(poolId: Int, agentId: Int) -> SimulatorFailure {
        .init(
            status: 404, typeKey: "TaskAgentNotFoundException",
            message: "No agent found for pool \(poolId) with identifier \(agentId).")
    }

    /// 409 when the pool already has an agent with that name.
    package static func agentExists(pool: String, name: String) -> SimulatorFailure {
        .init(
            status: 409, typeKey: "TaskAgentExistsException",
            message: "Pool \(pool) already contains an agent with name \(name).")
    }

    /// Refusal to delete an agent that holds a job (status is a knob).
    package static func agentBusy(name: String, status: Int) -> SimulatorFailure {
        .init(
            status: status, typeKey: "TaskAgentJobStillRunningException",
            message: "The agent \(name) is currently running a job and cannot be deleted. "
                + "Wait for the job to complete, or cancel it, and try again.")
    }

    /// 409 when the agent already has a live session.
    package static let sessionConflict = SimulatorFailure(
        status: 409, typeKey: "TaskAgentSessionConflictException", message: "A session for this agent already exists.")

    /// 404 for an unknown, deleted or expired session.
    package static func sessionExpired(_ sessionId: String) -> SimulatorFailure {
        .init(
            status: 404, typeKey: "TaskAgentSessionExpiredException",
            message: "The session \(sessionId) has expired or does not exist.")
    }

    /// 404 (or 409 when already finished) for a job request.
    package static func jobNotFound(_ requestId: Int, status: Int = 404) -> SimulatorFailure {
        .init(
            status: status, typeKey: "TaskAgentJobNotFoundException",
            message: "No job found with request ID \(requestId).")
    }

    /// 400 for a lock token that does not match the request's.
    package static func invalidLockToken(_ requestId: Int) -> SimulatorFailure {
        .init(
            status: 400, typeKey: "TaskAgentJobTokenExpiredException",
            message: "The lock token for job request \(requestId) is invalid or has expired.")
    }

    /// 400 for a malformed request.
    package static func badRequest(_ message: String) -> SimulatorFailure {
        .init(status: 400, typeKey: "ArgumentException", message: message, assembly: "System")
    }

    /// 404 for a route the simulator does not serve.
    package static func routeNotFound(_ path: String) -> SimulatorFailure {
        .init(
            status: 404, typeKey: "ResourceNotFoundException",
            message: "The requested resource \(path) does not exist.", assembly: "Microsoft.VisualStudio.Services.WebApi")
    }

    /// 404 for a package version that was never published.
    package static func packageNotFound(_ what: String) -> SimulatorFailure {
        .init(status: 404, typeKey: "PackageNotFoundException", message: "Package \(what) could not be found.")
    }

    /// 401 TF400813 for missing or bad credentials.
    package static let unauthorized = SimulatorFailure(
        status: 401, typeKey: "UnauthorizedRequestException",
        message: "TF400813: The user '' is not authorized to access this resource.",
        assembly: "Microsoft.TeamFoundation.Framework.Server")

    /// 400 for an api-version outside 5.0–7.2 or not in `X.Y[-preview[.N]]` form.
    package static func invalidApiVersion(_ value: String) -> SimulatorFailure {
        .init(
            status: 400, typeKey: "VssVersionOutOfRangeException",
            message: "The requested REST API version of \(value) is out of range for this server. "
                + "The latest REST API version this server supports is 7.2.",
            assembly: "Microsoft.VisualStudio.Services.WebApi")
    }

    /// 429 TF400733 for a blocked (throttled) request.
    package static func throttled(resource: String) -> SimulatorFailure {
        .init(
            status: 429, typeKey: "RequestBlockedException",
            message: "TF400733: The request has been canceled: Request was blocked due to exceeding usage of resource "
                + "'\(resource)' in namespace 'User'.",
            assembly: "Microsoft.TeamFoundation.Framework.Server")
    }

    /// A 5xx injected by a fault knob.
    package static func serverError(status: Int) -> SimulatorFailure {
        .init(
            status: status, typeKey: "VssServiceException",
            message: "The service is temporarily unavailable (simulated \(status)).",
            assembly: "Microsoft.VisualStudio.Services.WebApi")
    }
}
