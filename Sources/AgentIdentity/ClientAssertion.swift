import Crypto
import CryptoExtras
import JWTKit

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The claims of the agent's client assertion, as `VssOAuthJwtBearerAssertion` fills them.
///
/// `sub` and `iss` are both the OAuth client id, `aud` is the token endpoint exactly as stored in `.credentials`,
/// `jti` a fresh GUID; `nbf` and `exp` are integer Unix seconds and there is no `iat`.
struct AssertionClaims: JWTPayload, Equatable {
    /// The client id.
    var sub: SubjectClaim
    /// A new GUID per assertion.
    var jti: IDClaim
    /// The client id again.
    var iss: IssuerClaim
    /// The token endpoint (`authorizationUrl`).
    var aud: AudienceClaim
    /// Start of validity.
    var nbf: NotBeforeClaim
    /// End of validity.
    var exp: ExpirationClaim

    private enum CodingKeys: String, CodingKey {
        case sub, jti, iss, aud, nbf, exp
    }

    /// Claims with these values.
    init(sub: String, jti: String, iss: String, aud: String, nbf: Date, exp: Date) {
        self.sub = SubjectClaim(value: sub)
        self.jti = IDClaim(value: jti)
        self.iss = IssuerClaim(value: iss)
        self.aud = AudienceClaim(value: aud)
        self.nbf = NotBeforeClaim(value: nbf)
        self.exp = ExpirationClaim(value: exp)
    }

    /// Reads every claim; a missing one fails the decode (and so the verification).
    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        sub = try container.decode(SubjectClaim.self, forKey: .sub)
        jti = try container.decode(IDClaim.self, forKey: .jti)
        iss = try container.decode(IssuerClaim.self, forKey: .iss)
        aud = try container.decode(AudienceClaim.self, forKey: .aud)
        nbf = try container.decode(NotBeforeClaim.self, forKey: .nbf)
        exp = try container.decode(ExpirationClaim.self, forKey: .exp)
    }

    /// Writes the times as integers (a `Date` through JSONEncoder would allow fractions).
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(sub, forKey: .sub)
        try container.encode(jti, forKey: .jti)
        try container.encode(iss, forKey: .iss)
        try container.encode(aud, forKey: .aud)
        try container.encode(Int64(nbf.value.timeIntervalSince1970.rounded(.down)), forKey: .nbf)
        try container.encode(Int64(exp.value.timeIntervalSince1970.rounded(.down)), forKey: .exp)
    }

    /// Only the clock-free check (`sub == iss`); `ClientAssertion.verify` checks the times against its `now`.
    func verify(using algorithm: some JWTAlgorithm) async throws {
        guard sub.value == iss.value else {
            throw JWTError.claimVerificationFailure(failedClaim: iss, reason: "iss differs from sub")
        }
    }
}

extension AgentKey {
    /// How far `nbf` is backdated so a server whose clock runs a little behind still accepts the assertion
    /// (the agent itself uses `nbf = now`; third-party clients backdate by 30 s).
    package static let assertionBackdating: TimeInterval = 30
    /// How long an assertion is valid from `nbf`, as in the agent.
    package static let assertionLifetime: TimeInterval = 300

    /// The JWT the listener posts as `client_assertion`.
    ///
    /// Header `{"typ":"JWT","alg":"RS256"}` with no `kid`; payload `sub` = `iss` = `clientId`, `jti` a new GUID,
    /// `aud` = `audience` verbatim, `nbf` = now − 30 s (backdated for clock skew), `exp` = `nbf` + 5 min, integer
    /// seconds, no `iat`. Signed RSASSA-PKCS1-v1_5 with SHA-256; every segment base64url without padding.
    package func clientAssertion(clientId: String, audience: String, now: Date) throws(AgentIdentityError) -> String {
        let notBefore = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down) - Self.assertionBackdating)
        let claims = AssertionClaims(
            sub: clientId, jti: UUID().uuidString.lowercased(), iss: clientId, aud: audience,
            nbf: notBefore, exp: notBefore.addingTimeInterval(Self.assertionLifetime))
        let payload: Data
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.withoutEscapingSlashes]
            payload = try encoder.encode(claims)
        } catch {
            throw AgentIdentityError(.cryptoFailure, "could not encode the assertion claims: \(error)")
        }
        let signingInput = Base64URL.encode(Data(ClientAssertion.header.utf8)) + "." + Base64URL.encode(payload)
        return signingInput + "." + Base64URL.encode(try rs256Signature(of: Data(signingInput.utf8)))
    }

    /// The RS256 (RSASSA-PKCS1-v1_5 with SHA-256) signature of `signingInput`, the JWS `header.payload` bytes.
    package func rs256Signature(of signingInput: Data) throws(AgentIdentityError) -> Data {
        do {
            return try privateKey.signature(for: SHA256.hash(data: signingInput), padding: .insecurePKCS1v1_5)
                .rawRepresentation
        } catch {
            throw AgentIdentityError(.cryptoFailure, "could not sign with the agent key: \(error)")
        }
    }

    /// The key for JWTKit (`JWTKeyCollection().add(rsa:digestAlgorithm:)`), for code that signs through JWTKit.
    package func jwtSigningKey() throws(AgentIdentityError) -> JWTKit.Insecure.RSA.PrivateKey {
        do {
            return try JWTKit.Insecure.RSA.PrivateKey(backing: privateKey)
        } catch {
            throw AgentIdentityError(.invalidKey, "JWTKit refuses the key: \(error)")
        }
    }
}

