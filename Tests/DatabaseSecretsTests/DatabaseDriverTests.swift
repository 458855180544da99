@testable import DatabaseSecrets
import Foundation
import Testing

/// The PostgreSQL and MySQL drivers on their own: connection-string parsing and secret
/// scrubbing offline, then the drivers against real servers when `Ops/postgres` /
/// `Ops/mariadb` have exported `COFFER_TEST_PG_*` / `COFFER_TEST_MYSQL_*`.
@Suite struct DatabaseDriverTests {
    /// The error `body` throws as a `DatabaseError` (nil when it succeeds or throws something else).
    static func driverError(_ body: () throws -> Void) -> DatabaseError? {
        do {
            try body()
            return nil
        } catch {
            return error as? DatabaseError
        }
    }

    static func suffix() -> String { String(UInt32.random(in: 0...UInt32.max), radix: 36) }

    /// A loopback port where nothing listens (tcpmux, never served on a test machine).
    static let closedPort = 1

    // MARK: offline

    @Suite struct Parsing {
        func pgParams(_ url: String, user: String = "u", password: String = "p") throws -> [String: String] {
            let params = try PostgreSQLConnection.connectionParameters(
                DatabaseConnectionSettings(connectionURL: url, username: user, password: password, timeout: 7))
            return Dictionary(params.map { ($0.key, $0.value) }, uniquingKeysWith: { $1 })
        }

        @Test func postgresURLTakesRawCredentials() throws {
            let user = "we\"ird user", password = "p@ss:w/rd?&='\\ x%41"
            let p = try pgParams("postgresql://{{username}}:{{password}}@db.example:6543/app?sslmode=disable", user: user, password: password)
            #expect(p["user"] == user)
            #expect(p["password"] == password)
            #expect(p["host"] == "db.example")
            #expect(p["port"] == "6543")
            #expect(p["dbname"] == "app")
            #expect(p["sslmode"] == "disable")
            #expect(p["connect_timeout"] == "7")
            #expect(p["client_encoding"] == "UTF8")
        }

        @Test func postgresKeyValueForms() throws {
            let password = "it's a \\ secret"
            let bare = try pgParams("host=127.0.0.1 port=5432 user={{username}} password={{password}} connect_timeout=3", password: password)
            #expect(bare["password"] == password)
            #expect(bare["user"] == "u")
            #expect(bare["connect_timeout"] == "3")
            let quoted = try pgParams("host=127.0.0.1 user='{{username}}' password='{{password}}'", password: password)
            #expect(quoted["password"] == password)
        }

        @Test func postgresBadStringIsAConfigurationError() {
            let e = DatabaseDriverTests.driverError { _ = try pgParams("host=127.0.0.1 password=hunter2secret nonsense") }
            #expect(e?.kind == .configuration)
            let empty = DatabaseDriverTests.driverError { _ = try pgParams("  ") }
            #expect(empty?.kind == .configuration)
        }

        func mysql(_ url: String, user: String = "u", password: String = "p") throws -> MySQLConnectionTarget {
            try MySQLConnectionTarget.parse(DatabaseConnectionSettings(connectionURL: url, username: user, password: password))
        }

        @Test func mysqlGoDSN() throws {
            let password = "p@ss:w/rd)(?"
            let t = try mysql("{{username}}:{{password}}@tcp(db.example:3307)/app?tls=skip-verify&parseTime=true", user: "v-x`y", password: password)
            #expect(t == MySQLConnectionTarget(user: "v-x`y", password: password, host: "db.example", port: 3307, socket: nil, database: "app", tls: .skipVerify))
            let bare = try mysql("root:literal@tcp(127.0.0.1)/")
            #expect(bare.user == "root" && bare.password == "literal" && bare.port == 3306 && bare.database == "")
            let v6 = try mysql("{{username}}:{{password}}@tcp([::1]:3308)/")
            #expect(v6.host == "::1" && v6.port == 3308)
            let unix = try mysql("{{username}}:{{password}}@unix(/run/mysqld/mysqld.sock)/db")
            #expect(unix.socket == "/run/mysqld/mysqld.sock" && unix.host == nil && unix.database == "db")
            let noCredentials = try mysql("/")
            #expect(noCredentials.host == "127.0.0.1" && noCredentials.user == "")
        }

