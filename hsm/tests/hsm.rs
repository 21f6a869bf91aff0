//! The backend suite (run against SoftHSM2 through PKCS#11 and against the
//! danger_software backend), RFC known-answer vectors, key protection,
//! errors, concurrency, backpressure and rotation.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType};
use fps_hsm::clock::ManualClock;
use fps_hsm::software::{SoftKey, SoftwareKeyStore};
use fps_hsm::{
    admin, Hsm, HsmConfig, HsmError, KeyRef, Mac as _, Mechanism, Operation, PinSource, Signer as _,
};

fn software_hsm(store: SoftwareKeyStore, config: HsmConfig) -> Hsm {
    Hsm::builder(config).software_keys(store).start().unwrap()
}

/// The suite every backend must pass, on keys from [`add_known_keys`].
async fn backend_suite(hsm: &Hsm, ed25519: bool) {
    let message = Bytes::from_static(MESSAGE);
    let mut tampered = MESSAGE.to_vec();
    tampered[10] ^= 1;
    let tampered = Bytes::from(tampered);

    for base in ["t-hmac", "t-cmac"] {
        let k = key(base);
        let tag = hsm.mac(&k, message.clone()).await.unwrap();
        assert_eq!(tag, independent_mac(base, MESSAGE), "{base} MAC");
        hsm.verify_mac(&k, message.clone(), Bytes::from(tag.clone()))
            .await
            .unwrap();
        let mut bad_tag = tag.clone();
        bad_tag[0] ^= 0x80;
        assert_err(
            hsm.verify_mac(&k, message.clone(), bad_tag.into()).await,
            |e| matches!(e, HsmError::MacMismatch),
        );
        assert_err(
            hsm.verify_mac(&k, tampered.clone(), tag.clone().into())
                .await,
            |e| e.is_verification_failure(),
        );
        assert_err(
            hsm.verify_mac(&k, message.clone(), Bytes::from(tag[..8].to_vec()))
                .await,
            |e| matches!(e, HsmError::MacMismatch),
        );
        // Truncated tags (ISO 8583's 8-byte F64/F128) through the leftmost
        // check: 8 and more leftmost bytes verify, the whole tag too; a
        // flipped bit, a tag under 8 bytes, the rightmost bytes, a tag
        // longer than the MAC and a tampered message do not.
        for n in [8, 12, tag.len()] {
            hsm.verify_mac_leftmost(&k, message.clone(), Bytes::from(tag[..n].to_vec()))
                .await
                .unwrap_or_else(|e| panic!("{base}: leftmost {n} bytes: {e}"));
        }
        let mut bad8 = tag[..8].to_vec();
        bad8[7] ^= 1;
        let mut long = tag.clone();
        long.push(0);
        for (what, t) in [
            ("flipped bit", bad8),
            ("7 bytes", tag[..7].to_vec()),
            ("rightmost 8", tag[tag.len() - 8..].to_vec()),
            ("longer than the MAC", long),
            ("empty", Vec::new()),
        ] {
            let r = hsm
                .verify_mac_leftmost(&k, message.clone(), Bytes::from(t))
                .await;
            assert!(
                matches!(r, Err(HsmError::MacMismatch)),
                "{base}: {what}: {r:?}"
            );
        }
        assert_err(
            hsm.verify_mac_leftmost(&k, tampered.clone(), Bytes::from(tag[..8].to_vec()))
                .await,
            |e| matches!(e, HsmError::MacMismatch),
        );
    }

    let mut signers = vec!["t-ec", "t-rsa"];
    if ed25519 {
        signers.push("t-ed");
    }
    for base in signers {
        let k = key(base);
        // Backend signs, an independent implementation verifies.
        let signature = hsm.sign(&k, message.clone()).await.unwrap();
        assert!(
            independent_verify(base, MESSAGE, &signature),
            "{base}: backend signature"
        );
        hsm.verify(&k, message.clone(), signature.clone().into())
            .await
            .unwrap();
        // An independent implementation signs, the backend verifies.
        let theirs = known_key(base).sign(MESSAGE).unwrap();
        hsm.verify(&k, message.clone(), theirs.into())
            .await
            .unwrap();
        // Tampering is rejected.
        assert_err(
            hsm.verify(&k, tampered.clone(), signature.clone().into())
                .await,
            |e| matches!(e, HsmError::SignatureInvalid),
        );
        let mut bad = signature.clone();
        bad[5] ^= 1;
        assert_err(hsm.verify(&k, message.clone(), bad.into()).await, |e| {
            matches!(e, HsmError::SignatureInvalid)
        });
        assert_err(
            hsm.verify(&k, message.clone(), Bytes::from_static(b"short"))
                .await,
            |e| matches!(e, HsmError::SignatureInvalid),
        );
    }

    // Operation and mechanism mismatches name the problem.
    let e = assert_err(hsm.mac(&key("t-ec"), message.clone()).await, |e| {
        matches!(e, HsmError::UnsupportedMechanism { .. })
    });
    assert!(e.to_string().contains("ecdsa_p256_sha256"), "{e}");
    let wrong = KeyRef::new("t-hmac", Mechanism::AesCmac).unwrap();
    let e = assert_err(hsm.mac(&wrong, message.clone()).await, |e| {
        matches!(e, HsmError::KeyTypeMismatch { .. })
    });
    assert!(
        e.to_string().contains("t-hmac-v1") && e.to_string().contains("aes_cmac"),
        "{e}"
    );
    let missing = KeyRef::new("no-such-key", Mechanism::HmacSha256).unwrap();
    let e = assert_err(hsm.mac(&missing, message.clone()).await, |e| {
        matches!(e, HsmError::KeyNotFound { .. })
    });
    assert!(e.to_string().contains("no-such-key"), "{e}");
    let errors = hsm
        .check_keys(&[
            (key("t-hmac"), Operation::Mac),
            (missing.clone(), Operation::VerifyMac),
            (key("t-ec"), Operation::Mac),
        ])
        .await
        .unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[test]
fn software_backend_passes_the_suite() {
    let store = SoftwareKeyStore::new();
    add_known_keys(&store, true);
    let hsm = software_hsm(store, HsmConfig::danger_software());
    runtime().block_on(backend_suite(&hsm, true));
}

#[test]
fn pkcs11_backend_passes_the_suite() {
    let Some(token) = TestToken::new() else {
        return;
    };
    let admin = token.admin();
    let ed25519 = admin.supports(Mechanism::Ed25519);
    if !ed25519 {
        eprintln!("!!!! token lacks CKM_EDDSA: Ed25519 part skipped");
    }
    add_known_keys(&admin, ed25519);
    let hsm = Hsm::builder(token.config()).start().unwrap();
    runtime().block_on(backend_suite(&hsm, ed25519));
}

/// The suite again with the operations on the caller's thread (one inline
/// session; the suite awaits one operation at a time, so each finds it
/// free and runs inline), for both backends.
#[test]
fn both_backends_pass_the_suite_on_inline_sessions() {
    let store = SoftwareKeyStore::new();
    add_known_keys(&store, true);
    let mut config = HsmConfig::danger_software();
    config.inline_sessions = 1;
    let hsm = software_hsm(store, config);
    runtime().block_on(backend_suite(&hsm, true));

    let Some(token) = TestToken::new() else {
        return;
    };
    let admin = token.admin();
    let ed25519 = admin.supports(Mechanism::Ed25519);
    add_known_keys(&admin, ed25519);
    let mut config = token.config();
    config.inline_sessions = 1;
    let hsm = Hsm::builder(config).start().unwrap();
    runtime().block_on(async {
        backend_suite(&hsm, ed25519).await;
        rfc_vectors_after_adding(&admin, &hsm).await;
    });
}

async fn rfc_vectors_after_adding(admin: &dyn KeySink, hsm: &Hsm) {
    add_rfc_keys(admin);
    hsm.refresh_keys();
    rfc_vectors(hsm).await;
}

#[test]
fn backends_verify_each_other() {
    let Some(token) = TestToken::new() else {
        return;
    };
    let admin = token.admin();
    let ed25519 = admin.supports(Mechanism::Ed25519);
    add_known_keys(&admin, ed25519);
    let store = SoftwareKeyStore::new();
    add_known_keys(&store, ed25519);
    let hard = Hsm::builder(token.config()).start().unwrap();
    let soft = software_hsm(store, HsmConfig::danger_software());
    let message = Bytes::from_static(MESSAGE);
    runtime().block_on(async {
        for base in ["t-hmac", "t-cmac"] {
            let k = key(base);
            let a = hard.mac(&k, message.clone()).await.unwrap();
            let b = soft.mac(&k, message.clone()).await.unwrap();
            assert_eq!(a, b, "{base}");
            soft.verify_mac(&k, message.clone(), a.into())
                .await
                .unwrap();
            hard.verify_mac(&k, message.clone(), b.into())
                .await
                .unwrap();
        }
        let mut signers = vec!["t-ec", "t-rsa"];
        if ed25519 {
            signers.push("t-ed");
        }
        for base in signers {
            let k = key(base);
            let by_hsm = hard.sign(&k, message.clone()).await.unwrap();
            soft.verify(&k, message.clone(), by_hsm.into())
                .await
                .unwrap();
            let by_soft = soft.sign(&k, message.clone()).await.unwrap();
            hard.verify(&k, message.clone(), by_soft.into())
                .await
                .unwrap();
        }
    });
}

struct CmacVector {
    message: &'static str,
    tag: &'static str,
}

/// RFC 4493 section 4, AES-128 key 2b7e1516...
const RFC4493: [CmacVector; 4] = [
    CmacVector { message: "", tag: "bb1d6929e95937287fa37d129b756746" },
    CmacVector { message: "6bc1bee22e409f96e93d7e117393172a", tag: "070a16b46b4d4144f79bdd9dd04a287c" },
    CmacVector {
        message: "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411",
        tag: "dfa66747de9ae63030ca32611497c827",
    },
    CmacVector {
        message: "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710",
        tag: "51f0bebf7e3b9d92fc49741779363cfe",
    },
];

/// RFC 4231 test cases 6 and 7 (131-byte key): PKCS#11 tokens such as
/// SoftHSM2 refuse HMAC-SHA256 keys under 32 bytes, which rules out cases 1-5
/// there; the software backend also runs case 2.
const RFC4231_KEY_6_7: [u8; 131] = [0xaa; 131];
const RFC4231: [(&str, &str); 2] = [
    (
        "Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        "This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
];

async fn rfc_vectors(hsm: &Hsm) {
    let cmac = KeyRef::new("rfc4493", Mechanism::AesCmac).unwrap();
    for v in RFC4493 {
        let message = Bytes::from(hex(v.message));
        let tag = hsm.mac(&cmac, message.clone()).await.unwrap();
        assert_eq!(tag, hex(v.tag), "RFC 4493 message {}", v.message);
        hsm.verify_mac(&cmac, message.clone(), tag.clone().into())
            .await
            .unwrap();
        let mut bad = tag;
        bad[15] ^= 1;
        assert_err(hsm.verify_mac(&cmac, message, bad.into()).await, |e| {
            matches!(e, HsmError::MacMismatch)
        });
    }
    let hmac = KeyRef::new("rfc4231", Mechanism::HmacSha256).unwrap();
    for (data, expected) in RFC4231 {
        let message = Bytes::from_static(data.as_bytes());
        let tag = hsm.mac(&hmac, message.clone()).await.unwrap();
        assert_eq!(tag, hex(expected), "RFC 4231 {data}");
        let mut bad = tag;
        bad[31] ^= 1;
        assert_err(hsm.verify_mac(&hmac, message, bad.into()).await, |e| {
            matches!(e, HsmError::MacMismatch)
        });
    }
}

fn add_rfc_keys(sink: &dyn KeySink) {
    sink.add(
        "rfc4493-v1",
        SoftKey::aes_cmac(&hex("2b7e151628aed2a6abf7158809cf4f3c")).unwrap(),
    );
    sink.add(
        "rfc4231-v1",
        SoftKey::hmac_sha256(&RFC4231_KEY_6_7).unwrap(),
    );
}

#[test]
fn rfc_vectors_through_pkcs11() {
    let Some(token) = TestToken::new() else {
        return;
    };
    add_rfc_keys(&token.admin());
    let hsm = Hsm::builder(token.config()).start().unwrap();
    runtime().block_on(rfc_vectors(&hsm));
}

#[test]
fn rfc_vectors_through_software() {
    let store = SoftwareKeyStore::new();
    add_rfc_keys(&store);
    store
        .insert("jefe-v1", SoftKey::hmac_sha256(b"Jefe").unwrap())
        .unwrap();
    let hsm = software_hsm(store, HsmConfig::danger_software());
    runtime().block_on(async {
        rfc_vectors(&hsm).await;
        // RFC 4231 test case 2 (short key; software only).
        let jefe = KeyRef::new("jefe", Mechanism::HmacSha256).unwrap();
        let tag = hsm
            .mac(&jefe, Bytes::from_static(b"what do ya want for nothing?"))
            .await
            .unwrap();
        assert_eq!(
            tag,
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    });
}

#[test]
fn keys_are_sensitive_and_never_extractable() {
    let Some(token) = TestToken::new() else {
        return;
    };
    let admin = token.admin();
    add_known_keys(&admin, false);
    admin::generate(&admin, "gen-hmac", Mechanism::HmacSha256).unwrap();
    admin::generate(&admin, "gen-cmac", Mechanism::AesCmac).unwrap();
    admin::generate(&admin, "gen-ec", Mechanism::EcdsaP256Sha256).unwrap();
    admin::generate(&admin, "gen-rsa", Mechanism::RsaPssSha256).unwrap();

    let listed = admin::list_keys(&admin).unwrap();
    let mut protected = 0;
    for info in &listed {
        if info.class == "public" {
            assert_eq!(info.private, Some(false), "{info:?}");
            continue;
        }
        protected += 1;
        assert_eq!(info.sensitive, Some(true), "{info:?}");
        assert_eq!(info.extractable, Some(false), "{info:?}");
        assert_eq!(info.private, Some(true), "{info:?}");
        // Reading CKA_VALUE fails with CKR_ATTRIBUTE_SENSITIVE.
        let handle = admin
            .session()
            .find_objects(&[
                Attribute::Token(true),
                Attribute::Label(info.label.as_bytes().to_vec()),
                Attribute::Class(if info.class == "secret" {
                    cryptoki::object::ObjectClass::SECRET_KEY
                } else {
                    cryptoki::object::ObjectClass::PRIVATE_KEY
                }),
            ])
            .unwrap()[0];
        let value_attr = if info.key_type.contains("RSA") {
            AttributeType::PrivateExponent
        } else {
            AttributeType::Value
        };
        let value = admin
            .session()
            .get_attribute_info(handle, &[value_attr])
            .unwrap();
        assert!(
            matches!(value.as_slice(), [AttributeInfo::Sensitive]),
            "{}: {value:?}",
            info.label
        );
        // Making it extractable is refused.
        let err = admin
            .session()
            .update_attributes(handle, &[Attribute::Extractable(true)])
            .unwrap_err();
        assert!(
            matches!(
                err,
                cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::AttributeReadOnly, _)
            ),
            "{}: {err}",
            info.label
        );
        // The working copy the pool makes in each session (C_CopyObject,
        // CKA_TOKEN false) is just as protected, and a copy cannot undo it.
        let session = admin.session();
        let copy = session
            .copy_object(handle, &[Attribute::Token(false)])
            .unwrap();
        let value = session.get_attribute_info(copy, &[value_attr]).unwrap();
        assert!(
            matches!(value.as_slice(), [AttributeInfo::Sensitive]),
            "copy of {}: {value:?}",
            info.label
        );
        assert!(session
            .update_attributes(copy, &[Attribute::Extractable(true)])
            .is_err());
        for loosen in [Attribute::Extractable(true), Attribute::Sensitive(false)] {
            assert!(
                session
                    .copy_object(handle, &[Attribute::Token(false), loosen.clone()])
                    .is_err(),
                "{}: copied with {loosen:?}",
                info.label
            );
        }
        session.destroy_object(copy).unwrap();
    }
    // 4 known (hmac, cmac, ec, rsa) + 4 generated secret/private keys.
    assert_eq!(protected, 8, "{listed:#?}");
}

#[test]
fn hsm_generated_keys_verify_with_independent_implementations() {
    let Some(token) = TestToken::new() else {
        return;
    };
    let admin = token.admin();
    let ec = admin::generate(&admin, "sign-ec", Mechanism::EcdsaP256Sha256).unwrap();
    let rsa_label = admin::generate(&admin, "sign-rsa", Mechanism::RsaPssSha256).unwrap();
    let hsm = Hsm::builder(token.config()).start().unwrap();

    let ec_key = hsm.key(KeyRef::new("sign-ec", Mechanism::EcdsaP256Sha256).unwrap());
    let signature = ec_key.sign(MESSAGE).unwrap();
    let public = admin::public_key(&admin, &ec).unwrap();
    assert!(
        public.verify(MESSAGE, &signature).unwrap(),
        "RustCrypto p256 verifies HSM ECDSA"
    );
    openssl_verifies_ecdsa(&admin, &ec, &signature);

    let rsa_key = hsm.key(KeyRef::new("sign-rsa", Mechanism::RsaPssSha256).unwrap());
    let signature = rsa_key.sign(MESSAGE).unwrap();
    let public = admin::public_key(&admin, &rsa_label).unwrap();
    assert!(
        public.verify(MESSAGE, &signature).unwrap(),
        "RustCrypto rsa verifies HSM RSA-PSS"
    );
    assert!(!public.verify(b"other", &signature).unwrap());
}

/// Cross-checks with the `openssl` CLI when it is installed.
fn openssl_verifies_ecdsa(
    admin: &fps_hsm::pkcs11::TokenSession,
    label: &str,
    raw_signature: &[u8],
) {
    use p256::pkcs8::EncodePublicKey;
    let Ok(out) = std::process::Command::new("openssl")
        .arg("version")
        .output()
    else {
        eprintln!("openssl CLI not installed: openssl cross-check skipped");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let session = admin.session();
    let handle = session
        .find_objects(&[
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Class(cryptoki::object::ObjectClass::PUBLIC_KEY),
        ])
        .unwrap()[0];
    let attrs = session
        .get_attributes(handle, &[AttributeType::EcPoint])
        .unwrap();
    let Attribute::EcPoint(der) = &attrs[0] else {
        panic!("no EC point")
    };
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&der[2..]).unwrap();
    let pem = vk.to_public_key_pem(Default::default()).unwrap();
    std::fs::write(dir.path().join("pub.pem"), pem).unwrap();
    std::fs::write(dir.path().join("msg"), MESSAGE).unwrap();
    let sig = p256::ecdsa::Signature::from_slice(raw_signature)
        .unwrap()
        .to_der();
    std::fs::write(dir.path().join("sig.der"), sig.as_bytes()).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig.der",
            "msg",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl rejected the HSM signature: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn setup_errors_name_what_is_wrong() {
    let Some(token) = TestToken::new() else {
        return;
    };
    add_known_keys(&token.admin(), false);

    // Missing module path.
    let mut config = token.config();
    config.module_path = None;
    let e = assert_err(Hsm::builder(config).start(), |e| {
        matches!(
            e,
            HsmError::InvalidConfig {
                field: "module_path",
                ..
            }
        )
    });
    assert!(e.to_string().contains("module_path"), "{e}");
    let mut config = token.config();
    config.module_path = Some(token.dir().join("nope.so"));
    let e = assert_err(Hsm::builder(config).start(), |e| {
        matches!(
            e,
            HsmError::InvalidConfig {
                field: "module_path",
                ..
            }
        )
    });
    assert!(e.to_string().contains("nope.so"), "{e}");

    // Wrong token label: names it and lists what exists.
    let mut config = token.config();
    config.token_label = Some("fps-swtich".into());
    let e = assert_err(Hsm::builder(config).start(), |e| {
        matches!(e, HsmError::TokenNotFound { .. })
    });
    assert!(
        e.to_string().contains("fps-swtich") && e.to_string().contains("fps-switch"),
        "{e}"
    );

    // Wrong PIN.
    let pin_file = token.dir().join("wrong-pin");
    std::fs::write(&pin_file, "0000\n").unwrap();
    let config = HsmConfig::pkcs11(&token.module, TOKEN, PinSource::File(pin_file));
    let e = assert_err(Hsm::builder(config).start(), |e| {
        matches!(e, HsmError::WrongPin { .. })
    });
    assert!(
        e.to_string().contains("PIN") && !e.to_string().contains("0000"),
        "{e}"
    );

    // PIN variable not set.
    let config = HsmConfig::pkcs11(
        &token.module,
        TOKEN,
        PinSource::Env("FPS_HSM_UNSET_PIN".into()),
    );
    let e = assert_err(Hsm::builder(config).start(), |e| {
        matches!(e, HsmError::PinUnavailable { .. })
    });
    assert!(e.to_string().contains("FPS_HSM_UNSET_PIN"), "{e}");

    // Missing key label and unsupported mechanism at run time.
    let hsm = Hsm::builder(token.config()).start().unwrap();
    runtime().block_on(async {
        let missing = KeyRef::new("mac-missing", Mechanism::HmacSha256).unwrap();
        let e = assert_err(hsm.mac(&missing, Bytes::from_static(b"x")).await, |e| {
            matches!(e, HsmError::KeyNotFound { .. })
        });
        assert!(
            e.to_string().contains("mac-missing") && e.to_string().contains("fps-switch"),
            "{e}"
        );
        let e = assert_err(
            hsm.sign(&key("t-hmac"), Bytes::from_static(b"x")).await,
            |e| matches!(e, HsmError::UnsupportedMechanism { .. }),
        );
        assert!(e.to_string().contains("hmac_sha256"), "{e}");
    });
}

#[test]
fn concurrent_signing_through_the_pool_is_correct() {
    let Some(token) = TestToken::new() else {
        return;
    };
    add_known_keys(&token.admin(), false);
    let mut config = token.config();
    config.threads = 2;
    config.queue_bound = 512;
    let hsm = Hsm::builder(config).start().unwrap();
    runtime().block_on(async {
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let hsm = hsm.clone();
            tasks.push(tokio::spawn(async move {
                let message = format!("message {i}").into_bytes();
                let (base, out) = if i % 2 == 0 {
                    (
                        "t-ec",
                        hsm.sign(&key("t-ec"), Bytes::from(message.clone())).await,
                    )
                } else {
                    (
                        "t-hmac",
                        hsm.mac(&key("t-hmac"), Bytes::from(message.clone())).await,
                    )
                };
                (base, message, out.unwrap())
            }));
        }
        for task in tasks {
            let (base, message, out) = task.await.unwrap();
            if base == "t-ec" {
                assert!(independent_verify(base, &message, &out));
            } else {
                assert_eq!(out, independent_mac(base, &message));
            }
        }
    });
    assert_eq!(hsm.queue_len(), 0);
}

/// Workers sharing one module instance each make their session copy of a
/// key on first use, while the others look the same key up: a copy being
/// built briefly matched the lookup ("2 secret objects labelled
/// `t-hmac-v1`"; 2 failures in 40 runs of the test above). Many fresh pools,
/// four workers each, all first-using the same keys at once.
#[test]
fn workers_first_using_a_key_at_once_never_see_each_others_copies() {
    let Some(token) = TestToken::new() else {
        return;
    };
    add_known_keys(&token.admin(), false);
    let mut config = token.config();
    config.threads = 4;
    let rt = runtime();
    for round in 0..25 {
        let hsm = Hsm::builder(config.clone()).start().unwrap();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..32u32 {
                let hsm = hsm.clone();
                let base = ["t-hmac", "t-cmac"][i as usize % 2];
                tasks.push(tokio::spawn(async move {
                    let message = format!("round {round} message {i}").into_bytes();
                    let out = hsm.mac(&key(base), Bytes::from(message.clone())).await;
                    (base, message, out)
                }));
            }
            for task in tasks {
                let (base, message, out) = task.await.unwrap();
                let out = out.unwrap_or_else(|e| panic!("round {round}, {base}: {e}"));
                assert_eq!(out, independent_mac(base, &message));
            }
        });
    }
}

