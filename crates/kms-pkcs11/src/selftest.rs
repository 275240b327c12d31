//! A known-answer test of the configured wrap mechanism, run when the backend opens.
//!
//! `CKM_AES_KEY_WRAP_PAD` (0x210A) does not mean the same thing everywhere: PKCS#11 2.40
//! defines it as PKCS#7 padding followed by RFC 3394 (56 bytes for a 32-byte key), while
//! SoftHSM2 and several HSMs implement RFC 5649 under that number (40 bytes); PKCS#11 3.0
//! gives RFC 5649 its own `CKM_AES_KEY_WRAP_KWP`. A record says `A256KWP`, so a token
//! whose mechanism produces anything but RFC 5649 must be refused before it wraps a single
//! DEK: its records could not be opened by any other token.
//!
//! The test has the exact shape byok uses (a 256-bit KEK wrapping a 32-byte key), since
//! that is what must interoperate. (SoftHSM2 2.6, for one, zero-pads keys whose length is
//! not a multiple of 8 *before* applying RFC 5649, so the RFC's own 20-byte example fails
//! there; DEKs are never that long.)

use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::backend::pkcs11_mechanism;
use crate::config::WrapMechanism;
use crate::errors::{unavailable, Doing, Failure};

const TEST_KEK: &[u8] = &[
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12,
    0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
];

const TEST_KEY: &[u8] = &[
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, 0x01, 0x02,
    0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];

/// RFC 3394 §4.6: 256 bits of key data with a 256-bit KEK.
const RFC3394_WRAPPED: &[u8] = &[
    0x28, 0xc9, 0xf4, 0x04, 0xc4, 0xb8, 0x10, 0xf4, 0xcb, 0xcc, 0xb3, 0x5c, 0xfb, 0x87, 0xf8, 0x26, 0x3f, 0x57, 0x86,
    0xe2, 0xd8, 0x0e, 0xd3, 0x26, 0xcb, 0xc7, 0xf0, 0xe7, 0x1a, 0x99, 0xf4, 0x3b, 0xfb, 0x98, 0x8b, 0x9b, 0x7a, 0x02,
    0xdd, 0x21,
];

/// RFC 5649 of the same key under the same KEK (the RFC has no 256-bit example; computed
/// with OpenSSL's `id-aes256-wrap-pad`, checked against the RFC's own vectors).
const RFC5649_WRAPPED: &[u8] = &[
    0x4a, 0x80, 0x29, 0x24, 0x30, 0x27, 0x35, 0x3b, 0x06, 0x94, 0xcf, 0x1b, 0xd8, 0xfc, 0x74, 0x5b, 0xb0, 0xce, 0x8a,
    0x73, 0x9b, 0x19, 0xb1, 0x96, 0x0b, 0x12, 0x42, 0x6d, 0x4c, 0x39, 0xcf, 0xed, 0xa9, 0x26, 0xd1, 0x03, 0xab, 0x34,
    0xe9, 0xf6,
];

/// The outcome of the known-answer test.
pub(crate) enum Verdict {
    /// The token's output matches the RFC.
    Matches,
    /// The token produced something else, of this many bytes.
    Differs(usize),
}

/// Wrap the test key under the test KEK, both imported as session objects, and compare
/// with the known answer.
pub(crate) fn check_mechanism(session: &Session, mechanism: WrapMechanism) -> Result<Verdict, Failure> {
    let expected = match mechanism {
        WrapMechanism::AesKeyWrapPad => RFC5649_WRAPPED,
        WrapMechanism::AesKeyWrap => RFC3394_WRAPPED,
    };
    let kek = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(true),
            Attribute::Value(TEST_KEK.to_vec()),
        ])
        .doing("import the known-answer test KEK")?;
    let key = session.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Value(TEST_KEY.to_vec()),
    ]);
    let key = match key {
        Ok(key) => key,
        Err(error) => {
            destroy_all(session, &[kek])?;
            return Err(Failure::Token { doing: "import the known-answer test key", error });
        }
    };
    let wrapped = session.wrap_key(&pkcs11_mechanism(mechanism), kek, key);
    destroy_all(session, &[kek, key])?;
    let wrapped = wrapped.doing("wrap the known-answer test key")?;
    Ok(if wrapped == expected { Verdict::Matches } else { Verdict::Differs(wrapped.len()) })
}

fn destroy_all(session: &Session, objects: &[ObjectHandle]) -> Result<(), Failure> {
    for object in objects {
        session
            .destroy_object(*object)
            .map_err(|error| Failure::CloseSession(unavailable("destroy a known-answer test key", &error)))?;
    }
    Ok(())
}
