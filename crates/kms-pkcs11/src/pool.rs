//! A bounded pool of logged-in read/write sessions.
//!
//! A cryptoki `Session` may move between threads but not be shared, so each KMS call
//! checks one out, uses it alone and gives it back. At most `max` sessions are ever open;
//! a caller that finds them all busy waits (up to [`CHECKOUT_TIMEOUT`]).
//!
//! PKCS#11 login state belongs to the application, not the session: logging in on one
//! session logs in all of them, and closing the last one logs out. So every new session
//! checks its state and logs in only if the application is not logged in yet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;

use crate::errors::{unavailable, Failure};
use byok_crypto::KmsError;

/// How long a caller waits for a free session before reporting the token unavailable.
pub(crate) const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct SessionPool {
    context: Pkcs11,
    slot: Slot,
    pin: SecretString,
    max: usize,
    /// Set once the token refuses the PIN: trying it again could lock the PIN, so every
    /// later call fails fast until the backend is reopened with a corrected PIN.
    pin_refused: AtomicBool,
    state: Mutex<PoolState>,
    returned: Condvar,
}

struct PoolState {
    idle: Vec<Session>,
    /// Sessions open now: idle ones, checked-out ones and ones being opened.
    open: usize,
}

impl SessionPool {
    pub(crate) fn new(context: Pkcs11, slot: Slot, pin: SecretString, max: usize) -> Self {
        Self {
            context,
            slot,
            pin,
            max: max.max(1),
            pin_refused: AtomicBool::new(false),
            state: Mutex::new(PoolState { idle: Vec::new(), open: 0 }),
            returned: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // The state is a list and a counter, consistent after every statement: a panic
        // elsewhere while holding the lock cannot leave it half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many sessions are open now.
    pub(crate) fn open_sessions(&self) -> usize {
        self.lock().open
    }

    /// The most sessions this pool opens.
    pub(crate) fn max_sessions(&self) -> usize {
        self.max
    }

    /// Run `op` with a session of its own: an idle one, a newly opened one if fewer than
    /// `max` are open, or the next one given back. If `op` fails in a way that means the
    /// session (or the token behind it) is gone, the session is closed rather than
    /// returned, and a fresh one is opened by a later call.
    pub(crate) fn run<T>(&self, op: impl FnOnce(&Session) -> Result<T, Failure>) -> Result<T, KmsError> {
        let mut reservation = Reservation { pool: self, held: false };
        let session = self.checkout(&mut reservation)?;
        let result = op(&session);
        let session_gone = matches!(&result, Err(failure) if failure.closes_session());
        if session_gone {
            // Closing may fail if the token is gone; the handle is useless either way.
            drop(session);
        } else {
            self.lock().idle.push(session);
            reservation.held = false;
            self.returned.notify_one();
        }
        result.map_err(Failure::into_kms_error)
    }

    /// Take an idle session or open one; `reservation` then counts it as open.
    fn checkout(&self, reservation: &mut Reservation<'_>) -> Result<Session, KmsError> {
        let deadline = Instant::now() + CHECKOUT_TIMEOUT;
        let mut state = self.lock();
        loop {
            if let Some(session) = state.idle.pop() {
                reservation.held = true;
                return Ok(session);
            }
            if state.open < self.max {
                state.open += 1;
                reservation.held = true;
                drop(state);
                // On failure the reservation gives the place back.
                return self.open_logged_in();
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(KmsError::unavailable(format!(
                    "all {} PKCS#11 sessions stayed busy for {}s",
                    self.max,
                    CHECKOUT_TIMEOUT.as_secs()
                )));
            }
            state = self.returned.wait_timeout(state, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn open_logged_in(&self) -> Result<Session, KmsError> {
        if self.pin_refused.load(Ordering::Relaxed) {
            return Err(pin_refused());
        }
        let session = self.context.open_rw_session(self.slot).map_err(|e| unavailable("open a PKCS#11 session", &e))?;
        let info = session.get_session_info().map_err(|e| unavailable("read the PKCS#11 session state", &e))?;
        match info.session_state() {
            SessionState::RwUser => {}
            SessionState::RwSecurityOfficer => {
                return Err(KmsError::unavailable(
                    "the token is logged in as security officer by this process; byok needs the user role",
                ));
            }
            _ => match session.login(UserType::User, Some(&self.pin)) {
                // Another session of this process logged in meanwhile.
                Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(Error::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange, _)) => {
                    self.pin_refused.store(true, Ordering::Relaxed);
                    return Err(pin_refused());
                }
                Err(Error::Pkcs11(RvError::PinLocked, _)) => {
                    return Err(KmsError::unavailable("the token's user PIN is locked"));
                }
                Err(err) => return Err(unavailable("log in to the token", &err)),
            },
        }
        Ok(session)
    }
}

fn pin_refused() -> KmsError {
    KmsError::unavailable("the token refused the user PIN; fix the PIN source and restart")
}

/// A place among the `max` open sessions, taken by a checked-out session. Dropped while
/// still held (the session was closed, failed to open, or its user panicked), it gives the
/// place back so the pool never shrinks.
struct Reservation<'a> {
    pool: &'a SessionPool,
    held: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.held {
            let mut state = self.pool.lock();
            state.open = state.open.saturating_sub(1);
            drop(state);
            self.pool.returned.notify_one();
        }
    }
}
