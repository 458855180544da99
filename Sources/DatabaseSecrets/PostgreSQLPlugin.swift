import CLibPQ
import Foundation
import Synchronization

/// Vault's `postgresql-database-plugin`, on libpq.
///
/// `connection_url` is a libpq URI (`postgresql://{{username}}:{{password}}@host:5432/db?sslmode=disable`)
/// or a key=value conninfo string (`host=... user={{username}} password={{password}}`).
/// libpq parses it with the placeholders standing in as plain tokens, and the real user
/// name and password go in as separate connection parameters afterwards, so neither needs
/// escaping for the URI or the conninfo syntax and neither can change another parameter.
struct PostgreSQLPlugin: DatabasePlugin {
    let name = "postgresql-database-plugin"
    let maxUsernameLength = 63
    let defaultUsernameTemplate =
        #"{{ printf "v-%s-%s-%s-%s" (.DisplayName | truncate 8) (.RoleName | truncate 8) (random 20) (unix_time) | truncate 63 }}"#

    /// Vault's default revocation: when the role exists, revoke what it holds on tables,
    /// sequences and schemas (every schema it has grants in, and `public`) and CONNECT on
    /// the current database, then `DROP ROLE IF EXISTS`; a role that is already gone is not
    /// an error. The name reaches the block through a transaction-local setting instead of
    /// being pasted inside the dollar-quoted body, and the block quotes it with `%I`.
    let defaultRevocationStatements = [
        "SET LOCAL coffer.revoke_role TO '{{name}}'",
        """
        DO $coffer$
        DECLARE
            r text := current_setting('coffer.revoke_role');
            rid oid;
            s text;
        BEGIN
            SELECT oid INTO rid FROM pg_roles WHERE rolname = r;
            IF rid IS NULL THEN
                RETURN;
            END IF;
            FOR s IN
                SELECT n.nspname FROM pg_class c
                    JOIN pg_namespace n ON n.oid = c.relnamespace
                    CROSS JOIN LATERAL aclexplode(c.relacl) a
                    WHERE a.grantee = rid
                UNION
                SELECT n.nspname FROM pg_namespace n
                    CROSS JOIN LATERAL aclexplode(n.nspacl) a
                    WHERE a.grantee = rid
            LOOP
                EXECUTE format('REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA %I FROM %I', s, r);
                EXECUTE format('REVOKE ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA %I FROM %I', s, r);
                EXECUTE format('REVOKE ALL PRIVILEGES ON SCHEMA %I FROM %I', s, r);
            END LOOP;
            IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public') THEN
                EXECUTE format('REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM %I', r);
                EXECUTE format('REVOKE ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public FROM %I', r);
                EXECUTE format('REVOKE USAGE ON SCHEMA public FROM %I', r);
            END IF;
            EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM %I', current_database(), r);
        END
        $coffer$
        """,
        #"DROP ROLE IF EXISTS "{{name}}""#,
    ]

    let defaultRotationStatements = [#"ALTER ROLE "{{name}}" WITH PASSWORD '{{password}}'"#]

    func targets(_ settings: DatabaseConnectionSettings) throws -> [DatabaseTarget] {
        let params = try PostgreSQLConnection.connectionParameters(settings)
        func list(_ key: String) -> [String] {
            (params.last { $0.key == key }?.value ?? "").split(separator: ",", omittingEmptySubsequences: false)
                .map { $0.trimmingCharacters(in: .whitespaces) }
        }
        // libpq connects to `hostaddr` when given (`host` then only names the server for
        // TLS); otherwise to each `host`: a path (or empty: the default socket) is a unix socket.
        let addrs = list("hostaddr").filter { !$0.isEmpty }
        if !addrs.isEmpty { return addrs.map { .tcp(host: $0) } }
        return list("host").map { h in h.isEmpty || h.hasPrefix("/") || h.hasPrefix("@") ? .unixSocket(path: h) : .tcp(host: h) }
    }

    func connect(_ settings: DatabaseConnectionSettings) throws -> any DatabaseConnection {
        try PostgreSQLConnection(settings)
    }
}

/// One libpq connection (`PGconn`).
///
/// libpq is thread-safe as long as one `PGconn` is not used by two threads at once; the
/// mutex guarantees that (the engine already uses a connection from one thread at a time,
/// but threads differ between calls). Every call is bounded: the server cancels a
/// statement after `timeout` seconds (`statement_timeout`), and the client gives up a few
/// seconds later if the server does not answer at all, closing the connection.
final class PostgreSQLConnection: DatabaseConnection, Sendable {
    /// A `PGconn *`. Unchecked: a C pointer is not Sendable, and libpq allows a connection
    /// to move between threads as long as one thread uses it at a time, which holding it
    /// only inside the mutex below guarantees.
    private struct Handle: @unchecked Sendable {
        let pointer: OpaquePointer
    }

    /// The connection; nil once closed (or dropped after a client-side timeout).
    private let conn: Mutex<Handle?>
    private let secrets: DriverSecrets
    /// Client-side bound on one round trip: the server's statement timeout plus a grace.
    private let clientTimeout: Duration

