//! [`Pkcs11Kms`]: the [`Kms`] implementation over a PKCS#11 token.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use byok_crypto::{Dek, Kms, KmsError, WrappedDek};
use byok_domain::OrgId;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState};
use cryptoki::slot::Slot;
use zeroize::Zeroize;

use crate::config::{Pkcs11Config, WrapMechanism};
use crate::errors::{describe, unavailable, Doing, Failure};
use crate::pool::SessionPool;
use crate::selftest::{check_mechanism, Verdict};
use crate::OpenError;

/// AES-256: the KEK length in bytes.
const KEK_LEN: u64 = 32;
/// What a destroyed org's marker object holds.
const DESTROYED_MARKER_VALUE: &[u8] = b"destroyed";
/// `CKA_APPLICATION` of byok's data objects.
const APPLICATION: &[u8] = b"byok";

/// The `pkcs11` KMS backend: each org's KEKs are non-extractable AES-256 keys in a
/// PKCS#11 token, and DEKs are wrapped and unwrapped by the token.
///
/// `Send + Sync`: calls may come from any thread; each takes a session of its own from a
/// bounded pool.
pub struct Pkcs11Kms {
    module: PathBuf,
    token_label: String,
    slot: Slot,
    mechanism: WrapMechanism,
    context: Pkcs11,
    pool: SessionPool,
    /// Shared by every backend on this token in this process. Changes to the set of token
    /// objects (create, rotate, retire, destroy) hold it exclusively, everything else
    /// shared. So two concurrent rotations cannot both create version n+1, and no lookup
    /// runs while the token writes an object: SoftHSM2's file store fails
    /// `C_GenerateKey` (`CKR_GENERAL_ERROR`) and loses objects from concurrent lookups
    /// when that happens (SoftHSMv2 issue #573). Changes are rare, so HSMs lose nothing.
    /// (PKCS#11 has no cross-process lock: run one org's rotation from one process.)
    objects: Arc<RwLock<()>>,
    /// KEK object handles found before, by org and version, so unwrapping skips the
    /// lookups (two `C_FindObjects` each: linear in the token's object count on SoftHSM2,
    /// round trips on a network HSM). A cached handle is used only after its label is
    /// read back and matches: a handle that another process's retire or destroy
    /// invalidated, or that the token reassigned, falls back to a full lookup, which also
    /// sees the destruction marker.
    handles: Mutex<HashMap<(OrgId, u32), ObjectHandle>>,
}

impl fmt::Debug for Pkcs11Kms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Kms")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("slot", &self.slot.id())
            .field("mechanism", &self.mechanism)
            .field("max_sessions", &self.pool.max_sessions())
            .finish_non_exhaustive()
    }
}

/// How a KEK's secret value can be reached from outside the token, as reported by
/// [`Pkcs11Kms::inspect_kek`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KekProtection {
    /// What `C_GetAttributeValue(CKA_VALUE)` answered.
    pub value: ValueAccess,
    /// `CKA_SENSITIVE`.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`.
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`: sensitive since it was generated.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`: never extractable since it was generated.
    pub never_extractable: bool,
    /// Whether `C_WrapKey` let a fresh wrapping key export the KEK.
    pub wrappable_by_another_key: bool,
}

/// The answer to reading an object's `CKA_VALUE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueAccess {
    /// The token returned the value.
    Readable,
    /// `CKR_ATTRIBUTE_SENSITIVE`: the token refused to reveal it.
    Sensitive,
    /// The token reported the value as unavailable for another reason.
    Unavailable,
}

