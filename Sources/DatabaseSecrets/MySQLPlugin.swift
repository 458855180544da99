import CMariaDB
import Foundation
import Synchronization

/// Vault's `mysql-database-plugin` (MySQL and MariaDB), on MariaDB Connector/C.
///
/// `connection_url` is Vault's Go DSN (`{{username}}:{{password}}@tcp(127.0.0.1:3306)/db`,
/// also `unix(/path/mysqld.sock)`) or a URL (`mysql://user:pass@host:3306/db`). The only
/// query parameter read is `tls` (`true`, `skip-verify`, `false`); others are ignored.
/// The connection always uses utf8mb4, never `LOAD DATA LOCAL`.
struct MySQLPlugin: DatabasePlugin {
    let name = "mysql-database-plugin"
    let maxUsernameLength = 32
    /// Vault's `mysql.DefaultUserNameTemplate`, which `mysql-database-plugin` uses.
    let defaultUsernameTemplate =
        #"{{ printf "v-%s-%s-%s-%s" (.DisplayName | truncate 10) (.RoleName | truncate 10) (random 20) (unix_time) | truncate 32 }}"#
    /// `DROP USER` also removes the user's privileges; `IF EXISTS` makes a repeated
    /// revocation succeed.
    let defaultRevocationStatements = ["DROP USER IF EXISTS '{{name}}'@'%'"]
    let defaultRotationStatements = ["ALTER USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'"]

    func connect(_ settings: DatabaseConnectionSettings) throws -> any DatabaseConnection {
        try MySQLConnection(settings)
    }

    func targets(_ settings: DatabaseConnectionSettings) throws -> [DatabaseTarget] {
        let target = try MySQLConnectionTarget.parse(settings)
        if let host = target.host {
            // libmariadb reaches "localhost" through its unix socket.
            return host.lowercased() == "localhost" ? [.unixSocket(path: target.socket ?? ""), .tcp(host: host)] : [.tcp(host: host)]
        }
        return [.unixSocket(path: target.socket ?? "")]
    }
}

/// Where a MySQL connection goes, parsed from `connection_url` with the placeholders
/// filled in.
struct MySQLConnectionTarget: Equatable {
    enum TLS: Equatable {
        case off
        /// TLS required and the server certificate verified (`tls=true`).
        case verify
        /// TLS required, any certificate accepted (`tls=skip-verify`).
        case skipVerify
    }

    var user = ""
    var password = ""
    /// The TCP host (`socket` nil) or nil for a unix socket.
    var host: String? = "127.0.0.1"
    var port: UInt32 = 3306
    var socket: String?
    var database = ""
    var tls = TLS.off

