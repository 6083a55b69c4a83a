//! DKIM signing of what a rep sends through its own SMTP server.
//!
//! lettre signs (RFC 6376, rsa-sha256 and ed25519-sha256); this module
//! reads the keys people actually have and decides what is signed. lettre
//! takes RSA keys only as PKCS#1 PEM and Ed25519 keys only as a bare base64
//! seed, while `openssl genrsa` (OpenSSL 3) and `openssl genpkey` write
//! PKCS#8: both forms are accepted here and converted. [`parse_key`] is
//! pure, so `cadence check` (through the config loader) validates a key
//! with the same code that later signs with it.
//!
//! Signed headers include `List-Unsubscribe` and `List-Unsubscribe-Post`:
//! RFC 8058 one-click unsubscribe only counts when a DKIM signature covers
//! them. Threading headers are signed even when absent, so that nobody on
//! the way can add them (RFC 6376 §5.4). `Content-Type` is not signed:
//! lettre writes it with the body, after signing, so it would be hashed as
//! absent and every signature would fail (the body hash covers the MIME
//! structure anyway).

use std::path::Path;

use base64::Engine as _;
use lettre::message::dkim::{DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm, DkimSigningKey};
use lettre::message::header::HeaderName;
use lettre::Message;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;

use crate::config::Dkim;

/// Headers covered by the signature, in this order.
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
];

/// RFC 8301: verifiers refuse RSA keys under 1024 bits.
const MIN_RSA_BITS: usize = 1024;

/// Why a key cannot sign. Never contains key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is encrypted; decrypt it first: openssl pkey -in KEY -out dkim.pem")]
    Encrypted,
    #[error("a {0:?} PEM block is not a private key; give the RSA or Ed25519 private key (PEM)")]
    WrongPem(String),
    #[error("not PEM nor base64 ({0}); expected a PEM private key (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)")]
    NotPem(String),
    #[error("not an RSA or Ed25519 private key ({0}); make one with: openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out dkim.pem")]
    Unreadable(String),
    #[error("the RSA key has {0} bits; receivers refuse fewer than {MIN_RSA_BITS} (use 2048)")]
    TooShort(usize),
}

/// What a readable key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    Ed25519,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA {bits}-bit"),
            KeyKind::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// A key ready for lettre: its kind and the text form lettre reads.
pub struct ParsedKey {
    pub kind: KeyKind,
    lettre_form: String,
}

impl std::fmt::Debug for ParsedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedKey").field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// Reads a DKIM private key: PEM (PKCS#8 RSA or Ed25519, PKCS#1 RSA), or
/// the bare base64 of a 32-byte Ed25519 seed. Literal `\n` sequences count
/// as line breaks, so a PEM fits on one line of an environment file.
pub fn parse_key(text: &str) -> Result<ParsedKey, KeyError> {
    let text = text.replace("\\n", "\n");
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyError::Empty);
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(rest) = text.strip_prefix("-----BEGIN ") {
        let (label, rest) = rest.split_once("-----").ok_or_else(|| KeyError::NotPem("unterminated BEGIN line".into()))?;
        let end = format!("-----END {label}-----");
        let body =
            rest.split(end.as_str()).next().filter(|_| rest.contains(&end)).ok_or_else(|| KeyError::NotPem(format!("no {end} line")))?;
        let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = b64.decode(body).map_err(|e| KeyError::NotPem(format!("bad base64 inside the PEM block: {e}")))?;
        return match label {
            "RSA PRIVATE KEY" => rsa_key(RsaPrivateKey::from_pkcs1_der(&der).map_err(|e| KeyError::Unreadable(e.to_string()))?),
            "PRIVATE KEY" => pkcs8(&der),
            "ENCRYPTED PRIVATE KEY" => Err(KeyError::Encrypted),
            other if other.contains("ENCRYPTED") || text.contains("Proc-Type: 4,ENCRYPTED") => Err(KeyError::Encrypted),
            other => Err(KeyError::WrongPem(other.to_string())),
        };
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let raw = b64.decode(compact).map_err(|e| KeyError::NotPem(e.to_string()))?;
    if raw.len() == 32 {
        return ed25519_seed(&raw);
    }
    pkcs8(&raw).or_else(|_| rsa_key(RsaPrivateKey::from_pkcs1_der(&raw).map_err(|e| KeyError::Unreadable(e.to_string()))?))
}