#[test]
fn full_queue_answers_busy_and_the_rest_succeed() {
    let Some(token) = TestToken::new() else {
        return;
    };
    add_known_keys(&token.admin(), false);
    let mut config = token.config();
    config.threads = 1;
    config.queue_bound = 2;
    let hsm = Hsm::builder(config).start().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (ok, busy) = rt.block_on(async {
        // On a current-thread runtime every task enqueues before any awaits a
        // reply, while one worker signs RSA at a few hundred per second.
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let hsm = hsm.clone();
                tokio::spawn(
                    async move { hsm.sign(&key("t-rsa"), Bytes::from_static(MESSAGE)).await },
                )
            })
            .collect();
        let (mut ok, mut busy) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                Ok(signature) => {
                    assert!(independent_verify("t-rsa", MESSAGE, &signature));
                    ok += 1;
                }
                Err(HsmError::Busy { queue_bound: 2 }) => busy += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        (ok, busy)
    });
    assert!(busy > 0, "queue bound never reached ({ok} ok)");
    // At most bound + the one being signed can be accepted at once.
    assert!(ok >= 1 && ok <= 64 - busy, "{ok} ok, {busy} busy");
    assert!(hsm.queue_len() <= 2);
}

/// A worker with a backlog sends finished replies together: on a real token,
/// a burst of mixed requests queued behind one another (good MACs, a missing
/// key, a wrong tag, a MAC asked of a signature key) each get their own
/// answer, errors included, and the failures touch no other request.
#[test]
fn a_backlog_answers_each_request_with_its_own_result() {
    let Some(token) = TestToken::new() else {
        return;
    };
    add_known_keys(&token.admin(), false);
    let mut config = token.config();
    config.threads = 1;
    config.queue_bound = 256;
    let hsm = Hsm::builder(config).start().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // On a current-thread runtime every task enqueues before any awaits
        // a reply, so the single worker always has a backlog.
        let tasks: Vec<_> = (0..120u32)
            .map(|i| {
                let hsm = hsm.clone();
                tokio::spawn(async move {
                    let message = Bytes::from(format!("message {i}").into_bytes());
                    let base = if i % 2 == 0 { "t-hmac" } else { "t-cmac" };
                    let out = match i % 10 {
                        3 => {
                            let missing = KeyRef::new("mac-missing", Mechanism::HmacSha256)?;
                            hsm.mac(&missing, message.clone()).await.map(|_| ())
                        }
                        5 => {
                            let wrong = Bytes::from(vec![0u8; 16]);
                            hsm.verify_mac(&key(base), message.clone(), wrong).await
                        }
                        7 => hsm.mac(&key("t-ec"), message.clone()).await.map(|_| ()),
                        _ => {
                            let tag = hsm.mac(&key(base), message.clone()).await?;
                            assert_eq!(tag, independent_mac(base, &message), "request {i}");
                            Ok(())
                        }
                    };
                    Ok::<_, HsmError>((i, out))
                })
            })
            .collect();
        for task in tasks {
            let (i, out) = task.await.unwrap().unwrap();
            match (i % 10, out) {
                (3, Err(HsmError::KeyNotFound { .. }))
                | (5, Err(HsmError::MacMismatch))
                | (7, Err(HsmError::UnsupportedMechanism { .. })) => {}
                (3 | 5 | 7, other) => panic!("request {i} answered {other:?}"),
                (_, Ok(())) => {}
                (_, Err(e)) => panic!("request {i} failed: {e}"),
            }
        }
    });
    assert_eq!(hsm.queue_len(), 0);
}

