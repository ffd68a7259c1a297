//! Credential encryption: nothing readable at rest, every kind of tampering refused with a clear
//! error, key configuration parsed strictly, and rotation that completes and resumes.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use diesel::RunQueryDsl;
use pilot_core::{CredentialKind, CredentialStore, Secret, StoreError, UserId};

use super::{exec, on_both_backends, raw, user};
use crate::crypto::Binding;
use crate::testing::TestDb;
use crate::{Database, Keyring, NewCredential, StorageError};

const SECRET: &str = "sk-live \"quoted\"/slash+plus?&=é\u{1F511}\n0123456789abcdef";

fn credential(provider: &str, secret: &str) -> NewCredential {
    NewCredential {
        provider: provider.into(),
        kind: CredentialKind::ApiKey,
        secret: Secret::new(secret),
        origin: None,
        integration: None,
        header_name: None,
        expires_at: None,
    }
}

/// The six encodings a secret must not appear in.
fn encodings(secret: &str) -> Vec<(&'static str, Vec<u8>)> {
    let json = serde_json::to_string(secret).unwrap();
    vec![
        ("raw", secret.as_bytes().to_vec()),
        ("base64", STANDARD.encode(secret).into_bytes()),
        ("base64url", URL_SAFE.encode(secret).into_bytes()),
        (
            "base64url-nopad",
            URL_SAFE_NO_PAD.encode(secret).into_bytes(),
        ),
        ("hex", hex::encode(secret).into_bytes()),
        (
            "percent",
            percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
                .into_bytes(),
        ),
        ("json", json.trim_matches('"').as_bytes().to_vec()),
    ]
}

fn assert_absent(haystack: &[u8], secret: &str, place: &str) {
    for (name, needle) in encodings(secret) {
        // The first 16 bytes of an encoding suffice to find it; shorter prefixes risk noise.
        let probe = &needle[..needle.len().min(16)];
        assert!(
            !haystack.windows(probe.len()).any(|w| w == probe),
            "secret found {name}-encoded in {place}"
        );
    }
}

#[derive(diesel::QueryableByName)]
struct Stored {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
    #[diesel(sql_type = diesel::sql_types::Binary)]
    encrypted_value: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    row_text: String,
}

fn stored(t: &TestDb) -> Vec<Stored> {
    let sql = match t.backend() {
        crate::Backend::Postgres => {
            "SELECT id, encrypted_value, row_to_json(c)::text AS row_text FROM provider_credentials c"
        }
        crate::Backend::Sqlite => {
            "SELECT id, encrypted_value, id || provider || type || binding || key_id || hex(encrypted_value) AS row_text \
             FROM provider_credentials"
        }
    };
    diesel::sql_query(sql).load(&mut raw(t)).unwrap()
}

on_both_backends!(
    secret_never_stored_readably,
    tampering_fails_to_decrypt,
    rotation_completes_and_resumes
);

async fn secret_never_stored_readably(t: &TestDb) {
    let db = t.db();
    let u = user(db, "u").await;
    db.put_credential(&u, &credential("openai", SECRET))
        .await
        .unwrap();
    let rows = stored(t);
    assert_eq!(rows.len(), 1);
    assert_absent(&rows[0].encrypted_value, SECRET, "encrypted_value");
    assert_absent(rows[0].row_text.as_bytes(), SECRET, "the row");
    if t.backend() == crate::Backend::Sqlite {
        // The whole database file and its write-ahead log.
        let path = crate::config::sqlite_path(t.url()).to_owned();
        for file in [path.clone(), format!("{path}-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                assert_absent(&bytes, SECRET, &file);
            }
        }
    }
    // Metadata never carries it either.
    let info = format!("{:?}", db.credential_info(&u, "openai").await.unwrap());
    assert_absent(info.as_bytes(), SECRET, "CredentialInfo");
    let decrypted = db.credentials(&u, "openai").await.unwrap();
    assert_eq!(decrypted[0].secret.expose(), SECRET);
    assert!(!format!("{decrypted:?}").contains("sk-live"));
}

async fn decrypt_error(db: &Database, u: &UserId, provider: &str) -> String {
    match db.credentials(u, provider).await {
        Err(StoreError::Corrupt(message)) => message,
        other => panic!("expected a decryption error, got {other:?}"),
    }
}

