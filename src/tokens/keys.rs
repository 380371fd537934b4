//! Key material in the data dir: the access-token signing key, the refresh MAC key, and the JWKS.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use sha2::{Digest, Sha256};

/// PKCS#8 v1 prefix for a raw Ed25519 seed (RFC 8410): what jsonwebtoken's EdDSA signer parses.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A loaded signing key: what signs access tokens, what verifies them, and how it is published.
pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    /// The public JWK, or `None` for a symmetric key (never published).
    pub jwk: Option<serde_json::Value>,
    /// The parsed Ed25519 key, kept so signing does not re-parse PKCS#8 every time.
    pub ed25519: Option<ed25519_dalek::SigningKey>,
}

/// Why key material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Creates the data dir (0700) when missing.
pub fn ensure_data_dir(dir: &Path) -> Result<(), KeyError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
}

/// Reads a secret file, generating `len` random bytes (mode 0600) on first start.
/// Refuses one that group or other may read or write ([`read_private`]).
pub fn load_or_create_secret(path: &Path, len: usize) -> Result<Vec<u8>, KeyError> {
    if path.exists() {
        return read_private(path);
    }
    let mut bytes = vec![0u8; len];
    rand::fill(&mut bytes[..]);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(&bytes)
        .and_then(|_| f.sync_all())
        .map_err(io_err(path))?;
    Ok(bytes)
}

/// Reads a secret or private key file that must be the server's alone. Refuses one that
/// group or other may read or write: anyone else on the machine could copy it and forge
/// tokens, or have planted it. The message names the file and the fix.
pub fn read_private(path: &Path) -> Result<Vec<u8>, KeyError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o066 != 0 {
        let who = if mode & 0o044 != 0 {
            "readable"
        } else {
            "writable"
        };
        return Err(KeyError::Invalid(format!(
            "{p} is {who} by group or other (mode {mode:04o}); anyone on this machine could \
             use it to forge tokens. Fix: chmod 600 {p}",
            p = path.display()
        )));
    }
    fs::read(path).map_err(io_err(path))
}

/// Reads `--service-key-file`: text, because the key travels as an HTTP header value
/// (`Authorization: Bearer <key>`, the hook's secret header). Surrounding whitespace is
/// trimmed; what is left must be at least 16 printable ASCII characters without spaces
/// (hex or base64 of random bytes). Raw binary would be accepted here but unusable on
/// every call, so it is refused now.
pub fn service_key(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = read_private(path).map_err(|e| e.to_string())?;
    let key = bytes.trim_ascii();
    if !key.iter().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{}: a service key must be printable ASCII text (hex or base64 of random bytes, \
             e.g. `openssl rand -hex 32 > {0}`), not raw bytes",
            path.display()
        ));
    }
    if key.len() < 16 {
        return Err(format!(
            "{}: a service key needs at least 16 characters (e.g. `openssl rand -hex 32`)",
            path.display()
        ));
    }
    Ok(key.to_vec())
}

/// The Ed25519 seed that signs new tokens, in the data dir.
pub const ED25519_KEY: &str = "signing-ed25519.key";
/// Retired Ed25519 seeds, one file per key named `<retired unix ms>.key`: they still verify
/// (and JWKS still publishes them) until every token they signed has expired.
pub const RETIRED_DIR: &str = "signing-retired";

/// `tokenpush keys rotate`: a new seed becomes current and the old one is retired. The new
/// file is complete before it is renamed into place, so a server reading the dir meanwhile
/// sees either key set, never a missing key. Returns the new `kid`.
pub fn rotate_ed25519(data_dir: &Path) -> Result<String, KeyError> {
    ensure_data_dir(data_dir)?;
    let current = data_dir.join(ED25519_KEY);
    let fresh = data_dir.join("signing-ed25519.key.new");
    let _ = fs::remove_file(&fresh);
    let seed = load_or_create_secret(&fresh, 32)?;
    if current.exists() {
        let retired = data_dir.join(RETIRED_DIR);
        fs::create_dir_all(&retired).map_err(io_err(&retired))?;
        fs::set_permissions(&retired, fs::Permissions::from_mode(0o700))
            .map_err(io_err(&retired))?;
        let to = retired.join(format!("{}.key", crate::clock::now_ms()));
        fs::rename(&current, &to).map_err(io_err(&current))?;
    }
    fs::rename(&fresh, &current).map_err(io_err(&current))?;
    Ok(ed25519(&seed)?.kid)
}

