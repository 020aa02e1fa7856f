#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Whether the agent's user can talk to the Docker daemon through its socket.
enum DockerAccess: Sendable, Equatable {
    /// No socket at the path.
    case absent
    /// Connected successfully.
    case usable
    /// The socket exists but connecting failed (permission, daemon down).
    case unusable(reason: String)

    /// Checks `path` by connecting to it as this process's user (the listener runs as the same user).
    static func check(socketPath path: String) -> DockerAccess {
        var info = stat()
        guard stat(path, &info) == 0 else { return .absent }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return .unusable(reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            return .unusable(reason: "socket path too long")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return result == 0 ? .usable : .unusable(reason: String(cString: strerror(errno)))
    }
}