/// Rotation on both backends: new MACs use v2 once seen; v1 MACs verify
/// during the overlap and not after.
fn rotation_suite(sink: &dyn KeySink, hsm: &Hsm, clock: &ManualClock) {
    let k = KeyRef::new("mac-rot", Mechanism::HmacSha256).unwrap();
    let v1 = SoftKey::hmac_sha256(&test_secret("rot-1")).unwrap();
    let v2 = SoftKey::hmac_sha256(&test_secret("rot-2")).unwrap();
    let tag1 = v1.mac(MESSAGE).unwrap();
    let tag2 = v2.mac(MESSAGE).unwrap();
    let mac = hsm.key(k.clone());

    assert_eq!(mac.generate(MESSAGE).unwrap(), tag1);
    sink.add("mac-rot-v2", v2);
    // Not seen until the next re-scan (key_refresh_secs = 10).
    assert_eq!(mac.generate(MESSAGE).unwrap(), tag1);
    clock.advance(Duration::from_secs(11));
    assert_eq!(mac.generate(MESSAGE).unwrap(), tag2, "new MACs use v2");
    mac.verify(MESSAGE, &tag2).unwrap();
    mac.verify(MESSAGE, &tag1)
        .expect("v1 still verifies during the overlap");
    // Truncated (ISO 8583) tags of either version verify during the overlap.
    let rt = runtime();
    for t in [&tag1, &tag2] {
        rt.block_on(hsm.verify_mac_leftmost(
            &k,
            Bytes::from_static(MESSAGE),
            Bytes::from(t[..8].to_vec()),
        ))
        .expect("a truncated tag of v1 or v2 verifies during the overlap");
    }
    clock.advance(Duration::from_secs(99));
    mac.verify(MESSAGE, &tag1)
        .expect("v1 verifies until the overlap ends");
    clock.advance(Duration::from_secs(2));
    assert_err(mac.verify(MESSAGE, &tag1), |e| {
        matches!(e, HsmError::MacMismatch)
    });
    assert_err(
        rt.block_on(hsm.verify_mac_leftmost(
            &k,
            Bytes::from_static(MESSAGE),
            Bytes::from(tag1[..8].to_vec()),
        )),
        |e| matches!(e, HsmError::MacMismatch),
    );
    mac.verify(MESSAGE, &tag2).unwrap();
}