impl Pkcs11Kms {
    /// Load the module (once per process), find the token by label, check that it offers
    /// the configured mechanism, read the PIN from its source and log in.
    pub fn open(config: &Pkcs11Config) -> Result<Self, OpenError> {
        config.validate()?;
        let pin = config.load_pin()?;
        let context = shared_context(&config.module)?;
        let slot = find_slot(&context, &config.token_label, &config.module)?;
        check_mechanisms(&context, slot, config.mechanism, &config.token_label)?;
        let kms = Self {
            module: config.module.clone(),
            token_label: config.token_label.clone(),
            slot,
            mechanism: config.mechanism,
            pool: SessionPool::new(context.clone(), slot, pin, config.max_sessions),
            objects: token_lock(&config.module, slot),
            handles: Mutex::new(HashMap::new()),
            context,
        };
        // Opens the first session and logs in: a wrong PIN fails here, not on first use.
        kms.check_health()?;
        let verdict = {
            let _reading = kms.reading();
            kms.pool.run(|session| check_mechanism(session, kms.mechanism))?
        };
        if let Verdict::Differs(len) = verdict {
            let advice = match kms.mechanism {
                WrapMechanism::AesKeyWrapPad => {
                    "its records could not be opened by other tokens; use mechanism = \"aes-key-wrap\""
                }
                WrapMechanism::AesKeyWrap => "this token cannot be used",
            };
            return Err(OpenError::Config(format!(
                "token '{}' implements {} differently from {}: a known-answer test gave {len} bytes that do not match; \
                 {advice}",
                kms.token_label,
                kms.mechanism.pkcs11_name(),
                kms.mechanism.standard(),
            )));
        }
        tracing::info!(
            token = %kms.token_label,
            slot = kms.slot.id(),
            mechanism = kms.mechanism.pkcs11_name(),
            "pkcs11 KMS ready"
        );
        Ok(kms)
    }

    /// The mechanism new DEKs are wrapped with.
    pub fn mechanism(&self) -> WrapMechanism {
        self.mechanism
    }

    /// The label of the token in use.
    pub fn token_label(&self) -> &str {
        &self.token_label
    }

    /// How many PKCS#11 sessions are open now (never more than `max_sessions`).
    pub fn open_sessions(&self) -> usize {
        self.pool.open_sessions()
    }

    /// The live KEK versions of an org, oldest first.
    pub fn kek_versions(&self, org: &OrgId) -> Result<Vec<u32>, KmsError> {
        let _reading = self.reading();
        self.pool.run(|session| Ok(live_keks(session, org)?.into_keys().collect()))
    }

    /// Report how well a KEK is protected: whether its value can be read, its
    /// `CKA_SENSITIVE`/`CKA_EXTRACTABLE` flags, and whether another key can wrap (export)
    /// it. For tests and audits; reads no secret.
    pub fn inspect_kek(&self, org: &OrgId, version: u32) -> Result<KekProtection, KmsError> {
        let mechanism = self.mechanism;
        let _reading = self.reading();
        self.pool.run(|session| {
            let kek = self.kek(session, org, version)?;
            let value = match session.get_attribute_info(kek, &[AttributeType::Value]).doing("inspect a KEK")?.first() {
                Some(AttributeInfo::Sensitive) => ValueAccess::Sensitive,
                Some(AttributeInfo::Available(_)) => ValueAccess::Readable,
                _ => ValueAccess::Unavailable,
            };
            let flags = session
                .get_attributes(
                    kek,
                    &[
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable,
                    ],
                )
                .doing("inspect a KEK")?;
            let flag = |wanted: AttributeType| {
                flags.iter().any(|attribute| match (attribute, wanted) {
                    (Attribute::Sensitive(on), AttributeType::Sensitive)
                    | (Attribute::Extractable(on), AttributeType::Extractable)
                    | (Attribute::AlwaysSensitive(on), AttributeType::AlwaysSensitive)
                    | (Attribute::NeverExtractable(on), AttributeType::NeverExtractable) => *on,
                    _ => false,
                })
            };
            let wrappable_by_another_key = try_export(session, kek, mechanism)?;
            Ok(KekProtection {
                value,
                sensitive: flag(AttributeType::Sensitive),
                extractable: flag(AttributeType::Extractable),
                always_sensitive: flag(AttributeType::AlwaysSensitive),
                never_extractable: flag(AttributeType::NeverExtractable),
                wrappable_by_another_key,
            })
        })
    }