async fn tampering_fails_to_decrypt(t: &TestDb) {
    let db = t.db();
    let a = user(db, "a").await;
    let b = user(db, "b").await;
    db.put_credential(&a, &credential("openai", SECRET))
        .await
        .unwrap();
    let original = stored(t).remove(0);
    let id = original.id.clone();
    let mut conn = raw(t);
    let set_value = |conn: &mut crate::conn::DbConn, bytes: &[u8]| {
        let sql = match t.backend() {
            crate::Backend::Postgres => format!(
                "UPDATE provider_credentials SET encrypted_value = '\\x{}' WHERE id = '{id}'",
                hex::encode(bytes)
            ),
            crate::Backend::Sqlite => format!(
                "UPDATE provider_credentials SET encrypted_value = X'{}' WHERE id = '{id}'",
                hex::encode(bytes)
            ),
        };
        exec(conn, &sql);
    };

    // Flipping a byte in the version, the nonce, the ciphertext or the tag.
    let len = original.encrypted_value.len();
    for position in [0, 1, 12, 24, 25, len / 2, len - 17, len - 1] {
        let mut bytes = original.encrypted_value.clone();
        bytes[position] ^= 0x01;
        set_value(&mut conn, &bytes);
        decrypt_error(db, &a, "openai").await;
    }
    // Truncated and empty values.
    set_value(&mut conn, &original.encrypted_value[..20]);
    assert!(decrypt_error(db, &a, "openai").await.contains("truncated"));
    set_value(&mut conn, &original.encrypted_value);
    assert_eq!(
        db.credentials(&a, "openai").await.unwrap()[0]
            .secret
            .expose(),
        SECRET
    );

    // Changing the type, the provider, the key id, or the owner.
    let cases: [(&str, &str, &str); 5] = [
        ("type", "'bearer'", "authentication failed"),
        ("key_id", "'k2'", "unknown key id"),
        ("provider", "'groq'", "authentication failed"),
        ("user_id", "'B'", "authentication failed"),
        ("key_id", "'k1'", ""),
    ];
    for (column, value, expect) in cases {
        let value = value.replace('B', b.as_str());
        let quoted = if column == "type" {
            "\"type\"".to_owned()
        } else {
            column.to_owned()
        };
        exec(
            &mut conn,
            &format!("UPDATE provider_credentials SET {quoted} = {value} WHERE id = '{id}'"),
        );
        let (owner, provider) = match column {
            "provider" => (&a, "groq"),
            "user_id" => (&b, "openai"),
            _ => (&a, "openai"),
        };
        if expect.is_empty() {
            continue;
        }
        let message = decrypt_error(db, owner, provider).await;
        assert!(message.contains(expect), "{column}: {message}");
        assert!(!message.contains("sk-live"));
        // Put the column back.
        let back = match column {
            "type" => "'api_key'".to_owned(),
            "key_id" => "'k1'".to_owned(),
            "provider" => "'openai'".to_owned(),
            _ => format!("'{}'", a.as_str()),
        };
        exec(
            &mut conn,
            &format!("UPDATE provider_credentials SET {quoted} = {back} WHERE id = '{id}'"),
        );
        assert_eq!(
            db.credentials(&a, "openai").await.unwrap()[0]
                .secret
                .expose(),
            SECRET,
            "{column} restored"
        );
    }

    // The same key id with another key: a wrong key fails cleanly.
    let wrong = Keyring::from_raw(&[("k1", [7u8; 32])], "k1").unwrap();
    let other = Database::clone(db).with_keyring(wrong);
    assert!(
        decrypt_error(&other, &a, "openai")
            .await
            .contains("authentication failed")
    );
}

async fn rotation_completes_and_resumes(t: &TestDb) {
    let old = t.keyring().clone();
    let db = t.db();
    let a = user(db, "a").await;
    let b = user(db, "b").await;
    for (u, provider) in [
        (&a, "openai"),
        (&a, "groq"),
        (&a, "custom_api"),
        (&b, "openai"),
        (&b, "groq"),
    ] {
        db.put_credential(u, &credential(provider, &format!("secret-{provider}")))
            .await
            .unwrap();
    }
    let new_key = [42u8; 32];
    let old_key = key_of(&old);
    let both = Keyring::from_raw(&[("k1", old_key), ("k2", new_key)], "k2").unwrap();
    let rotating = Database::clone(db).with_keyring(both.clone());

    // Interrupted after two values.
    assert_eq!(rotating.rotate_keys_batch(2).await.unwrap(), 2);
    assert_eq!(stored(t).len(), 5);
    let count_k2 = |t: &TestDb| {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query("SELECT count(*) AS n FROM provider_credentials WHERE key_id = 'k2'")
            .get_result::<N>(&mut raw(t))
            .unwrap()
            .n
    };
    assert_eq!(count_k2(t), 2);
    // Mixed state: everything is still readable with both keys.
    for (u, provider) in [
        (&a, "openai"),
        (&a, "groq"),
        (&a, "custom_api"),
        (&b, "openai"),
        (&b, "groq"),
    ] {
        assert_eq!(
            rotating.credentials(u, provider).await.unwrap()[0]
                .secret
                .expose(),
            format!("secret-{provider}")
        );
    }
    // Resumed: the rest.
    let report = rotating.rotate_keys(2).await.unwrap();
    assert_eq!(report.rotated, 3);
    assert_eq!(count_k2(t), 5);
    assert_eq!(
        rotating.rotate_keys(2).await.unwrap().rotated,
        0,
        "nothing left"
    );
    // The new key alone reads everything; the old one alone reads nothing.
    let only_new =
        Database::clone(db).with_keyring(Keyring::from_raw(&[("k2", new_key)], "k2").unwrap());
    let only_old = Database::clone(db).with_keyring(old);
    for (u, provider) in [
        (&a, "openai"),
        (&a, "groq"),
        (&a, "custom_api"),
        (&b, "openai"),
        (&b, "groq"),
    ] {
        assert_eq!(
            only_new.credentials(u, provider).await.unwrap()[0]
                .secret
                .expose(),
            format!("secret-{provider}")
        );
        assert!(
            decrypt_error(&only_old, u, provider)
                .await
                .contains("unknown key id 'k2'")
        );
    }
}