    /// Parses Vault's Go DSN `[user[:password]@][net[(addr)]]/dbname[?params]` or a
    /// `mysql://user:password@host:port/dbname?params` URL. `{{username}}` and
    /// `{{password}}` are replaced by random tokens first and by the real values after
    /// parsing, so neither value needs escaping (a password may hold `@`, `/` or `:`).
    static func parse(_ settings: DatabaseConnectionSettings) throws -> MySQLConnectionTarget {
        let url = settings.connectionURL.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !url.isEmpty else { throw configuration("connection_url is empty") }
        let userToken = "cofferuser" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let passwordToken = "cofferpassword" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let text = url.replacingOccurrences(of: "{{username}}", with: userToken)
            .replacingOccurrences(of: "{{password}}", with: passwordToken)
        func fill(_ s: String) -> String {
            s.replacingOccurrences(of: userToken, with: settings.username)
                .replacingOccurrences(of: passwordToken, with: settings.password)
        }

        var target = MySQLConnectionTarget()
        var query = ""
        if let scheme = ["mysql://", "mariadb://"].first(where: { text.lowercased().hasPrefix($0) }) {
            var rest = Substring(text.dropFirst(scheme.count))
            if let q = rest.firstIndex(of: "?") {
                query = String(rest[rest.index(after: q)...])
                rest = rest[..<q]
            }
            let at = rest.lastIndex(of: "@")
            let hostStart = at.map { rest.index(after: $0) } ?? rest.startIndex
            let slash = rest[hostStart...].firstIndex(of: "/") ?? rest.endIndex
            if let at {
                let info = rest[..<at]
                let colon = info.firstIndex(of: ":")
                target.user = try decode(info[..<(colon ?? info.endIndex)], "user name")
                if let colon { target.password = try decode(info[info.index(after: colon)...], "password") }
            }
            try target.setTCPAddress(String(rest[hostStart..<slash]))
            if slash < rest.endIndex { target.database = try decode(rest[rest.index(after: slash)...], "database name") }
        } else {
            guard let slash = text.lastIndex(of: "/") else {
                throw configuration("invalid connection_url: missing the slash before the database name (user:password@tcp(host:port)/dbname)")
            }
            var db = text[text.index(after: slash)...]
            if let q = db.firstIndex(of: "?") {
                query = String(db[db.index(after: q)...])
                db = db[..<q]
            }
            target.database = try decode(db, "database name")
            let prefix = text[..<slash]
            var address = prefix
            if let at = prefix.lastIndex(of: "@") {
                let info = prefix[..<at]
                if let colon = info.firstIndex(of: ":") {
                    target.user = String(info[..<colon])
                    target.password = String(info[info.index(after: colon)...])
                } else {
                    target.user = String(info)
                }
                address = prefix[prefix.index(after: at)...]
            }
            var net = String(address)
            var addr = ""
            if let open = address.firstIndex(of: "(") {
                guard address.last == ")" else { throw configuration("invalid connection_url: the network address must be closed by ')'") }
                net = String(address[..<open])
                addr = String(address[address.index(after: open)..<address.index(before: address.endIndex)])
            }
            switch net {
            case "", "tcp":
                try target.setTCPAddress(addr)
            case "unix":
                target.host = nil
                target.socket = addr.isEmpty ? "/tmp/mysql.sock" : addr
            default:
                throw configuration("invalid connection_url: unsupported network \"\(net)\" (use tcp or unix)")
            }
        }
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1)
            let key = String(kv[0])
            let value = kv.count > 1 ? (String(kv[1]).removingPercentEncoding ?? String(kv[1])) : ""
            guard key == "tls" else { continue }
            switch value.lowercased() {
            case "true": target.tls = .verify
            case "skip-verify": target.tls = .skipVerify
            case "false", "": target.tls = .off
            default: throw configuration("invalid connection_url: tls=\(value) is not supported (use true, skip-verify or false)")
            }
        }
        target.user = fill(target.user)
        target.password = fill(target.password)
        return target
    }

    /// `host`, `host:port`, `[ipv6]` or `[ipv6]:port`; empty means 127.0.0.1:3306.
    private mutating func setTCPAddress(_ addr: String) throws {
        host = "127.0.0.1"
        port = 3306
        socket = nil
        guard !addr.isEmpty else { return }
        var h = Substring(addr)
        var p: Substring?
        if h.hasPrefix("[") {
            guard let close = h.firstIndex(of: "]") else { throw Self.configuration("invalid connection_url: unclosed '[' in \"\(addr)\"") }
            let after = h[h.index(after: close)...]
            if after.hasPrefix(":") { p = after.dropFirst() } else if !after.isEmpty {
                throw Self.configuration("invalid connection_url: bad address \"\(addr)\"")
            }
            h = h[h.index(after: h.startIndex)..<close]
        } else if let colon = h.lastIndex(of: ":") {
            p = h[h.index(after: colon)...]
            h = h[..<colon]
        }
        if let p {
            guard let n = UInt32(p), (1...65535).contains(n) else {
                throw Self.configuration("invalid connection_url: bad port \"\(p)\"")
            }
            port = n
        }
        if !h.isEmpty { host = String(h) }
    }

    private static func decode(_ s: Substring, _ what: String) throws -> String {
        guard let d = String(s).removingPercentEncoding else {
            throw configuration("invalid connection_url: bad percent-encoding in the \(what)")
        }
        return d
    }

    private static func configuration(_ message: String) -> DatabaseError {
        DatabaseError(kind: .configuration, message: message)
    }
}

/// Process-wide setup of MariaDB Connector/C.
///
/// `mysql_library_init` is not thread-safe and `mysql_init` calls it when nobody has, so
/// it runs here exactly once (Swift initialises a static `let` once, thread-safely) before
/// the first connection. `mysql_thread_init`/`mysql_thread_end` are deprecated no-ops in
/// Connector/C 3.x (Debian 12's libmariadb.so.3 compiles them to `return 0` / `return`):
/// the library keeps no per-thread state, so a connection may move between threads as long
/// as one thread uses it at a time. They are not called: with Oracle's libmysqlclient each
/// `mysql_thread_init` needs a `mysql_thread_end` on that thread before it exits, which a
/// shared thread pool cannot arrange.
enum MySQLClientLibrary {
    static let initialized: Bool = coffer_mysql_library_init() == 0
}

