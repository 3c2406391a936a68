//! Small synchronisation helpers shared by every part of the crate.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Take a mutex even if a panicking thread poisoned it: every mutex in this
/// crate guards data that stays consistent between statements (no invariant
/// spans a panic point), so there is nothing to recover.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