    /// Shared access to the token's objects (lookups, wrapping, session objects).
    fn reading(&self) -> RwLockReadGuard<'_, ()> {
        // Guards no data, only ordering: a poisoned lock is still a lock.
        self.objects.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Exclusive access, to create or destroy token objects.
    fn changing(&self) -> RwLockWriteGuard<'_, ()> {
        self.objects.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn cached_handles(&self) -> MutexGuard<'_, HashMap<(OrgId, u32), ObjectHandle>> {
        // A map of hints, each checked before use: a poisoned one is still usable.
        self.handles.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The object of one live KEK version: from the cache if its label still matches,
    /// else looked up (and cached).
    fn kek(&self, session: &Session, org: &OrgId, version: u32) -> Result<ObjectHandle, Failure> {
        let cached = self.cached_handles().get(&(*org, version)).copied();
        if let Some(handle) = cached {
            let expected = kek_label(org, version).into_bytes();
            match session.get_attributes(handle, &[AttributeType::Label]) {
                Ok(attributes) if attributes.iter().any(|a| matches!(a, Attribute::Label(l) if *l == expected)) => {
                    return Ok(handle);
                }
                // Gone or reassigned: look it up again.
                Ok(_) | Err(Error::Pkcs11(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid, _)) => {
                    self.cached_handles().remove(&(*org, version));
                }
                Err(error) => return Err(Failure::Token { doing: "check a KEK", error }),
            }
        }
        let handle = kek_handle(session, org, version)?;
        self.cached_handles().insert((*org, version), handle);
        Ok(handle)
    }

    fn forget(&self, org: &OrgId, version: Option<u32>) {
        self.cached_handles().retain(|(known, known_version), _| {
            known != org || version.is_some_and(|version| version != *known_version)
        });
    }

    fn generate_kek(&self, session: &Session, org: &OrgId, version: u32) -> Result<ObjectHandle, Failure> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(KEK_LEN.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            // Key wrapping needs only CKA_WRAP/CKA_UNWRAP. Refusing plain encryption and
            // decryption keeps the KEK from serving as a raw AES oracle.
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::Modifiable(false),
            Attribute::Label(kek_label(org, version).into_bytes()),
            Attribute::Id(org_key_id(org)),
        ];
        let handle = session.generate_key(&Mechanism::AesKeyGen, &template).doing("generate a KEK")?;
        tracing::info!(org = %org, version, token = %self.token_label, "generated KEK in the token");
        Ok(handle)
    }
}