/// The OID of Ed25519 keys (RFC 8410), as DER content bytes: 1.3.101.112.
const ED25519_OID: &[u8] = &[0x2b, 0x65, 0x70];

fn pkcs8(der: &[u8]) -> Result<ParsedKey, KeyError> {
    if let Ok(key) = RsaPrivateKey::from_pkcs8_der(der) {
        return rsa_key(key);
    }
    let info = rsa::pkcs8::PrivateKeyInfo::try_from(der).map_err(|e| KeyError::Unreadable(e.to_string()))?;
    if info.algorithm.oid.as_bytes() != ED25519_OID {
        return Err(KeyError::Unreadable(format!("unsupported algorithm {}", info.algorithm.oid)));
    }
    // CurvePrivateKey ::= OCTET STRING (RFC 8410 §7): 04 20 <32 bytes>.
    match info.private_key {
        [0x04, 0x20, seed @ ..] if seed.len() == 32 => ed25519_seed(seed),
        _ => Err(KeyError::Unreadable("malformed Ed25519 private key".into())),
    }
}

fn ed25519_seed(seed: &[u8]) -> Result<ParsedKey, KeyError> {
    Ok(ParsedKey { kind: KeyKind::Ed25519, lettre_form: base64::engine::general_purpose::STANDARD.encode(seed) })
}

fn rsa_key(key: RsaPrivateKey) -> Result<ParsedKey, KeyError> {
    let bits = key.size() * 8;
    if bits < MIN_RSA_BITS {
        return Err(KeyError::TooShort(bits));
    }
    let pem = key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).map_err(|e| KeyError::Unreadable(e.to_string()))?;
    Ok(ParsedKey { kind: KeyKind::Rsa { bits }, lettre_form: pem.to_string() })
}

/// Signs one rep's messages.
pub struct DkimSigner {
    config: DkimConfig,
    pub kind: KeyKind,
    pub domain: String,
    pub selector: String,
}

impl std::fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimSigner").field("domain", &self.domain).field("selector", &self.selector).field("kind", &self.kind).finish()
    }
}

impl DkimSigner {
    pub fn new(domain: &str, selector: &str, key: &ParsedKey) -> Result<Self, KeyError> {
        let algorithm = match key.kind {
            KeyKind::Rsa { .. } => DkimSigningAlgorithm::Rsa,
            KeyKind::Ed25519 => DkimSigningAlgorithm::Ed25519,
        };
        let signing_key = DkimSigningKey::new(&key.lettre_form, algorithm).map_err(|e| KeyError::Unreadable(e.to_string()))?;
        let headers = SIGNED_HEADERS.iter().map(|h| HeaderName::new_from_ascii_str(h)).collect();
        // relaxed/relaxed survives the re-folding and whitespace changes
        // that relays are allowed to make.
        let canon = DkimCanonicalization { header: DkimCanonicalizationType::Relaxed, body: DkimCanonicalizationType::Relaxed };
        let config = DkimConfig::new(selector.to_string(), domain.to_string(), signing_key, headers, canon);
        Ok(DkimSigner { config, kind: key.kind, domain: domain.to_string(), selector: selector.to_string() })
    }

    /// Reads the rep's key (file or environment variable) and makes a
    /// signer. The error names the file or the variable, never the key.
    pub fn load(dkim: &Dkim, root: &Path) -> Result<Self, String> {
        let key = read_key(dkim, root, &|var| std::env::var(var).ok())?;
        DkimSigner::new(&dkim.domain, &dkim.selector, &key).map_err(|e| format!("DKIM key for {}: {e}", dkim.domain))
    }