/// The retired Ed25519 keys still needed at `now_ms`: retired less than `keep_ms` ago.
pub fn retired_ed25519(
    data_dir: &Path,
    now_ms: crate::clock::Millis,
    keep_ms: crate::clock::Millis,
) -> Result<Vec<SigningKey>, KeyError> {
    let dir = data_dir.join(RETIRED_DIR);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(vec![]);
    };
    let mut keys = vec![];
    for e in entries.flatten() {
        let path = e.path();
        let at = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<crate::clock::Millis>().ok());
        if at.is_some_and(|at| now_ms - at < keep_ms) {
            keys.push(ed25519(&read_private(&path)?)?);
        }
    }
    Ok(keys)
}

/// The Ed25519 signing key from a 32-byte seed, with its RFC 7638 thumbprint as `kid`.
pub fn ed25519(seed: &[u8]) -> Result<SigningKey, KeyError> {
    let seed: [u8; 32] = seed
        .try_into()
        .map_err(|_| KeyError::Invalid("Ed25519 key file must hold 32 bytes".into()))?;
    let parsed = ed25519_dalek::SigningKey::from_bytes(&seed);
    let public = parsed.verifying_key().to_bytes();
    let x = B64.encode(public);
    // RFC 7638: members in lexicographic order, no whitespace.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let kid = B64.encode(Sha256::digest(canonical.as_bytes()));
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    der.extend_from_slice(&seed);
    Ok(SigningKey {
        alg: Algorithm::EdDSA,
        jwk: Some(
            serde_json::json!({"kty":"OKP","crv":"Ed25519","x":x,"kid":kid,"alg":"EdDSA","use":"sig"}),
        ),
        kid,
        encoding: EncodingKey::from_ed_der(&der),
        decoding: DecodingKey::from_ed_der(&public),
        ed25519: Some(parsed),
    })
}

/// An HS256 key; its `kid` is a hash prefix so a rotated secret is told apart.
pub fn hs256(secret: &[u8]) -> Result<SigningKey, KeyError> {
    if secret.len() < 32 {
        return Err(KeyError::Invalid(
            "the HS256 secret must be at least 32 bytes".into(),
        ));
    }
    let kid = B64.encode(&Sha256::digest(secret)[..12]);
    Ok(SigningKey {
        alg: Algorithm::HS256,
        kid,
        encoding: EncodingKey::from_secret(secret),
        decoding: DecodingKey::from_secret(secret),
        jwk: None,
        ed25519: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc8037_example() {
        // RFC 8037 appendix A.3: the thumbprint of the example Ed25519 key.
        let seed = B64
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap();
        let key = ed25519(&seed).unwrap();
        assert_eq!(key.kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        assert_eq!(
            key.jwk.unwrap()["x"],
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
    }

    #[test]
    fn secrets_are_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let a = load_or_create_secret(&p, 32).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_or_create_secret(&p, 32).unwrap(), a);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(read_private(&p).is_err());
    }

    #[test]
    fn group_or_other_access_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        fs::write(&p, [1u8; 32]).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            let err = read_private(&p).unwrap_err().to_string();
            assert!(err.contains(&p.display().to_string()), "{err}");
            assert!(err.contains("chmod 600"), "{err}");
        }
        for mode in [0o600, 0o400, 0o700] {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(read_private(&p).unwrap(), vec![1u8; 32]);
        }
    }
}