    init(_ settings: DatabaseConnectionSettings) throws {
        let params = try PostgreSQLConnection.connectionParameters(settings)
        let timeout = max(settings.timeout, 1)
        let secrets = DriverSecrets([settings.password] + params.filter { $0.key == "password" }.map(\.value))

        let keywords = params.map { strdup($0.key) } + [nil]
        let values = params.map { strdup($0.value) } + [nil]
        defer {
            for p in keywords + values { free(p) }
        }
        let raw: OpaquePointer? = keywords.map { UnsafePointer($0) }.withUnsafeBufferPointer { k in
            values.map { UnsafePointer($0) }.withUnsafeBufferPointer { v in
                PQconnectdbParams(k.baseAddress, v.baseAddress, 0)
            }
        }
        guard let raw else {
            throw DatabaseError(kind: .unavailable, message: "libpq could not allocate a connection")
        }
        guard PQstatus(raw) == CONNECTION_OK else {
            let message = secrets.scrub(String(cString: PQerrorMessage(raw)))
            PQfinish(raw)
            throw DatabaseError(kind: .unavailable, message: message.isEmpty ? "could not connect" : message)
        }
        coffer_pq_silence_notices(raw)
        // Terse errors: libpq's default adds a "LINE 1: <statement text>" excerpt, which
        // would carry any password the statement sets.
        _ = PQsetErrorVerbosity(raw, PQERRORS_TERSE)
        conn = Mutex(Handle(pointer: raw))
        self.secrets = secrets
        clientTimeout = .seconds(timeout + 5)
        do {
            try execute("SET statement_timeout = \(timeout * 1000)")
        } catch {
            close()
            throw error
        }
    }

    deinit {
        conn.withLock { c in
            if let p = c?.pointer { PQfinish(p) }
            c = nil
        }
    }

    /// The parameters for `PQconnectdbParams`: the connection string parsed by libpq with
    /// `{{username}}`/`{{password}}` replaced by random tokens, then the tokens replaced by
    /// the raw values; `connect_timeout`, `client_encoding` and `fallback_application_name`
    /// are added unless the string sets them.
    static func connectionParameters(_ settings: DatabaseConnectionSettings) throws -> [(key: String, value: String)] {
        let url = settings.connectionURL.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !url.isEmpty else {
            throw DatabaseError(kind: .configuration, message: "connection_url is empty")
        }
        let userToken = "cofferuser" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let passwordToken = "cofferpassword" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let templated = url.replacingOccurrences(of: "{{username}}", with: userToken)
            .replacingOccurrences(of: "{{password}}", with: passwordToken)

        var errmsg: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(templated, &errmsg) else {
            var message = "invalid connection_url"
            if let errmsg {
                message += ": " + String(cString: errmsg).trimmingCharacters(in: .whitespacesAndNewlines)
                PQfreemem(errmsg)
            }
            let scrubbed = DriverSecrets([settings.password]).scrub(message)
                .replacingOccurrences(of: userToken, with: "{{username}}")
                .replacingOccurrences(of: passwordToken, with: "{{password}}")
            throw DatabaseError(kind: .configuration, message: scrubbed)
        }
        defer { PQconninfoFree(options) }

        var params: [(key: String, value: String)] = []
        var option = options
        while let keyword = option.pointee.keyword {
            if let val = option.pointee.val {
                let value = String(cString: val)
                    .replacingOccurrences(of: userToken, with: settings.username)
                    .replacingOccurrences(of: passwordToken, with: settings.password)
                params.append((String(cString: keyword), value))
            }
            option += 1
        }
        func addDefault(_ key: String, _ value: String) {
            if !params.contains(where: { $0.key == key }) { params.append((key, value)) }
        }
        // libpq treats a connect_timeout below 2 as 2.
        addDefault("connect_timeout", String(max(settings.timeout, 2)))
        addDefault("client_encoding", "UTF8")
        addDefault("fallback_application_name", "coffer")
        return params
    }

    // MARK: DatabaseConnection

    func execute(_ sql: String) throws {
        try withConnection { c in try run(&c, sql) { _ in } }
    }

    func executeInTransaction(_ statements: [String]) throws {
        guard !statements.isEmpty else { return }
        try withConnection { c in
            try run(&c, "BEGIN") { _ in }
            for statement in statements {
                do {
                    try run(&c, statement) { _ in }
                } catch {
                    // Best effort: on a broken connection the server rolls back by itself.
                    if c != nil { try? run(&c, "ROLLBACK") { _ in } }
                    throw error
                }
            }
            try run(&c, "COMMIT") { _ in }
        }
    }

    func queryColumn(_ sql: String) throws -> [String?] {
        try withConnection { c in
            var column: [String?] = []
            try run(&c, sql) { result in
                guard PQresultStatus(result) == PGRES_TUPLES_OK, PQnfields(result) > 0 else { return }
                for row in 0..<PQntuples(result) {
                    column.append(PQgetisnull(result, row, 0) == 1 ? nil : String(cString: PQgetvalue(result, row, 0)))
                }
            }
            return column
        }
    }

