//! How PKCS#11 failures become [`KmsError`]s.
//!
//! Messages name the operation and the PKCS#11 return value (`CKR_…`), never a PIN or key
//! material: cryptoki's errors carry neither.

use byok_crypto::KmsError;
use cryptoki::error::{Error, RvError};

/// A failed step inside a pooled-session operation.
pub(crate) enum Failure {
    /// Already decided (unknown org, destroyed org, integrity…).
    Kms(KmsError),
    /// A PKCS#11 call failed while doing `doing`.
    Token {
        /// What byok was doing, for the message ("unwrap a DEK").
        doing: &'static str,
        /// What the library returned.
        error: Error,
    },
    /// The call failed and left the session in a state that must not be reused (e.g. a
    /// DEK's session object could not be destroyed): the pool closes it, which destroys
    /// every session object with it.
    CloseSession(KmsError),
}

impl From<KmsError> for Failure {
    fn from(err: KmsError) -> Self {
        Failure::Kms(err)
    }
}

impl Failure {
    pub(crate) fn into_kms_error(self) -> KmsError {
        match self {
            Failure::Kms(err) => err,
            Failure::Token { doing, error } => classify(doing, &error),
            Failure::CloseSession(err) => err,
        }
    }

    /// Whether the pool must close the session this failure happened on.
    pub(crate) fn closes_session(&self) -> bool {
        match self {
            Failure::Kms(_) => false,
            Failure::Token { error, .. } => is_session_fatal(error),
            Failure::CloseSession(_) => true,
        }
    }
}

/// Attach what byok was doing to a cryptoki result.
pub(crate) trait Doing<T> {
    fn doing(self, doing: &'static str) -> Result<T, Failure>;
}

impl<T> Doing<T> for Result<T, Error> {
    fn doing(self, doing: &'static str) -> Result<T, Failure> {
        self.map_err(|error| Failure::Token { doing, error })
    }
}

/// The return values that say the wrapped bytes are not a valid wrapping under this KEK:
/// tampered, truncated, or wrapped under another key.
fn is_bad_wrapped_data(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::WrappedKeyInvalid
            | RvError::WrappedKeyLenRange
            | RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::DataInvalid
            | RvError::DataLenRange
    )
}

/// Turn a PKCS#11 failure into a [`KmsError`]: bad wrapped data is an integrity failure,
/// everything else makes the backend unavailable for this call.
pub(crate) fn classify(doing: &str, error: &Error) -> KmsError {
    match error {
        Error::Pkcs11(rv, _) if is_bad_wrapped_data(*rv) => KmsError::Integrity,
        other => unavailable(doing, other),
    }
}

/// An [`KmsError::Unavailable`] naming the operation and the return value.
pub(crate) fn unavailable(doing: &str, error: &Error) -> KmsError {
    KmsError::unavailable(format!("PKCS#11 token: cannot {doing}: {}", describe(error)))
}

/// A short description: `C_UnwrapKey returned CKR_DEVICE_ERROR`. cryptoki's own `Display`
/// for return values is a paragraph of the specification; the code is what operators
/// look up.
pub(crate) fn describe(error: &Error) -> String {
    match error {
        Error::Pkcs11(rv, function) => format!("C_{function:?} returned {}", rv_name(*rv)),
        Error::LibraryLoading(err) => format!("the PKCS#11 library could not be loaded ({err})"),
        other => other.to_string(),
    }
}

/// `CKR_WRAPPED_KEY_INVALID` from `WrappedKeyInvalid`.
fn rv_name(rv: RvError) -> String {
    match rv {
        RvError::VendorDefined(code) => format!("vendor-defined error 0x{code:08x}"),
        RvError::UnknownErrorCode(code) => format!("unknown error 0x{code:08x}"),
        known => {
            let camel = format!("{known:?}");
            let mut name = String::from("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
    }
}

/// Whether a failure means the session can no longer be used (closed, invalid, logged
/// out, or the token is gone), so the pool should close it rather than reuse it.
pub(crate) fn is_session_fatal(error: &Error) -> bool {
    matches!(
        error,
        Error::Pkcs11(
            RvError::SessionClosed
                | RvError::SessionHandleInvalid
                | RvError::SessionCount
                | RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::DeviceMemory
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::UserNotLoggedIn
                | RvError::CryptokiNotInitialized
                | RvError::GeneralError,
            _
        )
    )
}

#[cfg(test)]
mod tests {
    use cryptoki::context::Function;

    use super::*;

    #[test]
    fn return_values_are_named_like_the_specification() {
        let error = Error::Pkcs11(RvError::WrappedKeyInvalid, Function::UnwrapKey);
        assert_eq!(describe(&error), "C_UnwrapKey returned CKR_WRAPPED_KEY_INVALID");
        let error = Error::Pkcs11(RvError::DeviceError, Function::WrapKey);
        assert_eq!(describe(&error), "C_WrapKey returned CKR_DEVICE_ERROR");
    }

    #[test]
    fn bad_wrapped_data_is_an_integrity_failure_and_the_rest_unavailability() {
        let table = [
            (RvError::WrappedKeyInvalid, true),
            (RvError::WrappedKeyLenRange, true),
            (RvError::EncryptedDataInvalid, true),
            (RvError::DeviceRemoved, false),
            (RvError::PinIncorrect, false),
            (RvError::SessionHandleInvalid, false),
        ];
        for (rv, integrity) in table {
            let kms = classify("unwrap a DEK", &Error::Pkcs11(rv, Function::UnwrapKey));
            assert_eq!(matches!(kms, KmsError::Integrity), integrity, "{rv:?}");
            assert_eq!(matches!(kms, KmsError::Unavailable { .. }), !integrity, "{rv:?}");
        }
    }

    #[test]
    fn lost_sessions_are_not_reused() {
        assert!(is_session_fatal(&Error::Pkcs11(RvError::SessionHandleInvalid, Function::FindObjects)));
        assert!(is_session_fatal(&Error::Pkcs11(RvError::DeviceRemoved, Function::UnwrapKey)));
        assert!(!is_session_fatal(&Error::Pkcs11(RvError::WrappedKeyInvalid, Function::UnwrapKey)));
    }
}
