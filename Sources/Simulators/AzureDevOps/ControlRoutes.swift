import Foundation
import Hummingbird
import Shared

/// The `/_sim/...` control API over HTTP (JSON, no auth, never subject to faults).
///
/// Routes:
/// - `GET  /_sim/state`: pools, agents, requests, queue failures, events, request counts, knobs.
/// - `POST /_sim/pools` `{"name","autoUpdate"}` → the pool.
/// - `POST /_sim/jobs` `{"pool","name","demands","durationSeconds","script","variables"}` → 201 `{"requestId"}`
///   or 422 `{"message","demands"}` (queue-time failure).
/// - `POST /_sim/jobs/{requestId}/cancel` → 204.
/// - `POST /_sim/pats` `{"token"}`, `DELETE /_sim/pats/{token}` → 204.
/// - `POST /_sim/faults` `{"kind":"throttle|tooManyRequests|serverError|errorStatus|latency|drop","route","method",
///   "count","status","typeKey","message","retryAfter","milliseconds"}` → 201 `{"id"}`; `DELETE /_sim/faults` → 204.
/// - `POST /_sim/packages` `{"type","platform","version","downloadUrl","hashValue","filename"}` → the package.
/// - `PUT  /_sim/downloads/{filename}` (raw bytes) → `{"url"}`; `GET /_sim/downloads/{filename}` → the bytes.
/// - `POST /_sim/refresh-next-session` `{"targetVersion"}` → 204.
/// - `PATCH /_sim/knobs` `{"sessionTimeoutSeconds","messageLongPollTimeoutSeconds","lockDurationSeconds",
///   "cancelTimeoutSeconds","disabledAgentsMatch","deleteBusyAgentStatus","minimumAgentVersion",
///   "defaultCompletedRequestCount","honoursFedAuthRedirectSuppress","accessTokenLifetimeSeconds"}` → the knobs.
/// - `POST /_sim/advance-time` `{"seconds"}` → 204.
struct ControlRoutes: Sendable {
    /// The organization controlled.
    let organization: SimulatedOrganization

    /// Answers one control request.
    func respond(to request: Request) async -> Response {
        do {
            return try await serve(request)
        } catch {
            return HTTPReply.failure(error)
        }
    }

    private func serve(_ request: Request) async throws(SimulatorFailure) -> Response {
        let segments = request.uri.path.split(separator: "/").map(String.init).dropFirst()
        let method = request.method.rawValue
        switch (method, Array(segments)) {
        case ("GET", ["state"]):
            return HTTPReply.json(Self.render(await organization.snapshot()))
        case ("POST", ["pools"]):
            let body = try await HTTPReply.jsonBody(of: request)
            guard let name = body["name"]?.stringValue else { throw .badRequest("name is required") }
            let pool = await organization.createPool(name: name, autoUpdate: body["autoUpdate"]?.boolValue ?? true)
            return HTTPReply.json(.object(JSONObject([
                ("id", .int(pool.id)), ("name", .string(pool.name)), ("autoUpdate", .bool(pool.autoUpdate)),
            ])), status: 201)
        case ("POST", ["jobs"]):
            let body = try await HTTPReply.jsonBody(of: request)
            guard let pool = body["pool"]?.stringValue else { throw .badRequest("pool is required") }
            let specification = JobSpecification(
                pool: pool,
                name: body["name"]?.stringValue ?? "Job",
                demands: body["demands"]?.arrayValue?.compactMap(\.stringValue) ?? [],
                durationSeconds: body["durationSeconds"]?.doubleValue ?? 0,
                script: body["script"]?.stringValue,
                variables: body["variables"]?.stringDictionary ?? [:])
            switch await organization.queueJob(specification) {
            case .queued(let requestId):
                return HTTPReply.json(.object(JSONObject([("requestId", .int(requestId))])), status: 201)
            case .failed(let failure):
                return HTTPReply.json(.object(JSONObject([
                    ("message", .string(failure.message)),
                    ("demands", .array(failure.demands.map { .string($0) })),
                ])), status: 422)
            }
        case ("POST", let path) where path.count == 3 && path[0] == "jobs" && path[2] == "cancel":
            guard let requestId = Int(path[1]) else { throw .badRequest("bad request id") }
            do {
                try await organization.cancelJob(requestId: requestId)
            } catch {
                if case .refused(let failure) = error { throw failure }
                throw .badRequest("\(error)")
            }
            return HTTPReply.noContent()
        case ("POST", ["pats"]):
            guard let token = try await HTTPReply.jsonBody(of: request)["token"]?.stringValue else {
                throw .badRequest("token is required")
            }
            await organization.addPersonalAccessToken(token)
            return HTTPReply.noContent()
        case ("DELETE", let path) where path.count == 2 && path[0] == "pats":
            await organization.revokePersonalAccessToken(path[1].removingPercentEncoding ?? path[1])
            return HTTPReply.noContent()
        case ("POST", ["faults"]):
            let rule = try Self.fault(from: try await HTTPReply.jsonBody(of: request))
            let id = organization.addFault(rule)
            return HTTPReply.json(.object(JSONObject([("id", .string(id.uuidString))])), status: 201)
        case ("DELETE", ["faults"]):
            organization.clearFaults()
            return HTTPReply.noContent()
        case ("POST", ["packages"]):
            let body = try await HTTPReply.jsonBody(of: request)
            guard let platform = body["platform"]?.stringValue,
                let version = body["version"]?.stringValue.flatMap(PackageVersion.init),
                let downloadUrl = body["downloadUrl"]?.stringValue
            else { throw .badRequest("platform, version (x.y.z) and downloadUrl are required") }
            let package = await organization.publishPackage(PackageSpecification(
                type: body["type"]?.stringValue ?? "agent", platform: platform, version: version,
                downloadUrl: downloadUrl, hashValue: body["hashValue"]?.stringValue,
                filename: body["filename"]?.stringValue))
            let url = await organization.organizationURL
            let rendered = await organization.inspect { WireFormat(organizationURL: url, state: $0).package(package) }
            return HTTPReply.json(rendered, status: 201)
        case ("PUT", let path) where path.count == 2 && path[0] == "downloads":
            let bytes = try await HTTPReply.body(of: request)
            let url = await organization.registerDownload(filename: path[1], contents: bytes)
            return HTTPReply.json(.object(JSONObject([("url", .string(url))])), status: 201)
        case ("GET", let path) where path.count == 2 && path[0] == "downloads":
            guard let bytes = await organization.download(path[1]) else { throw .routeNotFound(request.uri.path) }
            return HTTPReply.bytes(bytes, contentType: "application/octet-stream")
        case ("POST", ["refresh-next-session"]):
            let body = try await HTTPReply.jsonBody(of: request)
            await organization.refreshNextSession(targetVersion: body["targetVersion"]?.stringValue ?? "4.266.2")
            return HTTPReply.noContent()
        case ("PATCH", ["knobs"]):
            let body = try await HTTPReply.jsonBody(of: request)
            await organization.updateKnobs { Self.apply(body, to: &$0) }
            return HTTPReply.json(Self.render(await organization.knobs))
        case ("POST", ["advance-time"]):
            let seconds = try await HTTPReply.jsonBody(of: request)["seconds"]?.doubleValue ?? 0
            await organization.advanceTime(by: .interval(seconds))
            return HTTPReply.noContent()
        default:
            throw .routeNotFound(request.uri.path)
        }
    }