extension AgentPublicKey {
    /// The key for JWTKit (`JWTKeyCollection().add(rsa:digestAlgorithm:)`), for code that verifies through JWTKit.
    package func jwtVerificationKey() throws(AgentIdentityError) -> JWTKit.Insecure.RSA.PublicKey {
        let key = try signingKey()
        do {
            return try JWTKit.Insecure.RSA.PublicKey(backing: key)
        } catch {
            throw AgentIdentityError(.invalidKey, "JWTKit refuses the public key: \(error)")
        }
    }
}

/// Verifying an agent's client assertion, as the token service does before it issues an access token.
package enum ClientAssertion {
    /// The only header the agent sends.
    static let header = #"{"typ":"JWT","alg":"RS256"}"#
    /// Clock tolerance on `nbf` and `exp`.
    package static let leeway: TimeInterval = 300

    /// Verifies the signature (RS256 only: `none`, `HS*` and every other `alg` are refused), `aud` == `audience`,
    /// `nbf`/`exp` against `now` with 5 minutes of leeway, and `sub` == `iss`; returns the client id (`sub`).
    ///
    /// The signature is checked before any claim is trusted.
    package static func verify(
        _ token: String, publicKey: AgentPublicKey, audience: String, now: Date
    ) throws(AgentIdentityError) -> String {
        let segments = token.split(separator: ".", omittingEmptySubsequences: false)
        guard segments.count == 3 else {
            throw AgentIdentityError(.malformedToken, "the assertion is not a JWS of three dot-separated segments")
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .secondsSince1970
        guard let headerBytes = Base64URL.decode(segments[0]),
            let header = try? decoder.decode(JWTHeader.self, from: headerBytes)
        else {
            throw AgentIdentityError(.malformedToken, "the assertion header is not base64url JSON")
        }
        guard let algorithm = header.alg, algorithm == "RS256" else {
            throw AgentIdentityError(
                .unsupportedAlgorithm, "the assertion header has alg '\(header.alg ?? "")'; only RS256 is accepted")
        }
        guard let signature = Base64URL.decode(segments[2]), !signature.isEmpty else {
            throw AgentIdentityError(.malformedToken, "the assertion signature is missing or not base64url")
        }
        let key = try publicKey.signingKey()
        let signingInput = Array(token.utf8.prefix(segments[0].utf8.count + 1 + segments[1].utf8.count))
        guard key.isValidSignature(
            _RSA.Signing.RSASignature(rawRepresentation: signature), for: SHA256.hash(data: signingInput),
            padding: .insecurePKCS1v1_5)
        else {
            throw AgentIdentityError(.invalidSignature, "the assertion signature does not verify with the registered key")
        }
        guard let payload = Base64URL.decode(segments[1]) else {
            throw AgentIdentityError(.malformedToken, "the assertion payload is not base64url")
        }
        let claims: AssertionClaims
        do {
            claims = try decoder.decode(AssertionClaims.self, from: payload)
        } catch {
            throw AgentIdentityError(
                .malformedToken, "the assertion payload lacks sub, jti, iss, aud, nbf or exp: \(error)")
        }
        guard claims.aud.value == [audience] else {
            throw AgentIdentityError(
                .wrongAudience, "the assertion's aud \(claims.aud.value) is not \(audience)")
        }
        do {
            try claims.nbf.verifyNotBefore(currentDate: now.addingTimeInterval(leeway))
        } catch {
            throw AgentIdentityError(
                .notYetValid, "the assertion is not valid before \(claims.nbf.value) (nbf, 5 min leeway)")
        }
        do {
            try claims.exp.verifyNotExpired(currentDate: now.addingTimeInterval(-leeway))
        } catch {
            throw AgentIdentityError(.expired, "the assertion expired at \(claims.exp.value) (exp, 5 min leeway)")
        }
        guard !claims.sub.value.isEmpty, claims.sub.value == claims.iss.value else {
            throw AgentIdentityError(.invalidSubject, "the assertion's sub and iss must both be the client id")
        }
        return claims.sub.value
    }

    /// The client id a token claims (`sub`), without verifying anything, so a server can look up the key to
    /// verify with.
    package static func unverifiedClientId(_ token: String) -> String? {
        struct Subject: Decodable { var sub: String? }
        let segments = token.split(separator: ".", omittingEmptySubsequences: false)
        guard segments.count == 3, let payload = Base64URL.decode(segments[1]),
            let subject = try? JSONDecoder().decode(Subject.self, from: payload).sub, !subject.isEmpty
        else { return nil }
        return subject
    }
}

/// base64url without padding (RFC 7515 §2), as JWS segments use it.
package enum Base64URL {
    /// Encodes bytes.
    package static func encode(_ data: Data) -> String {
        String(data.base64EncodedString().compactMap { character -> Character? in
            switch character {
            case "+": "-"
            case "/": "_"
            case "=": nil
            default: character
            }
        })
    }

    /// Decodes a segment; nil when it has padding or characters outside the base64url alphabet.
    package static func decode(_ text: Substring) -> Data? {
        guard text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
            return nil
        }
        var standard = String(text.map { $0 == "-" ? "+" : $0 == "_" ? "/" : $0 })
        while standard.count % 4 != 0 { standard += "=" }
        return Data(base64Encoded: standard)
    }
}