/// The raw key `k1` of a test keyring.
fn key_of(keyring: &Keyring) -> [u8; 32] {
    keyring.raw_key("k1").unwrap()
}

#[test]
fn every_flipped_byte_is_refused() {
    let keyring = Keyring::from_raw(&[("k1", [1u8; 32])], "k1").unwrap();
    let user = UserId::from("u");
    let binding = Binding {
        user: &user,
        provider: "openai",
        kind: "api_key",
    };
    let (key_id, sealed) = keyring.encrypt(binding, &Secret::new(SECRET)).unwrap();
    assert_eq!(
        keyring.decrypt(&key_id, binding, &sealed).unwrap().expose(),
        SECRET
    );
    for i in 0..sealed.len() {
        for bit in [0x01u8, 0x80] {
            let mut bytes = sealed.clone();
            bytes[i] ^= bit;
            assert!(
                keyring.decrypt(&key_id, binding, &bytes).is_err(),
                "byte {i} bit {bit:#x}"
            );
        }
    }
    // Two encryptions of the same value differ (random nonce).
    assert_ne!(
        keyring.encrypt(binding, &Secret::new(SECRET)).unwrap().1,
        sealed
    );
    // Every binding field matters.
    let other = UserId::from("v");
    for changed in [
        Binding {
            user: &other,
            ..binding
        },
        Binding {
            provider: "groq",
            ..binding
        },
        Binding {
            kind: "bearer",
            ..binding
        },
    ] {
        assert!(matches!(
            keyring.decrypt(&key_id, changed, &sealed),
            Err(StorageError::Decrypt(_))
        ));
    }
    assert!(
        matches!(keyring.decrypt("k9", binding, &sealed), Err(StorageError::UnknownKeyId(id)) if id == "k9")
    );
    // Field boundaries are unambiguous: ("ab", "c") and ("a", "bc") differ.
    let ab = Binding {
        provider: "ab",
        kind: "c",
        ..binding
    };
    let a_bc = Binding {
        provider: "a",
        kind: "bc",
        ..binding
    };
    let (_, sealed_ab) = keyring.encrypt(ab, &Secret::new("x")).unwrap();
    assert!(keyring.decrypt("k1", a_bc, &sealed_ab).is_err());
}

#[test]
fn key_configuration_is_parsed_strictly() {
    let k = STANDARD.encode([3u8; 32]);
    let short = STANDARD.encode([3u8; 16]);
    let check = |spec: &str, active: &str, expect: Result<(&str, usize), &str>| match (
        Keyring::from_keys(spec, active),
        expect,
    ) {
        (Ok(ring), Ok((id, n))) => {
            assert_eq!(ring.active_key_id(), id, "{spec}");
            assert_eq!(ring.key_ids().count(), n, "{spec}");
        }
        (Err(e), Err(fragment)) => assert!(e.to_string().contains(fragment), "{spec}: {e}"),
        (got, want) => panic!("{spec} / {active}: got {got:?}, want {want:?}"),
    };
    check(&format!("k1:{k}"), "k1", Ok(("k1", 1)));
    check(&format!("k1:{k}, k2:{k}"), "k2", Ok(("k2", 2)));
    check(&format!("k1:{k}"), "k2", Err("active key id 'k2'"));
    check(&format!("k1:{k},k1:{k}"), "k1", Err("given twice"));
    check(&format!("k1:{short}"), "k1", Err("32 bytes"));
    check("k1:not base64!", "k1", Err("not valid base64"));
    check(&k, "k1", Err("id:base64"));
    check("", "k1", Err("no master key"));
    check(&format!("bad id:{k}"), "bad id", Err("key id must be"));
    assert!(Keyring::from_master_key(&k).is_ok());
    assert!(Keyring::from_master_key("").is_err());
    assert!(Keyring::from_master_key(&short).is_err());
    // Debug never shows key material.
    let ring = Keyring::from_master_key(&k).unwrap();
    assert!(!format!("{ring:?}").contains(&k[..8]));
}

