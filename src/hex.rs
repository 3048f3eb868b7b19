//! Lower-case hex for the fixed-size values the project writes as text: SHA-256 digests (sync
//! database indexes, the agent protocol's plans and share headers) and daemon ids.
//!
//! One strict decoder for all of them: exactly two ASCII hex digits per byte. Input comes from
//! files and sockets, so no sign, no whitespace, and no slicing that could split a multi-byte
//! character.

/// `bytes` as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `N` bytes `text` spells in hex (either case); None for anything else.
pub fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let digit = |d: u8| char::from(d).to_digit(16);
        *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_everything_else() {
        let bytes = [0x00, 0x9f, 0xa5, 0xff];
        assert_eq!(encode(&bytes), "009fa5ff");
        assert_eq!(decode::<4>("009fa5ff"), Some(bytes));
        assert_eq!(decode::<4>("009FA5FF"), Some(bytes));
        for bad in [
            "009fa5f",
            "009fa5fff",
            "+09fa5ff",
            "009fa5fg",
            " 09fa5ff",
            "00é9fa5f",
        ] {
            assert_eq!(decode::<4>(bad), None, "{bad:?}");
        }
    }
}