    /// Reads a fault rule from its control JSON.
    static func fault(from body: JSONValue) throws(SimulatorFailure) -> FaultRule {
        let kind: FaultRule.Kind
        switch body["kind"]?.stringValue?.lowercased() {
        case "throttle", "throttleheaders":
            var headers = ThrottleHeaders()
            if let retryAfter = body["retryAfter"]?.intValue { headers.retryAfter = retryAfter }
            kind = .throttleHeaders(headers)
        case "toomanyrequests", "429":
            kind = .tooManyRequests(retryAfterSeconds: body["retryAfter"]?.intValue ?? 10)
        case "servererror", "5xx":
            kind = .serverError(status: body["status"]?.intValue ?? 503)
        case "errorstatus", "status":
            kind = .errorStatus(
                status: body["status"]?.intValue ?? 403, typeKey: body["typeKey"]?.stringValue ?? "AccessDeniedException",
                message: body["message"]?.stringValue ?? "Access denied.")
        case "latency":
            kind = .latency(.milliseconds(body["milliseconds"]?.intValue ?? 1000))
        case "drop", "dropconnection":
            kind = .dropConnection
        default:
            throw .badRequest("kind must be throttle, tooManyRequests, serverError, errorStatus, latency or drop")
        }
        return FaultRule(
            kind, route: body["route"]?.stringValue, method: body["method"]?.stringValue,
            count: body["count"]?.intValue)
    }

    /// Applies the control JSON's knob fields.
    static func apply(_ body: JSONValue, to knobs: inout SimulatorKnobs) {
        if let value = body["sessionTimeoutSeconds"]?.doubleValue { knobs.sessionTimeout = .interval(value) }
        if let value = body["messageLongPollTimeoutSeconds"]?.doubleValue { knobs.messageLongPollTimeout = .interval(value) }
        if let value = body["lockDurationSeconds"]?.doubleValue { knobs.lockDuration = .interval(value) }
        if let value = body["cancelTimeoutSeconds"]?.doubleValue { knobs.cancelTimeout = .interval(value) }
        if let value = body["disabledAgentsMatch"]?.boolValue { knobs.disabledAgentsMatch = value }
        if let value = body["deleteBusyAgentStatus"]?.intValue { knobs.deleteBusyAgentStatus = value }
        if let value = body["minimumAgentVersion"]?.stringValue { knobs.minimumAgentVersion = value }
        if let value = body["defaultCompletedRequestCount"]?.intValue { knobs.defaultCompletedRequestCount = value }
        if let value = body["honoursFedAuthRedirectSuppress"]?.boolValue { knobs.honoursFedAuthRedirectSuppress = value }
        if let value = body["accessTokenLifetimeSeconds"]?.doubleValue { knobs.accessTokenLifetime = .interval(value) }
    }