/// One Connector/C connection (`MYSQL *`).
///
/// The mutex keeps one thread at a time on the handle (Connector/C handles are not safe for
/// concurrent use). Connect, read and write timeouts bound every call; a statement that
/// outlives the read timeout fails with "lost connection" (`.unavailable`).
final class MySQLConnection: DatabaseConnection, Sendable {
    /// A `MYSQL *`. Unchecked: a C pointer is not Sendable, and Connector/C allows a
    /// connection to move between threads as long as one thread uses it at a time, which
    /// holding it only inside the mutex below guarantees.
    private struct Handle: @unchecked Sendable {
        let pointer: UnsafeMutablePointer<MYSQL>
    }

    /// The connection; nil once closed.
    private let handle: Mutex<Handle?>
    private let secrets: DriverSecrets

    init(_ settings: DatabaseConnectionSettings) throws {
        guard MySQLClientLibrary.initialized else {
            throw DatabaseError(kind: .unavailable, message: "the MariaDB client library could not be initialised")
        }
        let target = try MySQLConnectionTarget.parse(settings)
        let secrets = DriverSecrets([settings.password, target.password])
        guard let m = mysql_init(nil) else {
            throw DatabaseError(kind: .unavailable, message: "the MariaDB client library could not allocate a connection")
        }
        let timeout = UInt32(clamping: max(settings.timeout, 1))
        var failed = false
        for option in [MYSQL_OPT_CONNECT_TIMEOUT, MYSQL_OPT_READ_TIMEOUT, MYSQL_OPT_WRITE_TIMEOUT] {
            failed = failed || coffer_mysql_set_uint_option(m, option, timeout) != 0
        }
        // A server may ask the client to upload a local file (LOAD DATA LOCAL): never.
        failed = failed || coffer_mysql_set_uint_option(m, MYSQL_OPT_LOCAL_INFILE, 0) != 0
        let protocolType = target.socket == nil ? MYSQL_PROTOCOL_TCP : MYSQL_PROTOCOL_SOCKET
        failed = failed || coffer_mysql_set_uint_option(m, MYSQL_OPT_PROTOCOL, protocolType.rawValue) != 0
        // utf8mb4 also makes doubling backticks a sound identifier escape (see quoteIdentifier).
        failed = failed || mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4") != 0
        if target.tls != .off {
            failed = failed || coffer_mysql_set_bool_option(m, MYSQL_OPT_SSL_ENFORCE, 1) != 0
            failed = failed || coffer_mysql_set_bool_option(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, target.tls == .verify ? 1 : 0) != 0
        }
        guard !failed else {
            mysql_close(m)
            throw DatabaseError(kind: .configuration, message: "the MariaDB client library rejected a connection option")
        }
        let connected = mysql_real_connect(
            m, target.host, target.user, target.password, target.database.isEmpty ? nil : target.database,
            target.port, target.socket, 0)
        guard connected != nil else {
            var message = secrets.scrub(String(cString: mysql_error(m)))
            if message.isEmpty { message = "could not connect" }
            mysql_close(m)
            throw DatabaseError(kind: .unavailable, message: message)
        }
        handle = Mutex(Handle(pointer: m))
        self.secrets = secrets
    }

    deinit {
        handle.withLock { m in
            if let p = m?.pointer { mysql_close(p) }
            m = nil
        }
    }

    // MARK: DatabaseConnection

    func execute(_ sql: String) throws {
        try withHandle { m in try run(m, sql) { _ in } }
    }

    /// DDL (CREATE USER, GRANT, DROP USER) commits implicitly in MySQL/MariaDB, so the
    /// transaction only covers the data statements among `statements`.
    func executeInTransaction(_ statements: [String]) throws {
        guard !statements.isEmpty else { return }
        try withHandle { m in
            try run(m, "START TRANSACTION") { _ in }
            for statement in statements {
                do {
                    try run(m, statement) { _ in }
                } catch {
                    try? run(m, "ROLLBACK") { _ in }
                    throw error
                }
            }
            try run(m, "COMMIT") { _ in }
        }
    }

    func queryColumn(_ sql: String) throws -> [String?] {
        try withHandle { m in
            var column: [String?] = []
            try run(m, sql) { result in
                guard mysql_num_fields(result) > 0 else { return }
                while let row = mysql_fetch_row(result) {
                    guard let value = row[0], let lengths = mysql_fetch_lengths(result) else {
                        column.append(nil)
                        continue
                    }
                    column.append(String(decoding: UnsafeRawBufferPointer(start: value, count: Int(lengths[0])), as: UTF8.self))
                }
            }
            return column
        }
    }

