import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// Closes the TCP connection, without any response, for requests a `dropConnection` fault matches.
///
/// Sits in the HTTP/1 pipeline after request decoding, so it sees each request head; the decision is made
/// synchronously on the event loop from `TrafficControl`, which is why that type is lock-based.
final class ConnectionDropHandler: ChannelInboundHandler, RemovableChannelHandler {
    /// Decoded request parts (head, body, end).
    typealias InboundIn = HTTPRequestPart
    /// Passed on unchanged unless the connection is dropped.
    typealias InboundOut = HTTPRequestPart

    private let traffic: TrafficControl
    private let organization: String
    private var dropping = false

    /// A handler for one connection, consulting the shared fault table.
    init(traffic: TrafficControl, organization: String) {
        self.traffic = traffic
        self.organization = organization
    }

    /// Drops the connection on a matching request head; swallows everything after a drop.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if dropping { return }
        if case .head(let head) = unwrapInboundIn(data), let path = head.path {
            let pathOnly = String(path.prefix { $0 != "?" })
            if let route = OrgRoute.classify(path: pathOnly, organization: organization) {
                let method = head.method.rawValue
                let fired = traffic.consume(method: method, route: route.template, firstOnly: true) {
                    $0 == .dropConnection
                }
                if !fired.isEmpty {
                    dropping = true
                    traffic.record(routeKey: "\(method) \(route.template)", status: 0)
                    context.close(mode: .all, promise: nil)
                    return
                }
            }
        }
        context.fireChannelRead(data)
    }
}
