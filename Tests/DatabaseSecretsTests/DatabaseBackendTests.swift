import CofferSDK
@testable import DatabaseSecrets
import Foundation
import Synchronization
import Testing
import TenantCore

/// The database secret engine: every suite sits under this one, so that
/// `swift test --filter DatabaseBackendTests` runs them all.
@Suite struct DatabaseBackendTests {}

// MARK: - username templates

extension DatabaseBackendTests {
    @Suite struct UsernameTemplateTests {
        static let fixed = Date(timeIntervalSince1970: 1_257_894_245.123)  // 2009-11-10T23:04:05.123Z

        func render(_ t: String, display: String = "", role: String = "", now: Date = fixed) throws -> String {
            try UsernameTemplate(t).render(UsernameTemplate.Metadata(displayName: display, roleName: role, now: now))
        }

        func matches(_ s: String, _ pattern: String) -> Bool {
            s.range(of: "^" + pattern + "$", options: .regularExpression) != nil
        }

        @Test func vaultPostgreSQLDefault() throws {
            let t = #"{{ printf "v-%s-%s-%s-%s" (.DisplayName | truncate 8) (.RoleName | truncate 8) (random 20) (unix_time) | truncate 63 }}"#
            let u = try render(t, display: "userpass-alice", role: "readonly-long-name")
            #expect(matches(u, "v-userpass-readonly-[A-Za-z0-9]{20}-1257894245"))
            let empty = try render(t)
            #expect(matches(empty, "v---[A-Za-z0-9]{20}-1257894245"))
        }

        @Test func vaultMySQLDefaultFitsInThirtyTwo() throws {
            let t = #"{{ printf "v-%s-%s-%s-%s" (.DisplayName | truncate 10) (.RoleName | truncate 10) (random 20) (unix_time) | truncate 32 }}"#
            let u = try render(t, display: "approle-service", role: "reporting-role")
            #expect(u.utf8.count == 32)
            #expect(u.hasPrefix("v-approle-se-reporting-"))
        }

        @Test func builtinFunctions() throws {
            let s = "Some string with Multiple Capitals LETTERS"
            let t = """
                {{.DisplayName | truncate 10}}
                {{.DisplayName | uppercase}}
                {{.DisplayName | lowercase}}
                {{.DisplayName | replace " " "."}}
                {{.DisplayName | sha256}}
                {{.DisplayName | base64}}
                {{.DisplayName | base64 | decode_base64}}
                {{.DisplayName | hex}}
                {{.DisplayName | hex | decode_hex}}
                {{.DisplayName | truncate_sha256 20}}
                """
            let expected = """
                Some strin
                SOME STRING WITH MULTIPLE CAPITALS LETTERS
                some string with multiple capitals letters
                Some.string.with.Multiple.Capitals.LETTERS
                da9872dd96609c72897defa11fe81017a62c3f44339d9d3b43fe37540ede3601
                U29tZSBzdHJpbmcgd2l0aCBNdWx0aXBsZSBDYXBpdGFscyBMRVRURVJT
                Some string with Multiple Capitals LETTERS
                536f6d6520737472696e672077697468204d756c7469706c65204361706974616c73204c455454455253
                Some string with Multiple Capitals LETTERS
                Some string 6841cf80
                """
            #expect(try render(t, display: s) == expected)
        }

