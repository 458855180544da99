import CofferSDK
import Foundation
import JOSE

/// The mount's `config`: where signing keys come from (exactly one of static PEM keys, a
/// JWKS URL, or OIDC discovery), the OIDC client for the authorization-code flow, and what
/// every token must carry.
struct JWTConfig: Codable, Sendable, Equatable {
    var oidcDiscoveryURL = ""
    var oidcDiscoveryCAPEM = ""
    var oidcClientID = ""
    var oidcClientSecret = ""
    var oidcResponseMode = ""
    var oidcResponseTypes: [String] = []
    var jwksURL = ""
    var jwksCAPEM = ""
    var jwtValidationPubkeys: [String] = []
    var jwtSupportedAlgs: [String] = []
    var boundIssuer = ""
    var defaultRole = ""
    var providerConfig: [String: JSONValue] = [:]
    var namespaceInState = true

    enum Source: Equatable { case staticKeys, jwks, discovery, oidcFlow }

    var source: Source {
        if !jwtValidationPubkeys.isEmpty { return .staticKeys }
        if !jwksURL.isEmpty { return .jwks }
        return oidcClientID.isEmpty ? .discovery : .oidcFlow
    }

    /// Whether the flow asks for `type` (`code` when none is set).
    func hasResponseType(_ type: String) -> Bool {
        oidcResponseTypes.isEmpty ? type == "code" : oidcResponseTypes.contains(type)
    }

    /// The algorithms a token may be signed with: the configured ones, else every one Coffer
    /// verifies (OpenBao's list: RS*, PS*, ES*, EdDSA).
    var algorithms: Set<JWSAlgorithm> {
        jwtSupportedAlgs.isEmpty ? Set(JWSAlgorithm.allCases) : Set(jwtSupportedAlgs.compactMap(JWSAlgorithm.init(rawValue:)))
    }

    static let fields: [Field] = [
        Field("oidc_discovery_url", .string, description: "The OIDC discovery base URL, without .well-known/openid-configuration."),
        Field("oidc_discovery_ca_pem", .string, description: "CA certificates (PEM) for the discovery URL; the system's when empty."),
        Field("oidc_client_id", .string, description: "The OAuth client id."),
        Field("oidc_client_secret", .string, description: "The OAuth client secret (never shown)."),
        Field("oidc_response_mode", .string, description: "query or form_post."),
        Field("oidc_response_types", .commaStringSlice, description: "code and/or id_token; code when empty."),
        Field("jwks_url", .string, description: "A JWKS URL with the signing keys."),
        Field("jwks_ca_pem", .string, description: "CA certificates (PEM) for the JWKS URL."),
        Field("jwt_validation_pubkeys", .commaStringSlice, description: "PEM public keys that verify tokens locally."),
        Field("jwt_supported_algs", .commaStringSlice, description: "Accepted signing algorithms."),
        Field("bound_issuer", .string, description: "The iss every token must carry."),
        Field("default_role", .string, description: "The role of a login that names none."),
        Field("provider_config", .map, description: "Provider-specific settings (none are needed by Coffer)."),
        Field("namespace_in_state", .bool, description: "Carry the namespace in the OIDC state instead of the redirect URI."),
        Field("override_allowed_server_names", .commaStringSlice, description: "Not supported."),
        Field("skip_jwks_validation", .bool, description: "Store the configuration even when its key source cannot be reached now."),
    ]

    var readData: [String: JSONValue] {
        [
            "oidc_discovery_url": .string(oidcDiscoveryURL), "oidc_discovery_ca_pem": .string(oidcDiscoveryCAPEM),
            "oidc_client_id": .string(oidcClientID), "oidc_response_mode": .string(oidcResponseMode),
            "oidc_response_types": .array(oidcResponseTypes.map { .string($0) }), "default_role": .string(defaultRole),
            "jwt_validation_pubkeys": .array(jwtValidationPubkeys.map { .string($0) }),
            "jwt_supported_algs": .array(jwtSupportedAlgs.map { .string($0) }), "jwks_url": .string(jwksURL),
            "jwks_ca_pem": .string(jwksCAPEM), "bound_issuer": .string(boundIssuer), "provider_config": .object(providerConfig),
            "namespace_in_state": .bool(namespaceInState), "override_allowed_server_names": .array([]),
        ]
    }

