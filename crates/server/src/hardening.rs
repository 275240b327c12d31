//! Process hardening: a crash must not write the process's memory (with any key that
//! happens to be in it) to a core file.

/// Set RLIMIT_CORE to 0 and mark the process non-dumpable (which also stops other
/// processes of the same user from ptrace-attaching). Best effort: failure is logged.
pub(crate) fn refuse_core_dumps() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{set_dumpable_behavior, setrlimit, DumpableBehavior, Resource, Rlimit};
        if let Err(err) = setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) }) {
            tracing::warn!(error = %err, "could not disable core dumps (RLIMIT_CORE)");
        }
        if let Err(err) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
            tracing::warn!(error = %err, "could not mark the process non-dumpable");
        }
    }
}