        @Test(arguments: [
            ("{{.RoleName | truncate_sha256 10}}", "th0c368dd9"),
            ("{{.RoleName | truncate_sha256 40}}", "thisisareallylongstring"),
            ("{{ \"abc\" | sha256 }}", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            ("{{ `hello` | base64 }}", "aGVsbG8="),
            ("{{ printf \"%s\" .RoleName | uppercase | truncate 4 }}", "THIS"),
            ("{{ (printf \"a-%s\" (.RoleName | truncate 4)) | replace \"-\" \"_\" }}", "a_this"),
            ("x {{- \" y \" -}} z", "x y z"),
            ("a {{/* a comment */}}b", "a b"),
            ("{{ printf \"%05d|%-4s|%q|%%|%x\" 42 \"ab\" \"q\\\"\" \"hi\" }}", "00042|ab  |\"q\\\"\"|%|6869"),
            ("{{ printf \"%s-%s\" \"only\" }}", "only-%!s(MISSING)"),
            ("{{ printf \"%d\" \"text\" }}", "%!d(string=text)"),
            ("{{ printf \"x\" \"extra\" }}", "x%!(EXTRA string=extra)"),
            ("{{ printf \"%s\" unix_time_millis }}", "1257894245123"),
            ("{{ true }}{{ 7 }}", "true7"),
        ])
        func rendersAsGo(_ template: String, _ expected: String) throws {
            #expect(try render(template, role: "thisisareallylongstring") == expected)
        }

        @Test(arguments: [
            ("2006-01-02T15:04:05Z07:00", "2009-11-10T23:04:05Z"),
            ("2006-01-02 15:04:05-0700", "2009-11-10 23:04:05+0000"),
            ("20060102150405", "20091110230405"),
            ("Jan _2 Mon 3:04PM", "Nov 10 Tue 11:04PM"),
            ("January 2, 2006 MST", "November 10, 2009 UTC"),
            ("15:04:05.000", "23:04:05.123"),
            ("15:04:05.999999", "23:04:05.123"),
            ("06-1-2 03 pm Monday 002", "09-11-10 11 pm Tuesday 314"),
        ])
        func goTimeLayouts(_ layout: String, _ expected: String) throws {
            #expect(try render("{{ timestamp \"\(layout)\" }}") == expected)
            #expect(GoTimeLayout.format(Self.fixed, layout: layout) == expected)
        }

        @Test func randomAndUUID() throws {
            let r = try render("{{random 30}}")
            #expect(matches(r, "[A-Za-z0-9]{30}"))
            #expect(try render("{{random 30}}") != r)
            #expect(matches(try render("{{uuid}}"), "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"))
            #expect(try render("{{unix_time}}") == "1257894245")
        }

        @Test(arguments: [
            "", "{{", "{{ .DisplayName", "{{ nosuch }}", "{{ .Other }}", "{{ if .RoleName }}x{{ end }}",
            "{{ $x := 1 }}", "{{ . }}", "{{ (.RoleName }}", "{{ .RoleName) }}", "{{ \"unterminated }}",
            "{{ .RoleName | }}", "{{ range .RoleName }}{{ end }}", "{{ 'c' }}", "{{ .A.B }}", "{{ 12abc }}",
            "{{/* unclosed }}",
        ])
        func refusedAtParse(_ template: String) {
            #expect(throws: CofferError.self) { try UsernameTemplate(template) }
        }

        @Test(arguments: [
            "{{ truncate \"8\" .RoleName }}", "{{ .RoleName | truncate 0 }}", "{{ .RoleName | truncate_sha256 8 }}",
            "{{ truncate 3 }}", "{{ uppercase 3 }}", "{{ .RoleName 3 }}", "{{ \"x\" | .RoleName }}",
            "{{ random -1 }}", "{{ random 100000 }}", "{{ \"*\" | decode_base64 }}", "{{ \"zz\" | decode_hex }}",
            "{{ uuid 1 }}", "{{ printf }}",
        ])
        func refusedAtRender(_ template: String) throws {
            let t = try UsernameTemplate(template)
            #expect(throws: CofferError.self) { try t.render(UsernameTemplate.Metadata(roleName: "role")) }
        }

        @Test func defaultPasswordPolicy() {
            for _ in 0..<200 {
                let p = SecretGenerator.password()
                #expect(p.count == 20)
                #expect(p.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") })
                #expect(p.contains(where: \.isLowercase) && p.contains(where: \.isUppercase) && p.contains(where: \.isNumber) && p.contains("-"))
            }
        }
    }
}

// MARK: - statements and helpers

extension DatabaseBackendTests {
    @Suite struct DatabaseStatementTests {
        @Test func splitsOnSemicolonsOutsideQuotes() {
            let t = #"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";"#
            let out = DatabaseBackend.expand([t], ["name": "v-u", "password": "pw", "expiration": "2030-01-01 00:00:00+0000"])
            #expect(out == [
                #"CREATE ROLE "v-u" WITH LOGIN PASSWORD 'pw' VALID UNTIL '2030-01-01 00:00:00+0000'"#,
                #"GRANT SELECT ON ALL TABLES IN SCHEMA public TO "v-u""#,
            ])
            #expect(DatabaseBackend.splitStatements("SELECT 'a;b'; SELECT \"c;d\"") == ["SELECT 'a;b'", " SELECT \"c;d\""])
        }

        @Test func keepsBlocksWhole() {
            let dollar = "DO $$ BEGIN CREATE ROLE x; EXCEPTION WHEN others THEN NULL; END $$; SELECT 1"
            #expect(DatabaseBackend.expand([dollar], [:]) == ["DO $$ BEGIN CREATE ROLE x; EXCEPTION WHEN others THEN NULL; END $$", "SELECT 1"])
            let tagged = "DO $body$ BEGIN PERFORM 1; END $body$"
            #expect(DatabaseBackend.expand([tagged], [:]) == [tagged])
            let end = "CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END"
            #expect(DatabaseBackend.expand([end], [:]) == [end])
            #expect(DatabaseBackend.expand(["SELECT 'END'; SELECT 2"], [:]) == ["SELECT 'END'", "SELECT 2"])
            #expect(DatabaseBackend.expand(["SELECT legend; SELECT 2"], [:]) == ["SELECT legend", "SELECT 2"])
        }

        @Test func acceptsJSONAndBase64() {
            let json = #"["CREATE USER '{{name}}'", "GRANT ALL ON a.* TO '{{name}}'"]"#
            #expect(DatabaseBackend.expand([json], ["name": "u"]) == ["CREATE USER 'u'", "GRANT ALL ON a.* TO 'u'"])
            let b64 = Data("DROP USER '{{name}}'; SELECT 1".utf8).base64EncodedString()
            #expect(DatabaseBackend.expand([b64], ["name": "u"]) == ["DROP USER 'u'", "SELECT 1"])
            #expect(DatabaseBackend.expand(["", "  ;  ; "], [:]).isEmpty)
        }

