import Shared
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Kubernetes timestamps on the wire.
///
/// `metav1.MicroTime` fields (a Lease's `renewTime`/`acquireTime`, an Event's `eventTime`) must carry exactly six
/// fractional digits — v1.20 rejects `...:00Z` there with 400. `metav1.Time` fields accept the same text (Go's
/// RFC 3339 parser takes a fraction), so Shoal writes every timestamp in the MicroTime form.
package enum MicroTime {
    /// `2026-01-01T00:00:00.000000Z`: UTC, exactly six fractional digits.
    package static func format(_ date: Date) -> String {
        var text = WireTimestamp.format(date)
        text.removeLast()  // "Z"
        if let dot = text.firstIndex(of: ".") {
            let digits = text.distance(from: dot, to: text.endIndex) - 1
            text += String(repeating: "0", count: max(0, 6 - digits))
        } else {
            text += ".000000"
        }
        return text + "Z"
    }

    /// Parses an RFC 3339 UTC timestamp with 0 to 7 fractional digits (`metav1.Time` or `MicroTime`).
    package static func parse(_ text: String) -> Date? {
        WireTimestamp.parse(text)
    }
}

/// The JSON coders every Kubernetes request and response goes through.
package enum KubernetesCoding {
    /// A decoder that reads Kubernetes timestamps into `Date`.
    package static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = MicroTime.parse(text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an RFC 3339 timestamp: \(text)")
            }
            return date
        }
        return decoder
    }

    /// An encoder that writes every `Date` as a MicroTime (six fractional digits) and sorts keys for stable bodies.
    package static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(MicroTime.format(date))
        }
        return encoder
    }
}