impl Kms for Pkcs11Kms {
    fn backend_name(&self) -> &'static str {
        "pkcs11"
    }

    fn create_org_kek(&self, org: &OrgId) -> Result<u32, KmsError> {
        let _changing = self.changing();
        self.pool.run(|session| {
            if !destroyed_markers(session, org)?.is_empty() {
                return Err(KmsError::Destroyed(*org).into());
            }
            if !org_keks(session, org)?.is_empty() {
                return Err(KmsError::OrgExists(*org).into());
            }
            self.generate_kek(session, org, 1)?;
            Ok(1)
        })
    }

    fn current_kek_version(&self, org: &OrgId) -> Result<u32, KmsError> {
        let _reading = self.reading();
        self.pool.run(|session| Ok(current_kek(session, org)?.0))
    }

    fn rotate_kek(&self, org: &OrgId) -> Result<u32, KmsError> {
        let _changing = self.changing();
        self.pool.run(|session| {
            let (current, _) = current_kek(session, org)?;
            let next = current
                .checked_add(1)
                .ok_or_else(|| KmsError::unavailable(format!("{org} has run out of KEK version numbers")))?;
            self.generate_kek(session, org, next)?;
            Ok(next)
        })
    }

    fn wrap_dek(&self, org: &OrgId, dek: &Dek) -> Result<WrappedDek, KmsError> {
        let _reading = self.reading();
        let mechanism = self.mechanism;
        self.pool.run(|session| {
            let (version, kek) = current_kek(session, org)?;
            let dek_object = import_dek(session, dek)?;
            let wrapped = session.wrap_key(&pkcs11_mechanism(mechanism), kek, dek_object).doing("wrap a DEK");
            let cleanup = session.destroy_object(dek_object);
            let bytes = wrapped?;
            if let Err(error) = cleanup {
                return Err(Failure::CloseSession(unavailable("destroy a DEK's session object", &error)));
            }
            Ok(WrappedDek { kek_version: version, alg: mechanism.alg().to_owned(), bytes, kms: Default::default() })
        })
    }

    fn unwrap_dek(&self, org: &OrgId, wrapped: &WrappedDek) -> Result<Dek, KmsError> {
        let mechanism =
            WrapMechanism::from_alg(&wrapped.alg).ok_or_else(|| KmsError::UnsupportedAlgorithm(wrapped.alg.clone()))?;
        let _reading = self.reading();
        self.pool.run(|session| {
            let kek = self.kek(session, org, wrapped.kek_version)?;
            let template = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Private(true),
                // The DEK is read out once, for the host-side AEAD, then destroyed.
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
                Attribute::Wrap(false),
                Attribute::Unwrap(false),
                Attribute::Sign(false),
                Attribute::Verify(false),
                Attribute::Derive(false),
            ];
            let dek_object = match session.unwrap_key(&pkcs11_mechanism(mechanism), kek, &wrapped.bytes, &template) {
                Ok(handle) => handle,
                Err(Error::Pkcs11(RvError::MechanismInvalid | RvError::MechanismParamInvalid, _)) => {
                    return Err(KmsError::UnsupportedAlgorithm(wrapped.alg.clone()).into());
                }
                // SoftHSM2 reports a failed integrity check as CKR_GENERAL_ERROR. If the
                // session still answers, the token is fine and the input was bad.
                Err(Error::Pkcs11(RvError::GeneralError, _)) if session.get_session_info().is_ok() => {
                    return Err(KmsError::Integrity.into());
                }
                Err(error) => return Err(Failure::Token { doing: "unwrap a DEK", error }),
            };
            let read = session.get_attributes(dek_object, &[AttributeType::Value]).doing("read an unwrapped DEK");
            let cleanup = session.destroy_object(dek_object);
            let dek = read.map(dek_from_attributes);
            if let Err(error) = cleanup {
                return Err(Failure::CloseSession(unavailable("destroy a DEK's session object", &error)));
            }
            // A valid wrapping of something that is not a 256-bit key: not one of ours.
            dek?.ok_or(Failure::Kms(KmsError::Integrity))
        })
    }

    fn create_kek_version(&self, org: &OrgId, version: u32) -> Result<(), KmsError> {
        let _changing = self.changing();
        self.pool.run(|session| {
            if !destroyed_markers(session, org)?.is_empty() {
                return Err(KmsError::Destroyed(*org).into());
            }
            let keks = org_keks(session, org)?;
            match keks.last_key_value() {
                Some((current, _)) if *current == version => return Ok(()),
                Some((current, _)) if *current > version => {
                    return Err(KmsError::unavailable(format!(
                        "{org} already has KEK version {current} in token '{}'; cannot create version {version}",
                        self.token_label
                    ))
                    .into());
                }
                _ => {}
            }
            self.generate_kek(session, org, version)?;
            Ok(())
        })
    }

    fn remove_org(&self, org: &OrgId) -> Result<(), KmsError> {
        let _changing = self.changing();
        self.pool.run(|session| {
            if !destroyed_markers(session, org)?.is_empty() {
                return Err(KmsError::Destroyed(*org).into());
            }
            let keks = org_keks(session, org)?;
            self.forget(org, None);
            for handle in keks.values() {
                session.destroy_object(*handle).doing("destroy the KEK of an org that moved away")?;
            }
            if !keks.is_empty() {
                tracing::info!(org = %org, versions = keks.len(), token = %self.token_label, "removed the KEKs of an org that moved to another KMS");
            }
            Ok(())
        })
    }

    fn retire_kek_version(&self, org: &OrgId, version: u32) -> Result<(), KmsError> {
        let _changing = self.changing();
        self.pool.run(|session| {
            let keks = live_keks(session, org)?;
            if keks.last_key_value().map(|(current, _)| *current) == Some(version) {
                return Err(KmsError::unavailable(format!(
                    "KEK version {version} of {org} is current and cannot be retired"
                ))
                .into());
            }
            if let Some(handle) = keks.get(&version) {
                self.forget(org, Some(version));
                session.destroy_object(*handle).doing("destroy a retired KEK")?;
                tracing::info!(org = %org, version, token = %self.token_label, "destroyed retired KEK");
            }
            Ok(())
        })
    }

    fn destroy_org_keks(&self, org: &OrgId) -> Result<(), KmsError> {
        let _changing = self.changing();
        self.pool.run(|session| {
            let marked = !destroyed_markers(session, org)?.is_empty();
            let keks = org_keks(session, org)?;
            if !marked && keks.is_empty() {
                return Err(KmsError::UnknownOrg(*org).into());
            }
            // The marker goes in first: if destruction stops half-way, the org already
            // reads as destroyed and a retry finishes the job.
            if !marked {
                create_destroyed_marker(session, org)?;
            }
            self.forget(org, None);
            for handle in keks.values() {
                session.destroy_object(*handle).doing("destroy a KEK")?;
            }
            tracing::info!(org = %org, versions = keks.len(), token = %self.token_label, "destroyed every KEK of the org");
            Ok(())
        })
    }

    /// The token's label and serial number: two hosts' SoftHSM2 tokens may share a label,
    /// never a serial.
    fn identity(&self) -> Option<String> {
        let info = self.context.get_token_info(self.slot).ok()?;
        Some(format!("pkcs11:{}:{}", self.token_label, info.serial_number().trim_end()))
    }

    fn check_health(&self) -> Result<(), KmsError> {
        let _reading = self.reading();
        self.pool.run(|session| {
            let state = session.get_session_info().doing("read the session state")?.session_state();
            if !matches!(state, SessionState::RwUser) {
                return Err(Failure::CloseSession(KmsError::unavailable(
                    "the PKCS#11 session is not logged in as user",
                )));
            }
            let token = self.context.get_token_info(self.slot).doing("read the token's state")?;
            if token.user_pin_locked() {
                return Err(KmsError::unavailable("the token's user PIN is locked").into());
            }
            Ok(())
        })
    }
}