        @Test func mysqlURL() throws {
            let t = try mysql("mysql://{{username}}:{{password}}@db.example:3310/app%20x?tls=true", password: "a@b/c")
            #expect(t == MySQLConnectionTarget(user: "u", password: "a@b/c", host: "db.example", port: 3310, socket: nil, database: "app x", tls: .verify))
            let encoded = try mysql("mysql://us%40er:p%2Fw@localhost/")
            #expect(encoded.user == "us@er" && encoded.password == "p/w" && encoded.host == "localhost" && encoded.port == 3306)
        }

        @Test(arguments: ["user:pw@tcp(127.0.0.1:3306)", "user:pw@tcp(127.0.0.1:99999)/", "user:pw@udp(x)/", "u@tcp(h:1)/?tls=custom", ""])
        func mysqlBadDSNIsAConfigurationError(_ url: String) {
            #expect(DatabaseDriverTests.driverError { _ = try mysql(url) }?.kind == .configuration)
        }

        @Test func literalsAreFound() {
            let pg = SQLText.stringLiterals(
                in: #"CREATE ROLE "it's" PASSWORD 'sec''ret' -- 'comment'"# + "\n" + #"VALID UNTIL E'a\'b' $x$dollar;body$x$"#,
                dialect: .postgreSQL)
            #expect(pg == ["sec''ret", "sec'ret", #"a\'b"#, "a'b", "dollar;body"])
            let my = SQLText.stringLiterals(in: #"CREATE USER `it's`@'%' IDENTIFIED BY "do\"ub" /* 'no' */ AND 'x'"#, dialect: .mySQL)
            #expect(my == ["%", #"do\"ub"#, "do\"ub", "x"])
        }

        @Test func scrubRemovesSecretsAndLiterals() {
            let s = DriverSecrets(["pa ss/word"])
            #expect(s.scrub("  failed for pa ss/word and pa%20ss%2Fword near 'top-secret'  ", literals: ["top-secret", "ab"])
                == "failed for [password] and [password] near '[redacted]'")
        }

