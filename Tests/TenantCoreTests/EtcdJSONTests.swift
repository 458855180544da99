import CofferSDK
import Foundation
@testable import Replication
import Testing

/// The hand-written JSON of etcd's range and txn messages says what `JSONEncoder` says.
@Suite struct EtcdJSONTests {
    func both(_ message: some Encodable & EtcdJSONMessage) throws -> (Any, Any) {
        var w = JSONWriter()
        message.writeJSON(&w)
        let mine = w.bytes
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
        var empty = JSONWriter()
        TxnRequest().writeJSON(&empty)
        #expect(empty.bytes == Array("{}".utf8))
    }
}

/// The change-feed marker of a batch: front-coded sorted keys, read back exactly; the older
/// length-prefixed form is still read; a damaged marker is refused, never misread.
@Suite struct EtcdFeedMarkerTests {
    @Test func frontCodedKeysRoundTrip() throws {
        var keys: Set<String> = ["", "a", "ab", "abc", "b", "logical/ü/é", "logical/ü/ê", String(repeating: "x", count: 300)]
        var rng = SystemRandomNumberGenerator()
        for i in 0..<200 { keys.insert("logical/\(UInt64.random(in: 0..<8, using: &rng))/versions/\(i * 7919 % 1000)/\(i)") }
        let marker = EtcdStorage.batchFeedEntry(Array(keys))
        let decoded = try #require(EtcdStorage.decodeFeedEntry(marker, revision: 9))
        #expect(decoded.map(\.key) == keys.sorted())
        #expect(decoded.allSatisfy { $0.revision == 9 && !$0.deleted })
        // Shared prefixes are not repeated.
        #expect(marker.count < keys.reduce(0) { $0 + $1.utf8.count })
        // Every truncation is refused or yields a prefix of the keys, never a wrong key.
        for cut in 1..<marker.count {
            if let partial = EtcdStorage.decodeFeedEntry(Array(marker[..<cut]), revision: 9) {
                #expect(Array(keys.sorted().prefix(partial.count)) == partial.map(\.key))
            }
        }
    }

    @Test func olderBatchMarkersAndSingleEntriesStillRead() throws {
        var old: [UInt8] = [UInt8(ascii: "b")]
        for key in ["k/1", "ключ"] {
            let bytes = Array(key.utf8)
            old += [0, 0, 0, UInt8(bytes.count)] + bytes
        }
        #expect(EtcdStorage.decodeFeedEntry(old, revision: 3)?.map(\.key) == ["k/1", "ключ"])
        #expect(EtcdStorage.decodeFeedEntry(old + [0, 0, 1], revision: 3) == nil)
        #expect(EtcdStorage.decodeFeedEntry(Array("pk/2".utf8), revision: 4) == [StorageChange(revision: 4, key: "k/2", deleted: false)])
        #expect(EtcdStorage.decodeFeedEntry(Array("dk/2".utf8), revision: 4) == [StorageChange(revision: 4, key: "k/2", deleted: true)])
        #expect(EtcdStorage.decodeFeedEntry(Array("zz".utf8), revision: 4) == nil)
        #expect(EtcdStorage.decodeFeedEntry([UInt8(ascii: "f"), 5, 1, 65], revision: 4) == nil)  // shares more than exists
    }
}
