import CofferSDK

/// Deprecated role and user fields (`policies`, `ttl`, `period`, `bound_cidrs`…) as Vault's
/// `tokenutil.UpgradeValue` treats them: the new name wins (the old one then mirrors it if
/// it was sent too, else is cleared); the old name given alone sets both.
enum DeprecatedField {
    static func upgrade<T: EmptyDefault>(_ f: FieldValues, old: String, new: String, oldValue: inout T, newValue: inout T, read: (FieldValues) throws -> T) throws {
        if f.has(new) {
            oldValue = f.has(old) ? newValue : T.emptyValue
        } else if f.has(old) {
            oldValue = try read(f)
            newValue = oldValue
        }
    }
}

/// The value a deprecated field takes when its new name is given alone.
protocol EmptyDefault { static var emptyValue: Self { get } }
extension Int: EmptyDefault { static var emptyValue: Int { 0 } }
extension Array: EmptyDefault { static var emptyValue: [Element] { [] } }
