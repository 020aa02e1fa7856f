import Foundation

/// An organization route (`/{org}/_apis/...`) recognised by the simulator, with its path parameters.
///
/// `template` is the key used for request counts and fault scoping, e.g. `pools/{poolId}/jobrequests`.
enum OrgRoute: Equatable {
    /// `distributedtask/pools`.
    case pools
    /// `distributedtask/pools/{poolId}`.
    case pool(Int)
    /// `distributedtask/pools/{poolId}/agents`.
    case agents(pool: Int)
    /// `distributedtask/pools/{poolId}/agents/{agentId}`.
    case agent(pool: Int, agent: Int)
    /// `distributedtask/pools/{poolId}/agents/{agentId}/usercapabilities`.
    case userCapabilities(pool: Int, agent: Int)
    /// `distributedtask/pools/{poolId}/agents/{agentId}/updates`.
    case agentUpdates(pool: Int, agent: Int)
    /// `distributedtask/pools/{poolId}/jobrequests`.
    case jobRequests(pool: Int)
    /// `distributedtask/pools/{poolId}/jobrequests/{requestId}`.
    case jobRequest(pool: Int, request: Int)
    /// `distributedtask/pools/{poolId}/sessions` (agent-internal).
    case sessions(pool: Int)
    /// `distributedtask/pools/{poolId}/sessions/{sessionId}` (agent-internal).
    case session(pool: Int, session: String)
    /// `distributedtask/pools/{poolId}/messages` (agent-internal long poll).
    case messages(pool: Int)
    /// `distributedtask/pools/{poolId}/messages/{messageId}` (agent-internal acknowledge).
    case message(pool: Int, message: Int)
    /// `distributedtask/packages/{type}[/{platform}[/{version}]]`.
    case packages(type: String, platform: String?, version: String?)
    /// `oauth2/token`: signed client assertion → agent bearer token.
    case oauthToken
    /// A path under the organization's `_apis` that is not served (the template is the raw path).
    case unknown(String)

    /// The route template (without method) used as the key for counts and faults.
    var template: String {
        switch self {
        case .pools: "pools"
        case .pool: "pools/{poolId}"
        case .agents: "pools/{poolId}/agents"
        case .agent: "pools/{poolId}/agents/{agentId}"
        case .userCapabilities: "pools/{poolId}/agents/{agentId}/usercapabilities"
        case .agentUpdates: "pools/{poolId}/agents/{agentId}/updates"
        case .jobRequests: "pools/{poolId}/jobrequests"
        case .jobRequest: "pools/{poolId}/jobrequests/{requestId}"
        case .sessions: "pools/{poolId}/sessions"
        case .session: "pools/{poolId}/sessions/{sessionId}"
        case .messages: "pools/{poolId}/messages"
        case .message: "pools/{poolId}/messages/{messageId}"
        case .packages(_, nil, _): "packages/{packageType}"
        case .packages(_, _, nil): "packages/{packageType}/{platform}"
        case .packages: "packages/{packageType}/{platform}/{version}"
        case .oauthToken: "oauth2/token"
        case .unknown(let path): path
        }
    }

    /// Whether the route is used by the agent with its bearer token rather than with a PAT.
    var isAgentInternal: Bool {
        switch self {
        case .sessions, .session, .messages, .message: true
        default: false
        }
    }

    /// The pool id the route refers to, if any.
    var poolId: Int? {
        switch self {
        case .pool(let pool), .agents(let pool), .agent(let pool, _), .userCapabilities(let pool, _),
            .agentUpdates(let pool, _), .jobRequests(let pool), .jobRequest(let pool, _), .sessions(let pool),
            .session(let pool, _), .messages(let pool), .message(let pool, _):
            pool
        default: nil
        }
    }

    /// Classifies a request path (without query); nil when it is not under `/{organization}/_apis`.
    ///
    /// Literal segments compare ignoring case, as IIS does for the real service.
    static func classify(path: String, organization: String) -> OrgRoute? {
        let segments = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        guard segments.count >= 2, segments[0].lowercased() == organization.lowercased(),
            segments[1].lowercased() == "_apis"
        else { return nil }
        let rest = Array(segments.dropFirst(2))
        let lowered = rest.map { $0.lowercased() }
        let unknown = OrgRoute.unknown(rest.joined(separator: "/"))
        if lowered == ["oauth2", "token"] { return .oauthToken }
        guard lowered.first == "distributedtask", rest.count >= 2 else { return unknown }
        let tail = Array(rest.dropFirst())
        let lowerTail = Array(lowered.dropFirst())
        if lowerTail[0] == "packages", tail.count >= 2, tail.count <= 4 {
            return .packages(
                type: tail[1], platform: tail.count > 2 ? tail[2] : nil, version: tail.count > 3 ? tail[3] : nil)
        }
        guard lowerTail[0] == "pools" else { return unknown }
        if tail.count == 1 { return .pools }
        guard let poolId = Int(tail[1]) else { return unknown }
        if tail.count == 2 { return .pool(poolId) }
        let collection = lowerTail[2]
        switch (collection, tail.count) {
        case ("agents", 3): return .agents(pool: poolId)
        case ("agents", 4):
            guard let agentId = Int(tail[3]) else { return unknown }
            return .agent(pool: poolId, agent: agentId)
        case ("agents", 5):
            guard let agentId = Int(tail[3]) else { return unknown }
            switch lowerTail[4] {
            case "usercapabilities": return .userCapabilities(pool: poolId, agent: agentId)
            case "updates": return .agentUpdates(pool: poolId, agent: agentId)
            default: return unknown
            }
        case ("jobrequests", 3): return .jobRequests(pool: poolId)
        case ("jobrequests", 4):
            guard let requestId = Int(tail[3]) else { return unknown }
            return .jobRequest(pool: poolId, request: requestId)
        case ("sessions", 3): return .sessions(pool: poolId)
        case ("sessions", 4): return .session(pool: poolId, session: tail[3])
        case ("messages", 3): return .messages(pool: poolId)
        case ("messages", 4):
            guard let messageId = Int(tail[3]) else { return unknown }
            return .message(pool: poolId, message: messageId)
        default: return unknown
        }
    }
}

/// Query parameters with case-insensitive names (first occurrence wins), percent-decoded.
struct QueryParameters {
    private var values: [String: String] = [:]

    /// Parses `a=1&B=2`; `+` means space.
    init(_ query: String?) {
        for pair in (query ?? "").split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let rawName = String(parts[0]).replacingOccurrences(of: "+", with: " ")
            let name = (rawName.removingPercentEncoding ?? rawName).lowercased()
            let rawValue = parts.count > 1 ? String(parts[1]).replacingOccurrences(of: "+", with: " ") : ""
            let value = rawValue.removingPercentEncoding ?? rawValue
            if values[name] == nil { values[name] = value }
        }
    }

    /// The value of a parameter, name compared ignoring case.
    subscript(name: String) -> String? { values[name.lowercased()] }

    /// A parameter parsed as an integer.
    func int(_ name: String) -> Int? { self[name].flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    /// A parameter parsed as a boolean (`true`/`false`, any case).
    func bool(_ name: String) -> Bool {
        self[name]?.lowercased() == "true"
    }

    /// A comma-separated list of integers.
    func intList(_ name: String) -> [Int]? {
        self[name].map { $0.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }
    }
}