#[test]
fn key_file_is_created_once_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (first, path) = Keyring::load_or_generate(&data).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (second, _) = Keyring::load_or_generate(&data).unwrap();
    assert_eq!(
        first.raw_key("k1"),
        second.raw_key("k1"),
        "the second start reads the same key"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(STANDARD.decode(text.trim()).unwrap().len(), 32);
    // A corrupt key file is an error, never a silently different key.
    std::fs::write(&path, "garbage").unwrap();
    assert!(matches!(
        Keyring::load_or_generate(&data),
        Err(StorageError::KeyConfig(_))
    ));
}

#[test]
fn processes_starting_together_agree_on_one_key() {
    // A server and a worker starting at once on a fresh data directory: whoever loses the race
    // to create the key file must read the winner's whole key, never a file still being written.
    for _ in 0..100 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let (data, barrier) = (data.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    Keyring::load_or_generate(&data).map(|(k, _)| k.raw_key("k1"))
                })
            })
            .collect();
        let keys: Vec<_> = starts
            .into_iter()
            .map(|s| s.join().unwrap().unwrap())
            .collect();
        assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
        let leftovers: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers,
            vec![std::ffi::OsString::from(crate::KEY_FILE_NAME)]
        );
    }
}

#[test]
fn key_settings_allow_exactly_one_source() {
    use crate::{KeySettings, KeySource};
    let dir = tempfile::tempdir().unwrap();
    let key = STANDARD.encode([7u8; 32]);
    let key_file = dir.path().join("key.txt");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let base = || KeySettings {
        data_dir: dir.path().join("data"),
        ..KeySettings::default()
    };
    // (settings, allow_generated, expected error fragment or None for success)
    let cases: Vec<(KeySettings, bool, Option<&str>)> = vec![
        (
            KeySettings {
                master_key: Some(key.clone()),
                ..base()
            },
            false,
            None,
        ),
        (
            KeySettings {
                master_key_file: Some(key_file.clone()),
                ..base()
            },
            false,
            None,
        ),
        (
            KeySettings {
                master_key: Some(key.clone()),
                master_key_file: Some(key_file.clone()),
                ..base()
            },
            false,
            Some("not both"),
        ),
        (
            KeySettings {
                master_key: Some("  ".into()),
                ..base()
            },
            true,
            Some("empty"),
        ),
        (
            KeySettings {
                master_keys: Some(format!("k2:{key}")),
                ..base()
            },
            false,
            Some("PILOT_ACTIVE_KEY_ID"),
        ),
        (
            KeySettings {
                master_keys: Some(format!("k2:{key}")),
                active_key_id: Some("k2".into()),
                ..base()
            },
            false,
            None,
        ),
        (
            KeySettings {
                master_key: Some(key.clone()),
                master_keys: Some(format!("k2:{key}")),
                ..base()
            },
            false,
            Some("not both"),
        ),
        (base(), false, Some("PostgreSQL needs a master key")),
        (
            KeySettings {
                master_key_file: Some(dir.path().join("missing")),
                ..base()
            },
            false,
            Some("reading"),
        ),
    ];
    for (settings, allow_generated, expect) in cases {
        let shown = format!("{settings:?}");
        assert!(!shown.contains(&key), "Debug shows the key: {shown}");
        match (Keyring::from_settings(&settings, allow_generated), expect) {
            (Ok((_, source)), None) => assert_eq!(source, KeySource::Configured, "{shown}"),
            (Err(e), Some(fragment)) => {
                let message = e.to_string();
                assert!(message.contains(fragment), "{shown}: {message}");
                assert!(
                    !message.contains(&key),
                    "the error shows the key: {message}"
                );
            }
            (outcome, _) => panic!("{shown}: unexpected {:?}", outcome.map(|(_, s)| s)),
        }
    }
    // No keys on the embedded default: a key file is generated once, in a private directory.
    let (first, source) = Keyring::from_settings(&base(), true).unwrap();
    let KeySource::KeyFile(path) = source else {
        panic!("expected a key file")
    };
    assert!(path.starts_with(dir.path().join("data")));
    let (second, _) = Keyring::from_settings(&base(), true).unwrap();
    assert_eq!(key_of(&first), key_of(&second));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("data"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