        @Test(arguments: [
            ("postgresql://{{username}}:{{password}}@localhost:5432/db", "postgresql://{{username}}:{{password}}@localhost:5432/db", false),
            ("postgresql://admin:s3cret@localhost:5432/db?sslmode=disable", "postgresql://admin:xxxxx@localhost:5432/db?sslmode=disable", true),
            ("{{username}}:{{password}}@tcp(127.0.0.1:3306)/", "{{username}}:{{password}}@tcp(127.0.0.1:3306)/", false),
            ("root:pa:ss@tcp(127.0.0.1:3306)/", "root:xxxxx@tcp(127.0.0.1:3306)/", true),
            ("host=127.0.0.1 user=x password=hunter2 dbname=y", "host=127.0.0.1 user=x password=xxxxx dbname=y", true),
            ("postgres://h/db?user=a&password=b&sslmode=require", "postgres://h/db?user=a&password=xxxxx&sslmode=require", true),
            ("postgres://h:5432/db", "postgres://h:5432/db", false),
        ])
        func redactsConnectionURLs(_ url: String, _ redacted: String, _ hasPassword: Bool) {
            #expect(DatabaseBackend.redactConnectionURL(url) == redacted)
            #expect((DatabaseBackend.passwordRange(in: url) != nil) == hasPassword)
        }

        @Test func globs() {
            #expect(Glob.match("app-*", "app-read"))
            #expect(!Glob.match("app-*", "other"))
            #expect(Glob.match("*-ro", "x-ro"))
            #expect(Glob.match("a*b*c", "axxbyyc"))
            #expect(!Glob.match("a*b*c", "axxbyy"))
            #expect(Glob.match("exact", "exact"))
            #expect(!Glob.match("exact", "exactly"))
        }

        @Test func sanitizesDisplayNames() {
            #expect(DatabaseBackend.sanitizeDisplayName("userpass-al\"ice'; x") == "userpass-al-ice---x")
            #expect(DatabaseBackend.sanitizeDisplayName("token") == "token")
        }
    }
}

// MARK: - the backend without a database