    /// A configuration from a write, with Vault's checks (texts from its jwt plugin).
    static func parse(_ f: FieldValues, existing: JWTConfig?) throws -> JWTConfig {
        var c = JWTConfig()
        c.oidcDiscoveryURL = f.string("oidc_discovery_url")
        c.oidcDiscoveryCAPEM = f.string("oidc_discovery_ca_pem")
        c.oidcClientID = f.string("oidc_client_id")
        c.oidcClientSecret = f.string("oidc_client_secret")
        c.oidcResponseMode = f.string("oidc_response_mode")
        c.oidcResponseTypes = f.strings("oidc_response_types")
        c.jwksURL = f.string("jwks_url")
        c.jwksCAPEM = f.string("jwks_ca_pem")
        c.jwtValidationPubkeys = f.strings("jwt_validation_pubkeys")
        c.jwtSupportedAlgs = f.strings("jwt_supported_algs")
        c.boundIssuer = f.string("bound_issuer")
        c.defaultRole = f.string("default_role").lowercased()
        c.providerConfig = f.map("provider_config")
        c.namespaceInState = f.has("namespace_in_state") ? f.bool("namespace_in_state") : (existing?.namespaceInState ?? true)
        if !f.strings("override_allowed_server_names").isEmpty {
            throw CofferError.invalid("override_allowed_server_names is not supported")
        }
        if !c.providerConfig.isEmpty {
            throw CofferError.invalid("invalid provider_config: provider-specific configuration is not supported")
        }
        let sources = [!c.oidcDiscoveryURL.isEmpty, !c.jwtValidationPubkeys.isEmpty, !c.jwksURL.isEmpty].filter { $0 }.count
        guard sources == 1 else {
            throw CofferError.invalid("exactly one of 'jwt_validation_pubkeys', 'jwks_url', 'jwks_pairs', 'oidc_discovery_url', or 'provider_config' must be set")
        }
        if c.oidcClientID.isEmpty != c.oidcClientSecret.isEmpty {
            throw CofferError.invalid("both 'oidc_client_id' and 'oidc_client_secret' must be set for OIDC")
        }
        if !c.oidcDiscoveryURL.isEmpty {
            if c.oidcDiscoveryURL.contains(".well-known/openid-configuration") {
                throw CofferError.invalid("'oidc_discovery_url' contains '.well-known' component")
            }
            try HTTPSource.checkURL(c.oidcDiscoveryURL, field: "oidc_discovery_url")
            _ = try HTTPSource.trustRoots(c.oidcDiscoveryCAPEM, field: "oidc_discovery_ca_pem")
        } else if !c.oidcClientID.isEmpty {
            throw CofferError.invalid("'oidc_discovery_url' must be set for OIDC")
        }
        if !c.jwksURL.isEmpty {
            try HTTPSource.checkURL(c.jwksURL, field: "jwks_url")
            _ = try HTTPSource.trustRoots(c.jwksCAPEM, field: "jwks_ca_pem")
        }
        for pem in c.jwtValidationPubkeys { _ = try JWSPublicKey(pem: pem) }
        for alg in c.jwtSupportedAlgs where JWSAlgorithm(rawValue: alg) == nil {
            throw CofferError.invalid("invalid jwt_supported_algs: unsupported signing algorithm \"\(alg.prefix(16))\"")
        }
        if !c.oidcResponseTypes.allSatisfy({ $0 == "code" || $0 == "id_token" }) {
            throw CofferError.invalid("invalid response_types \(c.oidcResponseTypes.map { String($0.prefix(16)) }). 'code' and 'id_token' are allowed")
        }
        switch c.oidcResponseMode {
        case "", "query":
            if c.hasResponseType("id_token") { throw CofferError.invalid("query response_mode may not be used with an id_token response_type") }
        case "form_post": break
        default: throw CofferError.invalid("invalid response_mode: \"\(c.oidcResponseMode.prefix(32))\"")
        }
        return c
    }
}

/// A role: which tokens may log in (bound audiences, subject, claims) and what they get.
struct JWTRole: Codable, Sendable, Equatable {
    var token = TokenParameters()
    var roleType = "oidc"
    var expirationLeeway = 0
    var notBeforeLeeway = 0
    var clockSkewLeeway = 0
    var boundAudiences: [String] = []
    var boundSubject = ""
    var boundClaimsType = "string"
    var boundClaims: [String: JSONValue] = [:]
    var claimMappings: [String: String] = [:]
    var oauth2Metadata: [String] = []
    var userClaim = ""
    var userClaimJSONPointer = false
    var groupsClaim = ""
    var oidcScopes: [String] = []
    var allowedRedirectURIs: [String] = []
    var callbackMode = "client"
    var pollInterval = 0
    var verboseOIDCLogging = false
    var maxAge = 0
    var tokenPoliciesTemplateClaims = false
    var oidcDisableConfirmation = false
    var deprecated = DeprecatedTokenFields()

