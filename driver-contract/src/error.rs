//! What a request can be refused for by the shared rules: a malformed field, a
//! capacity no volume of the kind can meet, or another call already working on the
//! object. Each plugin maps these into its own error once.

use tonic::Code;

/// A request refused by a rule of the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A field of the request is missing or malformed.
    #[error("{field}: {reason}")]
    InvalidField {
        /// The request field, as CSI names it (`volume_capability`, `parameters` ...).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The capacity range excludes every size a volume of this kind can have.
    #[error(
        "capacity range [{required}, {limit}] cannot be met: volumes of this kind are at least {minimum} bytes in steps of {granule}"
    )]
    CapacityUnmet {
        /// The range's required_bytes (0: unset).
        required: i64,
        /// The range's limit_bytes (0: unset).
        limit: i64,
        /// The smallest volume of the kind.
        minimum: i64,
        /// Sizes of the kind are multiples of this.
        granule: i64,
    },
    /// Another call for the same object is in flight (CSI "operation pending").
    #[error("an operation for {what} is already in progress")]
    OperationPending {
        /// The object, as the caller named it (`volume <id>`).
        what: String,
    },
}

impl RequestError {
    /// A malformed or missing `field`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            reason: reason.into(),
        }
    }

    /// The gRPC code CSI prescribes for each refusal.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidField { .. } => Code::InvalidArgument,
            Self::CapacityUnmet { .. } => Code::OutOfRange,
            Self::OperationPending { .. } => Code::Aborted,
        }
    }
}

/// Results of the contract's checks.
pub type Result<T, E = RequestError> = std::result::Result<T, E>;