/// A plugin whose server is down: every connection attempt fails as a refused TCP connect
/// would. It lets the routes be exercised up to the point where a database is needed.
struct OfflinePlugin: DatabasePlugin {
    func targets(_ settings: DatabaseConnectionSettings) throws -> [DatabaseTarget] { [.tcp(host: "db.example")] }
    var name = "postgresql-database-plugin"
    var maxUsernameLength = 63
    var defaultUsernameTemplate = #"{{ printf "v-%s-%s-%s-%s" (.DisplayName | truncate 8) (.RoleName | truncate 8) (random 20) (unix_time) | truncate 63 }}"#
    var defaultRevocationStatements = [#"DROP ROLE IF EXISTS "{{name}}""#]
    var defaultRotationStatements = [#"ALTER ROLE "{{name}}" WITH PASSWORD '{{password}}'"#]

    func connect(_ settings: DatabaseConnectionSettings) throws -> any DatabaseConnection {
        throw DatabaseError(kind: .unavailable, message: "connection to server at \"127.0.0.1\", port 1 failed: Connection refused")
    }
}

extension DatabaseBackendTests {
    @Suite struct DatabaseBackendRouteTests {
        let backend: DatabaseBackend

        init() async throws {
            let barrier = Barrier(physical: MemoryStorage())
            barrier.install(Keyring.generate())
            let config = BackendConfiguration(storage: StorageView(barrier, prefix: "db/"), mountPath: "database/", mountType: "database",
                                              defaultLeaseTTL: 3600, maxLeaseTTL: 86400)
            backend = DatabaseBackend(config: config, plugins: [OfflinePlugin(), OfflinePlugin(name: "mysql-database-plugin", maxUsernameLength: 32)])
        }

        @discardableResult
        func call(_ op: LogicalOperation, _ path: String, _ data: [String: JSONValue] = [:]) async throws -> LogicalResponse? {
            try await backend.handle(LogicalRequest(operation: op, path: path, data: data, token: RequestToken(accessor: "a", policies: ["default"], displayName: "token")))
        }

        func failure(_ op: LogicalOperation, _ path: String, _ data: [String: JSONValue] = [:]) async -> CofferError? {
            do {
                try await call(op, path, data)
                return nil
            } catch let e as CofferError {
                return e
            } catch {
                Issue.record("unexpected error type \(error)")
                return nil
            }
        }

        static let offlineConfig: [String: JSONValue] = [
            "plugin_name": "postgresql-database-plugin",
            "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:1/postgres",
            "username": "admin", "password": "Sup3r-Secret-Root", "verify_connection": false,
            "allowed_roles": "app-*,reporting",
        ]

        @Test func configWriteValidation() async throws {
            var c = Self.offlineConfig
            c["plugin_name"] = nil
            #expect(await failure(.create, "config/pg", c)?.code == .invalidRequest)
            c["plugin_name"] = "oracle-database-plugin"
            #expect(await failure(.create, "config/pg", c)?.message.contains("unknown database plugin") == true)
            c = Self.offlineConfig
            c["connection_url"] = nil
            #expect(await failure(.create, "config/pg", c)?.message == "connection_url cannot be empty")
            c = Self.offlineConfig
            c["password_policy"] = "strict"
            #expect(await failure(.create, "config/pg", c)?.message.contains("password policy \"strict\" not found") == true)
            c = Self.offlineConfig
            c["username_template"] = "{{ .Nope }}"
            #expect(await failure(.create, "config/pg", c)?.message.contains("invalid username template") == true)
            c["username_template"] = "{{ .RoleName | truncate 0 }}"
            #expect(await failure(.create, "config/pg", c)?.code == .invalidRequest)
            c = Self.offlineConfig
            c["max_open_connections"] = -1
            #expect(await failure(.create, "config/pg", c)?.code == .invalidRequest)
            c = Self.offlineConfig
            c["root_rotation_statements"] = ["a": "b"]
            #expect(await failure(.create, "config/pg", c)?.code == .invalidRequest)
            c = Self.offlineConfig
            c["password"] = "{{password}}"
            #expect(await failure(.create, "config/pg", c)?.code == .invalidRequest)
            #expect(await failure(.create, "config/bad$name", Self.offlineConfig)?.code == .invalidRequest)
            #expect(await failure(.create, "config/-dash", Self.offlineConfig)?.code == .invalidRequest)
            // Nothing was stored by any of the refused writes.
            #expect(try await call(.list, "config/") == nil)
            #expect(try await call(.read, "config/pg") == nil)
        }

        @Test func verifyConnectionFailsWith400AndNoSecret() async throws {
            var c = Self.offlineConfig
            c["verify_connection"] = nil
            let e = await failure(.create, "config/pg", c)
            #expect(e?.code == .invalidRequest)
            #expect(e?.message.contains("error verifying connection") == true)
            #expect(e?.message.contains("Connection refused") == true)
            #expect(e?.message.contains("Sup3r-Secret-Root") == false)
            #expect(try await call(.read, "config/pg") == nil)
        }

        @Test func configReadNeverShowsPassword() async throws {
            try await call(.create, "config/pg", Self.offlineConfig)
            var withURLPassword = Self.offlineConfig
            withURLPassword["connection_url"] = "postgresql://admin:Url-Secret-9@127.0.0.1:1/postgres"
            let w = try await call(.create, "config/literal", withURLPassword)
            #expect(w?.warnings.first?.contains("Password found in connection_url") == true)

            let r = try #require(try await call(.read, "config/pg")?.data)
            #expect(r["plugin_name"] == "postgresql-database-plugin")
            #expect(r["connection_details"]?["username"] == "admin")
            #expect(r["connection_details"]?["connection_url"] == "postgresql://{{username}}:{{password}}@127.0.0.1:1/postgres")
            #expect(r["connection_details"]?["max_open_connections"] == 4)
            #expect(r["connection_details"]?["password"] == nil)
            #expect(r["allowed_roles"] == ["app-*", "reporting"])
            #expect(r["verify_connection"] == false)
            #expect(r["password_policy"] == "")
            #expect(r["root_credentials_rotate_statements"] == [])
            #expect(!JSONValue.object(r).serializedString().contains("Sup3r-Secret-Root"))

            let l = try #require(try await call(.read, "config/literal")?.data)
            #expect(l["connection_details"]?["connection_url"] == "postgresql://admin:xxxxx@127.0.0.1:1/postgres")
            #expect(!JSONValue.object(l).serializedString().contains("Url-Secret-9"))
            #expect(try await call(.list, "config")?.data?["keys"] == ["literal", "pg"])

            // An update keeps what it does not name (the password too).
            try await call(.update, "config/pg", ["allowed_roles": "*", "verify_connection": false, "max_open_connections": 2])
            let u = try #require(try await call(.read, "config/pg")?.data)
            #expect(u["allowed_roles"] == ["*"])
            #expect(u["connection_details"]?["max_open_connections"] == 2)
            #expect(u["connection_details"]?["username"] == "admin")
            let stored = try #require(try await backend.loadConfig("pg"))
            #expect(stored.password == "Sup3r-Secret-Root")

            try await call(.delete, "config/literal")
            #expect(try await call(.read, "config/literal") == nil)
        }

        static let role: [String: JSONValue] = [
            "db_name": "pg",
            "creation_statements": #"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"#,
            "default_ttl": "1h", "max_ttl": "24h",
        ]

        @Test func roleValidationAndAllowedRoles() async throws {
            #expect(await failure(.create, "roles/app-read", Self.role)?.message.contains("does not exist") == true)
            try await call(.create, "config/pg", Self.offlineConfig)
            var r = Self.role
            r["db_name"] = nil
            #expect(await failure(.create, "roles/app-read", r)?.message == "database name is required")
            r = Self.role
            r["creation_statements"] = nil
            #expect(await failure(.create, "roles/app-read", r)?.message == "creation_statements are required")
            r = Self.role
            r["credential_type"] = "rsa_private_key"
            #expect(await failure(.create, "roles/app-read", r)?.code == .invalidRequest)
            r = Self.role
            r["credential_config"] = ["password_policy": "strict"]
            #expect(await failure(.create, "roles/app-read", r)?.message.contains("credential_config is not supported") == true)
            r = Self.role
            r["default_ttl"] = "48h"
            #expect(await failure(.create, "roles/app-read", r)?.code == .invalidRequest)
            r = Self.role
            r["max_ttl"] = "soon"
            #expect(await failure(.create, "roles/app-read", r)?.code == .invalidRequest)
            #expect(await failure(.create, "roles/other", Self.role)?.message.contains("is not an allowed role") == true)

            try await call(.create, "roles/app-read", Self.role)
            try await call(.create, "roles/reporting", Self.role)
            let read = try #require(try await call(.read, "roles/app-read")?.data)
            #expect(read["db_name"] == "pg")
            #expect(read["default_ttl"] == 3600)
            #expect(read["max_ttl"] == 86400)
            #expect(read["creation_statements"]?.arrayValue?.count == 1)
            #expect(read["revocation_statements"] == [])
            #expect(read["credential_type"] == "password")
            #expect(try await call(.list, "roles/")?.data?["keys"] == ["app-read", "reporting"])

            // Updates keep unnamed fields.
            try await call(.update, "roles/app-read", ["default_ttl": 60, "revocation_statements": [#"DROP ROLE "{{name}}""#]])
            let updated = try #require(try await call(.read, "roles/app-read")?.data)
            #expect(updated["default_ttl"] == 60)
            #expect(updated["max_ttl"] == 86400)
            #expect(updated["revocation_statements"] == [#"DROP ROLE "{{name}}""#])

            // A static role cannot share a dynamic role's name, and the reverse.
            #expect(await failure(.create, "static-roles/app-read", ["db_name": "pg", "username": "x", "rotation_period": 60])?.message
                    == "Role and Static Role names must be unique")

            // creds: an unknown role, a role the connection stopped allowing, a database that is down.
            #expect(await failure(.read, "creds/nope")?.message == "unknown role: nope")
            let down = await failure(.read, "creds/app-read")
            #expect(down?.code == .unavailable)
            #expect(down?.message.contains("is unavailable") == true)
            try await call(.update, "config/pg", ["allowed_roles": "reporting", "verify_connection": false])
            #expect(await failure(.read, "creds/app-read")?.message.contains("is not an allowed role") == true)

            try await call(.delete, "roles/app-read")
            #expect(try await call(.read, "roles/app-read") == nil)
        }

        @Test func staticRoleValidation() async throws {
            try await call(.create, "config/pg", Self.offlineConfig)
            let base: [String: JSONValue] = ["db_name": "pg", "username": "app_owner", "rotation_period": "1h"]
            for bad in ["o'brien", "a\"b", "a`b", "a\\b", "a;b", "a\u{0}b", "a\nb"] {
                var r = base
                r["username"] = .string(bad)
                #expect(await failure(.create, "static-roles/app-static", r)?.message.contains("must not contain") == true)
            }
            var r = base
            r["rotation_period"] = 4
            #expect(await failure(.create, "static-roles/app-static", r)?.message == "rotation_period must be 5 seconds or more")
            r["rotation_period"] = nil
            #expect(await failure(.create, "static-roles/app-static", r)?.message == "rotation_period is required to create static accounts")
            r = base
            r["username"] = nil
            #expect(await failure(.create, "static-roles/app-static", r)?.code == .invalidRequest)
            #expect(await failure(.create, "static-roles/not-allowed", base)?.message.contains("is not an allowed role") == true)
            // Creating rotates right away: with the database down, it fails and stores nothing.
            let down = await failure(.create, "static-roles/app-static", base)
            #expect(down?.code == .unavailable)
            #expect(try await call(.read, "static-roles/app-static") == nil)
            #expect(try await call(.list, "static-roles/") == nil)
            #expect(await failure(.read, "static-creds/app-static")?.message == "unknown role: app-static")
            #expect(await failure(.update, "rotate-role/app-static")?.code == .invalidRequest)
        }

        @Test func rootRotationAndReset() async throws {
            #expect(await failure(.update, "rotate-root/pg")?.code == .invalidRequest)
            #expect(await failure(.update, "reset/pg")?.code == .invalidRequest)
            var c = Self.offlineConfig
            c["password"] = nil
            try await call(.create, "config/nopw", c)
            #expect(await failure(.update, "rotate-root/nopw")?.message.contains("no password") == true)
            var literal = Self.offlineConfig
            literal["connection_url"] = "postgresql://admin:pw@127.0.0.1:1/postgres"
            try await call(.create, "config/literal", literal)
            #expect(await failure(.update, "rotate-root/literal")?.message.contains("connection_url holds a password") == true)
            try await call(.create, "config/pg", Self.offlineConfig)
            let e = await failure(.update, "rotate-root/pg")
            #expect(e?.code == .unavailable)
            #expect(try await backend.loadConfig("pg")?.password == "Sup3r-Secret-Root")
            #expect(await failure(.update, "reset/pg")?.code == .unavailable)
        }

        @Test func leasesWithoutTheirConfiguration() async throws {
            let lease = LeaseInfo(leaseID: "database/creds/app-read/x", path: "creds/app-read",
                                  internalData: ["username": "v-token-app-read-x", "role": "app-read", "db_name": "gone", "revocation_statements": []],
                                  issueTime: Date(), expireTime: Date().addingTimeInterval(60))
            await #expect(throws: CofferError.self) { try await backend.revokeLease(lease) }
            await #expect(throws: CofferError.self) { try await backend.renewLease(lease, increment: 60) }
            var hostile = lease
            hostile.internalData["username"] = "x\"; DROP TABLE t; --"
            await #expect(throws: CofferError.self) { try await backend.revokeLease(hostile) }
        }

        @Test func leaseBoundsFollowTheMount() async throws {
            let role = DatabaseRoleRecord(dbName: "pg", creationStatements: ["x"], revocationStatements: [], rollbackStatements: [],
                                          renewStatements: [], defaultTTL: 0, maxTTL: 0, credentialType: "password")
            #expect(backend.leaseBounds(role) == (3600, 86400))
            var capped = role
            capped.defaultTTL = 7200
            capped.maxTTL = 600
            #expect(backend.leaseBounds(capped) == (600, 600))
            var big = role
            big.maxTTL = 999_999
            #expect(backend.leaseBounds(big).maxTTL == 86400)
        }

        @Test func setupAndTeardown() async throws {
            try await backend.setup()
            try await backend.setup()
            await backend.teardown()
            await backend.teardown()
        }
    }
}

// MARK: - the connection pool

/// A connection that only counts: the pool's bounds are what is under test, not a database.
final class CountingConnection: DatabaseConnection, @unchecked Sendable {
    let counters: PoolCounters
    init(_ counters: PoolCounters) { self.counters = counters }
    func execute(_ sql: String) throws {
        let now = counters.active.add(1, ordering: .relaxed).newValue
        counters.peak.withLock { $0 = max($0, now) }
        Thread.sleep(forTimeInterval: 0.02)
        counters.active.subtract(1, ordering: .relaxed)
        if sql == "break" { throw DatabaseError(kind: .unavailable, message: "server closed the connection") }
        if sql == "bad" { throw DatabaseError(kind: .statement, message: "syntax error") }
    }
    func executeInTransaction(_ statements: [String]) throws { for s in statements { try execute(s) } }
    func queryColumn(_ sql: String) throws -> [String?] { [] }
    func quoteIdentifier(_ name: String) throws -> String { "\"\(name)\"" }
    func quoteLiteral(_ value: String) throws -> String { "'\(value)'" }
    func isAlive() -> Bool { true }
    func close() { counters.closed.add(1, ordering: .relaxed) }
}

final class PoolCounters: Sendable {
    let connects = Atomic<Int>(0)
    let closed = Atomic<Int>(0)
    let active = Atomic<Int>(0)
    let peak = Mutex<Int>(0)
}

struct CountingPlugin: DatabasePlugin {
    func targets(_ settings: DatabaseConnectionSettings) throws -> [DatabaseTarget] { [.tcp(host: "db.example")] }
    let counters: PoolCounters
    var name: String { "counting" }
    var maxUsernameLength: Int { 63 }
    var defaultUsernameTemplate: String { "{{.RoleName}}" }
    var defaultRevocationStatements: [String] { [] }
    var defaultRotationStatements: [String] { [] }
    func connect(_ settings: DatabaseConnectionSettings) throws -> any DatabaseConnection {
        counters.connects.add(1, ordering: .relaxed)
        return CountingConnection(counters)
    }
}

extension DatabaseBackendTests {
    @Suite struct DatabaseConnectionPoolTests {
        let settings = DatabaseConnectionSettings(connectionURL: "x", username: "u", password: "p")

        @Test func boundsOpenConnectionsAndReusesThem() async throws {
            let counters = PoolCounters()
            let pool = DatabaseConnectionPool(plugin: CountingPlugin(counters: counters), settings: settings,
                                              limits: .init(maxOpen: 2, maxIdle: 2, maxLifetime: 0))
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<12 {
                    group.addTask { try await pool.withConnection { try $0.execute("select") } }
                }
                try await group.waitForAll()
            }
            #expect(counters.peak.withLock { $0 } <= 2)
            #expect(counters.connects.load(ordering: .relaxed) == 2)
            let stats = await pool.statistics
            #expect(stats.open == 2 && stats.idle == 2 && stats.waiting == 0)
            await pool.close()
            await #expect(throws: DatabaseError.self) { try await pool.withConnection { try $0.execute("select") } }
        }

        @Test func discardsBrokenConnections() async throws {
            let counters = PoolCounters()
            let pool = DatabaseConnectionPool(plugin: CountingPlugin(counters: counters), settings: settings,
                                              limits: .init(maxOpen: 1, maxIdle: 1, maxLifetime: 0))
            await #expect(throws: DatabaseError.self) { try await pool.withConnection { try $0.execute("bad") } }
            await #expect(throws: DatabaseError.self) { try await pool.withConnection { try $0.execute("break") } }
            try await pool.withConnection { try $0.execute("select") }
            // The statement error kept its connection; the broken one was replaced.
            #expect(counters.connects.load(ordering: .relaxed) == 2)
            #expect(await pool.statistics.open == 1)
            await pool.close()
        }

        @Test func idleLimitClosesExtras() async throws {
            let counters = PoolCounters()
            let pool = DatabaseConnectionPool(plugin: CountingPlugin(counters: counters), settings: settings,
                                              limits: .init(maxOpen: 3, maxIdle: 1, maxLifetime: 0))
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<3 { group.addTask { try await pool.withConnection { try $0.execute("select") } } }
                try await group.waitForAll()
            }
            let stats = await pool.statistics
            #expect(stats.idle <= 1)
            #expect(stats.open == stats.idle)
            await pool.close()
        }
    }
}

// MARK: - against real servers (Ops/postgres, Ops/mariadb)

/// One real server reached through Coffer's own driver, with what a test needs around the
/// backend: a root connection to look at users, and cleanup.
struct LiveDatabase: Sendable {
    let plugin: any DatabasePlugin
    let connectionURL: String
    let rootUser: String
    let rootPassword: String
    /// Statements that create a login user `{{name}}` / `{{password}}` (with `{{expiration}}` where the database has one).
    let creation: String
    /// A query answering one row per existing user whose name is LIKE `%@`.
    let userQuery: String
    /// Creates an existing login user (static roles) / one allowed to change its own password (rotate-root).
    let createUser: @Sendable (String, String) -> [String]
    let dropUser: @Sendable (String) -> [String]

    static var env: [String: String] { ProcessInfo.processInfo.environment }

    static func plugin(_ name: String) -> (any DatabasePlugin)? {
        DatabaseEngine.builtinPlugins.first { $0.name == name }
    }

    static var postgres: LiveDatabase? {
        guard let addr = env["COFFER_TEST_PG_ADDR"], let user = env["COFFER_TEST_PG_USER"], let pw = env["COFFER_TEST_PG_PASSWORD"],
              let plugin = plugin("postgresql-database-plugin") else { return nil }
        return LiveDatabase(
            plugin: plugin, connectionURL: "postgresql://{{username}}:{{password}}@\(addr)/\(env["COFFER_TEST_PG_DB"] ?? "postgres")",
            rootUser: user, rootPassword: pw,
            creation: #"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"#,
            userQuery: "SELECT rolname FROM pg_roles WHERE rolname LIKE '%@'",
            createUser: { name, pw in [#"CREATE ROLE "\#(name)" WITH LOGIN CREATEROLE PASSWORD '\#(pw)'"#] },
            dropUser: { name in [#"DROP ROLE IF EXISTS "\#(name)""#] })
    }

    static var mysql: LiveDatabase? {
        guard let addr = env["COFFER_TEST_MYSQL_ADDR"], let user = env["COFFER_TEST_MYSQL_USER"], let pw = env["COFFER_TEST_MYSQL_PASSWORD"],
              let plugin = plugin("mysql-database-plugin") else { return nil }
        return LiveDatabase(
            plugin: plugin, connectionURL: "{{username}}:{{password}}@tcp(\(addr))/",
            rootUser: user, rootPassword: pw,
            creation: "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT ON mysql.user TO '{{name}}'@'%';",
            userQuery: "SELECT User FROM mysql.user WHERE User LIKE '%@'",
            createUser: { name, pw in ["CREATE USER '\(name)'@'%' IDENTIFIED BY '\(pw)'", "GRANT ALL PRIVILEGES ON *.* TO '\(name)'@'%' WITH GRANT OPTION"] },
            dropUser: { name in ["DROP USER IF EXISTS '\(name)'@'%'"] })
    }

    var settings: DatabaseConnectionSettings {
        DatabaseConnectionSettings(connectionURL: connectionURL, username: rootUser, password: rootPassword)
    }

    /// Runs statements as the server's root user, on a database thread.
    func root(_ statements: [String]) async throws {
        let plugin = self.plugin, settings = self.settings
        try await DatabaseThreads.run {
            let c = try plugin.connect(settings)
            defer { c.close() }
            try c.executeInTransaction(statements)
        }
    }

    func userExists(_ name: String) async throws -> Bool {
        let plugin = self.plugin, settings = self.settings, sql = userQuery.replacingOccurrences(of: "%@", with: name)
        return try await DatabaseThreads.run {
            let c = try plugin.connect(settings)
            defer { c.close() }
            return try !c.queryColumn(sql).isEmpty
        }
    }

    /// Whether `user`/`password` can log in.
    func canLogin(_ user: String, _ password: String) async -> Bool {
        let plugin = self.plugin
        let s = DatabaseConnectionSettings(connectionURL: connectionURL, username: user, password: password)
        return (try? await DatabaseThreads.run {
            let c = try plugin.connect(s)
            c.close()
            return true
        }) ?? false
    }
}

/// The whole engine against a live server: dynamic users are created, usable, renewed and
/// dropped; failures leave nothing behind; static roles and the root password rotate.
struct LiveDatabaseScenario {
    let db: LiveDatabase
    let backend: DatabaseBackend

    init(_ db: LiveDatabase) async throws {
        self.db = db
        let barrier = Barrier(physical: MemoryStorage())
        barrier.install(Keyring.generate())
        backend = DatabaseBackend(config: BackendConfiguration(storage: StorageView(barrier, prefix: "db/"), mountPath: "database/",
                                                               mountType: "database", defaultLeaseTTL: 3600, maxLeaseTTL: 86400),
                                  plugins: [db.plugin])
    }

    @discardableResult
    func call(_ op: LogicalOperation, _ path: String, _ data: [String: JSONValue] = [:]) async throws -> LogicalResponse? {
        try await backend.handle(LogicalRequest(operation: op, path: path, data: data, token: RequestToken(accessor: "a", policies: ["root"], displayName: "token")))
    }

    func lease(_ r: LogicalResponse, issued: Date = Date()) throws -> LeaseInfo {
        let secret = try #require(r.secret)
        return LeaseInfo(leaseID: "database/creds/x/1", path: "creds/x", internalData: secret.internalData, issueTime: issued,
                         expireTime: issued.addingTimeInterval(TimeInterval(secret.ttl)))
    }

    func run() async throws {
        let suffix = SecretGenerator.base62(6).lowercased()
        try await call(.create, "config/live", [
            "plugin_name": .string(db.plugin.name), "connection_url": .string(db.connectionURL),
            "username": .string(db.rootUser), "password": .string(db.rootPassword), "allowed_roles": "*",
        ])
        let read = try #require(try await call(.read, "config/live")?.data)
        #expect(!JSONValue.object(read).serializedString().contains(db.rootPassword))

        // Dynamic credentials: created, usable, renewed, revoked.
        try await call(.create, "roles/dyn", ["db_name": "live", "creation_statements": .string(db.creation), "default_ttl": "5m", "max_ttl": "1h"])
        let creds = try #require(try await call(.read, "creds/dyn"))
        let user = try #require(creds.data?["username"]?.stringValue)
        let password = try #require(creds.data?["password"]?.stringValue)
        #expect(user.hasPrefix("v-token-dyn-"))
        #expect(creds.secret?.ttl == 300 && creds.secret?.maxTTL == 3600 && creds.secret?.renewable == true)
        #expect(try await db.userExists(user))
        #expect(await db.canLogin(user, password))
        let renewed = try await backend.renewLease(try lease(creds), increment: 600)
        #expect(renewed.ttl == 600)
        try await backend.revokeLease(try lease(creds))
        #expect(try await db.userExists(user) == false)
        #expect(await db.canLogin(user, password) == false)
        // Revoking again (the user is gone) succeeds with the default revocation.
        try await backend.revokeLease(try lease(creds))

        // More borrowers than connections: they wait their turn, and every one succeeds.
        try await call(.update, "config/live", ["max_open_connections": 2])
        let many = try await withThrowingTaskGroup(of: LogicalResponse.self) { group in
            for _ in 0..<8 { group.addTask { try #require(try await call(.read, "creds/dyn")) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(many.compactMap { $0.data?["username"]?.stringValue }).count == 8)
        for r in many { try await backend.revokeLease(try lease(r)) }
        #expect(try await db.userExists("v-token-dyn-%") == false)

        // A refused statement: 400 with the database's message, no lease, nobody left behind.
        try await call(.create, "roles/broken", ["db_name": "live", "creation_statements": .string(db.creation + " THIS IS NOT SQL;")])
        do {
            try await call(.read, "creds/broken")
            Issue.record("creds on a broken role succeeded")
        } catch let e as CofferError {
            #expect(e.code == .invalidRequest)
            #expect(e.message.contains("failed to create the database user"))
        }
        #expect(try await db.userExists("v-token-broken-%") == false)

        // Static role: rotated at creation, readable, rotated on demand.
        let staticUser = "coffer_static_\(suffix)"
        try await db.root(db.createUser(staticUser, "Initial-\(suffix)"))
        try await call(.create, "static-roles/st", ["db_name": "live", "username": .string(staticUser), "rotation_period": "1h"])
        #expect(await db.canLogin(staticUser, "Initial-\(suffix)") == false)
        let s1 = try #require(try await call(.read, "static-creds/st")?.data)
        let p1 = try #require(s1["password"]?.stringValue)
        #expect(await db.canLogin(staticUser, p1))
        #expect((s1["ttl"]?.intValue ?? 0) > 3500)
        try await call(.update, "rotate-role/st")
        let p2 = try #require(try await call(.read, "static-creds/st")?.data?["password"]?.stringValue)
        #expect(p2 != p1)
        #expect(await db.canLogin(staticUser, p2))
        #expect(await db.canLogin(staticUser, p1) == false)
        let srole = try #require(try await call(.read, "static-roles/st")?.data)
        #expect(!JSONValue.object(srole).serializedString().contains(p2))
        // A user that does not exist: the create fails and stores nothing.
        do {
            try await call(.create, "static-roles/ghost", ["db_name": "live", "username": .string("coffer_ghost_\(suffix)"), "rotation_period": "1h"])
            Issue.record("a static role for a missing user was created")
        } catch {}
        #expect(try await call(.read, "static-roles/ghost") == nil)

        // The schedule (the core's periodic work, driven here by hand) rotates a due static
        // role by itself, without a static-creds read.
        try await call(.update, "static-roles/st", ["rotation_period": 5])
        let before = try #require(try await backend.loadStaticRole("st"))
        var after = before
        for _ in 0..<40 where after.lastRotation == before.lastRotation {
            try await Task.sleep(for: .milliseconds(250))
            _ = await backend.periodic()
            after = try #require(try await backend.loadStaticRole("st"))
        }
        #expect(after.lastRotation > before.lastRotation)
        #expect(await db.canLogin(staticUser, after.password))
        try await call(.update, "static-roles/st", ["rotation_period": "1h"])

        // Root rotation on a dedicated admin (never the shared root user).
        let admin = "coffer_admin_\(suffix)"
        try await db.root(db.createUser(admin, "Admin-\(suffix)-pw"))
        try await call(.create, "config/rot", [
            "plugin_name": .string(db.plugin.name), "connection_url": .string(db.connectionURL),
            "username": .string(admin), "password": .string("Admin-\(suffix)-pw"), "allowed_roles": "*",
        ])
        try await call(.update, "rotate-root/rot")
        #expect(await db.canLogin(admin, "Admin-\(suffix)-pw") == false)
        let stored = try #require(try await backend.loadConfig("rot"))
        #expect(await db.canLogin(admin, stored.password))
        try await call(.update, "reset/rot")

        await backend.teardown()
        try await db.root(db.dropUser(staticUser))
        try await db.root(db.dropUser(admin))
    }
}

extension DatabaseBackendTests {
    @Suite(.enabled(if: LiveDatabase.postgres != nil, "set COFFER_TEST_PG_* (Ops/postgres) and build the PostgreSQL driver"))
    struct PostgreSQLDatabaseEngineTests {
        @Test func endToEnd() async throws {
            try await LiveDatabaseScenario(try #require(LiveDatabase.postgres)).run()
        }
    }
}

extension DatabaseBackendTests {
    @Suite(.enabled(if: LiveDatabase.mysql != nil, "set COFFER_TEST_MYSQL_* (Ops/mariadb) and build the MySQL driver"))
    struct MySQLDatabaseEngineTests {
        @Test func endToEnd() async throws {
            try await LiveDatabaseScenario(try #require(LiveDatabase.mysql)).run()
        }
    }
}
