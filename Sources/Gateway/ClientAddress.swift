import CofferSDK
import Foundation

/// The client address a request is attributed to (rate-limit buckets grouped by `ip`,
/// audit): the peer, or — only when the peer is a trusted proxy listed in the listener's
/// `x_forwarded_for_authorized_addrs` — the nearest address it appended to `X-Forwarded-For`.
enum ClientAddress {
    static func resolve(peer: String?, forwardedFor: String?, trusted: [AddressRange]) -> String? {
        guard let peer, let forwardedFor, !trusted.isEmpty, trusted.contains(where: { $0.contains(peer) }) else { return peer }
        let hops = forwardedFor.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard let nearest = hops.last, AddressRange.parse(nearest) != nil else { return peer }
        return nearest
    }
}