        /// #26 (low): a short password is scrubbed where a connection string holds it, not
        /// letter by letter through the whole message.
        @Test func scrubOfAShortPasswordKeepsTheMessageReadable() {
            let s = DriverSecrets(["p"])
            #expect(s.scrub("connection to server at \"127.0.0.1\", port 1 failed: Is the server accepting TCP/IP?")
                == "connection to server at \"127.0.0.1\", port 1 failed: Is the server accepting TCP/IP?")
            #expect(s.scrub("bad url postgresql://u:p@127.0.0.1/db") == "bad url postgresql://u:[password]@127.0.0.1/db")
            #expect(s.scrub("conninfo host=x password=p user=u") == "conninfo host=x password=[password] user=u")
            #expect(s.scrub("conninfo password='p'") == "conninfo password='[password]'")
        }
    }

    // MARK: PostgreSQL

    struct PostgreSQLServer {
        let addr: String, user: String, password: String, database: String

        static var fromEnvironment: PostgreSQLServer? {
            let env = ProcessInfo.processInfo.environment
            guard let addr = env["COFFER_TEST_PG_ADDR"], let user = env["COFFER_TEST_PG_USER"],
                  let password = env["COFFER_TEST_PG_PASSWORD"] else { return nil }
            return PostgreSQLServer(addr: addr, user: user, password: password, database: env["COFFER_TEST_PG_DB"] ?? "postgres")
        }

        func settings(_ user: String, _ password: String) -> DatabaseConnectionSettings {
            DatabaseConnectionSettings(
                connectionURL: "postgresql://{{username}}:{{password}}@\(addr)/\(database)?sslmode=disable",
                username: user, password: password, timeout: 5)
        }

        func root() throws -> any DatabaseConnection { try PostgreSQLPlugin().connect(settings(user, password)) }
    }

    @Suite(.enabled(if: PostgreSQLServer.fromEnvironment != nil, "set COFFER_TEST_PG_* (Ops/postgres start DIR)"))
    struct PostgreSQL {
        let server = PostgreSQLServer.fromEnvironment!
        let plugin = PostgreSQLPlugin()

        func roleExists(_ root: any DatabaseConnection, _ name: String) throws -> Bool {
            try !root.queryColumn("SELECT rolname FROM pg_roles WHERE rolname = \(root.quoteLiteral(name))").isEmpty
        }

        @Test func quotedRoleLogsInAndWrongPasswordFails() throws {
            let root = try server.root()
            defer { root.close() }
            let name = "coffer \"q\" 'role' \(DatabaseDriverTests.suffix())"
            let password = "it's a \\ secret \(DatabaseDriverTests.suffix())"
            try root.execute("CREATE ROLE \(root.quoteIdentifier(name)) LOGIN PASSWORD \(root.quoteLiteral(password))")
            defer { try? root.execute("DROP ROLE IF EXISTS \(root.quoteIdentifier(name))") }

            let user = try plugin.connect(server.settings(name, password))
            #expect(try user.queryColumn("SELECT current_user") == [name])
            #expect(user.isAlive())
            user.close()
            #expect(!user.isAlive())
            #expect(DatabaseDriverTests.driverError { try user.execute("SELECT 1") }?.kind == .unavailable)

            // The key=value form reaches the same server.
            let host = server.addr.split(separator: ":")
            let conninfo = DatabaseConnectionSettings(
                connectionURL: "host=\(host[0]) port=\(host[1]) dbname=\(server.database) user={{username}} password={{password}} sslmode=disable",
                username: name, password: password, timeout: 5)
            let second = try plugin.connect(conninfo)
            #expect(try second.queryColumn("SELECT session_user") == [name])
            second.close()

            let wrong = "wrong-\(password)"
            let e = DatabaseDriverTests.driverError { _ = try plugin.connect(server.settings(name, wrong)) }
            #expect(e?.kind == .unavailable)
            #expect(e?.message.contains("password authentication failed") == true)
            #expect(e?.message.contains(wrong) == false)

            try root.execute("DROP ROLE \(root.quoteIdentifier(name))")
            #expect(try !roleExists(root, name))
            #expect(DatabaseDriverTests.driverError { _ = try plugin.connect(server.settings(name, password)) }?.kind == .unavailable)
        }

        @Test func statementErrorsCarryTheServerMessageWithoutSecrets() throws {
            let root = try server.root()
            defer { root.close() }
            let syntax = DatabaseDriverTests.driverError { try root.execute("SELEC 1") }
            #expect(syntax?.kind == .statement)
            #expect(syntax?.message.contains(#"syntax error at or near "SELEC""#) == true)

            let secret = "hunter2-\(DatabaseDriverTests.suffix())"
            for sql in [
                "CREATE ROLE x WITH LOGIN PASSWORD '\(secret)' BOGUS",
                "CREATE ROLE x WITH LOGIN PASSWORD BOGUS '\(secret)'",
                "SELECT '\(secret)'::int",
                "SELECT 1 FROM no_such_table WHERE secret = '\(secret)'",
            ] {
                let e = DatabaseDriverTests.driverError { try root.executeInTransaction([sql]) }
                #expect(e?.kind == .statement, "\(sql)")
                #expect(e?.message.isEmpty == false)
                #expect(e?.message.contains(secret) == false, "\(e?.message ?? "")")
                #expect(e?.message.contains(server.password) == false)
            }
            #expect(root.isAlive())
        }

        @Test func transactionFailureRollsBack() throws {
            let root = try server.root()
            defer { root.close() }
            let name = "coffer-tx-\(DatabaseDriverTests.suffix())"
            let e = DatabaseDriverTests.driverError {
                try root.executeInTransaction(["CREATE ROLE \(try root.quoteIdentifier(name))", "SELECT * FROM no_such_table"])
            }
            #expect(e?.kind == .statement)
            #expect(e?.message.contains("no_such_table") == true)
            #expect(try !roleExists(root, name))

            try root.executeInTransaction(["CREATE ROLE \(try root.quoteIdentifier(name))", "SELECT 1"])
            #expect(try roleExists(root, name))
            try root.execute("DROP ROLE \(root.quoteIdentifier(name))")
        }

        @Test func defaultRevocationAndRotation() throws {
            let root = try server.root()
            defer { root.close() }
            let name = "v-token-role-\(DatabaseDriverTests.suffix())"
            let schema = "coffer_s_\(DatabaseDriverTests.suffix())"
            func expand(_ statements: [String], _ values: [String: String]) -> [String] {
                statements.map { s in values.reduce(s) { $0.replacingOccurrences(of: "{{\($1.key)}}", with: $1.value) } }
            }
            try root.executeInTransaction([
                "CREATE ROLE \(try root.quoteIdentifier(name)) LOGIN PASSWORD 'first-password'",
                "CREATE SCHEMA \(schema)",
                "CREATE TABLE \(schema).t (x int)",
                "CREATE SEQUENCE \(schema).s",
                "GRANT USAGE ON SCHEMA \(schema) TO \(try root.quoteIdentifier(name))",
                "GRANT SELECT ON ALL TABLES IN SCHEMA \(schema) TO \(try root.quoteIdentifier(name))",
                "GRANT USAGE ON ALL SEQUENCES IN SCHEMA \(schema) TO \(try root.quoteIdentifier(name))",
                "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \(try root.quoteIdentifier(name))",
            ])
            defer { try? root.execute("DROP SCHEMA IF EXISTS \(schema) CASCADE") }

            try root.executeInTransaction(expand(plugin.defaultRotationStatements, ["name": name, "password": "second-password"]))
            let user = try plugin.connect(server.settings(name, "second-password"))
            #expect(try user.queryColumn("SELECT count(*) FROM \(schema).t") == ["0"])
            user.close()

            // Without the revocation, the grants keep the role from being dropped.
            #expect(DatabaseDriverTests.driverError { try root.execute("DROP ROLE \(root.quoteIdentifier(name))") }?.kind == .statement)
            try root.executeInTransaction(expand(plugin.defaultRevocationStatements, ["name": name]))
            #expect(try !roleExists(root, name))
            // A role that is already gone revokes without error.
            try root.executeInTransaction(expand(plugin.defaultRevocationStatements, ["name": name]))
        }

        @Test func quotingAndQueries() throws {
            let root = try server.root()
            defer { root.close() }
            #expect(try root.quoteIdentifier(#"a"b"#) == #""a""b""#)
            #expect(try root.quoteLiteral("it's") == "'it''s'")
            let tricky = #"it's a "quote" \ and ; -- not a comment"#
            #expect(try root.queryColumn("SELECT \(root.quoteLiteral(tricky)) AS \(root.quoteIdentifier(tricky))") == [tricky])
            #expect(try root.queryColumn("SELECT NULL UNION ALL SELECT 'x'") == [nil, "x"])
            #expect(try root.queryColumn("SELECT 1 WHERE false") == [])
            #expect(DatabaseDriverTests.driverError { _ = try root.quoteLiteral("nul\u{0}byte") }?.kind == .statement)
        }

        @Test func unreachableServerIsUnavailable() {
            let port = DatabaseDriverTests.closedPort
            let s = DatabaseConnectionSettings(
                connectionURL: "postgresql://{{username}}:{{password}}@127.0.0.1:\(port)/postgres?sslmode=disable",
                username: "u", password: "topsecret-password", timeout: 2)
            let e = DatabaseDriverTests.driverError { _ = try plugin.connect(s) }
            #expect(e?.kind == .unavailable)
            #expect(e?.message.contains("topsecret-password") == false)
        }
    }

    // MARK: MySQL / MariaDB

    struct MySQLServer {
        let addr: String, user: String, password: String

        static var fromEnvironment: MySQLServer? {
            let env = ProcessInfo.processInfo.environment
            guard let addr = env["COFFER_TEST_MYSQL_ADDR"], let user = env["COFFER_TEST_MYSQL_USER"],
                  let password = env["COFFER_TEST_MYSQL_PASSWORD"] else { return nil }
            return MySQLServer(addr: addr, user: user, password: password)
        }

        func settings(_ user: String, _ password: String, database: String = "") -> DatabaseConnectionSettings {
            DatabaseConnectionSettings(connectionURL: "{{username}}:{{password}}@tcp(\(addr))/\(database)", username: user, password: password, timeout: 5)
        }

        func root() throws -> any DatabaseConnection { try MySQLPlugin().connect(settings(user, password)) }
    }

    @Suite(.enabled(if: MySQLServer.fromEnvironment != nil, "set COFFER_TEST_MYSQL_* (Ops/mariadb start DIR)"))
    struct MySQL {
        let server = MySQLServer.fromEnvironment!
        let plugin = MySQLPlugin()

        func userExists(_ root: any DatabaseConnection, _ name: String) throws -> Bool {
            try !root.queryColumn("SELECT User FROM mysql.user WHERE User = \(root.quoteLiteral(name))").isEmpty
        }

        @Test func quotedUserLogsInAndWrongPasswordFails() throws {
            let root = try server.root()
            defer { root.close() }
            let name = "c`q\"u'@:\(DatabaseDriverTests.suffix())"
            let password = "it's a \\ secret@/:\(DatabaseDriverTests.suffix())"
            try root.execute("CREATE USER \(root.quoteIdentifier(name))@'%' IDENTIFIED BY \(root.quoteLiteral(password))")
            defer { try? root.execute("DROP USER IF EXISTS \(root.quoteIdentifier(name))@'%'") }

            let user = try plugin.connect(server.settings(name, password))
            #expect(try user.queryColumn("SELECT CURRENT_USER()") == ["\(name)@%"])
            #expect(user.isAlive())
            user.close()
            #expect(!user.isAlive())

            // The URL form, with the credentials percent-encoded by hand.
            let url = DatabaseConnectionSettings(
                connectionURL: "mysql://\(name.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!):\(password.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)@\(server.addr)/",
                username: "", password: "", timeout: 5)
            let second = try plugin.connect(url)
            #expect(try second.queryColumn("SELECT CURRENT_USER()") == ["\(name)@%"])
            second.close()

            let wrong = "wrong-\(password)"
            let e = DatabaseDriverTests.driverError { _ = try plugin.connect(server.settings(name, wrong)) }
            #expect(e?.kind == .unavailable)
            #expect(e?.message.contains("Access denied") == true)
            #expect(e?.message.contains(wrong) == false)

            try root.execute("DROP USER \(root.quoteIdentifier(name))@'%'")
            #expect(try !userExists(root, name))
            #expect(DatabaseDriverTests.driverError { _ = try plugin.connect(server.settings(name, password)) }?.kind == .unavailable)
        }

        @Test func statementErrorsCarryTheServerMessageWithoutSecrets() throws {
            let root = try server.root()
            defer { root.close() }
            let syntax = DatabaseDriverTests.driverError { try root.execute("SELEC 1") }
            #expect(syntax?.kind == .statement)
            #expect(syntax?.message.contains("You have an error in your SQL syntax") == true)
            #expect(syntax?.message.contains("near 'SELEC 1'") == true)

            let secret = "hunter2-\(DatabaseDriverTests.suffix())"
            for sql in [
                "CREATE USER 'x'@'%' IDENTIFIED BY '\(secret)' BOGUS",
                "CREATE USER 'x'@'%' IDENTIFIED BOGUS '\(secret)'",
                "CREATE USER 'x'@'%' IDENTIFIED BY BOGUS 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\(secret)'",
                "SELECT * FROM no_such_table WHERE secret = '\(secret)'",
            ] {
                let e = DatabaseDriverTests.driverError { try root.executeInTransaction([sql]) }
                #expect(e?.kind == .statement, "\(sql)")
                #expect(e?.message.isEmpty == false)
                #expect(e?.message.contains(secret) == false, "\(e?.message ?? "")")
                #expect(e?.message.contains("hunter2") == false, "\(e?.message ?? "")")
                #expect(e?.message.contains(server.password) == false)
            }
            #expect(root.isAlive())
        }

        @Test func transactionFailureRollsBack() throws {
            let root = try server.root()
            defer { root.close() }
            let db = "coffer_tx_\(DatabaseDriverTests.suffix())"
            try root.execute("CREATE DATABASE \(root.quoteIdentifier(db))")
            defer { try? root.execute("DROP DATABASE IF EXISTS \(root.quoteIdentifier(db))") }
            try root.execute("CREATE TABLE \(root.quoteIdentifier(db)).t (x INT) ENGINE=InnoDB")
            let e = DatabaseDriverTests.driverError {
                try root.executeInTransaction([
                    "INSERT INTO \(try root.quoteIdentifier(db)).t VALUES (1)",
                    "INSERT INTO \(try root.quoteIdentifier(db)).no_such_table VALUES (1)",
                ])
            }
            #expect(e?.kind == .statement)
            #expect(e?.message.contains("no_such_table") == true)
            #expect(try root.queryColumn("SELECT COUNT(*) FROM \(root.quoteIdentifier(db)).t") == ["0"])
            try root.executeInTransaction(["INSERT INTO \(try root.quoteIdentifier(db)).t VALUES (2)"])
            #expect(try root.queryColumn("SELECT x FROM \(root.quoteIdentifier(db)).t") == ["2"])
        }

        @Test func defaultRevocationAndRotation() throws {
            let root = try server.root()
            defer { root.close() }
            let name = "v-tok-role-\(DatabaseDriverTests.suffix())"
            func expand(_ statements: [String], _ values: [String: String]) -> [String] {
                statements.map { s in values.reduce(s) { $0.replacingOccurrences(of: "{{\($1.key)}}", with: $1.value) } }
            }
            try root.executeInTransaction([
                "CREATE USER '\(name)'@'%' IDENTIFIED BY 'first-password'",
                "GRANT SELECT ON mysql.* TO '\(name)'@'%'",
            ])
            try root.executeInTransaction(expand(plugin.defaultRotationStatements, ["name": name, "password": "second-password"]))
            let user = try plugin.connect(server.settings(name, "second-password"))
            #expect(try user.queryColumn("SELECT CURRENT_USER()") == ["\(name)@%"])
            user.close()
            #expect(DatabaseDriverTests.driverError { _ = try plugin.connect(server.settings(name, "first-password")) }?.kind == .unavailable)

            try root.executeInTransaction(expand(plugin.defaultRevocationStatements, ["name": name]))
            #expect(try !userExists(root, name))
            try root.executeInTransaction(expand(plugin.defaultRevocationStatements, ["name": name]))
        }

        @Test func quotingAndQueries() throws {
            let root = try server.root()
            defer { root.close() }
            #expect(try root.quoteIdentifier("a`b") == "`a``b`")
            #expect(try root.quoteLiteral("it's") == #"'it\'s'"#)
            #expect(try root.quoteLiteral("") == "''")
            let tricky = "it's a \"quote\" \\ and ; -- not a comment `tick` \u{0}nul ünï"
            #expect(try root.queryColumn("SELECT \(root.quoteLiteral(tricky))") == [tricky])
            #expect(try root.queryColumn("SELECT 1 AS \(root.quoteIdentifier("we`ird\"name"))") == ["1"])
            #expect(try root.queryColumn("SELECT NULL UNION ALL SELECT 'x'") == [nil, "x"])
            #expect(try root.queryColumn("SELECT 1 FROM DUAL WHERE 1 = 0") == [])
            #expect(try root.queryColumn("DO 1") == [])
        }

        @Test func unreachableServerIsUnavailable() {
            let port = DatabaseDriverTests.closedPort
            let s = DatabaseConnectionSettings(connectionURL: "{{username}}:{{password}}@tcp(127.0.0.1:\(port))/",
                                               username: "u", password: "topsecret-password", timeout: 2)
            let e = DatabaseDriverTests.driverError { _ = try plugin.connect(s) }
            #expect(e?.kind == .unavailable)
            #expect(e?.message.contains("topsecret-password") == false)
        }
    }
}
