//! HMAC-SHA256 for short messages, computed with exactly two SHA-256 block
//! compressions and no allocation: the key's inner and outer states are
//! precomputed once, and a message of up to 55 bytes fits one padded block.
//! Identical to RFC 2104 HMAC-SHA256 (tested against the `hmac` crate);
//! the hot path hashes one NIS per row.

use sha2::Digest;
use sha2::block_api::compress256;

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Longest message that fits one block with its padding.
pub const MAX_SHORT: usize = 55;

#[derive(Clone)]
pub struct KeyedHash {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl KeyedHash {
    pub fn new(key: &[u8]) -> KeyedHash {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&sha2::Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut ipad = [0u8; 64];
        let mut opad = [0u8; 64];
        for i in 0..64 {
            ipad[i] = block[i] ^ 0x36;
            opad[i] = block[i] ^ 0x5c;
        }
        let mut inner = IV;
        compress256(&mut inner, &[ipad]);
        let mut outer = IV;
        compress256(&mut outer, &[opad]);
        KeyedHash { inner, outer }
    }

    /// HMAC-SHA256(key, message) for a message of at most [`MAX_SHORT`]
    /// bytes; None for a longer one.
    #[inline]
    pub fn mac_short(&self, message: &[u8]) -> Option<[u8; 32]> {
        if message.len() > MAX_SHORT {
            return None;
        }
        let mut block = [0u8; 64];
        block[..message.len()].copy_from_slice(message);
        block[message.len()] = 0x80;
        block[56..].copy_from_slice(&((64 + message.len() as u64) * 8).to_be_bytes());
        let mut state = self.inner;
        compress256(&mut state, &[block]);
        let mut block = [0u8; 64];
        for (i, word) in state.iter().enumerate() {
            block[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
        }
        block[32] = 0x80;
        block[56..].copy_from_slice(&((64u64 + 32) * 8).to_be_bytes());
        let mut state = self.outer;
        compress256(&mut state, &[block]);
        let mut out = [0u8; 32];
        for (i, word) in state.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, KeyInit, Mac};

    fn reference(key: &[u8], message: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("key");
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    #[test]
    fn equals_rfc_2104_hmac_sha256() {
        let long_key = [7u8; 100];
        for key in [
            &b""[..],
            b"k",
            b"test-nis-key-0123456789",
            &[0xaa; 64],
            &long_key,
        ] {
            for len in [0usize, 1, 11, 32, 54, 55] {
                let message: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(31)).collect();
                assert_eq!(
                    KeyedHash::new(key).mac_short(&message),
                    Some(reference(key, &message)),
                    "key {} bytes, message {len} bytes",
                    key.len()
                );
            }
        }
        assert_eq!(KeyedHash::new(b"k").mac_short(&[0; 56]), None);
    }
}