/// `byok:<org>:v<version>`: the label of a KEK object.
pub(crate) fn kek_label(org: &OrgId, version: u32) -> String {
    format!("byok:{org}:v{version}")
}

/// `byok:<org>`: the `CKA_ID` shared by all of an org's KEK versions, so one search finds
/// them all (PKCS#11 can only search for exact attribute values, not label prefixes).
pub(crate) fn org_key_id(org: &OrgId) -> Vec<u8> {
    format!("byok:{org}").into_bytes()
}

/// `byok:<org>:destroyed`: the label of the data object that records crypto-shredding.
pub(crate) fn destroyed_label(org: &OrgId) -> String {
    format!("byok:{org}:destroyed")
}

/// The version in a KEK label of `org`, if it is one byok wrote.
fn parse_kek_label(label: &[u8], org: &OrgId) -> Option<u32> {
    let label = std::str::from_utf8(label).ok()?;
    let digits = label.strip_prefix(&format!("byok:{org}:v"))?;
    let version: u32 = digits.parse().ok()?;
    // Exactly as written: no `+1`, no leading zeros.
    (version.to_string() == digits).then_some(version)
}

pub(crate) fn pkcs11_mechanism(mechanism: WrapMechanism) -> Mechanism<'static> {
    match mechanism {
        WrapMechanism::AesKeyWrapPad => Mechanism::AesKeyWrapPad,
        WrapMechanism::AesKeyWrap => Mechanism::AesKeyWrap,
    }
}

fn mechanism_type(mechanism: WrapMechanism) -> MechanismType {
    match mechanism {
        WrapMechanism::AesKeyWrapPad => MechanismType::AES_KEY_WRAP_PAD,
        WrapMechanism::AesKeyWrap => MechanismType::AES_KEY_WRAP,
    }
}

/// Every KEK object of the org, by version (whether or not the org is destroyed).
fn org_keks(session: &Session, org: &OrgId) -> Result<BTreeMap<u32, ObjectHandle>, Failure> {
    let template = [Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Token(true), Attribute::Id(org_key_id(org))];
    let handles = session.find_objects(&template).doing("look up an org's KEKs")?;
    let mut keks = BTreeMap::new();
    for handle in handles {
        let attributes = session.get_attributes(handle, &[AttributeType::Label]).doing("read a KEK's label")?;
        let version = attributes.iter().find_map(|attribute| match attribute {
            Attribute::Label(label) => parse_kek_label(label, org),
            _ => None,
        });
        if let Some(version) = version {
            if keks.insert(version, handle).is_some() {
                return Err(KmsError::unavailable(format!(
                    "the token holds two objects labelled {}; remove the newer one",
                    kek_label(org, version)
                ))
                .into());
            }
        }
    }
    Ok(keks)
}

fn destroyed_markers(session: &Session, org: &OrgId) -> Result<Vec<ObjectHandle>, Failure> {
    let template = [
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Label(destroyed_label(org).into_bytes()),
    ];
    session.find_objects(&template).doing("look up an org's destruction marker")
}