    /// Connector/C has no identifier escaping (`mysql_real_escape_string_quote` exists only
    /// in Oracle's libmysqlclient 5.7+, not in Connector/C 3.3's mysql.h), so this quotes as
    /// the server's grammar defines it: backticks around the name, each backtick doubled,
    /// regardless of sql_mode. That is sound because the connection's character set is
    /// always utf8mb4, where the byte 0x60 never occurs inside a multi-byte character (the
    /// reason `mysql_real_escape_string` is charset-aware: in GBK or SJIS it can).
    func quoteIdentifier(_ name: String) throws -> String {
        guard !name.isEmpty, !name.utf8.contains(0) else {
            throw DatabaseError(kind: .statement, message: "a MySQL identifier must be non-empty and cannot contain a NUL character")
        }
        return "`" + name.replacingOccurrences(of: "`", with: "``") + "`"
    }

    /// `mysql_real_escape_string`: escapes for the connection's character set and sql_mode
    /// (doubling quotes under NO_BACKSLASH_ESCAPES, backslash escapes otherwise).
    func quoteLiteral(_ value: String) throws -> String {
        try withHandle { m in
            let bytes = Array(value.utf8)
            guard !bytes.isEmpty else { return "''" }
            var out = [CChar](repeating: 0, count: bytes.count * 2 + 1)
            let n = bytes.withUnsafeBufferPointer { from in
                from.withMemoryRebound(to: CChar.self) { from in
                    mysql_real_escape_string(m, &out, from.baseAddress, UInt(from.count))
                }
            }
            guard n != UInt.max else {
                throw DatabaseError(kind: .statement, message: "the value cannot be escaped for the connection's character set")
            }
            return "'" + String(decoding: out[..<Int(n)].map { UInt8(bitPattern: $0) }, as: UTF8.self) + "'"
        }
    }

    func isAlive() -> Bool {
        (try? withHandle { m in mysql_ping(m) == 0 }) ?? false
    }

    func close() {
        handle.withLock { m in
            if let p = m?.pointer { mysql_close(p) }
            m = nil
        }
    }

    // MARK: internals

    private func withHandle<T: Sendable>(_ body: (UnsafeMutablePointer<MYSQL>) throws -> T) throws -> T {
        try handle.withLock { m in
            guard let p = m?.pointer else { throw DatabaseError(kind: .unavailable, message: "the connection is closed") }
            return try body(p)
        }
    }

    /// Runs `sql`, hands each result set to `body` and reads every further result (a
    /// CALL answers several), so the connection is ready for the next statement.
    private func run(_ m: UnsafeMutablePointer<MYSQL>, _ sql: String, _ body: (UnsafeMutablePointer<MYSQL_RES>) throws -> Void) throws {
        let length = UInt(sql.utf8.count)
        guard sql.withCString({ mysql_real_query(m, $0, length) }) == 0 else { throw error(m, sql) }
        while true {
            if let result = mysql_store_result(m) {
                defer { mysql_free_result(result) }
                try body(result)
            } else if mysql_field_count(m) != 0 {
                throw error(m, sql)
            }
            let next = mysql_next_result(m)
            if next < 0 { return }
            if next > 0 { throw error(m, sql) }
        }
    }

    /// The client library's error: `.unavailable` for a client-side error (2000–2999:
    /// cannot connect, connection lost, timed out), else `.statement`; secrets removed.
    private func error(_ m: UnsafeMutablePointer<MYSQL>, _ sql: String) -> DatabaseError {
        let code = mysql_errno(m)
        var message = String(cString: mysql_error(m))
        // ER_PARSE_ERROR (1064) quotes up to 80 characters of the statement after the error
        // ("... near '<text>' at line 1"), which may cut a password literal short: drop the
        // excerpt when it holds any quote, that is, any part of a literal.
        if code == 1064, let near = message.range(of: "near '"),
           let line = message.range(of: "' at line ", options: .backwards), near.upperBound <= line.lowerBound {
            let excerpt = message[near.upperBound..<line.lowerBound]
            if excerpt.contains("'") || excerpt.contains("\"") {
                message.replaceSubrange(near.upperBound..<line.lowerBound, with: "[statement text redacted]")
            }
        }
        message = secrets.scrub(message, literals: SQLText.stringLiterals(in: sql, dialect: .mySQL))
        if message.isEmpty { message = "the statement failed (error \(code))" }
        let client = UInt32(CR_MIN_ERROR)...UInt32(CR_MAX_ERROR)
        return DatabaseError(kind: client.contains(code) ? .unavailable : .statement, message: message)
    }
}
