//! Encodings shared by every format keygate emits: lowercase base32 for key ids and
//! secrets, base64url for JWS, and a byte cursor for the binary snapshot format.
//!
//! The cursor follows the rustls pattern: every read returns `Option`, so a parser built
//! on it cannot index past the end of attacker-supplied bytes by construction.

/// RFC 4648 base32 alphabet, lowercased so keys survive case-insensitive tooling and read
/// unambiguously (no `0/O`, `1/l` confusion: digits start at 2).
pub const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Encodes `bytes` as unpadded lowercase base32.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(base32_char((buffer >> bits) & 31));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(base32_char((buffer << (5 - bits)) & 31));
    }
    out
}

fn base32_char(v: u32) -> char {
    // `v` is masked to 0..32 by every caller; `get` keeps this panic-free regardless.
    BASE32_ALPHABET
        .get(v as usize)
        .map(|&c| c as char)
        .unwrap_or('a')
}

/// True when every byte of `s` is in [`BASE32_ALPHABET`].
pub fn is_base32(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))
}

/// Base64url without padding, as JWS requires.
pub fn b64url_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict base64url decoding: no padding, no whitespace, canonical trailing bits.
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.as_bytes())
        .ok()
}

/// Lowercase hex, for digests in JSON and logs (digests are not secrets).
pub fn hex_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(HEX.get(usize::from(b >> 4)).map_or('0', |&c| c as char));
        s.push(HEX.get(usize::from(b & 15)).map_or('0', |&c| c as char));
    }
    s
}

/// Decodes lowercase or uppercase hex of exactly `N` bytes.
pub fn hex_decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes = s.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let hi = hex_val(*pair.first()?)?;
        let lo = hex_val(*pair.get(1)?)?;
        *slot = (hi << 4) | lo;
    }
    Some(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A read cursor over untrusted bytes. Every accessor returns `None` past the end.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }

    pub fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_be_bytes)
    }

    /// A string with a one-byte length prefix, UTF-8 checked.
    pub fn str8(&mut self) -> Option<&'a str> {
        let n = usize::from(self.u8()?);
        core::str::from_utf8(self.take(n)?).ok()
    }

    /// A count that the caller will allocate for: refused unless at least
    /// `count * min_item_size` bytes remain, so a forged count cannot force a huge allocation.
    pub fn count32(&mut self, min_item_size: usize) -> Option<usize> {
        let n = usize::try_from(self.u32()?).ok()?;
        if n.checked_mul(min_item_size.max(1))? > self.rest.len() {
            return None;
        }
        Some(n)
    }

    pub fn count16(&mut self, min_item_size: usize) -> Option<usize> {
        let n = usize::from(self.u16()?);
        if n.checked_mul(min_item_size.max(1))? > self.rest.len() {
            return None;
        }
        Some(n)
    }
}

/// The write side of [`Cursor`]. Strings longer than 255 bytes are a caller bug; they are
/// validated at the boundary (names, ids, models are length-checked when created).
#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// Writes a one-byte length prefix and the string, truncated at 255 bytes on a char
    /// boundary (never reached for validated input).
    pub fn str8(&mut self, s: &str) {
        let mut end = s.len().min(255);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let s = s.get(..end).unwrap_or("");
        self.u8(s.len() as u8);
        self.buf.extend_from_slice(s.as_bytes());
    }
    pub fn len32(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    pub fn len16(&mut self, n: usize) {
        self.u16(u16::try_from(n).unwrap_or(u16::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_known_values() {
        // RFC 4648 test vectors, lowercased, unpadded.
        assert_eq!(base32_encode(b""), "");
        assert_eq!(base32_encode(b"f"), "my");
        assert_eq!(base32_encode(b"fo"), "mzxq");
        assert_eq!(base32_encode(b"foo"), "mzxw6");
        assert_eq!(base32_encode(b"foob"), "mzxw6yq");
        assert_eq!(base32_encode(b"fooba"), "mzxw6ytb");
        assert_eq!(base32_encode(b"foobar"), "mzxw6ytboi");
        assert_eq!(base32_encode(&[0u8; 32]).len(), 52);
    }

    #[test]
    fn cursor_refuses_overreads_and_forged_counts() {
        let mut c = Cursor::new(&[0, 0, 0, 200, 1, 2]);
        assert_eq!(c.count32(1), None);
        let mut c = Cursor::new(&[5, b'a']);
        assert_eq!(c.str8(), None);
        let mut c = Cursor::new(&[1, 2]);
        assert_eq!(c.u32(), None);
    }

    #[test]
    fn hex_roundtrip() {
        let b = [0xde, 0xad, 0xbe, 0xef];
        assert_eq!(hex_decode::<4>(&hex_encode(&b)), Some(b));
        assert_eq!(hex_decode::<4>("zz"), None);
    }
}
