//! The one error type of hnsctl and how each kind is reported and mapped to an exit code.
//!
//! Exit codes follow the Docker CLI: 1 when hnsd refused or could not be reached (and for bad
//! option values found after parsing), 2 for usage errors (clap), 125 when hnsctl itself failed
//! (fork, setns, ...), 126 when the command could not be run, 127 when it was not found.

use hns_api::{ApiError, ErrorCode};

#[derive(Debug)]
pub enum CliError {
    /// hnsd answered with an error body.
    Api(ApiError),
    /// hnsd answered with a status that carried no readable error body.
    Http { status: u16, body: String },
    /// The socket could not be reached.
    Connect { socket: String, err: String },
    /// The socket (or its directory) may not be opened by this user.
    PermissionDenied { socket: String },
    /// The exchange with hnsd broke or its reply made no sense.
    Protocol(String),
    /// A value given on the command line is not acceptable.
    Invalid(String),
    /// hnsctl itself failed (exit 125).
    Local(String),
    /// A failure with a message and a chosen exit code (126/127 for commands that cannot run).
    Exit { code: i32, message: String },
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        CliError::Invalid(msg.into())
    }

    pub fn local(msg: impl Into<String>) -> Self {
        CliError::Local(msg.into())
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Api(_)
            | CliError::Http { .. }
            | CliError::Connect { .. }
            | CliError::PermissionDenied { .. }
            | CliError::Protocol(_)
            | CliError::Invalid(_) => 1,
            CliError::Local(_) => 125,
            CliError::Exit { code, .. } => *code,
        }
    }

    /// True when hnsd said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            CliError::Api(e) => matches!(
                e.code,
                ErrorCode::NotFound | ErrorCode::NetworkNotFound | ErrorCode::EndpointNotFound | ErrorCode::NamespaceNotFound
            ),
            CliError::Http { status, .. } => *status == 404,
            _ => false,
        }
    }

    /// The error code hnsd sent, if any.
    pub fn api_code(&self) -> Option<ErrorCode> {
        match self {
            CliError::Api(e) => Some(e.code),
            _ => None,
        }
    }

    /// The text printed on stderr (without a trailing newline).
    pub fn render(&self) -> String {
        match self {
            CliError::Api(e) => {
                let mut s = format!("Error: {} ({})", e.message, e.code);
                if let Some(f) = &e.field {
                    s.push_str(&format!("\n  field: {f}"));
                }
                s
            }
            CliError::Http { status, body } => {
                let body = body.trim();
                if body.is_empty() {
                    format!("Error: hnsd answered HTTP {status} with no error body")
                } else {
                    format!("Error: hnsd answered HTTP {status}: {body}")
                }
            }
            CliError::Connect { socket, err } => {
                format!("Error: cannot reach hnsd at {socket}: {err}; is hnsd running? (set --socket or HNS_SOCKET)")
            }
            CliError::PermissionDenied { socket } => {
                format!("Error: permission denied on {socket}: hnsd's socket is root-only; run as root")
            }
            CliError::Protocol(m) | CliError::Invalid(m) | CliError::Local(m) => format!("Error: {m}"),
            CliError::Exit { message, .. } => format!("Error: {message}"),
        }
    }

    pub fn report(&self) {
        eprintln!("{}", self.render());
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for CliError {}

impl From<ApiError> for CliError {
    fn from(e: ApiError) -> Self {
        CliError::Api(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_rendering_and_codes() {
        let e = CliError::Api(ApiError::field(ErrorCode::InvalidSubnet, "Ipams[0].Subnets[0].IpAddressPrefix", "bad subnet"));
        assert_eq!(e.render(), "Error: bad subnet (INVALID_SUBNET)\n  field: Ipams[0].Subnets[0].IpAddressPrefix");
        assert_eq!(e.exit_code(), 1);
        let e = CliError::Api(ApiError::new(ErrorCode::NetworkNotFound, "no network x"));
        assert_eq!(e.render(), "Error: no network x (NETWORK_NOT_FOUND)");
        assert!(e.is_not_found());
        assert_eq!(CliError::local("fork failed").exit_code(), 125);
        let c = CliError::Connect { socket: "/run/hns/hns.sock".into(), err: "No such file or directory".into() };
        assert!(c.render().contains("cannot reach hnsd at /run/hns/hns.sock: No such file or directory; is hnsd running?"));
    }
}