fn create_destroyed_marker(session: &Session, org: &OrgId) -> Result<ObjectHandle, Failure> {
    let template = [
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Modifiable(false),
        Attribute::Label(destroyed_label(org).into_bytes()),
        Attribute::Application(APPLICATION.to_vec()),
        Attribute::Value(DESTROYED_MARKER_VALUE.to_vec()),
    ];
    session.create_object(&template).doing("record an org's destruction")
}

/// The org's live KEKs: [`KmsError::Destroyed`] if it was crypto-shredded,
/// [`KmsError::UnknownOrg`] if it has none.
fn live_keks(session: &Session, org: &OrgId) -> Result<BTreeMap<u32, ObjectHandle>, Failure> {
    if !destroyed_markers(session, org)?.is_empty() {
        return Err(KmsError::Destroyed(*org).into());
    }
    let keks = org_keks(session, org)?;
    if keks.is_empty() {
        return Err(KmsError::UnknownOrg(*org).into());
    }
    Ok(keks)
}

/// The highest live version and its object.
fn current_kek(session: &Session, org: &OrgId) -> Result<(u32, ObjectHandle), Failure> {
    let keks = live_keks(session, org)?;
    keks.last_key_value().map(|(version, handle)| (*version, *handle)).ok_or(Failure::Kms(KmsError::UnknownOrg(*org)))
}

/// One live version's object, found by its exact label (the fast path of unwrapping).
fn kek_handle(session: &Session, org: &OrgId, version: u32) -> Result<ObjectHandle, Failure> {
    if !destroyed_markers(session, org)?.is_empty() {
        return Err(KmsError::Destroyed(*org).into());
    }
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Token(true),
        Attribute::Label(kek_label(org, version).into_bytes()),
    ];
    match session.find_objects(&template).doing("look up a KEK")?.as_slice() {
        [handle] => Ok(*handle),
        [] if org_keks(session, org)?.is_empty() => Err(KmsError::UnknownOrg(*org).into()),
        [] => Err(KmsError::UnknownVersion { org: *org, version }.into()),
        _ => Err(KmsError::unavailable(format!(
            "the token holds several objects labelled {}; remove the newer ones",
            kek_label(org, version)
        ))
        .into()),
    }
}

/// Put the DEK into the token as a session object that can be wrapped but not read.
fn import_dek(session: &Session, dek: &Dek) -> Result<ObjectHandle, Failure> {
    let mut template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Value(dek.expose().to_vec()),
    ];
    let created = session.create_object(&template).doing("import a DEK for wrapping");
    for attribute in &mut template {
        if let Attribute::Value(bytes) = attribute {
            bytes.zeroize();
        }
    }
    created
}

/// The DEK from `C_GetAttributeValue(CKA_VALUE)`, wiping every copy but the result.
fn dek_from_attributes(mut attributes: Vec<Attribute>) -> Option<Dek> {
    let mut dek = None;
    for attribute in &mut attributes {
        if let Attribute::Value(bytes) = attribute {
            dek = Dek::from_bytes(bytes);
            bytes.zeroize();
        }
    }
    dek
}

/// Try to export `kek` by wrapping it under a fresh session key; `false` if the token
/// refuses because the KEK is unextractable.
fn try_export(session: &Session, kek: ObjectHandle, mechanism: WrapMechanism) -> Result<bool, Failure> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(KEK_LEN.into()),
        Attribute::Token(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Wrap(true),
        Attribute::Unwrap(false),
    ];
    let wrapping_key = session.generate_key(&Mechanism::AesKeyGen, &template).doing("generate a probe key")?;
    let attempt = session.wrap_key(&pkcs11_mechanism(mechanism), wrapping_key, kek);
    let cleanup = session.destroy_object(wrapping_key);
    let exported = match attempt {
        Ok(mut bytes) => {
            bytes.zeroize();
            true
        }
        Err(Error::Pkcs11(RvError::KeyUnextractable | RvError::KeyNotWrappable, _)) => false,
        Err(error) => return Err(Failure::Token { doing: "try to export a KEK", error }),
    };
    if let Err(error) = cleanup {
        return Err(Failure::CloseSession(unavailable("destroy a probe key", &error)));
    }
    Ok(exported)
}