fn rotation_config(mut config: HsmConfig) -> HsmConfig {
    config.key_rotation_overlap_secs = 100;
    config.key_refresh_secs = 10;
    config
}

#[test]
fn rotation_through_pkcs11() {
    let Some(token) = TestToken::new() else {
        return;
    };
    let admin = token.admin();
    admin.add(
        "mac-rot-v1",
        SoftKey::hmac_sha256(&test_secret("rot-1")).unwrap(),
    );
    let clock = Arc::new(ManualClock::new());
    let hsm = Hsm::builder(rotation_config(token.config()))
        .clock(clock.clone())
        .start()
        .unwrap();
    rotation_suite(&admin, &hsm, &clock);
}

#[test]
fn rotation_through_software() {
    let store = SoftwareKeyStore::new();
    store.add(
        "mac-rot-v1",
        SoftKey::hmac_sha256(&test_secret("rot-1")).unwrap(),
    );
    let clock = Arc::new(ManualClock::new());
    let hsm = Hsm::builder(rotation_config(HsmConfig::danger_software()))
        .software_keys(store.clone())
        .clock(clock.clone())
        .start()
        .unwrap();
    rotation_suite(&store, &hsm, &clock);
}

#[test]
fn admin_generate_rotate_and_refresh() {
    let Some(token) = TestToken::new() else {
        return;
    };
    let admin = token.admin();
    for (label, m) in [
        ("mac-hmac", Mechanism::HmacSha256),
        ("mac-cmac", Mechanism::AesCmac),
        ("sign-ec", Mechanism::EcdsaP256Sha256),
        ("sign-rsa", Mechanism::RsaPssSha256),
    ] {
        assert_eq!(
            admin::generate(&admin, label, m).unwrap(),
            format!("{label}-v1")
        );
        assert_err(admin::generate(&admin, label, m), |e| {
            matches!(e, HsmError::KeyExists { .. })
        });
    }
    let hsm = Hsm::builder(token.config()).start().unwrap();
    let cmac = KeyRef::new("mac-cmac", Mechanism::AesCmac).unwrap();
    let ec = KeyRef::new("sign-ec", Mechanism::EcdsaP256Sha256).unwrap();
    runtime().block_on(async {
        let old_tag = hsm.mac(&cmac, Bytes::from_static(MESSAGE)).await.unwrap();
        assert_eq!(admin::rotate(&admin, "mac-cmac").unwrap(), "mac-cmac-v2");
        assert_eq!(admin::rotate(&admin, "sign-ec").unwrap(), "sign-ec-v2");
        hsm.refresh_keys();
        let versions = hsm.key_versions(&cmac, Operation::Mac).await.unwrap();
        assert_eq!((versions.current, versions.previous), (2, Some(1)));
        let new_tag = hsm.mac(&cmac, Bytes::from_static(MESSAGE)).await.unwrap();
        assert_ne!(old_tag, new_tag, "v2 is a new key");
        hsm.verify_mac(&cmac, Bytes::from_static(MESSAGE), old_tag.into())
            .await
            .unwrap();
        let versions = hsm.key_versions(&ec, Operation::Sign).await.unwrap();
        assert_eq!(versions.current, 2);
        let signature = hsm.sign(&ec, Bytes::from_static(MESSAGE)).await.unwrap();
        let public = admin::public_key(&admin, "sign-ec-v2").unwrap();
        assert!(
            public.verify(MESSAGE, &signature).unwrap(),
            "signed with v2"
        );
    });
    let listed = admin::list_keys(&admin).unwrap();
    let labels: Vec<_> = listed.iter().map(|k| (k.label.as_str(), k.class)).collect();
    assert!(labels.contains(&("mac-cmac-v2", "secret")), "{labels:?}");
    assert!(
        labels.contains(&("sign-ec-v2", "private")) && labels.contains(&("sign-ec-v2", "public"))
    );
}

