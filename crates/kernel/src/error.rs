//! One error type for the kernel layer. Each error says which operation on which object failed
//! and the kernel's reason, so the API can pass it on instead of "Unspecified error".

#[derive(Debug, thiserror::Error)]
#[error("{op} {object}: {reason}")]
pub struct KernelError {
    /// What was being done, e.g. "create bridge".
    pub op: String,
    /// Which object, e.g. "hns-1a2b3c4d".
    pub object: String,
    pub reason: String,
    /// The errno when the kernel gave one.
    pub errno: Option<i32>,
}

impl KernelError {
    pub fn new(op: impl Into<String>, object: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        KernelError { op: op.into(), object: object.into(), reason: reason.to_string(), errno: None }
    }
    pub fn io(op: impl Into<String>, object: impl Into<String>, e: std::io::Error) -> Self {
        let errno = e.raw_os_error();
        KernelError { op: op.into(), object: object.into(), reason: e.to_string(), errno }
    }
    pub fn nix(op: impl Into<String>, object: impl Into<String>, e: nix::Error) -> Self {
        KernelError { op: op.into(), object: object.into(), reason: e.desc().to_owned(), errno: Some(e as i32) }
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno, Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ESRCH))
    }
    pub fn is_exists(&self) -> bool {
        self.errno == Some(libc::EEXIST)
    }
}

pub type Result<T> = std::result::Result<T, KernelError>;
