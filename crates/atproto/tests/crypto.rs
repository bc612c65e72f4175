//! `crypto/*` fixtures: signatures (including high-S and DER negatives) and did:key encodings.

mod common;

use atproto::crypto::{Algorithm, CryptoError, Keypair, PublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;

#[test]
fn signature_fixtures() {
    let fixtures = common::read_json("crypto/signature-fixtures.json");
    let fixtures = fixtures.as_array().unwrap();
    assert!(fixtures.len() >= 6);
    for f in fixtures {
        let message = STANDARD_NO_PAD.decode(f["messageBase64"].as_str().unwrap()).unwrap();
        let sig = STANDARD_NO_PAD.decode(f["signatureBase64"].as_str().unwrap()).unwrap();
        let from_did = PublicKey::from_did_key(f["publicKeyDid"].as_str().unwrap()).unwrap();
        let from_multikey = PublicKey::from_multikey(f["publicKeyMultibase"].as_str().unwrap());
        if let Ok(k) = &from_multikey {
            assert_eq!(k, &from_did);
        }
        let expected_alg = if f["algorithm"] == "ES256K" { Algorithm::K256 } else { Algorithm::P256 };
        assert_eq!(from_did.algorithm(), expected_alg);
        let result = from_did.verify(&message, &sig);
        assert_eq!(result.is_ok(), f["validSignature"].as_bool().unwrap(), "{}: {result:?}", f["comment"]);
    }
}

#[test]
fn w3c_did_key_k256() {
    let fixtures = common::read_json("crypto/w3c_didkey_K256.json");
    for f in fixtures.as_array().unwrap() {
        let bytes = hex_decode(f["privateKeyBytesHex"].as_str().unwrap());
        let key = Keypair::from_bytes(Algorithm::K256, &bytes).unwrap();
        let did = f["publicDidKey"].as_str().unwrap();
        assert_eq!(key.public_key().to_did_key(), did);
        assert_eq!(PublicKey::from_did_key(did).unwrap(), key.public_key());
    }
}

#[test]
fn w3c_did_key_p256() {
    let fixtures = common::read_json("crypto/w3c_didkey_P256.json");
    for f in fixtures.as_array().unwrap() {
        let bytes = multibase::Base::Base58Btc.decode(f["privateKeyBytesBase58"].as_str().unwrap()).unwrap();
        let key = Keypair::from_bytes(Algorithm::P256, &bytes).unwrap();
        assert_eq!(key.public_key().to_did_key(), f["publicDidKey"].as_str().unwrap());
    }
}

#[test]
fn sign_then_verify_is_low_s_and_deterministic() {
    for alg in [Algorithm::K256, Algorithm::P256] {
        let key = Keypair::generate(alg);
        let public = key.public_key();
        for i in 0..64u32 {
            let msg = i.to_be_bytes();
            let sig = key.sign(&msg);
            assert_eq!(sig, key.sign(&msg), "RFC 6979 signatures are deterministic");
            public.verify(&msg, &sig).unwrap();
            assert_eq!(public.verify(b"other", &sig), Err(CryptoError::BadSignature));
        }
        let reloaded = Keypair::from_bytes(alg, &key.to_bytes()).unwrap();
        assert_eq!(reloaded.public_key(), public);
    }
}

#[test]
fn malformed_keys_and_signatures_are_errors() {
    assert!(PublicKey::from_did_key("did:key:zQ3sh").is_err());
    assert!(PublicKey::from_did_key("did:web:example.com").is_err());
    assert!(PublicKey::from_multikey("uAAAA").is_err());
    let key = Keypair::generate(Algorithm::K256).public_key();
    assert_eq!(key.verify(b"m", &[0u8; 70]), Err(CryptoError::SignatureLength));
    assert!(key.verify(b"m", &[0u8; 64]).is_err());
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}
