import AgentIdentity
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Shared

extension HTTPField.Name {
    // Literal header names below are valid HTTP tokens, so the failable initializer cannot fail.
    // Each is a header of the real service: federated-auth hints on 401s, paging, and throttling.
    /// `X-TFS-FedAuthRedirect`.
    static let fedAuthRedirect = HTTPField.Name("X-TFS-FedAuthRedirect")!
    /// `X-TFS-FedAuthRealm`.
    static let fedAuthRealm = HTTPField.Name("X-TFS-FedAuthRealm")!
    /// `X-TFS-FedAuthIssuer`.
    static let fedAuthIssuer = HTTPField.Name("X-TFS-FedAuthIssuer")!
    /// `X-VSS-AuthorizationEndpoint`.
    static let authorizationEndpoint = HTTPField.Name("X-VSS-AuthorizationEndpoint")!
    /// `X-VSS-ResourceTenant`.
    static let resourceTenant = HTTPField.Name("X-VSS-ResourceTenant")!
    /// `X-MS-ContinuationToken`.
    static let continuationToken = HTTPField.Name("X-MS-ContinuationToken")!
    /// `X-RateLimit-Resource`.
    static let rateLimitResource = HTTPField.Name("X-RateLimit-Resource")!
    /// `X-RateLimit-Delay`.
    static let rateLimitDelay = HTTPField.Name("X-RateLimit-Delay")!
    /// `X-RateLimit-Limit`.
    static let rateLimitLimit = HTTPField.Name("X-RateLimit-Limit")!
    /// `X-RateLimit-Remaining`.
    static let rateLimitRemaining = HTTPField.Name("X-RateLimit-Remaining")!
    /// `X-RateLimit-Reset`.
    static let rateLimitReset = HTTPField.Name("X-RateLimit-Reset")!
}

/// Building blocks for the simulator's HTTP responses.
enum HTTPReply {
    /// A JSON response with the service's content type.
    static func json(_ value: JSONValue, status: Int = 200, headers extra: HTTPFields = [:]) -> Response {
        var headers = extra
        headers[.contentType] = "application/json; charset=utf-8; api-version=7.1"
        return Response(
            status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: value.bytes)))
    }

    /// A WrappedException response.
    static func failure(_ failure: SimulatorFailure, headers: HTTPFields = [:]) -> Response {
        json(failure.body, status: failure.status, headers: headers)
    }

    /// 204 without a body.
    static func noContent() -> Response {
        Response(status: .noContent)
    }

    /// Raw bytes with a content type.
    static func bytes(_ bytes: [UInt8], contentType: String, status: Int = 200) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = contentType
        return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// Reads a request body (up to 16 MiB).
    static func body(of request: Request) async throws(SimulatorFailure) -> [UInt8] {
        do {
            let buffer = try await request.body.collect(upTo: 16 * 1024 * 1024)
            return Array(buffer.readableBytesView)
        } catch {
            throw .badRequest("The request body could not be read: \(error)")
        }
    }

    /// Reads a JSON request body; an empty body reads as an empty object.
    static func jsonBody(of request: Request) async throws(SimulatorFailure) -> JSONValue {
        let bytes = try await body(of: request)
        if bytes.allSatisfy({ $0 == 32 || $0 == 10 || $0 == 13 || $0 == 9 }) { return .object(JSONObject()) }
        do {
            return try JSONValue.parse(bytes)
        } catch {
            throw .badRequest("The request body is not valid JSON.")
        }
    }
}

/// Serves the organization routes (`/{org}/_apis/...`): faults, auth, api-version, then the REST semantics.
struct OrganizationRoutes: Sendable {
    /// The organization the routes act on.
    let organization: SimulatedOrganization
    /// Request logger.
    let logger: Logger

    /// Who is calling, after authentication.
    private enum Caller {
        case personalAccessToken
        case agent(Int)
        case deletedAgent(Int)
    }

