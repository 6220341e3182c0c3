//! Sysctls, written only when different (so a reconcile pass that finds everything in place
//! does no writes). Paths under /proc/sys/net resolve against the calling thread's network
//! namespace: to set one inside a compartment, call these from [`crate::netns::run_in`].

use std::path::Path;

use crate::error::{KernelError, Result};

pub fn read(key: &str) -> Result<String> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::read_to_string(&path).map(|s| s.trim().to_owned()).map_err(|e| KernelError::io("read sysctl", key, e))
}

/// Writes `value` to the sysctl `key` (dotted form) unless it already has it.
pub fn ensure(key: &str, value: &str) -> Result<()> {
    if read(key).ok().as_deref() == Some(value) {
        return Ok(());
    }
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| KernelError::io("write sysctl", key, e))
}
