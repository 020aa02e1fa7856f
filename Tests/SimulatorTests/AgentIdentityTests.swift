import AgentIdentity
import Foundation
import Testing

/// Two RSA-2048 keys shared by the identity tests (generation is the slow part; the keys are never mutated).
private let identityKeys = Result { try (first: AgentKey.generate(), second: AgentKey.generate()) }

/// base64url without padding, for crafting tokens the way an attacker would.
private func base64URL(_ data: Data) -> String { Base64URL.encode(data) }

/// Decodes one base64url segment.
private func fromBase64URL(_ text: Substring) throws -> Data {
    try #require(Base64URL.decode(text), "not base64url: \(text)")
}

/// A JWS over `header` and `payload` JSON, signed RS256 with `key` (or with `signature` verbatim).
private func jws(header: String, payload: String, key: AgentKey, signature: Data? = nil) throws -> String {
    let input = base64URL(Data(header.utf8)) + "." + base64URL(Data(payload.utf8))
    return input + "." + base64URL(try signature ?? key.rs256Signature(of: Data(input.utf8)))
}

/// The file's text after the UTF-8 BOM, failing when there is no BOM.
private func textAfterBOM(_ data: Data) throws -> String {
    try #require(Array(data.prefix(3)) == [0xEF, 0xBB, 0xBF], "no UTF-8 BOM")
    return String(decoding: data.dropFirst(3), as: UTF8.self)
}

/// The agent's RSA key, its three files and its RS256 client assertion (no server involved).
@Suite("Agent identity: key, files, client assertion")
struct AgentIdentityTests {
    let now = Date(timeIntervalSince1970: 1_760_000_000.75)
    let audience = "https://vstoken.dev.azure.com/00000000-0000-0000-0000-000000000000/_apis/oauth2/token"
    let clientId = "5a0bd2e4-7c51-4e3f-9b59-6f1c2d0e8a11"

    @Test("a generated key is RSA-2048 with e = 65537, its fields padded to the agent's widths")
    func generatedKeyWidths() throws {
        let key = try identityKeys.get().first
        let parameters = key.parameters
        #expect(parameters.exponent == "AQAB")
        for (name, value) in [("modulus", parameters.modulus), ("d", parameters.d)] {
            #expect(value.count == 344, "\(name)")
            #expect(Data(base64Encoded: value)?.count == 256, "\(name)")
        }
        for (name, value) in [
            ("p", parameters.p), ("q", parameters.q), ("dp", parameters.dp), ("dq", parameters.dq),
            ("inverseQ", parameters.inverseQ),
        ] {
            #expect(value.count == 172, "\(name)")
            #expect(Data(base64Encoded: value)?.count == 128, "\(name)")
        }
        #expect(parameters.containerName == "")
        #expect(parameters.useCng == false)
        #expect(key.publicKey == AgentPublicKey(exponent: "AQAB", modulus: parameters.modulus))
        #expect(try identityKeys.get().second.publicKey != key.publicKey)
    }

    @Test(".credentials_rsaparams round-trips: BOM, the agent's key order and indent, with or without BOM on read")
    func rsaParametersRoundTrip() throws {
        let key = try identityKeys.get().first
        let p = key.parameters
        let encoded = p.encoded()
        let expected = """
            {
              "ContainerName": "",
              "UseCng": false,
              "d": "\(p.d)",
              "dp": "\(p.dp)",
              "dq": "\(p.dq)",
              "exponent": "AQAB",
              "inverseQ": "\(p.inverseQ)",
              "modulus": "\(p.modulus)",
              "p": "\(p.p)",
              "q": "\(p.q)"
            }
            """
        #expect(try textAfterBOM(encoded) == expected)
        #expect(try RSAParametersFile.decode(encoded) == p)
        #expect(try RSAParametersFile.decode(Data(expected.utf8)) == p)
        let reloaded = try AgentKey(parameters: RSAParametersFile.decode(encoded))
        #expect(reloaded.parameters == p)
        #expect(reloaded.publicKey == key.publicKey)
        // The reloaded key signs what the original public key verifies.
        let token = try reloaded.clientAssertion(clientId: clientId, audience: audience, now: now)
        #expect(try ClientAssertion.verify(token, publicKey: key.publicKey, audience: audience, now: now) == clientId)
        // Codable uses the agent's names too.
        let json = String(decoding: try JSONEncoder().encode(p), as: UTF8.self)
        #expect(json.contains("\"ContainerName\"") && json.contains("\"UseCng\"") && json.contains("\"inverseQ\""))
    }