    /// The knobs as control JSON (durations in seconds).
    static func render(_ knobs: SimulatorKnobs) -> JSONValue {
        .object(JSONObject([
            ("sessionTimeoutSeconds", .double(knobs.sessionTimeout.timeInterval)),
            ("messageLongPollTimeoutSeconds", .double(knobs.messageLongPollTimeout.timeInterval)),
            ("lockDurationSeconds", .double(knobs.lockDuration.timeInterval)),
            ("cancelTimeoutSeconds", .double(knobs.cancelTimeout.timeInterval)),
            ("disabledAgentsMatch", .bool(knobs.disabledAgentsMatch)),
            ("deleteBusyAgentStatus", .int(knobs.deleteBusyAgentStatus)),
            ("minimumAgentVersion", .string(knobs.minimumAgentVersion)),
            ("defaultCompletedRequestCount", .int(knobs.defaultCompletedRequestCount)),
            ("honoursFedAuthRedirectSuppress", .bool(knobs.honoursFedAuthRedirectSuppress)),
            ("accessTokenLifetimeSeconds", .double(knobs.accessTokenLifetime.timeInterval)),
        ]))
    }

    /// The whole snapshot as control JSON.
    static func render(_ snapshot: OrganizationSnapshot) -> JSONValue {
        func time(_ date: Date?) -> JSONValue { date.map { .string(WireTimestamp.format($0)) } ?? .null }
        let pools = snapshot.pools.map { pool in
            JSONValue.object(JSONObject([
                ("id", .int(pool.id)), ("name", .string(pool.name)), ("autoUpdate", .bool(pool.autoUpdate)),
                ("createdOn", time(pool.createdOn)),
            ]))
        }
        let agents = snapshot.agents.map { agent in
            JSONValue.object(JSONObject([
                ("id", .int(agent.id)), ("poolId", .int(agent.poolId)), ("name", .string(agent.name)),
                ("version", .string(agent.version)), ("enabled", .bool(agent.enabled)),
                ("status", .string(agent.status.rawValue)), ("createdOn", time(agent.createdOn)),
                ("statusChangedOn", time(agent.statusChangedOn)), ("deletedOn", time(agent.deletedOn)),
                ("assignedRequestId", agent.assignedRequestId.map { .int($0) } ?? .null),
                ("systemCapabilities", .stringMap(agent.systemCapabilities)),
                ("userCapabilities", .stringMap(agent.userCapabilities)),
            ]))
        }
        let requests = snapshot.requests.map { request in
            JSONValue.object(JSONObject([
                ("requestId", .int(request.requestId)), ("poolId", .int(request.poolId)),
                ("jobName", .string(request.jobName)), ("phase", .string(request.phase.rawValue)),
                ("demands", .array(request.demands.map { .string($0) })),
                ("queueTime", time(request.queueTime)), ("assignTime", time(request.assignTime)),
                ("receiveTime", time(request.receiveTime)), ("finishTime", time(request.finishTime)),
                ("lockedUntil", time(request.lockedUntil)),
                ("result", request.result.map { .string($0.rawValue) } ?? .null),
                ("reservedAgentId", request.reservedAgentId.map { .int($0) } ?? .null),
                ("matchedAgentIds", .array(request.matchedAgentIds.map { .int($0) })),
            ]))
        }
        let failures = snapshot.queueFailures.map { failure in
            JSONValue.object(JSONObject([
                ("time", time(failure.time)), ("pool", .string(failure.poolName)), ("jobName", .string(failure.jobName)),
                ("demands", .array(failure.demands.map { .string($0) })), ("message", .string(failure.message)),
            ]))
        }
        let events = snapshot.events.map { event in
            JSONValue.object(JSONObject([
                ("time", time(event.time)), ("kind", .string(event.kind.rawValue)), ("message", .string(event.message)),
            ]))
        }
        let counts = snapshot.requestCounts.sorted { $0.key < $1.key }.map { key, statuses in
            (key, JSONValue.object(JSONObject(statuses.sorted { $0.key < $1.key }.map { (String($0.key), .int($0.value)) })))
        }
        return .object(JSONObject([
            ("pools", .array(pools)), ("agents", .array(agents)), ("requests", .array(requests)),
            ("queueFailures", .array(failures)), ("events", .array(events)),
            ("requestCounts", .object(JSONObject(counts))), ("knobs", render(snapshot.knobs)),
        ]))
    }
}