#[test]
fn lost_login_is_recovered_transparently() {
    let Some(token) = TestToken::new() else {
        return;
    };
    let admin = token.admin();
    add_known_keys(&admin, false);
    let hsm = Hsm::builder(token.config()).start().unwrap();
    let mac = hsm.key(key("t-hmac"));
    assert_eq!(
        mac.generate(MESSAGE).unwrap(),
        independent_mac("t-hmac", MESSAGE)
    );
    // Logging out ends the login of every session of this process: the
    // workers' next call fails, they reopen, log in again and retry.
    admin.session().logout().unwrap();
    // Both workers (one with a cached key handle, one without) recover.
    for _ in 0..8 {
        assert_eq!(
            mac.generate(MESSAGE).unwrap(),
            independent_mac("t-hmac", MESSAGE)
        );
    }
}

/// Many threads at once, each its own runtime, on two inline sessions and
/// two workers: a caller finding both inline sessions taken goes to the
/// pool, and every answer is right.
#[test]
fn inline_sessions_and_the_pool_together_answer_every_caller_right() {
    let Some(token) = TestToken::new() else {
        return;
    };
    add_known_keys(&token.admin(), false);
    let mut config = token.config();
    config.threads = 2;
    config.inline_sessions = 2;
    let hsm = Hsm::builder(config).start().unwrap();
    std::thread::scope(|scope| {
        for t in 0..6u32 {
            let hsm = hsm.clone();
            scope.spawn(move || {
                runtime().block_on(async {
                    for i in 0..60u32 {
                        let message = format!("thread {t} message {i}").into_bytes();
                        if i % 3 == 0 {
                            let signature = hsm
                                .sign(&key("t-ec"), Bytes::from(message.clone()))
                                .await
                                .unwrap();
                            assert!(independent_verify("t-ec", &message, &signature));
                        } else {
                            let tag = hsm
                                .mac(&key("t-hmac"), Bytes::from(message.clone()))
                                .await
                                .unwrap();
                            assert_eq!(tag, independent_mac("t-hmac", &message));
                            hsm.verify_mac(&key("t-hmac"), Bytes::from(message), tag.into())
                                .await
                                .unwrap();
                        }
                    }
                });
            });
        }
    });
    assert_eq!(hsm.queue_len(), 0);
}