    @Test("an older agent's file (no ContainerName/UseCng, unpadded numbers) loads and is normalised")
    func olderAndUnpaddedParameters() throws {
        let key = try identityKeys.get().first
        var older = key.parameters
        older.containerName = nil
        older.useCng = nil
        // An extra leading zero byte is the same number; other writers may also leave padding off.
        older.modulus = (Data([0]) + (Data(base64Encoded: older.modulus) ?? Data())).base64EncodedString()
        let text = String(decoding: older.encoded(), as: UTF8.self)
        #expect(!text.contains("ContainerName"))
        let loaded = try AgentKey(parameters: RSAParametersFile.decode(older.encoded()))
        #expect(loaded.parameters.modulus == key.parameters.modulus)
        #expect(loaded.parameters.modulus.count == 344)
        #expect(loaded.parameters.containerName == nil)
    }

    @Test("a broken .credentials_rsaparams is refused with the field named")
    func brokenParameters() throws {
        let (key, other) = try identityKeys.get()
        let missing = #"{"d":"AQ==","dp":"AQ==","exponent":"AQAB","inverseQ":"AQ==","modulus":"AQ==","p":"AQ==","q":"AQ=="}"#
        #expect(throws: AgentIdentityError.self) { try RSAParametersFile.decode(Data(missing.utf8)) }
        do {
            _ = try RSAParametersFile.decode(Data(missing.utf8))
        } catch {
            #expect(error.description.contains("'dq'"), "\(error)")
        }
        var mixed = key.parameters
        mixed.dp = other.parameters.dp
        do {
            _ = try AgentKey(parameters: mixed)
            Issue.record("a dp from another key was accepted")
        } catch {
            #expect(error.kind == .invalidKey)
            #expect(error.description.contains("'dp'"), "\(error)")
        }
        var garbled = key.parameters
        garbled.modulus = "not base64!"
        do {
            _ = try AgentKey(parameters: garbled)
            Issue.record("a garbled modulus was accepted")
        } catch {
            #expect(error.description.contains("'modulus'"), "\(error)")
        }
        #expect(throws: AgentIdentityError.self) { try RSAParametersFile.decode(Data("[]".utf8)) }
    }