    /// Adds the `DKIM-Signature` header. The signature's `t=` is lettre's
    /// reading of the system clock (it offers no way to pass one in).
    pub fn sign(&self, message: &mut Message) {
        message.sign(&self.config);
    }
}

/// The key text of a `[reps.dkim]` / `[[dkim]]` entry, parsed.
pub fn read_key(dkim: &Dkim, root: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<ParsedKey, String> {
    if let Some(file) = &dkim.private_key_file {
        let path = if file.is_absolute() { file.clone() } else { root.join(file) };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read the DKIM key {}: {e}; point private_key_file at the PEM file (readable by the user cadence runs as)",
                path.display()
            )
        })?;
        return parse_key(&text).map_err(|e| format!("{} is not a usable DKIM key: {e}", path.display()));
    }
    if let Some(var) = &dkim.private_key_env {
        let text = env(var)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("environment variable {var} is not set: it holds the DKIM private key"))?;
        return parse_key(&text).map_err(|e| format!("environment variable {var} does not hold a usable DKIM key: {e}"));
    }
    Err("give private_key_file or private_key_env".into())
}

/// Does a signature for `d=` align with the From domain under DMARC's
/// relaxed rule (same domain, or the From domain is below it)?
pub fn aligned(dkim_domain: &str, from_domain: &str) -> bool {
    let d = dkim_domain.trim_end_matches('.').to_ascii_lowercase();
    let f = from_domain.trim_end_matches('.').to_ascii_lowercase();
    f == d || f.ends_with(&format!(".{d}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made for these tests with `openssl genpkey -algorithm ed25519`.
    const ED25519_PKCS8: &str =
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEICW/r4W28LiwDAnFXk8WBruUeXO9KlJ8LaPRixqawxfO\n-----END PRIVATE KEY-----\n";

    #[test]
    fn ed25519_pkcs8_and_bare_seed() {
        let k = parse_key(ED25519_PKCS8).unwrap();
        assert_eq!(k.kind, KeyKind::Ed25519);
        let seed = k.lettre_form.clone();
        assert_eq!(parse_key(&seed).unwrap().lettre_form, seed);
        // One line with literal \n, as in an environment file.
        assert_eq!(parse_key(&ED25519_PKCS8.replace('\n', "\\n")).unwrap().kind, KeyKind::Ed25519);
        DkimSigner::new("example.com", "s1", &k).unwrap();
    }

    #[test]
    fn rsa_pkcs8_and_pkcs1() {
        let mut rng = rand::thread_rng();
        let key = RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let pkcs1 = key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let pkcs8 = rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, rsa::pkcs8::LineEnding::CRLF).unwrap();
        for text in [pkcs1.as_str(), pkcs8.as_str()] {
            let k = parse_key(text).unwrap();
            assert_eq!(k.kind, KeyKind::Rsa { bits: 1024 });
            DkimSigner::new("example.com", "s1", &k).unwrap();
        }
        let short = RsaPrivateKey::new(&mut rng, 512).unwrap();
        let pem = short.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        assert_eq!(parse_key(&pem).unwrap_err(), KeyError::TooShort(512));
    }

    #[test]
    fn useless_keys_say_why() {
        assert_eq!(parse_key("  ").unwrap_err(), KeyError::Empty);
        assert!(matches!(parse_key("not a key!").unwrap_err(), KeyError::NotPem(_)));
        assert_eq!(
            parse_key("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----").unwrap_err(),
            KeyError::Encrypted
        );
        assert!(matches!(parse_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").unwrap_err(), KeyError::WrongPem(_)));
        assert!(matches!(parse_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----").unwrap_err(), KeyError::Unreadable(_)));
        let msg = parse_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----").unwrap_err().to_string();
        assert!(msg.contains("openssl genpkey"), "{msg}");
    }

    #[test]
    fn alignment() {
        assert!(aligned("example.com", "example.com"));
        assert!(aligned("example.com", "mail.example.com"));
        assert!(aligned("Example.COM.", "example.com"));
        assert!(!aligned("example.com", "badexample.com"));
        assert!(!aligned("mail.example.com", "example.com"));
    }
}
