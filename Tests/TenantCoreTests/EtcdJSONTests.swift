import CofferSDK
import Foundation
@testable import Replication
import Testing

/// The hand-written JSON of etcd's range and txn messages says what `JSONEncoder` says.
@Suite struct EtcdJSONTests {
    func both(_ message: some Encodable & EtcdJSONMessage) throws -> (Any, Any) {
        var mine: [UInt8] = []
        message.writeJSON(&mine)
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        let theirs = try encoder.encode(message)
        return (try JSONSerialization.jsonObject(with: Data(mine)), try JSONSerialization.jsonObject(with: theirs))
    }

    @Test(arguments: [0, 1, 2, 3, 4, 5, 64, 255, 1000])
    func messagesMatchTheEncoder(length: Int) throws {
        let bytes = (0..<length).map { UInt8(($0 * 37 + 11) & 0xFF) }
        let key = Array("prefix/kv/ü\u{0}\"\\".utf8) + bytes
        let range = RangeRequest(key: Data(key), rangeEnd: Data(bytes), limit: 1000, revision: 42, keysOnly: true)
        let txn = TxnRequest(
            compare: [
                Compare(result: "EQUAL", target: "VALUE", key: Data(key), value: Data(bytes)),
                Compare(result: "GREATER", target: "VERSION", key: Data(key), version: 0),
                Compare(result: "EQUAL", target: "CREATE", key: Data(key), createRevision: 0),
            ],
            success: [.put(key, bytes), .delete(key), RequestOp(requestPut: PutRequest(key: Data(key), value: Data(), lease: "7587"))],
            failure: [RequestOp(requestRange: RangeRequest(key: Data(key)))])
        for (mine, theirs) in [try both(range), try both(txn), try both(RangeRequest(key: Data(bytes)))] {
            #expect((mine as! NSObject).isEqual(theirs as! NSObject))
        }
        // Empty repeated fields are left out (proto3: the same message).
        var empty: [UInt8] = []
        TxnRequest().writeJSON(&empty)
        #expect(empty == Array("{}".utf8))
    }
}
