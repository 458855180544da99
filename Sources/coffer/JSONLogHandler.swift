import CofferSDK
import Foundation
import Logging
import Synchronization

/// `log_format = "json"`: one JSON object per line on stderr
/// (`@timestamp`, `@level`, `@module`, `@message`, then the metadata keys).
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    static let lock = Mutex(())

    init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
        var fields: [String: JSONValue] = [
            "@timestamp": .string(RFC3339.format(Date())), "@level": .string(level.rawValue),
            "@module": .string(source), "@message": .string(message.description),
        ]
        for (k, v) in metadata.merging(explicit ?? [:], uniquingKeysWith: { _, b in b }) { fields[k] = .string(v.description) }
        var bytes = JSONValue.object(fields).serialized()
        bytes.append(10)
        Self.lock.withLock { _ in FileHandle.standardError.write(Data(bytes)) }
    }
}