    @Test(".agent and .credentials render byte for byte as config.sh writes them")
    func registrationFilesRender() throws {
        let key = try identityKeys.get().first
        let files = AgentRegistrationFiles(
            agentId: 42, agentName: "pod-x", poolId: 12, poolName: "k8s", serverUrl: "https://dev.azure.com/contoso/",
            workFolder: "_work", clientId: clientId, authorizationUrl: audience, key: key)
        #expect(try textAfterBOM(files.agent) == """
            {
              "agentId": 42,
              "agentName": "pod-x",
              "poolId": 12,
              "poolName": "k8s",
              "serverUrl": "https://dev.azure.com/contoso/",
              "workFolder": "_work"
            }
            """)
        #expect(try textAfterBOM(files.credentials) == """
            {
              "scheme": "OAuth",
              "data": {
                "clientId": "\(clientId)",
                "authorizationUrl": "\(audience)",
                "oauthEndpointUrl": "\(audience)"
              }
            }
            """)
        #expect(files.rsaParameters == key.parameters.encoded())
        #expect(files.files.map(\.name) == [".agent", ".credentials", ".credentials_rsaparams"])
        #expect(files.files.map(\.contents) == [files.agent, files.credentials, files.rsaParameters])
        let withEula = AgentRegistrationFiles(
            agentId: 1, agentName: "a", poolId: 2, poolName: "p", serverUrl: "u", workFolder: "_work",
            clientId: clientId, authorizationUrl: audience, key: key, acceptTeeEula: true)
        #expect(try textAfterBOM(withEula.agent).hasPrefix("{\n  \"acceptTeeEula\": true,\n  \"agentId\": 1,"))
    }

    @Test("the readers take what the agent and others write: BOM or not, any key case, numbers as strings")
    func readersAreLenient() throws {
        let key = try identityKeys.get().first
        let files = AgentRegistrationFiles(
            agentId: 42, agentName: "pod-x", poolId: 12, poolName: "k8s", serverUrl: "https://dev.azure.com/contoso/",
            workFolder: "_work", clientId: clientId, authorizationUrl: audience, key: key, acceptTeeEula: true)
        let settings = try AgentSettingsFile.decode(files.agent)
        #expect(settings == AgentSettingsFile(
            agentId: 42, agentName: "pod-x", poolId: 12, poolName: "k8s", serverUrl: "https://dev.azure.com/contoso/",
            workFolder: "_work", acceptTeeEula: true))
        #expect(try AgentSettingsFile.decode(files.agent.dropFirst(3)) == settings)
        let credentials = try CredentialsFile.decode(files.credentials)
        #expect(credentials.isOAuth)
        #expect(credentials.clientId == clientId)
        #expect(credentials.authorizationUrl == audience)
        #expect(credentials.tokenEndpointUrl == audience)

        // Microsoft's Kubernetes pool provider writes PascalCase keys and string numbers.
        let pascal = #"{"AgentId":"123","AgentName":"k8s-1","PoolId":"7","ServerUrl":"https://x/","workFolder":"_work"}"#
        let read = try AgentSettingsFile.decode(Data(pascal.utf8))
        #expect(read.agentId == 123 && read.poolId == 7 && read.agentName == "k8s-1" && read.poolName == "")
        let shouting = #"{"Scheme":"oauth","Data":{"ClientId":"c","AUTHORIZATIONURL":"https://a/token","extra":"x"}}"#
        let oauth = try CredentialsFile.decode(Data(([0xEF, 0xBB, 0xBF] as [UInt8]) + Array(shouting.utf8)))
        #expect(oauth.isOAuth && oauth.clientId == "c")
        #expect(oauth.tokenEndpointUrl == "https://a/token", "oauthEndpointUrl defaults to authorizationUrl")

        do {
            _ = try AgentSettingsFile.decode(Data(#"{"agentId":1,"agentName":"a","poolId":2,"serverUrl":"u"}"#.utf8))
            Issue.record("a .agent without workFolder was accepted")
        } catch {
            #expect(error.description.contains("'workFolder'"), "\(error)")
        }
    }

    @Test("the client assertion has the agent's header and claims and verifies")
    func assertionShape() throws {
        let key = try identityKeys.get().first
        let token = try key.clientAssertion(clientId: clientId, audience: audience, now: now)
        let segments = token.split(separator: ".", omittingEmptySubsequences: false)
        try #require(segments.count == 3)
        #expect(!token.contains("="))
        #expect(String(decoding: try fromBase64URL(segments[0]), as: UTF8.self) == #"{"typ":"JWT","alg":"RS256"}"#)
        let payloadText = String(decoding: try fromBase64URL(segments[1]), as: UTF8.self)
        let claims = try #require(try JSONSerialization.jsonObject(with: Data(payloadText.utf8)) as? [String: Any])
        #expect(Set(claims.keys) == ["sub", "jti", "iss", "aud", "nbf", "exp"])
        #expect(claims["sub"] as? String == clientId)
        #expect(claims["iss"] as? String == clientId)
        #expect(claims["aud"] as? String == audience)
        #expect(UUID(uuidString: claims["jti"] as? String ?? "") != nil)
        #expect(payloadText.contains("\"nbf\":1759999970"), "nbf = now − 30 s in integer seconds: \(payloadText)")
        #expect(payloadText.contains("\"exp\":1760000270"), "exp = nbf + 5 min: \(payloadText)")
        #expect(try fromBase64URL(segments[2]).count == 256)
        #expect(try ClientAssertion.verify(token, publicKey: key.publicKey, audience: audience, now: now) == clientId)
        #expect(ClientAssertion.unverifiedClientId(token) == clientId)
        #expect(ClientAssertion.unverifiedClientId("not.a.jwt") == nil)
        #expect(ClientAssertion.unverifiedClientId("") == nil)
        let second = try key.clientAssertion(clientId: clientId, audience: audience, now: now)
        #expect(second != token, "every assertion gets a new jti")
    }

    /// Ways an assertion can be wrong, and the refusal each must get.
    enum Forgery: String, CaseIterable, Sendable {
        case otherKey, wrongAudience, expired, notYetValid, algNone, hs256, tamperedPayload, subjectIsNotIssuer
        case truncated, missingExpiry
    }

    @Test("verification refuses forged, mis-addressed and stale assertions", arguments: Forgery.allCases)
    func verificationRefuses(_ forgery: Forgery) throws {
        let (key, other) = try identityKeys.get()
        let valid = try key.clientAssertion(clientId: clientId, audience: audience, now: now)
        let nbf = Int(now.timeIntervalSince1970) - 30
        let claims = #""sub":"\#(clientId)","jti":"\#(UUID().uuidString)","iss":"\#(clientId)","aud":"\#(audience)""#
        let rs256 = #"{"typ":"JWT","alg":"RS256"}"#
        var token = valid
        var at = now
        var publicKey = key.publicKey
        var expectedAudience = audience
        let expected: AgentIdentityError.Kind
        switch forgery {
        case .otherKey:
            publicKey = other.publicKey
            expected = .invalidSignature
        case .wrongAudience:
            expectedAudience = "https://attacker.example/_apis/oauth2/token"
            expected = .wrongAudience
        case .expired:
            at = now.addingTimeInterval(270 + 300 + 31)
            expected = .expired
        case .notYetValid:
            at = now.addingTimeInterval(-30 - 300 - 31)
            expected = .notYetValid
        case .algNone:
            let input = base64URL(Data(#"{"typ":"JWT","alg":"none"}"#.utf8)) + "."
                + base64URL(Data("{\(claims),\"nbf\":\(nbf),\"exp\":\(nbf + 300)}".utf8))
            token = input + "."
            expected = .unsupportedAlgorithm
        case .hs256:
            token = try jws(
                header: #"{"typ":"JWT","alg":"HS256"}"#, payload: "{\(claims),\"nbf\":\(nbf),\"exp\":\(nbf + 300)}",
                key: key, signature: Data(repeating: 7, count: 32))
            expected = .unsupportedAlgorithm
        case .tamperedPayload:
            let segments = valid.split(separator: ".")
            let forged = base64URL(Data(
                #"{\#(claims.replacingOccurrences(of: clientId, with: "other-client")),"nbf":\#(nbf),"exp":\#(nbf + 300)}"#.utf8))
            token = "\(segments[0]).\(forged).\(segments[2])"
            expected = .invalidSignature
        case .subjectIsNotIssuer:
            let mixed = claims.replacingOccurrences(of: "\"iss\":\"\(clientId)\"", with: "\"iss\":\"someone-else\"")
            token = try jws(header: rs256, payload: "{\(mixed),\"nbf\":\(nbf),\"exp\":\(nbf + 300)}", key: key)
            expected = .invalidSubject
        case .truncated:
            token = String(valid.split(separator: ".").prefix(2).joined(separator: "."))
            expected = .malformedToken
        case .missingExpiry:
            token = try jws(header: rs256, payload: "{\(claims),\"nbf\":\(nbf)}", key: key)
            expected = .malformedToken
        }
        do {
            let accepted = try ClientAssertion.verify(token, publicKey: publicKey, audience: expectedAudience, now: at)
            Issue.record("\(forgery) was accepted for \(accepted)")
        } catch {
            #expect(error.kind == expected, "\(forgery): \(error)")
            #expect(!error.description.isEmpty)
        }
    }

    @Test("verification takes 5 minutes of clock skew either way")
    func leeway() throws {
        let key = try identityKeys.get().first
        let token = try key.clientAssertion(clientId: clientId, audience: audience, now: now)
        for offset in [-329.0, 0, 569] {
            #expect(
                try ClientAssertion.verify(
                    token, publicKey: key.publicKey, audience: audience, now: now.addingTimeInterval(offset)) == clientId,
                "offset \(offset)")
        }
    }
}
