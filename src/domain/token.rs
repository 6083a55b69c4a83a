//! Signed per-lead unsubscribe tokens.
//!
//! A token is the lead id and a truncated HMAC-SHA256 of it under the
//! daemon's secret, base64url-encoded: short enough for a link, unforgeable
//! without the secret, and verifiable without a database lookup.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const TAG: usize = 16;

fn mac(secret: &[u8], id: i64) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(b"cadence-unsubscribe-v1:");
    m.update(&id.to_be_bytes());
    m
}

pub fn sign(secret: &[u8], lead_id: i64) -> String {
    let tag = mac(secret, lead_id).finalize().into_bytes();
    let mut raw = lead_id.to_be_bytes().to_vec();
    raw.extend_from_slice(&tag[..TAG]);
    URL_SAFE_NO_PAD.encode(raw)
}

/// The lead id when the token is genuine (compared in constant time).
pub fn verify(secret: &[u8], token: &str) -> Option<i64> {
    let raw = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    if raw.len() != 8 + TAG {
        return None;
    }
    let id = i64::from_be_bytes(raw[..8].try_into().ok()?);
    mac(secret, id).verify_truncated_left(&raw[8..]).ok()?;
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_forgeries() {
        let t = sign(b"s3cret", 42);
        assert_eq!(verify(b"s3cret", &t), Some(42));
        assert_eq!(verify(b"other", &t), None);
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[7] = 43; // another lead's id with this lead's tag
        assert_eq!(verify(b"s3cret", &URL_SAFE_NO_PAD.encode(&raw)), None);
        assert_eq!(verify(b"s3cret", "garbage"), None);
        assert_eq!(verify(b"s3cret", ""), None);
    }
}