/// A logout ends every session's login, the inline one's too: its next
/// operation fails as a lost session, goes to a worker (which reopens and
/// retries) and the inline session comes back on its own.
#[test]
fn lost_login_on_an_inline_session_is_recovered_transparently() {
    let Some(token) = TestToken::new() else {
        return;
    };
    let admin = token.admin();
    add_known_keys(&admin, false);
    let mut config = token.config();
    config.threads = 1;
    config.inline_sessions = 1;
    let hsm = Hsm::builder(config).start().unwrap();
    let mac = hsm.key(key("t-hmac"));
    assert_eq!(
        mac.generate(MESSAGE).unwrap(),
        independent_mac("t-hmac", MESSAGE)
    );
    admin.session().logout().unwrap();
    for _ in 0..50 {
        assert_eq!(
            mac.generate(MESSAGE).unwrap(),
            independent_mac("t-hmac", MESSAGE)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn config_parses_from_toml_and_rejects_unknown_fields() {
    let config: HsmConfig = toml::from_str(
        r#"
        backend = "pkcs11"
        module_path = "/usr/lib/softhsm/libsofthsm2.so"
        token_label = "fps-switch"
        pin_env = "FPS_HSM_PIN"
        threads = 2
        inline_sessions = 1
        queue_bound = 256
        key_rotation_overlap_secs = 600
        "#,
    )
    .unwrap();
    assert_eq!(config.queue_bound, 256);
    assert_eq!((config.inline_sessions, config.sessions()), (1, 3));
    let mut too_many = config.clone();
    too_many.inline_sessions = fps_hsm::config::MAX_INLINE_SESSIONS + 1;
    let errors = too_many.validate().unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("inline_sessions")),
        "{errors:?}"
    );
    assert_eq!(
        config.pin_source(),
        Some(PinSource::Env("FPS_HSM_PIN".into()))
    );
    let err = toml::from_str::<HsmConfig>("backend = \"pkcs11\"\npin = \"1234\"\n").unwrap_err();
    assert!(err.to_string().contains("unknown field `pin`"), "{err}");
    let err = toml::from_str::<HsmConfig>("backend = \"software\"\n").unwrap_err();
    assert!(err.to_string().contains("danger_software"), "{err}");
    #[derive(serde::Deserialize)]
    struct Bank {
        mac_key: KeyRef,
    }
    let bank: Bank =
        toml::from_str("mac_key = { label = \"mac-hmac\", mechanism = \"hmac_sha256\" }").unwrap();
    assert_eq!(bank.mac_key.mechanism(), Mechanism::HmacSha256);
    assert!(toml::from_str::<Bank>(
        "mac_key = { label = \"mac-hmac-v1\", mechanism = \"hmac_sha256\" }"
    )
    .is_err());
    assert!(toml::from_str::<Bank>("mac_key = { label = \"m\", mechanism = \"des3\" }").is_err());
}

#[test]
fn software_backend_metrics_use_bounded_labels() {
    use metrics_util::debugging::DebuggingRecorder;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    if recorder.install().is_err() {
        return; // another test installed one first; nothing to observe here
    }
    let store = SoftwareKeyStore::new();
    add_known_keys(&store, false);
    let hsm = software_hsm(store, HsmConfig::danger_software());
    let mac = hsm.key(key("t-hmac"));
    mac.generate(MESSAGE).unwrap();
    assert!(mac.verify(MESSAGE, b"nope").is_err());
    let snapshot = snapshotter.snapshot().into_vec();
    let mut seen = Vec::new();
    for (key, _, _, _) in &snapshot {
        let k = key.key();
        for label in k.labels() {
            assert!(
                ["mechanism", "op", "kind"].contains(&label.key()),
                "unexpected label {label:?}"
            );
            assert!(
                !label.value().contains("t-hmac"),
                "key label leaked into metrics"
            );
        }
        seen.push(k.name().to_owned());
    }
    assert!(
        seen.iter().any(|n| n == fps_hsm::metrics::OP_SECONDS),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|n| n == fps_hsm::metrics::ERRORS_TOTAL),
        "{seen:?}"
    );
}

/// Imported MAC keys (admin::import_secret, C_CreateObject) give the RFC
/// known answers through the pool: RFC 4231 cases 6 and 7 (131-byte key)
/// and RFC 4493's AES-128 vectors.
#[test]
fn imported_mac_keys_give_rfc_vectors() {
    let Some(token) = TestToken::new() else {
        return;
    };
    let admin = token.admin();
    let label =
        admin::import_secret(&admin, "rfc4231", Mechanism::HmacSha256, &RFC4231_KEY_6_7).unwrap();
    assert_eq!(label, "rfc4231-v1");
    let key = hex("2b7e151628aed2a6abf7158809cf4f3c");
    let label = admin::import_secret(&admin, "rfc4493", Mechanism::AesCmac, &key).unwrap();
    assert_eq!(label, "rfc4493-v1");
    let hsm = Hsm::builder(token.config()).start().unwrap();
    runtime().block_on(rfc_vectors(&hsm));
}

/// An imported key MACs as the danger_software backend and RustCrypto do
/// with the same bytes, and each side verifies the other's tags: what
/// compare-relay relies on (switch through PKCS#11, simulator in software).
#[test]
fn imported_keys_match_the_software_backend() {
    let Some(token) = TestToken::new() else {
        return;
    };
    let admin = token.admin();
    let store = SoftwareKeyStore::new();
    let hmac_key = test_secret("imported-hmac");
    let cases = [
        ("imp-hmac", Mechanism::HmacSha256, hmac_key.clone()),
        (
            "imp-aes128",
            Mechanism::AesCmac,
            test_secret("aes")[..16].to_vec(),
        ),
        (
            "imp-aes192",
            Mechanism::AesCmac,
            test_secret("aes")[..24].to_vec(),
        ),
        ("imp-aes256", Mechanism::AesCmac, test_secret("aes")),
    ];
    for (base, mechanism, value) in &cases {
        let label = admin::import_secret(&admin, base, *mechanism, value).unwrap();
        assert_eq!(label, format!("{base}-v1"));
        let soft = match mechanism {
            Mechanism::HmacSha256 => SoftKey::hmac_sha256(value),
            _ => SoftKey::aes_cmac(value),
        };
        store.insert(&label, soft.unwrap()).unwrap();
    }
    let hard = Hsm::builder(token.config()).start().unwrap();
    let soft = software_hsm(store, HsmConfig::danger_software());
    let message = Bytes::from_static(MESSAGE);
    runtime().block_on(async {
        for (base, mechanism, _) in &cases {
            let k = KeyRef::new(base, *mechanism).unwrap();
            let by_hsm = hard.mac(&k, message.clone()).await.unwrap();
            let by_soft = soft.mac(&k, message.clone()).await.unwrap();
            assert_eq!(by_hsm, by_soft, "{base}");
            soft.verify_mac(&k, message.clone(), by_hsm.into())
                .await
                .unwrap();
            hard.verify_mac(&k, message.clone(), by_soft.into())
                .await
                .unwrap();
        }
        // And RustCrypto's HMAC, outside fps-hsm altogether.
        use hmac::Mac as _;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&hmac_key).unwrap();
        m.update(MESSAGE);
        let k = KeyRef::new("imp-hmac", Mechanism::HmacSha256).unwrap();
        assert_eq!(
            hard.mac(&k, message.clone()).await.unwrap(),
            m.finalize().into_bytes().to_vec()
        );
    });
}