    static let fields: [Field] = [
        Field("name", .string, description: "Name of the role."),
        Field("role_type", .string, description: "jwt or oidc (the default)."),
        Field("expiration_leeway", .any, description: "Leeway on exp in seconds; 0 is 150, -1 none."),
        Field("not_before_leeway", .any, description: "Leeway on nbf in seconds; 0 is 150, -1 none."),
        Field("clock_skew_leeway", .any, description: "Leeway on every time claim in seconds; 0 is 60, -1 none."),
        Field("bound_subject", .string, description: "The sub a token must carry."),
        Field("bound_audiences", .commaStringSlice, description: "Audiences of which a token must carry one."),
        Field("bound_claims_type", .string, default: "string", description: "string or glob."),
        Field("bound_claims", .map, description: "Claims and the values (one of which) they must have."),
        Field("claim_mappings", .keyValuePairs, description: "Claims copied into token metadata: claim → metadata key."),
        Field("oauth2_metadata", .commaStringSlice, description: "Not supported beyond id_token."),
        Field("user_claim", .string, description: "The claim that names the entity alias."),
        Field("user_claim_json_pointer", .bool, description: "user_claim is a JSON pointer."),
        Field("groups_claim", .string, description: "The claim holding group alias names."),
        Field("oidc_scopes", .commaStringSlice, description: "Scopes asked for besides openid."),
        Field("allowed_redirect_uris", .commaStringSlice, description: "Redirect URIs the OIDC flow may use."),
        Field("callback_mode", .string, default: "client", description: "client (only)."),
        Field("poll_interval", .int, description: "Not used in client callback mode."),
        Field("verbose_oidc_logging", .bool, description: "Log the claims of logins at debug level."),
        Field("max_age", .duration, description: "Most seconds since the user last authenticated at the provider."),
        Field("token_policies_template_claims", .bool, description: "Not supported."),
        Field("oidc_disable_confirmation", .bool, description: "Not used in client callback mode."),
    ] + DeprecatedTokenFields.fields + TokenParameters.fields

    var readData: [String: JSONValue] {
        var d = token.json
        d.merge([
            "role_type": .string(roleType), "expiration_leeway": .int(Int64(expirationLeeway)),
            "not_before_leeway": .int(Int64(notBeforeLeeway)), "clock_skew_leeway": .int(Int64(clockSkewLeeway)),
            "bound_audiences": .array(boundAudiences.map { .string($0) }), "bound_subject": .string(boundSubject),
            "bound_claims_type": .string(boundClaimsType), "bound_claims": boundClaims.isEmpty ? .null : .object(boundClaims),
            "claim_mappings": claimMappings.isEmpty ? .null : .object(claimMappings.mapValues { .string($0) }),
            "oauth2_metadata": .array(oauth2Metadata.map { .string($0) }), "user_claim": .string(userClaim),
            "user_claim_json_pointer": .bool(userClaimJSONPointer), "groups_claim": .string(groupsClaim),
            "allowed_redirect_uris": .array(allowedRedirectURIs.map { .string($0) }), "callback_mode": .string(callbackMode),
            "oidc_scopes": .array(oidcScopes.map { .string($0) }), "verbose_oidc_logging": .bool(verboseOIDCLogging),
            "max_age": .int(Int64(maxAge)), "token_policies_template_claims": .bool(tokenPoliciesTemplateClaims),
            "oidc_disable_confirmation": .bool(oidcDisableConfirmation),
        ]) { _, new in new }
        if pollInterval > 0 { d["poll_interval"] = .int(Int64(pollInterval)) }
        deprecated.show(in: &d)
        return d
    }