/// One initialized context per module path for the whole process: `C_Initialize` may run
/// only once per process, and several backends (one per token) may share a module.
/// Contexts are never finalized; the process exit does that.
fn shared_context(module: &Path) -> Result<Pkcs11, OpenError> {
    static CONTEXTS: OnceLock<Mutex<Vec<(PathBuf, Pkcs11)>>> = OnceLock::new();
    let key = std::fs::canonicalize(module).unwrap_or_else(|_| module.to_path_buf());
    let mut contexts = CONTEXTS.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, context)) = contexts.iter().find(|(path, _)| *path == key) {
        return Ok(context.clone());
    }
    let context = Pkcs11::new(&key).map_err(|error| {
        KmsError::unavailable(format!("cannot load the PKCS#11 module {}: {}", module.display(), describe(&error)))
    })?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Already initialized by other code in this process: usable all the same.
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(error) => {
            return Err(KmsError::unavailable(format!(
                "cannot initialize the PKCS#11 module {}: {}",
                module.display(),
                describe(&error)
            ))
            .into());
        }
    }
    contexts.push((key, context.clone()));
    Ok(context)
}

/// The lock shared by every backend on `slot` of `module` in this process.
fn token_lock(module: &Path, slot: Slot) -> Arc<RwLock<()>> {
    type TokenLocks = Vec<((PathBuf, u64), Arc<RwLock<()>>)>;
    static LOCKS: OnceLock<Mutex<TokenLocks>> = OnceLock::new();
    let key = (std::fs::canonicalize(module).unwrap_or_else(|_| module.to_path_buf()), slot.id());
    let mut locks = LOCKS.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, lock)) = locks.iter().find(|(known, _)| *known == key) {
        return Arc::clone(lock);
    }
    let lock = Arc::new(RwLock::new(()));
    locks.push((key, Arc::clone(&lock)));
    lock
}

fn find_slot(context: &Pkcs11, token_label: &str, module: &Path) -> Result<Slot, OpenError> {
    let slots = context.get_slots_with_token().map_err(|error| unavailable("list the module's slots", &error))?;
    let mut seen = Vec::new();
    for slot in slots {
        let info = context.get_token_info(slot).map_err(|error| unavailable("read a token's label", &error))?;
        let label = info.label().trim_end();
        if label == token_label {
            if !info.token_initialized() || !info.user_pin_initialized() {
                return Err(OpenError::Config(format!(
                    "token '{token_label}' is not initialized or has no user PIN yet"
                )));
            }
            return Ok(slot);
        }
        seen.push(format!("'{label}'"));
    }
    Err(OpenError::Config(format!(
        "no token labelled '{token_label}' in {} (tokens found: {})",
        module.display(),
        if seen.is_empty() { "none".to_owned() } else { seen.join(", ") }
    )))
}

fn check_mechanisms(
    context: &Pkcs11,
    slot: Slot,
    mechanism: WrapMechanism,
    token_label: &str,
) -> Result<(), OpenError> {
    let supported = |wanted: MechanismType| context.get_mechanism_info(slot, wanted).ok();
    if !supported(MechanismType::AES_KEY_GEN).is_some_and(|info| info.generate()) {
        return Err(OpenError::Config(format!("token '{token_label}' cannot generate AES keys (CKM_AES_KEY_GEN)")));
    }
    if !supported(mechanism_type(mechanism)).is_some_and(|info| info.wrap() && info.unwrap()) {
        let other = WrapMechanism::ALL.into_iter().find(|candidate| *candidate != mechanism);
        return Err(OpenError::Config(format!(
            "token '{token_label}' does not wrap and unwrap keys with {}{}",
            mechanism.pkcs11_name(),
            other.map(|other| format!("; try mechanism = \"{}\"", other.config_name())).unwrap_or_default()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn labels_round_trip_and_reject_look_alikes() {
        let org = OrgId::generate();
        let other = OrgId::generate();
        assert_eq!(parse_kek_label(kek_label(&org, 7).as_bytes(), &org), Some(7));
        assert_eq!(parse_kek_label(kek_label(&org, 7).as_bytes(), &other), None);
        for bad in ["v07", "v+7", "v", "v7x", "destroyed"] {
            let label = format!("byok:{org}:{bad}");
            assert_eq!(parse_kek_label(label.as_bytes(), &org), None, "{label}");
        }
        assert_eq!(destroyed_label(&org), format!("byok:{org}:destroyed"));
        assert_eq!(org_key_id(&org), format!("byok:{org}").into_bytes());
    }

    #[test]
    fn backend_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Pkcs11Kms>();
    }
}