/// Imported keys carry the protection and usage attributes generated MAC
/// keys have; their value cannot be read (CKR_ATTRIBUTE_SENSITIVE) nor
/// made extractable.
#[test]
fn imported_keys_are_sensitive_and_never_extractable() {
    let Some(token) = TestToken::new() else {
        return;
    };
    let admin = token.admin();
    let session = admin.session();
    let aes = test_secret("aes");
    for (mechanism, value, key_type) in [
        (
            Mechanism::HmacSha256,
            test_secret("hmac"),
            cryptoki::object::KeyType::GENERIC_SECRET,
        ),
        (Mechanism::AesCmac, aes, cryptoki::object::KeyType::AES),
    ] {
        let imported =
            admin::import_secret(&admin, &format!("imp-{mechanism}"), mechanism, &value).unwrap();
        let generated = admin::generate(&admin, &format!("gen-{mechanism}"), mechanism).unwrap();
        let handle = |label: &str| {
            let found = session
                .find_objects(&[
                    Attribute::Token(true),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])
                .unwrap();
            assert_eq!(found.len(), 1, "{label}: one object");
            found[0]
        };
        let usage = [
            AttributeType::Class,
            AttributeType::KeyType,
            AttributeType::Token,
            AttributeType::Private,
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::Sign,
            AttributeType::Verify,
            AttributeType::Encrypt,
            AttributeType::Decrypt,
            AttributeType::Wrap,
            AttributeType::Unwrap,
            AttributeType::Derive,
        ];
        let imported_attrs = session.get_attributes(handle(&imported), &usage).unwrap();
        let generated_attrs = session.get_attributes(handle(&generated), &usage).unwrap();
        assert_eq!(
            imported_attrs, generated_attrs,
            "{mechanism}: imported and generated keys are used alike"
        );
        for expected in [
            Attribute::Class(cryptoki::object::ObjectClass::SECRET_KEY),
            Attribute::KeyType(key_type),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Verify(true),
        ] {
            assert!(
                imported_attrs.contains(&expected),
                "{imported}: {expected:?} in {imported_attrs:?}"
            );
        }
        let key = handle(&imported);
        // C_GetAttributeValue answers CKR_ATTRIBUTE_SENSITIVE for CKA_VALUE
        // (AttributeInfo::Sensitive), and cryptoki then returns nothing.
        let value_info = session
            .get_attribute_info(key, &[AttributeType::Value])
            .unwrap();
        assert!(
            matches!(value_info.as_slice(), [AttributeInfo::Sensitive]),
            "{imported}: {value_info:?}"
        );
        let read = session
            .get_attributes(key, &[AttributeType::Value])
            .unwrap();
        assert!(read.is_empty(), "{imported}: CKA_VALUE was read");
        let err = session
            .update_attributes(key, &[Attribute::Extractable(true)])
            .unwrap_err();
        assert!(
            matches!(
                err,
                cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::AttributeReadOnly, _)
            ),
            "{imported}: {err}"
        );
        let listed = admin::list_keys(&admin).unwrap();
        let info = listed.iter().find(|k| k.label == imported).unwrap();
        assert_eq!(
            (info.sensitive, info.extractable, info.private),
            (Some(true), Some(false), Some(true)),
            "{info:?}"
        );
    }
}

/// A second import of a label is `-v2`, which the pool uses after its
/// re-scan (v1 still verifying in the overlap); destroy_key removes one
/// version, and the next import numbers past the newest left.
#[test]
fn imported_versions_rotate_and_are_destroyed_one_by_one() {
    let Some(token) = TestToken::new() else {
        return;
    };
    let admin = token.admin();
    let (v1, v2) = (test_secret("bank-1"), test_secret("bank-2"));
    let tag = |secret: &[u8]| SoftKey::hmac_sha256(secret).unwrap().mac(MESSAGE).unwrap();
    assert_eq!(
        admin::import_secret(&admin, "bank-mac", Mechanism::HmacSha256, &v1).unwrap(),
        "bank-mac-v1"
    );
    let clock = Arc::new(ManualClock::new());
    let hsm = Hsm::builder(rotation_config(token.config()))
        .clock(clock.clone())
        .start()
        .unwrap();
    let mac = hsm.key(KeyRef::new("bank-mac", Mechanism::HmacSha256).unwrap());
    assert_eq!(mac.generate(MESSAGE).unwrap(), tag(&v1));
    assert_eq!(
        admin::import_secret(&admin, "bank-mac", Mechanism::HmacSha256, &v2).unwrap(),
        "bank-mac-v2"
    );
    clock.advance(Duration::from_secs(11));
    assert_eq!(mac.generate(MESSAGE).unwrap(), tag(&v2), "new MACs use v2");
    mac.verify(MESSAGE, &tag(&v1))
        .expect("v1 verifies during the overlap");
    drop(mac);
    drop(hsm);

    admin::destroy_key(&admin, "bank-mac-v1").unwrap();
    let labels: Vec<_> = admin::list_keys(&admin)
        .unwrap()
        .into_iter()
        .map(|k| k.label)
        .collect();
    assert_eq!(labels, ["bank-mac-v2"]);
    assert_err(admin::destroy_key(&admin, "bank-mac-v1"), |e| {
        matches!(e, HsmError::KeyNotFound { .. })
    });
    assert_err(admin::destroy_key(&admin, "bank-mac"), |e| {
        matches!(e, HsmError::InvalidInput { .. })
    });
    assert_eq!(
        admin::import_secret(&admin, "bank-mac", Mechanism::HmacSha256, &v1).unwrap(),
        "bank-mac-v3"
    );
    // A key pair goes whole: private and public objects of the version.
    admin::generate(&admin, "sign-ec", Mechanism::EcdsaP256Sha256).unwrap();
    admin::destroy_key(&admin, "sign-ec-v1").unwrap();
    assert!(admin::list_keys(&admin)
        .unwrap()
        .iter()
        .all(|k| k.label != "sign-ec-v1"));
}