    /// Answers one org request and records it under its route key.
    func respond(to request: Request, route: OrgRoute) async -> Response {
        let method = request.method.rawValue
        let routeKey = "\(method) \(route.template)"
        let response = await respondWithFaults(to: request, route: route, method: method)
        organization.traffic.record(routeKey: routeKey, status: response.status.code)
        logger.debug(
            "request", metadata: ["route": "\(routeKey)", "status": "\(response.status.code)", "path": "\(request.uri.path)"])
        return response
    }

    private func respondWithFaults(to request: Request, route: OrgRoute, method: String) async -> Response {
        let traffic = organization.traffic
        for case .latency(let delay) in traffic.consume(method: method, route: route.template, where: {
            if case .latency = $0 { return true } else { return false }
        }) {
            try? await Task.sleep(for: delay)
        }
        let blocking = traffic.consume(method: method, route: route.template, firstOnly: true) {
            switch $0 {
            case .tooManyRequests, .serverError, .errorStatus: true
            default: false
            }
        }
        switch blocking.first {
        case .tooManyRequests(let retryAfter):
            var headers = HTTPFields()
            headers[.retryAfter] = String(retryAfter)
            headers[.rateLimitResource] = "Core"
            headers[.rateLimitRemaining] = "0"
            return HTTPReply.failure(.throttled(resource: "Core"), headers: headers)
        case .serverError(let status):
            return HTTPReply.failure(.serverError(status: status))
        case .errorStatus(let status, let typeKey, let message):
            return HTTPReply.failure(SimulatorFailure(status: status, typeKey: typeKey, message: message))
        default:
            break
        }
        var response: Response
        do {
            response = try await authenticatedResponse(to: request, route: route, method: method)
        } catch {
            response = HTTPReply.failure(error)
        }
        if (200..<300).contains(response.status.code) {
            let throttles = traffic.consume(method: method, route: route.template, firstOnly: true) {
                if case .throttleHeaders = $0 { return true } else { return false }
            }
            if case .throttleHeaders(let values) = throttles.first {
                response.headers[.retryAfter] = String(values.retryAfter)
                response.headers[.rateLimitResource] = values.resource
                response.headers[.rateLimitDelay] = values.delay
                response.headers[.rateLimitLimit] = String(values.limit)
                response.headers[.rateLimitRemaining] = String(values.remaining)
                response.headers[.rateLimitReset] = String(values.reset ?? Int(Date().timeIntervalSince1970) + 300)
            }
        }
        return response
    }

    // MARK: Authentication

    private func authenticatedResponse(
        to request: Request, route: OrgRoute, method: String
    ) async throws(SimulatorFailure) -> Response {
        if route == .oauthToken {
            return try await issueToken(request)
        }
        let caller: Caller
        switch await authenticate(request, route: route, method: method) {
        case .accepted(let authenticated): caller = authenticated
        case .rejected(let response): return response
        }
        try checkApiVersion(request)
        return try await serve(request, route: route, method: method, caller: caller)
    }

    /// The outcome of authentication: a caller, or the response that refuses the request.
    private enum Authentication {
        case accepted(Caller)
        case rejected(Response)
    }

