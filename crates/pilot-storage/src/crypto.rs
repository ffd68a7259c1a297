//! Credential encryption at rest: XChaCha20-Poly1305 under a keyring of named master keys.
//!
//! A stored value is `version (1 byte) || nonce (24 random bytes) || ciphertext+tag`. The key id
//! is stored in its own column and looked up, never guessed. The associated data binds the
//! ciphertext to where it belongs, as length-prefixed fields (format version, key id, user id,
//! provider, credential type), so a value copied to another user, provider, type or key id fails
//! to authenticate instead of decrypting to someone else's secret.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use pilot_core::{Secret, UserId};

use crate::StorageError;

/// The ciphertext format written today.
const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The key id of a single `PILOT_MASTER_KEY` (and of a generated key file).
pub const DEFAULT_KEY_ID: &str = "k1";
/// The name of the generated key file inside the data directory.
pub const KEY_FILE_NAME: &str = "master.key";

/// The master keys: several for decryption, one active for encryption. Its `Debug` shows key
/// ids only.
#[derive(Clone)]
pub struct Keyring {
    keys: BTreeMap<String, [u8; 32]>,
    active: String,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish()
    }
}

/// Where a credential belongs; bound into the associated data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Binding<'a> {
    pub(crate) user: &'a UserId,
    pub(crate) provider: &'a str,
    pub(crate) kind: &'a str,
}

/// The operator's key settings as the binaries read them: a single key
/// (`PILOT_MASTER_KEY`, key id `k1`) or several (`PILOT_MASTER_KEYS` with
/// `PILOT_ACTIVE_KEY_ID`), each also from a file; with none, the embedded SQLite default uses a
/// key file generated in the data directory.
#[derive(Clone, Default)]
pub struct KeySettings {
    /// `PILOT_MASTER_KEY`: base64 of 32 bytes.
    pub master_key: Option<String>,
    /// `PILOT_MASTER_KEY_FILE`.
    pub master_key_file: Option<PathBuf>,
    /// `PILOT_MASTER_KEYS`: `id:base64,...`.
    pub master_keys: Option<String>,
    /// `PILOT_MASTER_KEYS_FILE`.
    pub master_keys_file: Option<PathBuf>,
    /// `PILOT_ACTIVE_KEY_ID`: the key new values are encrypted with.
    pub active_key_id: Option<String>,
    /// Where the generated key file lives (embedded SQLite default only).
    pub data_dir: PathBuf,
}

impl std::fmt::Debug for KeySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: bool| if v { "[set]" } else { "[unset]" };
        f.debug_struct("KeySettings")
            .field("master_key", &set(self.master_key.is_some()))
            .field("master_key_file", &self.master_key_file)
            .field("master_keys", &set(self.master_keys.is_some()))
            .field("master_keys_file", &self.master_keys_file)
            .field("active_key_id", &self.active_key_id)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

/// Where [`Keyring::from_settings`] found its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The operator configured them.
    Configured,
    /// The key file in the data directory (generated on first start).
    KeyFile(PathBuf),
}

impl Keyring {
    /// The keyring the operator's settings describe. Exactly one way of giving keys may be
    /// used; an empty key is refused; with no keys configured, `allow_generated` (the embedded
    /// SQLite default) loads or creates the key file in the data directory, otherwise it is an
    /// error that says what to set.
    pub fn from_settings(
        settings: &KeySettings,
        allow_generated: bool,
    ) -> Result<(Self, KeySource), StorageError> {
        let config = |m: &str| StorageError::KeyConfig(m.to_owned());
        let read = |path: &Path| -> Result<String, StorageError> {
            std::fs::read_to_string(path)
                .map(|text| text.trim().to_owned())
                .map_err(|e| StorageError::KeyConfig(format!("reading {}: {e}", path.display())))
        };
        let single = match (&settings.master_key, &settings.master_key_file) {
            (Some(_), Some(_)) => {
                return Err(config(
                    "give PILOT_MASTER_KEY or PILOT_MASTER_KEY_FILE, not both",
                ));
            }
            (Some(key), None) => Some(key.trim().to_owned()),
            (None, Some(path)) => Some(read(path)?),
            (None, None) => None,
        };
        let several = match (&settings.master_keys, &settings.master_keys_file) {
            (Some(_), Some(_)) => {
                return Err(config(
                    "give PILOT_MASTER_KEYS or PILOT_MASTER_KEYS_FILE, not both",
                ));
            }
            (Some(keys), None) => Some(keys.trim().to_owned()),
            (None, Some(path)) => Some(read(path)?),
            (None, None) => None,
        };
        match (single, several) {
            (Some(_), Some(_)) => Err(config(
                "give a single master key or PILOT_MASTER_KEYS, not both",
            )),
            (Some(key), None) if key.is_empty() => Err(config("the master key is empty")),
            (Some(key), None) => Ok((Self::from_master_key(&key)?, KeySource::Configured)),
            (None, Some(keys)) => {
                let active = settings
                    .active_key_id
                    .as_deref()
                    .ok_or_else(|| config("PILOT_MASTER_KEYS needs PILOT_ACTIVE_KEY_ID"))?;
                Ok((Self::from_keys(&keys, active)?, KeySource::Configured))
            }
            (None, None) if allow_generated => {
                create_private_dir(&settings.data_dir)?;
                let (keyring, path) = Self::load_or_generate(&settings.data_dir)?;
                Ok((keyring, KeySource::KeyFile(path)))
            }
            (None, None) => Err(config(
                "PostgreSQL needs a master key: set PILOT_MASTER_KEY (or PILOT_MASTER_KEY_FILE, \
                 or PILOT_MASTER_KEYS with PILOT_ACTIVE_KEY_ID)",
            )),
        }
    }

