import Crypto
import CryptoExtras
import SwiftASN1

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// An agent's RSA public key as the TaskAgent body carries it in `authorization.publicKey`.
///
/// Both fields are standard base64 (with padding) of big-endian unsigned integers, the form Newtonsoft gives the
/// `byte[]` members of `TaskAgentPublicKey`.
package struct AgentPublicKey: Codable, Sendable, Hashable {
    /// Public exponent, `AQAB` for 65537.
    package var exponent: String
    /// Modulus (256 bytes for RSA-2048).
    package var modulus: String

    /// A public key from its two base64 fields.
    package init(exponent: String, modulus: String) {
        self.exponent = exponent
        self.modulus = modulus
    }

    /// The key as swift-crypto's RSA public key; refuses bad base64 and keys under 2048 bits.
    func signingKey() throws(AgentIdentityError) -> _RSA.Signing.PublicKey {
        guard let n = Data(base64Encoded: modulus), !n.isEmpty else {
            throw AgentIdentityError(.invalidKey, "publicKey.modulus is not base64")
        }
        guard let e = Data(base64Encoded: exponent), !e.isEmpty else {
            throw AgentIdentityError(.invalidKey, "publicKey.exponent is not base64")
        }
        do {
            return try _RSA.Signing.PublicKey(n: n, e: e)
        } catch {
            throw AgentIdentityError(.invalidKey, "publicKey is not a usable RSA key of at least 2048 bits: \(error)")
        }
    }
}

/// An agent's RSA key pair: made at registration, its public half registered with the pool, its private half
/// kept in `.credentials_rsaparams` and used to sign the listener's client assertions.
package struct AgentKey: Sendable {
    /// The signing key.
    let privateKey: _RSA.Signing.PrivateKey
    /// The key in `.credentials_rsaparams` form (fields padded per the agent's widths).
    package let parameters: RSAParametersFile

    /// A new RSA-2048 key with e = 65537, as `config.sh` makes with `RSACryptoServiceProvider(2048)`.
    package static func generate() throws(AgentIdentityError) -> AgentKey {
        let key: _RSA.Signing.PrivateKey
        do {
            key = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        } catch {
            throw AgentIdentityError(.cryptoFailure, "could not generate an RSA-2048 key: \(error)")
        }
        let numbers = try PKCS1Numbers(der: key.derRepresentation)
        return AgentKey(privateKey: key, parameters: numbers.parametersFile(containerName: "", useCng: false))
    }

    /// The key stored in a `.credentials_rsaparams` file.
    ///
    /// Leading zero bytes are tolerated (the agent pads, other writers may not); `dp`, `dq` and `inverseQ` must
    /// agree with `d`, `p` and `q`. Keys under 2048 bits are refused, as `VssSigningCredentials` refuses them.
    package init(parameters: RSAParametersFile) throws(AgentIdentityError) {
        func number(_ value: String, _ field: String) throws(AgentIdentityError) -> [UInt8] {
            guard let bytes = Data(base64Encoded: value) else {
                throw AgentIdentityError(.invalidKey, ".credentials_rsaparams: '\(field)' is not standard base64")
            }
            let magnitude = Array(bytes.drop { $0 == 0 })
            guard !magnitude.isEmpty else {
                throw AgentIdentityError(.invalidKey, ".credentials_rsaparams: '\(field)' is zero or empty")
            }
            return magnitude
        }
        let n = try number(parameters.modulus, "modulus")
        let e = try number(parameters.exponent, "exponent")
        let d = try number(parameters.d, "d")
        let p = try number(parameters.p, "p")
        let q = try number(parameters.q, "q")
        let dp = try number(parameters.dp, "dp")
        let dq = try number(parameters.dq, "dq")
        let inverseQ = try number(parameters.inverseQ, "inverseQ")
        let key: _RSA.Signing.PrivateKey
        do {
            key = try _RSA.Signing.PrivateKey(n: n, e: e, d: d, p: p, q: q)
        } catch {
            throw AgentIdentityError(
                .invalidKey,
                ".credentials_rsaparams does not hold a consistent RSA key of at least 2048 bits "
                    + "(modulus, exponent, d, p, q): \(error)")
        }
        let derived = try PKCS1Numbers(der: key.derRepresentation)
        guard derived.n == n else {
            throw AgentIdentityError(.invalidKey, ".credentials_rsaparams: 'modulus' is not p·q")
        }
        for (field, given, expected) in [("dp", dp, derived.dp), ("dq", dq, derived.dq), ("inverseQ", inverseQ, derived.qinv)]
        where given != expected {
            throw AgentIdentityError(.invalidKey, ".credentials_rsaparams: '\(field)' does not match d, p and q")
        }
        self.privateKey = key
        self.parameters = derived.parametersFile(containerName: parameters.containerName, useCng: parameters.useCng)
    }

    private init(privateKey: _RSA.Signing.PrivateKey, parameters: RSAParametersFile) {
        self.privateKey = privateKey
        self.parameters = parameters
    }

    /// The public half, as registered in `authorization.publicKey`.
    package var publicKey: AgentPublicKey {
        AgentPublicKey(exponent: parameters.exponent, modulus: parameters.modulus)
    }

    /// The key as PKCS#1 `RSAPrivateKey` DER (for tools and libraries that take a DER or PEM key).
    package var derRepresentation: Data { privateKey.derRepresentation }
}

/// The integers of a PKCS#1 `RSAPrivateKey`, as unsigned big-endian magnitudes without leading zeros.
struct PKCS1Numbers {
    /// Modulus, public exponent, private exponent, the primes, the CRT exponents and the CRT coefficient.
    var n, e, d, p, q, dp, dq, qinv: [UInt8]

    /// Parses `RSAPrivateKey ::= SEQUENCE { version, n, e, d, p, q, dp, dq, qinv }` (RFC 8017 A.1.2).
    init(der: Data) throws(AgentIdentityError) {
        do {
            let root = try DER.parse(Array(der))
            let parsed: [[UInt8]] = try DER.sequence(root, identifier: .sequence) { nodes in
                let version = try Int(derEncoded: &nodes)
                guard version == 0 else {
                    throw ASN1Error.invalidASN1Object(reason: "RSAPrivateKey version \(version), expected 0")
                }
                return try (0..<8).map { _ in Array(try ArraySlice<UInt8>(derEncoded: &nodes)) }
            }
            (n, e, d, p, q, dp, dq, qinv) = (
                parsed[0], parsed[1], parsed[2], parsed[3], parsed[4], parsed[5], parsed[6], parsed[7]
            )
        } catch {
            throw AgentIdentityError(.invalidKey, "the key's PKCS#1 RSAPrivateKey DER does not parse: \(error)")
        }
    }

    /// The `.credentials_rsaparams` fields: `modulus` and `d` as wide as the modulus, the CRT fields half as wide
    /// (rounded up), the exponent unpadded.
    func parametersFile(containerName: String?, useCng: Bool?) -> RSAParametersFile {
        let width = n.count
        let half = (width + 1) / 2
        func encode(_ value: [UInt8], _ size: Int) -> String {
            Data(Array(repeating: 0, count: max(0, size - value.count)) + value).base64EncodedString()
        }
        return RSAParametersFile(
            d: encode(d, width), dp: encode(dp, half), dq: encode(dq, half), exponent: encode(e, 0),
            inverseQ: encode(qinv, half), modulus: encode(n, width), p: encode(p, half), q: encode(q, half),
            containerName: containerName, useCng: useCng)
    }
}
