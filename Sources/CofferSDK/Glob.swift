/// Vault's `glob.Glob`: `*` matches any run of characters (including none); everything
/// else is literal, and the parts around the stars do not overlap. One matcher for the
/// database engine's `allowed_roles`, audit filters, JWT bound claims and Kubernetes bindings.
public enum Glob {
    public static func match(_ pattern: String, _ value: String) -> Bool {
        let parts = pattern.split(separator: "*", omittingEmptySubsequences: false).map { Array($0.utf8) }
        let v = Array(value.utf8)
        if parts.count == 1 { return parts[0] == v }
        guard v.count >= parts[0].count, v.starts(with: parts[0]) else { return false }
        let last = parts[parts.count - 1]
        guard v.count - parts[0].count >= last.count, Array(v.suffix(last.count)) == last else { return false }
        var i = parts[0].count
        let end = v.count - last.count
        for middle in parts[1..<(parts.count - 1)] where !middle.isEmpty {
            guard let found = find(middle, in: v, from: i, before: end) else { return false }
            i = found + middle.count
        }
        return true
    }

    static func find(_ needle: [UInt8], in hay: [UInt8], from start: Int, before end: Int) -> Int? {
        guard end - start >= needle.count else { return nil }
        var i = start
        while i + needle.count <= end {
            if hay[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }
}