    /// A keyring of one key, id `k1`, from `PILOT_MASTER_KEY`'s value (base64 of 32 bytes).
    pub fn from_master_key(base64_key: &str) -> Result<Self, StorageError> {
        let key = decode_key(DEFAULT_KEY_ID, base64_key)?;
        Ok(Self {
            keys: BTreeMap::from([(DEFAULT_KEY_ID.to_owned(), key)]),
            active: DEFAULT_KEY_ID.to_owned(),
        })
    }

    /// A keyring from `PILOT_MASTER_KEYS` (`id:base64,id:base64,...`) and `PILOT_ACTIVE_KEY_ID`.
    pub fn from_keys(spec: &str, active: &str) -> Result<Self, StorageError> {
        let mut keys = BTreeMap::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, b64) = entry.split_once(':').ok_or_else(|| {
                StorageError::KeyConfig("each key must be written id:base64".to_owned())
            })?;
            let id = id.trim();
            if !is_valid_key_id(id) {
                return Err(StorageError::KeyConfig(
                    "a key id must be 1 to 32 letters, digits, '_' or '-'".to_owned(),
                ));
            }
            let key = decode_key(id, b64.trim())?;
            if keys.insert(id.to_owned(), key).is_some() {
                return Err(StorageError::KeyConfig(format!(
                    "key id '{id}' is given twice"
                )));
            }
        }
        if keys.is_empty() {
            return Err(StorageError::KeyConfig("no master key given".to_owned()));
        }
        if !keys.contains_key(active) {
            return Err(StorageError::KeyConfig(format!(
                "the active key id '{active}' is not among the keys"
            )));
        }
        Ok(Self {
            keys,
            active: active.to_owned(),
        })
    }

    /// A keyring from raw key bytes (tests, tools). The first key is active.
    pub fn from_raw(keys: &[(&str, [u8; 32])], active: &str) -> Result<Self, StorageError> {
        let mut map = BTreeMap::new();
        for (id, key) in keys {
            if !is_valid_key_id(id) {
                return Err(StorageError::KeyConfig(format!("invalid key id '{id}'")));
            }
            map.insert((*id).to_owned(), *key);
        }
        if !map.contains_key(active) {
            return Err(StorageError::KeyConfig(format!(
                "the active key id '{active}' is not among the keys"
            )));
        }
        Ok(Self {
            keys: map,
            active: active.to_owned(),
        })
    }

    /// A fresh random 32-byte key, base64-encoded (what the key file holds).
    pub fn generate_key_base64() -> Result<String, StorageError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| StorageError::KeyConfig(format!("no randomness: {e}")))?;
        Ok(STANDARD.encode(key))
    }

    /// The embedded default's key: reads `<data_dir>/master.key`, or on first start creates it
    /// with a fresh key (exclusively, mode 0600). Returns the keyring (id `k1`) and the file's
    /// path.
    ///
    /// The key is written whole to a private temporary file (O_EXCL, 0600, synced) that is then
    /// hard-linked to its name: the link fails if the name exists, exactly like O_EXCL, and a
    /// process starting at the same moment never reads a file that is still empty. A crash
    /// leaves at worst a stray temporary file, never an empty key file.
    pub fn load_or_generate(data_dir: &Path) -> Result<(Self, PathBuf), StorageError> {
        let path = data_dir.join(KEY_FILE_NAME);
        std::fs::create_dir_all(data_dir)?;
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok((Self::from_master_key(text.trim())?, path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let fresh = Self::generate_key_base64()?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix)
            .map_err(|e| StorageError::KeyConfig(format!("no randomness: {e}")))?;
        let temp = data_dir.join(format!(".{KEY_FILE_NAME}.{}.tmp", hex::encode(suffix)));
        let written = write_private(&temp, &fresh);
        let linked = written.and_then(|()| std::fs::hard_link(&temp, &path));
        // The temporary name goes either way; the key lives on under `path` when linked.
        let _ = std::fs::remove_file(&temp);
        match linked {
            Ok(()) => {
                // Make the new name itself durable.
                std::fs::File::open(data_dir)?.sync_all()?;
                Ok((Self::from_master_key(&fresh)?, path))
            }
            // Another process (or an earlier start) created it: use what is there.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&path)?;
                Ok((Self::from_master_key(text.trim())?, path))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The id new values are encrypted under.
    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    /// The raw bytes of key `id` (tests compare keyrings with it).
    #[cfg(test)]
    pub(crate) fn raw_key(&self, id: &str) -> Option<[u8; 32]> {
        self.keys.get(id).copied()
    }

    /// Every key id, sorted.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Encrypts `secret` under the active key for `binding`; returns (key id, stored bytes).
    pub(crate) fn encrypt(
        &self,
        binding: Binding<'_>,
        secret: &Secret,
    ) -> Result<(String, Vec<u8>), StorageError> {
        let key = self
            .keys
            .get(&self.active)
            .ok_or_else(|| StorageError::UnknownKeyId(self.active.clone()))?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| StorageError::KeyConfig(format!("no randomness: {e}")))?;
        let aad = associated_data(FORMAT_VERSION, &self.active, binding);
        let cipher = XChaCha20Poly1305::new(&Key::from(*key));
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| StorageError::Decrypt("encryption failed".to_owned()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok((self.active.clone(), out))
    }

    /// Decrypts a stored value written under `key_id` for `binding`.
    pub(crate) fn decrypt(
        &self,
        key_id: &str,
        binding: Binding<'_>,
        stored: &[u8],
    ) -> Result<Secret, StorageError> {
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| StorageError::UnknownKeyId(key_id.to_owned()))?;
        let (&version, rest) = stored
            .split_first()
            .ok_or_else(|| StorageError::Decrypt("empty stored value".to_owned()))?;
        if version != FORMAT_VERSION {
            return Err(StorageError::Decrypt(format!(
                "unknown format version {version}"
            )));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(StorageError::Decrypt(
                "stored value is truncated".to_owned(),
            ));
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce =
            XNonce::try_from(nonce).map_err(|_| StorageError::Decrypt("bad nonce".to_owned()))?;
        let aad = associated_data(version, key_id, binding);
        let cipher = XChaCha20Poly1305::new(&Key::from(*key));
        let plain = cipher.decrypt(&nonce, Payload { msg: sealed, aad: &aad }).map_err(|_| {
            StorageError::Decrypt(
                "authentication failed (wrong key, tampered value, or value moved to another owner)".to_owned(),
            )
        })?;
        let text = String::from_utf8(plain)
            .map_err(|_| StorageError::Decrypt("plaintext is not UTF-8".to_owned()))?;
        Ok(Secret::new(text))
    }
}

/// Creates `path` exclusively with mode 0600 and writes `key` to it, synced.
fn write_private(path: &Path, key: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(key.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// `u32 big-endian length || bytes` for each field, so no two field lists encode alike.
fn associated_data(version: u8, key_id: &str, b: Binding<'_>) -> Vec<u8> {
    let fields: [&[u8]; 5] = [
        &[version],
        key_id.as_bytes(),
        b.user.as_str().as_bytes(),
        b.provider.as_bytes(),
        b.kind.as_bytes(),
    ];
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 4).sum());
    for field in fields {
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

fn decode_key(id: &str, b64: &str) -> Result<[u8; 32], StorageError> {
    let bytes = STANDARD
        .decode(b64.trim())
        .map_err(|_| StorageError::KeyConfig(format!("key '{id}' is not valid base64")))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        StorageError::KeyConfig(format!(
            "key '{id}' must decode to 32 bytes, not {}",
            bytes.len()
        ))
    })
}

fn is_valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Creates `dir` (and its parents) if missing; a directory created here is private (0700).
fn create_private_dir(dir: &Path) -> Result<(), StorageError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| StorageError::KeyConfig(format!("creating {}: {e}", dir.display())))
}