    private func authenticate(_ request: Request, route: OrgRoute, method: String) async -> Authentication {
        guard let header = request.headers[.authorization], !header.isEmpty else {
            return .rejected(missingCredentials())
        }
        let agentAllowed = route.isAgentInternal || { if case .jobRequest = route { return method == "PATCH" } else { return false } }()
        let lowered = header.lowercased()
        if lowered.hasPrefix("bearer ") {
            let token = String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
            guard agentAllowed else { return .rejected(await badCredentials(request, method: method)) }
            switch await organization.inspectNow({ state, now in state.identity(ofAccessToken: token, now: now) }) {
            case .agent(let id): return .accepted(.agent(id))
            case .deletedAgent(let id): return .accepted(.deletedAgent(id))
            case .expired:
                var headers = HTTPFields()
                headers[.wwwAuthenticate] = "Bearer error=\"invalid_token\", error_description=\"The access token expired\""
                return .rejected(HTTPReply.failure(.unauthorized, headers: headers))
            case .invalid: return .rejected(HTTPReply.failure(.unauthorized))
            }
        }
        if lowered.hasPrefix("basic ") {
            let encoded = String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)
            if let data = Data(base64Encoded: encoded), let text = String(data: data, encoding: .utf8),
                let colon = text.firstIndex(of: ":")
            {
                let token = String(text[text.index(after: colon)...])
                let valid = await organization.inspect { $0.isValidPersonalAccessToken(token) }
                if valid && !route.isAgentInternal { return .accepted(.personalAccessToken) }
                if valid { return .rejected(HTTPReply.failure(.unauthorized)) }
            }
        }
        return .rejected(route.isAgentInternal ? HTTPReply.failure(.unauthorized) : await badCredentials(request, method: method))
    }

    /// 401 with the federated-auth headers the service sends to anonymous callers.
    private func missingCredentials() -> Response {
        var headers = HTTPFields()
        headers[.wwwAuthenticate] = "Basic realm=\"https://tfsprodweu2.app.visualstudio.com/\", Bearer, TFS-Federated"
        headers[.fedAuthRealm] = "https://tfsprodweu2.app.visualstudio.com/"
        headers[.fedAuthIssuer] = "https://\(organization.name).visualstudio.com/"
        headers[.authorizationEndpoint] = "https://\(organization.name).vssps.visualstudio.com/"
        headers[.resourceTenant] = "00000000-0000-0000-0000-000000000000"
        return HTTPReply.failure(.unauthorized, headers: headers)
    }

    /// Bad or expired credentials: the 203 sign-in page on GET/POST unless `X-TFS-FedAuthRedirect: Suppress`
    /// (and the knob `honoursFedAuthRedirectSuppress` says the header is honoured).
    private func badCredentials(_ request: Request, method: String) async -> Response {
        let honoured = await organization.knobs.honoursFedAuthRedirectSuppress
        let suppress = honoured && request.headers[.fedAuthRedirect]?.lowercased() == "suppress"
        if !suppress && ["GET", "POST", "HEAD"].contains(method) {
            let page = """
                <!DOCTYPE html><html><head><title>Azure DevOps Services | Sign In</title></head>\
                <body><h1>Sign in to your account</h1><p>Sign in to continue to Azure DevOps.</p></body></html>
                """
            return HTTPReply.bytes(Array(page.utf8), contentType: "text/html; charset=utf-8", status: 203)
        }
        return HTTPReply.failure(.unauthorized)
    }

    /// Accepts a missing api-version, or `X.Y`, `X.Y-preview`, `X.Y-preview.N` for 5.0–7.2 (query or Accept).
    private func checkApiVersion(_ request: Request) throws(SimulatorFailure) {
        var value = QueryParameters(request.uri.query)["api-version"]
        if value == nil, let accept = request.headers[.accept] {
            for parameter in accept.split(separator: ";") {
                let parts = parameter.split(separator: "=", maxSplits: 1)
                if parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces).lowercased() == "api-version" {
                    value = parts[1].trimmingCharacters(in: .whitespaces)
                }
            }
        }
        guard let value else { return }
        guard Self.isSupportedApiVersion(value) else { throw .invalidApiVersion(value) }
    }

    /// Whether an api-version string is one the simulator (like the service) accepts.
    static func isSupportedApiVersion(_ value: String) -> Bool {
        var text = Substring(value)
        if let dash = text.firstIndex(of: "-") {
            let suffix = text[text.index(after: dash)...]
            text = text[..<dash]
            if suffix != "preview" {
                guard suffix.hasPrefix("preview."), Int(suffix.dropFirst("preview.".count)) != nil else { return false }
            }
        }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let major = Int(parts[0]), let minor = Int(parts[1]), minor >= 0 else { return false }
        return (5...6).contains(major) || (major == 7 && minor <= 2)
    }

    // MARK: Routes

    private func serve(
        _ request: Request, route: OrgRoute, method: String, caller: Caller
    ) async throws(SimulatorFailure) -> Response {
        let query = QueryParameters(request.uri.query)
        let orgURL = await organization.organizationURL
        switch (route, method) {
        case (.pools, "GET"):
            return try await render(orgURL) { state, wire in
                let names = query["poolName"]?.lowercased()
                let ids = query.intList("poolIds")
                let type = query["poolType"]?.lowercased()
                let pools = state.pools.values.sorted { $0.id < $1.id }.filter { pool in
                    (names == nil || pool.name.lowercased() == names)
                        && (ids == nil || ids?.contains(pool.id) == true)
                        && (type == nil || type == "automation")
                }
                return WireFormat.envelope(pools.map(wire.pool))
            }
        case (.pools, "POST"):
            let body = try await HTTPReply.jsonBody(of: request)
            guard let name = body["name"]?.stringValue, !name.isEmpty else { throw .badRequest("A pool name is required.") }
            let autoUpdate = body["autoUpdate"]?.boolValue ?? true
            return try await change(orgURL) { state, now, wire in
                wire(state).pool(state.createPool(name: name, autoUpdate: autoUpdate, now: now))
            }
        case (.pool(let poolId), "GET"):
            return try await render(orgURL) { (state, wire) throws(SimulatorFailure) in wire.pool(try state.existingPool(poolId)) }
        case (.pool(let poolId), "PATCH"):
            let body = try await HTTPReply.jsonBody(of: request)
            let name = body["name"]?.stringValue
            let autoUpdate = body["autoUpdate"]?.boolValue
            return try await change(orgURL) { (state, now, wire) throws(SimulatorFailure) in
                let pool = try state.updatePool(poolId, name: name, autoUpdate: autoUpdate, now: now)
                return wire(state).pool(pool)
            }
        case (.pool(let poolId), "DELETE"):
            try await organization.perform { (state, now) throws(SimulatorFailure) in try state.deletePool(poolId, now: now) }
            return HTTPReply.noContent()
        case (.agents(let poolId), "GET"):
            return try await listAgents(poolId: poolId, query: query, orgURL: orgURL)
        case (.agents(let poolId), "POST"):
            let registration = try Self.registration(from: try await HTTPReply.jsonBody(of: request))
            return try await change(orgURL) { (state, now, wire) throws(SimulatorFailure) in
                let agent = try state.addAgent(poolId: poolId, registration, now: now)
                return wire(state).agent(agent, detail: .init(capabilities: true))
            }
        case (.agent(let poolId, let agentId), "GET"):
            let detail = Self.detail(query)
            return try await render(orgURL) { (state, wire) throws(SimulatorFailure) in
                wire.agent(try state.existingAgent(poolId: poolId, agentId: agentId), detail: detail)
            }
        case (.agent(let poolId, let agentId), "PUT"):
            let registration = try Self.registration(from: try await HTTPReply.jsonBody(of: request))
            return try await change(orgURL) { (state, now, wire) throws(SimulatorFailure) in
                let agent = try state.replaceAgent(poolId: poolId, agentId: agentId, registration, now: now)
                return wire(state).agent(agent, detail: .init(capabilities: true))
            }
        case (.agent(let poolId, let agentId), "PATCH"):
            let body = try await HTTPReply.jsonBody(of: request)
            let enabled = body["enabled"]?.boolValue
            let name = body["name"]?.stringValue
            let maxParallelism = body["maxParallelism"]?.intValue
            return try await change(orgURL) { (state, now, wire) throws(SimulatorFailure) in
                let agent = try state.updateAgent(
                    poolId: poolId, agentId: agentId, enabled: enabled, name: name, maxParallelism: maxParallelism,
                    now: now)
                return wire(state).agent(agent, detail: .init())
            }
        case (.agent(let poolId, let agentId), "DELETE"):
            try await organization.perform { (state, now) throws(SimulatorFailure) in
                try state.deleteAgent(poolId: poolId, agentId: agentId, now: now)
            }
            return HTTPReply.noContent()
        case (.userCapabilities(let poolId, let agentId), "PUT"):
            guard let capabilities = try await HTTPReply.jsonBody(of: request).stringDictionary else {
                throw .badRequest("The user capabilities must be a dictionary of strings.")
            }
            return try await change(orgURL) { (state, now, wire) throws(SimulatorFailure) in
                let agent = try state.setUserCapabilities(poolId: poolId, agentId: agentId, capabilities, now: now)
                return wire(state).agent(agent, detail: .init(capabilities: true))
            }
        case (.agentUpdates(let poolId, let agentId), "PUT"):
            return try await render(orgURL) { (state, wire) throws(SimulatorFailure) in
                wire.agent(try state.existingAgent(poolId: poolId, agentId: agentId), detail: .init())
            }
        case (.jobRequests(let poolId), "GET"):
            return try await listJobRequests(poolId: poolId, query: query, orgURL: orgURL)
        case (.jobRequest(let poolId, let requestId), "GET"):
            return try await render(orgURL) { (state, wire) throws(SimulatorFailure) in
                _ = try state.existingPool(poolId)
                guard let request = state.requests[requestId], request.poolId == poolId else {
                    throw .jobNotFound(requestId)
                }
                return wire.jobRequest(request, includeMatchedAgents: true)
            }
        case (.jobRequest(let poolId, let requestId), "PATCH"):
            return try await updateJobRequest(request, poolId: poolId, requestId: requestId, query: query, orgURL: orgURL)
        case (.sessions(let poolId), "POST"):
            return try await createSession(request, poolId: poolId, caller: caller, orgURL: orgURL)
        case (.session(let poolId, let sessionId), "DELETE"):
            let agentId = try agentId(of: caller)
            try await organization.perform { (state, now) throws(SimulatorFailure) in
                try state.deleteSession(poolId: poolId, agentId: agentId, sessionId: sessionId, now: now)
            }
            return HTTPReply.noContent()
        case (.messages(let poolId), "GET"):
            let agentId = try agentId(of: caller)
            guard let sessionId = query["sessionId"] else { throw .badRequest("sessionId is required.") }
            let message = try await organization.pollMessage(
                poolId: poolId, agentId: agentId, sessionId: sessionId, lastMessageId: query.int("lastMessageId"))
            guard let message else { return HTTPReply.noContent() }
            return HTTPReply.json(WireFormat.message(message))
        case (.message(let poolId, let messageId), "DELETE"):
            let agentId = try agentId(of: caller)
            guard let sessionId = query["sessionId"] else { throw .badRequest("sessionId is required.") }
            try await organization.perform { (state, now) throws(SimulatorFailure) in
                try state.deleteMessage(poolId: poolId, agentId: agentId, sessionId: sessionId, messageId: messageId, now: now)
            }
            return HTTPReply.noContent()
        case (.packages(let type, let platform, let version), "GET"):
            return try await listPackages(type: type, platform: platform, version: version, query: query, orgURL: orgURL)
        case (.unknown, _):
            throw .routeNotFound(request.uri.path)
        default:
            throw SimulatorFailure(
                status: 405, typeKey: "HttpMethodNotAllowedException",
                message: "The requested resource does not support http method '\(method)'.",
                assembly: "Microsoft.VisualStudio.Services.WebApi")
        }
    }

    private func agentId(of caller: Caller) throws(SimulatorFailure) -> Int {
        switch caller {
        case .agent(let id): return id
        case .deletedAgent, .personalAccessToken: throw .unauthorized
        }
    }

    /// Renders from a read-only view of the state.
    private func render(
        _ orgURL: String, _ body: @escaping @Sendable (OrganizationState, WireFormat) throws(SimulatorFailure) -> JSONValue
    ) async throws(SimulatorFailure) -> Response {
        let value = try await organization.inspect { (state) throws(SimulatorFailure) in
            try body(state, WireFormat(organizationURL: orgURL, state: state))
        }
        return HTTPReply.json(value)
    }

    /// Mutates, then renders from the state after the change.
    private func change(
        _ orgURL: String,
        _ body: @escaping @Sendable (inout OrganizationState, Date, (OrganizationState) -> WireFormat) throws(SimulatorFailure) -> JSONValue
    ) async throws(SimulatorFailure) -> Response {
        let value = try await organization.perform { (state, now) throws(SimulatorFailure) in
            try body(&state, now) { WireFormat(organizationURL: orgURL, state: $0) }
        }
        return HTTPReply.json(value)
    }

    private static func detail(_ query: QueryParameters) -> WireFormat.AgentDetail {
        .init(
            capabilities: query.bool("includeCapabilities"),
            assignedRequest: query.bool("includeAssignedRequest"),
            lastCompletedRequest: query.bool("includeLastCompletedRequest"))
    }

    /// Reads a `TaskAgent` body of `POST`/`PUT agents`.
    static func registration(from body: JSONValue) throws(SimulatorFailure) -> OrganizationState.AgentRegistration {
        guard let object = body.objectValue else { throw .badRequest("The agent must be a JSON object.") }
        guard let name = object["name"]?.stringValue, !name.isEmpty else { throw .badRequest("The agent name is required.") }
        let publicKey = object["authorization"]?["publicKey"]
        return .init(
            name: name,
            version: object["version"]?.stringValue ?? "",
            osDescription: object["osDescription"]?.stringValue ?? "",
            enabled: object["enabled"]?.boolValue ?? true,
            maxParallelism: object["maxParallelism"]?.intValue ?? 1,
            systemCapabilities: object["systemCapabilities"]?.stringDictionary ?? [:],
            publicKeyExponent: publicKey?["exponent"]?.stringValue ?? "AQAB",
            publicKeyModulus: publicKey?["modulus"]?.stringValue ?? "")
    }

    private func listAgents(poolId: Int, query: QueryParameters, orgURL: String) async throws(SimulatorFailure) -> Response {
        let detail = Self.detail(query)
        let name = query["agentName"]?.lowercased()
        let demandTexts = (query["demands"] ?? "").split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty }
        let demands: [Demand]
        do {
            demands = try Demand.parseAll(demandTexts)
        } catch {
            throw .badRequest(error.description)
        }
        return try await render(orgURL) { (state, wire) throws(SimulatorFailure) in
            _ = try state.existingPool(poolId)
            let agents = state.registeredAgents(inPool: poolId).filter { agent in
                (name == nil || agent.name.lowercased() == name) && Demand.allSatisfied(demands, by: agent.capabilities)
            }
            return WireFormat.envelope(agents.map { wire.agent($0, detail: detail) })
        }
    }

    private func listJobRequests(poolId: Int, query: QueryParameters, orgURL: String) async throws(SimulatorFailure) -> Response {
        let agentIds = query.intList("agentIds") ?? query.int("agentId").map { [$0] }
        let planId = query["planId"]?.lowercased()
        let jobId = query["jobId"]?.lowercased()
        let top = query.int("$top")
        let continuation = query.int("continuationToken")
        let completedCount = query.int("completedRequestCount")
        let (value, nextToken) = try await organization.inspect { (state) throws(SimulatorFailure) -> (JSONValue, Int?) in
            _ = try state.existingPool(poolId)
            let wire = WireFormat(organizationURL: orgURL, state: state)
            var selected = state.requests.values.filter { $0.poolId == poolId }
            if let agentIds { selected = selected.filter { $0.reservedAgentId.map(agentIds.contains) ?? false } }
            if let planId { selected = selected.filter { $0.planId.lowercased() == planId } }
            if let jobId { selected = selected.filter { $0.jobId.lowercased() == jobId } }
            if let top {
                // Paged form: newest first, finished included, no matchedAgents.
                let page = max(0, min(top, state.knobs.maximumTop))
                let ordered = selected.sorted { $0.requestId > $1.requestId }
                    .filter { continuation == nil || $0.requestId < continuation ?? 0 }
                let items = Array(ordered.prefix(page))
                let next = ordered.count > items.count ? items.last?.requestId : nil
                return (WireFormat.envelope(items.map { wire.jobRequest($0, includeMatchedAgents: false) }), next)
            }
            let finishedLimit = completedCount ?? (planId != nil ? Int.max : state.knobs.defaultCompletedRequestCount)
            let unfinished = selected.filter { !$0.isFinished }
            let finished = selected.filter(\.isFinished)
                .sorted { ($0.finishTime ?? .distantPast, $0.requestId) > ($1.finishTime ?? .distantPast, $1.requestId) }
                .prefix(max(0, finishedLimit))
            let items = (unfinished + finished).sorted { $0.requestId < $1.requestId }
            return (WireFormat.envelope(items.map { wire.jobRequest($0, includeMatchedAgents: true) }), nil)
        }
        var headers = HTTPFields()
        if let nextToken { headers[.continuationToken] = String(nextToken) }
        return HTTPReply.json(value, headers: headers)
    }

    private func updateJobRequest(
        _ request: Request, poolId: Int, requestId: Int, query: QueryParameters, orgURL: String
    ) async throws(SimulatorFailure) -> Response {
        let body = try await HTTPReply.jsonBody(of: request)
        let lockToken = query["lockToken"]
        let finishTime = body["finishTime"]?.stringValue.flatMap(WireTimestamp.parse)
        let result: JobResult?
        if let text = body["result"]?.stringValue {
            guard let parsed = JobResult.allCases.first(where: { $0.rawValue.lowercased() == text.lowercased() }) else {
                throw .badRequest("Unknown result '\(text)'.")
            }
            result = parsed
        } else {
            result = nil
        }
        return try await change(orgURL) { (state, now, wire) throws(SimulatorFailure) in
            _ = try state.existingPool(poolId)
            let updated: SimulatedJobRequest
            if let result {
                updated = try state.finishJob(
                    poolId: poolId, requestId: requestId, lockToken: lockToken, result: result,
                    finishTime: finishTime, now: now)
            } else {
                updated = try state.renewLock(poolId: poolId, requestId: requestId, lockToken: lockToken, now: now)
            }
            return wire(state).jobRequest(updated, includeMatchedAgents: false)
        }
    }

    private func createSession(
        _ request: Request, poolId: Int, caller: Caller, orgURL: String
    ) async throws(SimulatorFailure) -> Response {
        let body = try await HTTPReply.jsonBody(of: request)
        let agentId: Int
        switch caller {
        case .agent(let id): agentId = id
        case .deletedAgent(let id): throw .agentNotFound(poolId: poolId, agentId: id)
        case .personalAccessToken: throw .unauthorized
        }
        if let claimed = body["agent"]?["id"]?.intValue, claimed != agentId {
            throw .badRequest("The session's agent \(claimed) does not match the caller's agent \(agentId).")
        }
        let ownerName = body["ownerName"]?.stringValue ?? ""
        return try await change(orgURL) { (state, now, wire) throws(SimulatorFailure) in
            let session = try state.createSession(poolId: poolId, agentId: agentId, ownerName: ownerName, now: now)
            return wire(state).session(session)
        }
    }

    private func listPackages(
        type: String, platform: String?, version: String?, query: QueryParameters, orgURL: String
    ) async throws(SimulatorFailure) -> Response {
        let platformFilter = platform ?? query["platform"]
        let top = query.int("$top") ?? query.int("top")
        return try await render(orgURL) { (state, wire) throws(SimulatorFailure) in
            let packages = state.packages(type: type, platform: platformFilter)
            if let version {
                guard let package = packages.first(where: { $0.version.description == version }) else {
                    throw .packageNotFound("\(type) \(platformFilter ?? "") \(version)")
                }
                return wire.package(package)
            }
            let limited = top.map { Array(packages.prefix(max(0, $0))) } ?? packages
            return WireFormat.envelope(limited.map(wire.package))
        }
    }

    /// `POST oauth2/token`: the OAuth client-credentials grant with a JWT client assertion (no other auth).
    ///
    /// The body is a form: `grant_type=client_credentials`, `client_assertion_type=urn:ietf:params:oauth:
    /// client-assertion-type:jwt-bearer`, `client_assertion=<JWT>`. The assertion's audience must be the
    /// `authorizationUrl` registrations return. Refusals are `{"error","errordescription"}` with 400 or 401.
    private func issueToken(_ request: Request) async throws(SimulatorFailure) -> Response {
        let bytes = try await HTTPReply.body(of: request)
        let outcome: Result<IssuedAccessToken, TokenRefusal>
        switch Self.tokenRequestAssertion(contentType: request.headers[.contentType], body: bytes) {
        case .failure(let refusal):
            await organization.perform { state, now in state.noteTokenRefused(refusal, now: now) }
            outcome = .failure(refusal)
        case .success(let assertion):
            let audience = WireFormat.authorizationURL(organizationURL: await organization.organizationURL)
            outcome = await organization.perform { state, now in
                state.issueAccessToken(assertion: assertion, audience: audience, now: now)
            }
        }
        switch outcome {
        case .success(let issued):
            return HTTPReply.json(.object(JSONObject([
                ("access_token", .string(issued.token)),
                ("token_type", "Bearer"),
                ("expires_in", .int(issued.expiresIn)),
                ("scope", "vso.agentpools_listen"),
            ])))
        case .failure(let refusal):
            logger.info("token request refused", metadata: ["error": "\(refusal.error)", "reason": "\(refusal.errorDescription)"])
            return HTTPReply.json(
                .object(JSONObject([
                    ("error", .string(refusal.error)),
                    ("errordescription", .string(refusal.errorDescription)),
                ])),
                status: refusal.status)
        }
    }

    /// The client assertion of a well-formed token request, or why the request is refused before any
    /// assertion is looked at.
    static func tokenRequestAssertion(contentType: String?, body: [UInt8]) -> Result<String, TokenRefusal> {
        let mediaType = (contentType ?? "").split(separator: ";").first.map {
            $0.trimmingCharacters(in: .whitespaces).lowercased()
        }
        guard mediaType == OAuthTokenRequest.formContentType else {
            return .failure(.invalidRequest(
                "The token request must be \(OAuthTokenRequest.formContentType), not '\(contentType ?? "")'."))
        }
        let form = QueryParameters(String(decoding: body, as: UTF8.self))
        guard let grantType = form["grant_type"], !grantType.isEmpty else {
            return .failure(.invalidRequest("grant_type is required."))
        }
        guard grantType == OAuthTokenRequest.clientCredentialsGrant else {
            return .failure(.unsupportedGrantType(grantType))
        }
        guard let assertionType = form["client_assertion_type"], !assertionType.isEmpty else {
            return .failure(.invalidRequest("client_assertion_type is required."))
        }
        guard assertionType == OAuthTokenRequest.jwtBearerType else {
            return .failure(.invalidRequest(
                "client_assertion_type '\(assertionType)' is not supported; use \(OAuthTokenRequest.jwtBearerType)."))
        }
        guard let assertion = form["client_assertion"], !assertion.isEmpty else {
            return .failure(.invalidRequest("client_assertion is required."))
        }
        return .success(assertion)
    }
}