    func quoteIdentifier(_ name: String) throws -> String {
        try escape(name, what: "identifier", PQescapeIdentifier)
    }

    func quoteLiteral(_ value: String) throws -> String {
        try escape(value, what: "literal", PQescapeLiteral)
    }

    func isAlive() -> Bool {
        do {
            return try withConnection { c in
                guard let p = c?.pointer, PQstatus(p) == CONNECTION_OK else { return false }
                try run(&c, "SELECT 1") { _ in }
                return true
            }
        } catch {
            return false
        }
    }

    func close() {
        conn.withLock { c in
            if let p = c?.pointer { PQfinish(p) }
            c = nil
        }
    }

    // MARK: internals

    private func withConnection<T: Sendable>(_ body: (inout Handle?) throws -> T) throws -> T {
        try conn.withLock { c in
            guard c != nil else {
                throw DatabaseError(kind: .unavailable, message: "the connection is closed")
            }
            return try body(&c)
        }
    }

    private func escape(
        _ text: String, what: String,
        _ function: (OpaquePointer?, UnsafePointer<CChar>?, Int) -> UnsafeMutablePointer<CChar>?
    ) throws -> String {
        guard !text.utf8.contains(0) else {
            throw DatabaseError(kind: .statement, message: "a PostgreSQL \(what) cannot contain a NUL character")
        }
        return try withConnection { c in
            let escaped = text.withCString { function(c?.pointer, $0, strlen($0)) }
            guard let escaped else {
                throw DatabaseError(kind: .statement, message: secrets.scrub(String(cString: PQerrorMessage(c?.pointer))))
            }
            defer { PQfreemem(escaped) }
            return String(cString: escaped)
        }
    }

    /// Sends `sql` (one or more statements), waits for every result within the client
    /// timeout, hands each successful result to `body`, and throws the first error.
    /// A connection that broke or timed out is closed (`c` becomes nil).
    private func run(_ c: inout Handle?, _ sql: String, _ body: (OpaquePointer) throws -> Void) throws {
        guard let p = c?.pointer else { throw DatabaseError(kind: .unavailable, message: "the connection is closed") }
        func lost(_ what: String) -> DatabaseError {
            var message = String(cString: PQerrorMessage(p)).trimmingCharacters(in: .whitespacesAndNewlines)
            if message.isEmpty { message = what }
            message = secrets.scrub(message, literals: SQLText.stringLiterals(in: sql, dialect: .postgreSQL))
            PQfinish(p)
            c = nil
            return DatabaseError(kind: .unavailable, message: message)
        }
        guard !sql.utf8.contains(0) else {
            throw DatabaseError(kind: .statement, message: "a statement cannot contain a NUL character")
        }
        guard PQsendQuery(p, sql) == 1 else { throw lost("could not send the statement") }

        let clock = ContinuousClock()
        let deadline = clock.now + clientTimeout
        var failure: DatabaseError?
        while true {
            while PQisBusy(p) == 1 {
                let left = deadline - clock.now
                guard left > .zero else {
                    throw lost("no answer from the server within \(clientTimeout.components.seconds) s")
                }
                let ms = Int32(clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1)
                guard coffer_pq_wait_readable(p, ms) >= 0, PQconsumeInput(p) == 1 else {
                    throw lost("the connection to the server was lost")
                }
            }
            guard let result = PQgetResult(p) else { break }
            defer { PQclear(result) }
            switch PQresultStatus(result) {
            case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY, PGRES_SINGLE_TUPLE:
                if failure == nil { try body(result) }
            case PGRES_COPY_IN, PGRES_COPY_OUT, PGRES_COPY_BOTH:
                throw lost("COPY is not supported")
            default:
                if failure == nil { failure = statementError(result, sql: sql) }
            }
        }
        if PQstatus(p) != CONNECTION_OK {
            throw lost(failure?.message ?? "the connection to the server was lost")
        }
        if let failure { throw failure }
    }

    /// The server's error for a failed statement: `.unavailable` for a timeout, a
    /// shutdown or a connection failure (SQLSTATE classes 08, 57, 53), else `.statement`.
    private func statementError(_ result: OpaquePointer, sql: String) -> DatabaseError {
        var message = PQresultErrorMessage(result).map { String(cString: $0) } ?? ""
        message = message.trimmingCharacters(in: .whitespacesAndNewlines)
        if message.isEmpty { message = "the statement failed" }
        message = secrets.scrub(message, literals: SQLText.stringLiterals(in: sql, dialect: .postgreSQL))
        // PG_DIAG_SQLSTATE is the character 'C' (a char macro, which Swift does not import).
        let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) } ?? ""
        let unavailable = state.hasPrefix("08") || state.hasPrefix("57") || state.hasPrefix("53")
        return DatabaseError(kind: unavailable ? .unavailable : .statement, message: message)
    }
}
