//! Nix's base-32 encoding ("nix32").
//!
//! Nix uses its own alphabet (no `e`, `o`, `u`, `t`) and emits the *last* 5-bit group first, so
//! the text is not RFC 4648 base32 read backwards but a different bit order altogether. The
//! encoded length of `n` bytes is `ceil(n * 8 / 5)`.

use thiserror::Error;

/// The 32 characters of Nix's alphabet, in digit order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Maps an ASCII byte to its digit, or `0xff` when the byte is not in [`ALPHABET`].
const DIGIT_OF: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 32 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Why a nix32 string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Nix32Error {
    /// A character outside [`ALPHABET`].
    #[error("invalid character {0:?} in nix32 string")]
    InvalidCharacter(char),
    /// The string has the wrong number of characters for the expected byte length.
    #[error("nix32 string has length {got}, expected {expected}")]
    WrongLength {
        /// Characters given.
        got: usize,
        /// Characters expected.
        expected: usize,
    },
    /// The leading character carries bits beyond the decoded length.
    #[error("nix32 string has non-zero padding bits")]
    NonZeroPadding,
}

/// Number of nix32 characters needed for `byte_len` bytes.
pub const fn encoded_len(byte_len: usize) -> usize {
    if byte_len == 0 {
        0
    } else {
        (byte_len * 8 - 1) / 5 + 1
    }
}

/// Number of bytes `char_len` nix32 characters decode to.
pub const fn decoded_len(char_len: usize) -> usize {
    char_len * 5 / 8
}

/// Encodes bytes as nix32.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let low = bytes[i] >> j;
        let high = if i + 1 < bytes.len() {
            // Shifting a u8 left by 8 would overflow; `j == 0` contributes nothing from the next byte.
            ((bytes[i + 1] as u16) << (8 - j)) as u8
        } else {
            0
        };
        out.push(ALPHABET[((low | high) & 0x1f) as usize] as char);
    }
    out
}

/// Decodes a nix32 string into exactly `N` bytes.
pub fn decode_fixed<const N: usize>(text: &[u8]) -> Result<[u8; N], Nix32Error> {
    let mut out = [0u8; N];
    decode_into(text, &mut out)?;
    Ok(out)
}

/// Decodes a nix32 string whose byte length is implied by its character count.
pub fn decode(text: &[u8]) -> Result<Vec<u8>, Nix32Error> {
    let mut out = vec![0u8; decoded_len(text.len())];
    decode_into(text, &mut out)?;
    Ok(out)
}

/// Decodes `text` into `out`, which must be exactly the decoded length.
pub fn decode_into(text: &[u8], out: &mut [u8]) -> Result<(), Nix32Error> {
    let expected = encoded_len(out.len());
    if text.len() != expected {
        return Err(Nix32Error::WrongLength {
            got: text.len(),
            expected,
        });
    }
    out.fill(0);
    for (n, &c) in text.iter().rev().enumerate() {
        let digit = DIGIT_OF[c as usize];
        if digit == 0xff {
            return Err(Nix32Error::InvalidCharacter(c as char));
        }
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        out[i] |= digit << j;
        let carry = ((digit as u16) >> (8 - j)) as u8;
        if i + 1 < out.len() {
            out[i + 1] |= carry;
        } else if carry != 0 {
            return Err(Nix32Error::NonZeroPadding);
        }
    }
    Ok(())
}

/// Whether every byte of `text` is a nix32 character.
pub fn is_nix32(text: &[u8]) -> bool {
    text.iter().all(|&c| DIGIT_OF[c as usize] != 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sha256_of_empty_string() {
        // `nix-hash --type sha256 --to-base32 e3b0c442...b855`
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let bytes = data_encoding::HEXLOWER.decode(hex.as_bytes()).expect("hex");
        assert_eq!(
            encode(&bytes),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
        assert_eq!(
            decode(b"0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73").expect("decode"),
            bytes
        );
    }

    #[test]
    fn round_trip_all_lengths() {
        for len in 0..70usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = encode(&bytes);
            assert_eq!(text.len(), encoded_len(len));
            assert_eq!(decode(text.as_bytes()).expect("round trip"), bytes);
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            decode_fixed::<20>(b"e1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q"),
            Err(Nix32Error::InvalidCharacter('e'))
        );
        assert!(matches!(
            decode_fixed::<20>(b"g1w7hy3q"),
            Err(Nix32Error::WrongLength { .. })
        ));
        // 20 bytes need 32 characters = 160 bits exactly, so take 1 byte (2 chars = 10 bits).
        assert_eq!(decode_fixed::<1>(b"z0"), Err(Nix32Error::NonZeroPadding));
        assert!(decode_fixed::<1>(b"7z").is_ok());
    }
}
