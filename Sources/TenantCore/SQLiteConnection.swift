import CSQLite3
import CofferSDK
import Foundation

/// A value bound to a statement's `?`.
enum SQLiteBind: Sendable {
    case text(String)
    case blob([UInt8])
    case int(Int64)
}

/// A value of a result column.
enum SQLiteValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])

    var integer: Int? {
        if case .integer(let i) = self { return Int(exactly: i) }
        return nil
    }

    var string: String? {
        if case .text(let s) = self { return s }
        return nil
    }

    var bytes: [UInt8]? {
        switch self {
        case .blob(let b): b
        case .text(let s): Array(s.utf8)
        default: nil
        }
    }
}

/// One SQLite connection over the C API (Debian's libsqlite3), with its statements
/// prepared once. Not thread-safe by itself (opened `NOMUTEX`): its owner runs one call at
/// a time — the writer its thread, a reader its lock.
final class SQLiteHandle {
    let db: OpaquePointer
    private var statements: [String: OpaquePointer] = [:]

    /// SQLite copies bound values before the call returns.
    static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    init(path: String, pragmas: [String]) throws {
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_CREATE | SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let handle else {
            if let handle { sqlite3_close(handle) }
            throw CofferError(.unavailable, "cannot open SQLite storage at \(path) (code \(rc))")
        }
        db = handle
        do {
            for pragma in pragmas { try exec(pragma) }
        } catch {
            sqlite3_close(db)
            throw error
        }
    }

    func close() {
        for stmt in statements.values { sqlite3_finalize(stmt) }
        statements = [:]
        sqlite3_close(db)
    }

    func exec(_ sql: String) throws {
        let rc = sqlite3_exec(db, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw failure(rc) }
    }

    /// Runs a cached statement; `row` sees each result row (column values by index).
    func run(_ sql: String, _ binds: [SQLiteBind], row: (OpaquePointer) -> Void = { _ in }) throws {
        let stmt = try prepared(sql)
        defer {
            sqlite3_reset(stmt)
            sqlite3_clear_bindings(stmt)
        }
        for (i, bind) in binds.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch bind {
            case .text(let s):
                rc = sqlite3_bind_text64(stmt, index, s, UInt64(s.utf8.count), Self.transient, UInt8(SQLITE_UTF8))
            case .blob(let b):
                rc = b.withUnsafeBytes { sqlite3_bind_blob64(stmt, index, $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1), UInt64($0.count), Self.transient) }
            case .int(let v):
                rc = sqlite3_bind_int64(stmt, index, v)
            }
            guard rc == SQLITE_OK else { throw failure(rc) }
        }
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_ROW { row(stmt); continue }
            if rc == SQLITE_DONE { return }
            throw failure(rc)
        }
    }

    /// The result rows of a query, every column read.
    func query(_ sql: String, _ binds: [SQLiteBind] = []) throws -> [[SQLiteValue]] {
        var rows: [[SQLiteValue]] = []
        try run(sql, binds) { stmt in
            rows.append((0..<sqlite3_column_count(stmt)).map { Self.column(stmt, $0) })
        }
        return rows
    }

    static func column(_ stmt: OpaquePointer, _ i: Int32) -> SQLiteValue {
        switch sqlite3_column_type(stmt, i) {
        case SQLITE_INTEGER: return .integer(sqlite3_column_int64(stmt, i))
        case SQLITE_FLOAT: return .real(sqlite3_column_double(stmt, i))
        case SQLITE_TEXT:
            let n = Int(sqlite3_column_bytes(stmt, i))
            guard let p = sqlite3_column_text(stmt, i) else { return .text("") }
            return .text(String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self))
        case SQLITE_BLOB:
            let n = Int(sqlite3_column_bytes(stmt, i))
            guard n > 0, let p = sqlite3_column_blob(stmt, i) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: p, count: n)))
        default: return .null
        }
    }

    private func prepared(_ sql: String) throws -> OpaquePointer {
        if let stmt = statements[sql] { return stmt }
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw failure(rc) }
        // Statements whose text varies (usage statistics) are not kept forever.
        if statements.count >= 64 {
            for s in statements.values { sqlite3_finalize(s) }
            statements = [:]
        }
        statements[sql] = stmt
        return stmt
    }

    func failure(_ rc: Int32) -> CofferError {
        let message = String(cString: sqlite3_errmsg(db))
        return CofferError(.unavailable, "storage error: \(message) (code \(rc))")
    }
}

/// A read connection shared by tasks: one call at a time, on the storage's thread pool
/// (SQLite's calls block).
final class SQLiteReader: @unchecked Sendable {
    private let handle: SQLiteHandle
    private let lock = NSLock()
    private var closed = false

    init(path: String, pragmas: [String]) throws {
        handle = try SQLiteHandle(path: path, pragmas: pragmas)
    }

    func query(_ sql: String, _ binds: [SQLiteBind] = []) throws -> [[SQLiteValue]] {
        lock.lock()
        defer { lock.unlock() }
        guard !closed else { throw CofferError(.unavailable, "storage is closed") }
        return try handle.query(sql, binds)
    }

    func exec(_ sql: String) throws {
        lock.lock()
        defer { lock.unlock() }
        guard !closed else { throw CofferError(.unavailable, "storage is closed") }
        try handle.exec(sql)
    }

    func close() {
        lock.lock()
        defer { lock.unlock() }
        guard !closed else { return }
        closed = true
        handle.close()
    }
}
