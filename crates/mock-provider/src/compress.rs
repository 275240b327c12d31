//! Just enough compression to answer in `gzip` or `deflate` without a dependency: one
//! DEFLATE block with the fixed Huffman code, literals only (RFC 1951 §3.2.6), wrapped as
//! gzip (RFC 1952) or zlib (RFC 1950). The output is a valid stream any inflater decodes;
//! it is not small, but no byte of the input appears in it as itself (every literal code
//! is 8 or 9 bits and the block header shifts them off byte boundaries), which is what a
//! test of a proxy that must decode before it redacts needs.

/// Writes bits least-significant first, as DEFLATE packs them.
struct Bits {
    out: Vec<u8>,
    acc: u32,
    count: u32,
}

impl Bits {
    fn new() -> Self {
        Self { out: Vec::new(), acc: 0, count: 0 }
    }

    /// `len` bits of `value`, lowest first.
    fn put(&mut self, value: u32, len: u32) {
        self.acc |= value << self.count;
        self.count += len;
        while self.count >= 8 {
            self.out.push((self.acc & 0xff) as u8);
            self.acc >>= 8;
            self.count -= 8;
        }
    }

    /// A Huffman code: DEFLATE writes these most-significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        let reversed = code.reverse_bits() >> (32 - len);
        self.put(reversed, len);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.count > 0 {
            self.out.push((self.acc & 0xff) as u8);
        }
        self.out
    }
}

/// A raw DEFLATE stream of `data`: one final block, fixed Huffman code, literals only.
pub(crate) fn deflate_raw(data: &[u8]) -> Vec<u8> {
    let mut bits = Bits::new();
    bits.put(1, 1); // BFINAL
    bits.put(1, 2); // BTYPE = 01, fixed Huffman codes
    for &byte in data {
        let byte = u32::from(byte);
        if byte <= 143 {
            bits.code(0x30 + byte, 8);
        } else {
            bits.code(0x190 + (byte - 144), 9);
        }
    }
    bits.code(0, 7); // end of block (256)
    bits.finish()
}

/// `data` as a zlib stream (what HTTP calls `deflate`).
pub(crate) fn zlib(data: &[u8]) -> Vec<u8> {
    // CMF 0x78 (deflate, 32 KiB window), FLG 0x01: 0x7801 is a multiple of 31.
    let mut out = vec![0x78, 0x01];
    out.extend_from_slice(&deflate_raw(data));
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

/// `data` as a gzip member.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend_from_slice(&deflate_raw(data));
    out.extend_from_slice(&crc32(data).to_le_bytes());
    // ISIZE is the length modulo 2^32.
    out.extend_from_slice(&((data.len() & 0xffff_ffff) as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffff_u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1_u32, 0_u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_checksums() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn framing_and_no_plain_input() {
        let data = b"the key sk-canary-0123456789abcdef in plain";
        let gz = gzip(data);
        assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(&gz[gz.len() - 4..], &(data.len() as u32).to_le_bytes());
        let z = zlib(data);
        assert_eq!((u16::from(z[0]) << 8 | u16::from(z[1])) % 31, 0);
        for encoded in [&gz, &z] {
            assert!(!encoded.windows(6).any(|w| w == b"canary"), "no input text appears as itself");
        }
        // An empty input is a header, a block with only the end code, and the trailer.
        assert_eq!(deflate_raw(b""), vec![0x03, 0x00]);
    }
}
