//! Shared device for tests.
//!
//! GPU tests call [`test_context`]: it returns the process-wide context, or `None` only when
//! `KILN_SKIP_GPU_TESTS=1` is set; when no adapter is found otherwise, it panics so the test fails
//! instead of passing silently. CI never sets the skip variable.

use std::sync::OnceLock;

use crate::device::Context;

/// The variable that lets a machine without any adapter skip GPU tests explicitly.
pub const SKIP_VAR: &str = "KILN_SKIP_GPU_TESTS";

/// The shared test context (adapter chosen by [`crate::DeviceOptions::from_env`]).
pub fn test_context() -> Option<&'static Context> {
    static CONTEXT: OnceLock<Option<Context>> = OnceLock::new();
    CONTEXT
        .get_or_init(|| {
            if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
                eprintln!("{SKIP_VAR}=1: skipping GPU checks");
                return None;
            }
            match Context::from_env() {
                Ok(ctx) => {
                    eprintln!("kiln tests on {}", ctx.describe());
                    Some(ctx)
                }
                Err(e) => panic!(
                    "GPU tests need an adapter (set {SKIP_VAR}=1 to skip them explicitly): {e}"
                ),
            }
        })
        .as_ref()
}