/// Wrong lengths, signature mechanisms, versioned labels and a label that
/// holds another kind of key are refused, with messages that name the
/// problem and never the key bytes; nothing is created.
#[test]
fn import_refuses_what_it_cannot_use() {
    let Some(token) = TestToken::new() else {
        return;
    };
    let admin = token.admin();
    let secret = |n: usize| vec![0xa7; n];
    let reason = |e: &HsmError| e.to_string();
    for (mechanism, len, expected) in [
        (
            Mechanism::HmacSha256,
            20,
            "20 bytes, HMAC-SHA256 keys need at least 32",
        ),
        (
            Mechanism::HmacSha256,
            0,
            "0 bytes, HMAC-SHA256 keys need at least 32",
        ),
        (
            Mechanism::HmacSha256,
            257,
            "257 bytes, HMAC-SHA256 keys are at most 256",
        ),
        (
            Mechanism::AesCmac,
            15,
            "15 bytes, AES-CMAC keys are 16, 24 or 32",
        ),
        (
            Mechanism::AesCmac,
            33,
            "33 bytes, AES-CMAC keys are 16, 24 or 32",
        ),
    ] {
        let e = assert_err(
            admin::import_secret(&admin, "bad", mechanism, &secret(len)),
            |e| matches!(e, HsmError::InvalidInput { .. }),
        );
        let shown = reason(&e);
        assert!(shown.contains(expected), "{shown}");
        assert!(
            !shown.to_lowercase().contains("a7a7"),
            "key bytes in {shown}"
        );
    }
    for mechanism in [
        Mechanism::EcdsaP256Sha256,
        Mechanism::RsaPssSha256,
        Mechanism::Ed25519,
    ] {
        let e = assert_err(
            admin::import_secret(&admin, "bad", mechanism, &secret(32)),
            |e| matches!(e, HsmError::UnsupportedMechanism { .. }),
        );
        assert!(reason(&e).contains("only MAC keys"), "{mechanism}");
    }
    assert_err(
        admin::import_secret(&admin, "bad-v1", Mechanism::HmacSha256, &secret(32)),
        |e| matches!(e, HsmError::InvalidInput { .. }),
    );
    // A new version must be of the same kind as the newest.
    admin::import_secret(&admin, "kind", Mechanism::HmacSha256, &secret(32)).unwrap();
    let e = assert_err(
        admin::import_secret(&admin, "kind", Mechanism::AesCmac, &secret(16)),
        |e| matches!(e, HsmError::InvalidInput { .. }),
    );
    assert!(
        reason(&e).contains("`kind-v1` is a CKK_GENERIC_SECRET key"),
        "{e}"
    );
    admin::generate(&admin, "signer", Mechanism::EcdsaP256Sha256).unwrap();
    let e = assert_err(
        admin::import_secret(&admin, "signer", Mechanism::HmacSha256, &secret(32)),
        |e| matches!(e, HsmError::InvalidInput { .. }),
    );
    assert!(reason(&e).contains("not a secret key"), "{e}");
    let labels: Vec<_> = admin::list_keys(&admin)
        .unwrap()
        .into_iter()
        .map(|k| k.label)
        .collect();
    assert_eq!(
        labels,
        ["kind-v1", "signer-v1", "signer-v1"],
        "nothing else created"
    );
}

/// `fps-hsm import`: the key file's hex (whitespace around it allowed)
/// becomes the next version; bad input exits 2 with the option named,
/// before the PIN is even read, and without the key in the output.
#[test]
fn fps_hsm_import_command() {
    let Some(token) = TestToken::new() else {
        return;
    };
    let key_file = token.dir().join("bank.hmac.hex");
    let import = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fps-hsm"))
            .args(["--module", token.module.to_str().unwrap()])
            .args(["--token", TOKEN])
            .args(args)
            .output()
            .unwrap()
    };
    let secret = test_secret("cli");
    let secret_hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&key_file, format!("\n  {secret_hex}\n\n")).unwrap();
    let file = key_file.to_str().unwrap();
    for expected in ["cli-mac-v1", "cli-mac-v2"] {
        let out = import(&[
            "--pin-env",
            PIN_ENV,
            "import",
            "--label",
            "cli-mac",
            "--mechanism",
            "hmac_sha256",
            "--key-file",
            file,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(expected), "{stdout}");
        assert!(!stdout.contains(&secret_hex[..16]), "{stdout}");
    }
    let hsm = Hsm::builder(token.config()).start().unwrap();
    let mac = hsm.key(KeyRef::new("cli-mac", Mechanism::HmacSha256).unwrap());
    assert_eq!(
        mac.generate(MESSAGE).unwrap(),
        SoftKey::hmac_sha256(&secret).unwrap().mac(MESSAGE).unwrap()
    );
    drop(mac);
    drop(hsm);

    // Bad input: exit 2, the option named, checked before the PIN (whose
    // variable is not even set here).
    let short_file = token.dir().join("short.hex");
    std::fs::write(&short_file, &secret_hex[..40]).unwrap();
    let not_hex = token.dir().join("not.hex");
    std::fs::write(&not_hex, format!("{}zz", &secret_hex[..62])).unwrap();
    let aes_file = token.dir().join("aes.hex");
    std::fs::write(&aes_file, &secret_hex[..30]).unwrap();
    let missing = token.dir().join("missing.hex");
    for (mechanism, key_file, label, expected) in [
        (
            "hmac_sha256",
            short_file.as_path(),
            "cli-mac",
            "--key-file: 20 bytes, HMAC-SHA256 keys need at least 32",
        ),
        (
            "hmac_sha256",
            not_hex.as_path(),
            "cli-mac",
            "--key-file: not hex",
        ),
        (
            "aes_cmac",
            aes_file.as_path(),
            "cli-aes",
            "--key-file: 15 bytes, AES-CMAC keys are 16, 24 or 32",
        ),
        (
            "hmac_sha256",
            missing.as_path(),
            "cli-mac",
            "--key-file: cannot read",
        ),
        (
            "ecdsa_p256_sha256",
            key_file.as_path(),
            "cli-mac",
            "--mechanism: `ecdsa_p256_sha256` cannot be imported",
        ),
        (
            "des3",
            key_file.as_path(),
            "cli-mac",
            "--mechanism: `des3` cannot be imported",
        ),
        (
            "hmac_sha256",
            key_file.as_path(),
            "cli-mac-v3",
            "--label: key label `cli-mac-v3` must not carry a version suffix",
        ),
    ] {
        let out = import(&[
            "--pin-env",
            "FPS_HSM_TEST_UNSET_PIN",
            "import",
            "--label",
            label,
            "--mechanism",
            mechanism,
            "--key-file",
            key_file.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{expected}: {stderr}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
        assert!(!stderr.contains(&secret_hex[..16]), "key bytes in {stderr}");
    }
    // A label holding another kind of key: found at the token, still exit 2.
    let aes_ok = token.dir().join("aes-ok.hex");
    std::fs::write(&aes_ok, &secret_hex[..32]).unwrap();
    let out = import(&[
        "--pin-env",
        PIN_ENV,
        "import",
        "--label",
        "cli-mac",
        "--mechanism",
        "aes-cmac",
        "--key-file",
        aes_ok.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--label: `cli-mac-v2` is a CKK_GENERIC_SECRET key"),
        "{stderr}"
    );
    // A good key with the PIN missing: not an input problem, exit 1.
    let out = import(&[
        "--pin-env",
        "FPS_HSM_TEST_UNSET_PIN",
        "import",
        "--label",
        "cli-mac",
        "--mechanism",
        "hmac_sha256",
        "--key-file",
        file,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("FPS_HSM_TEST_UNSET_PIN"), "{stderr}");

    // destroy: one version goes, the other stays; a missing version or a
    // label without one is input the command cannot use (exit 2).
    let destroy = |label: &str| import(&["--pin-env", PIN_ENV, "destroy", "--label", label]);
    let out = destroy("cli-mac-v1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("destroyed cli-mac-v1"));
    let labels: Vec<String> = admin::list_keys(&token.admin())
        .unwrap()
        .into_iter()
        .map(|k| k.label)
        .collect();
    assert!(!labels.iter().any(|l| l == "cli-mac-v1"), "{labels:?}");
    assert!(labels.iter().any(|l| l == "cli-mac-v2"), "{labels:?}");
    for (label, expected) in [
        ("cli-mac-v1", "--label:"),
        (
            "cli-mac",
            "--label: label `cli-mac` needs a -vN version suffix",
        ),
    ] {
        let out = destroy(label);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{label}: {stderr}");
        assert!(stderr.contains(expected), "{label}: {stderr}");
    }
}