    /// Applies a write to the stored role (or a new one), with Vault's checks and texts.
    mutating func apply(_ f: FieldValues, maxLeaseTTL: Int) throws -> [String] {
        let type = f.string("role_type").isEmpty ? "oidc" : f.string("role_type")
        guard type == "jwt" || type == "oidc" else { throw CofferError.invalid("invalid 'role_type': \(type.prefix(32))") }
        roleType = type
        try token.parse(f)
        try deprecated.upgrade(f, &token)
        if token.period > maxLeaseTTL {
            throw CofferError.invalid("'period' of '\(token.period)s' is greater than the backend's maximum lease TTL of '\(maxLeaseTTL)s'")
        }
        if f.has("expiration_leeway") { expirationLeeway = try Self.leeway(f, "expiration_leeway") }
        if f.has("not_before_leeway") { notBeforeLeeway = try Self.leeway(f, "not_before_leeway") }
        if f.has("clock_skew_leeway") { clockSkewLeeway = try Self.leeway(f, "clock_skew_leeway") }
        if f.has("bound_audiences") { boundAudiences = f.strings("bound_audiences") }
        if f.has("bound_subject") { boundSubject = f.string("bound_subject") }
        if f.has("verbose_oidc_logging") { verboseOIDCLogging = f.bool("verbose_oidc_logging") }
        if f.has("max_age") { maxAge = f.int("max_age") }
        if f.has("token_policies_template_claims") {
            guard !f.bool("token_policies_template_claims") else { throw CofferError.invalid("token_policies_template_claims is not supported") }
        }
        let claimsType = f.has("bound_claims_type") ? f.string("bound_claims_type") : "string"
        guard claimsType == "string" || claimsType == "glob" else { throw CofferError.invalid("invalid 'bound_claims_type': \(claimsType.prefix(32))") }
        boundClaimsType = claimsType
        if f.has("bound_claims") {
            let claims = f.map("bound_claims")
            for (_, value) in claims {
                guard let values = ClaimValue.list(value) else { throw CofferError.invalid("claim is not a string or list: \(value.serializedString().prefix(64))") }
                if claimsType == "glob", let bad = values.first(where: { if case .string = $0 { false } else { true } }) {
                    throw CofferError.invalid("claim is not a string: \(bad)")
                }
            }
            boundClaims = claims
        }
        if f.has("claim_mappings") {
            let mappings = f.stringMap("claim_mappings")
            var targets = Set<String>()
            for target in mappings.values {
                if target == "role" { throw CofferError.invalid("metadata key \"role\" is reserved and may not be a mapping destination") }
                if !targets.insert(target).inserted { throw CofferError.invalid("multiple keys are mapped to metadata key \"\(target.prefix(64))\"") }
            }
            claimMappings = mappings
        }
        if f.has("oauth2_metadata") {
            let names = f.strings("oauth2_metadata")
            for n in names where !["id_token", "refresh_token", "access_token"].contains(n) {
                throw CofferError.invalid("Unrecognized oauth2 metadata name \(n.prefix(32))")
            }
            oauth2Metadata = names
        }
        if f.has("user_claim") { userClaim = f.string("user_claim") }
        guard !userClaim.isEmpty else { throw CofferError.invalid("a user claim must be defined on the role") }
        if f.has("user_claim_json_pointer") { userClaimJSONPointer = f.bool("user_claim_json_pointer") }
        if f.has("groups_claim") { groupsClaim = f.string("groups_claim") }
        if f.has("oidc_scopes") { oidcScopes = f.strings("oidc_scopes") }
        if f.has("allowed_redirect_uris") { allowedRedirectURIs = f.strings("allowed_redirect_uris") }
        if f.has("poll_interval") { pollInterval = max(0, f.int("poll_interval")) }
        let mode = f.has("callback_mode") ? f.string("callback_mode") : "client"
        switch mode {
        case "client": callbackMode = mode
        case "direct", "device": throw CofferError.invalid("callback_mode \"\(mode)\" is not supported; use client")
        default: throw CofferError.invalid("invalid 'callback_mode': \(mode.prefix(32))")
        }
        oidcDisableConfirmation = f.bool("oidc_disable_confirmation")
        if roleType == "oidc" && allowedRedirectURIs.isEmpty {
            throw CofferError.invalid("'allowed_redirect_uris' must be set if 'role_type' is 'oidc' or unspecified.")
        }
        if roleType == "jwt" && boundAudiences.isEmpty && token.boundCIDRs.isEmpty && boundSubject.isEmpty && boundClaims.isEmpty {
            throw CofferError.invalid("must have at least one bound constraint when creating/updating a role")
        }
        if token.maxTTL > 0 && token.ttl > token.maxTTL { throw CofferError.invalid("ttl should not be greater than max ttl") }
        var warnings: [String] = []
        if token.maxTTL > maxLeaseTTL {
            warnings.append("token max ttl is greater than the system or backend mount's maximum TTL value; issued tokens' max TTL value will be truncated")
        }
        if verboseOIDCLogging {
            warnings.append("verbose_oidc_logging has been enabled for this role. This is not recommended in production since sensitive information may be present in OIDC responses.")
        }
        return warnings
    }

    /// A signed duration: seconds as a number or a Go duration, -1 allowed.
    static func leeway(_ f: FieldValues, _ name: String) throws -> Int {
        let raw = f.values[name] ?? .null
        let bad = CofferError.invalid("error converting input for field \"\(name)\": invalid duration")
        switch raw {
        case .int(let i):
            guard i >= -1, i <= Checked.maxDurationSeconds else { throw bad }
            return Int(i)
        case .double(let d):
            guard d >= -1, let i = Checked.int64(truncating: d), i <= Checked.maxDurationSeconds else { throw bad }
            return Int(i)
        case .string(let s):
            if s == "-1" || s == "-1s" { return -1 }
            guard let secs = GoDuration.parseSeconds(s) else { throw bad }
            return Int(secs)
        default: throw bad
        }
    }
}

/// A pending OIDC login (between `oidc/auth_url` and `oidc/callback`), stored behind the
/// barrier under its state's hash and used once.
struct OIDCPending: Codable, Sendable {
    var role: String
    var redirectURI: String
    var nonce: String
    var codeVerifier: String
    var clientNonce: String
    var expiresAt: Double
    /// What a form_post callback brought, for the GET that finishes the login.
    var code = ""
    var idToken = ""
}
