//! The error a node reports. A leaf, so that the payload types can use it as well as the node
//! API.

/// A failure inside a node. `Input` is the user's input being wrong (missing file, unreadable
/// video, bad weights: exit code 1); `Runtime` is everything else (exit code 2).
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Runtime(String),
    /// The run is stopping (Ctrl-C, another node failed, or every consumer is gone).
    #[error("stopped")]
    Stopped,
}

impl NodeError {
    pub fn input(msg: impl Into<String>) -> NodeError {
        NodeError::Input(msg.into())
    }
    pub fn runtime(msg: impl Into<String>) -> NodeError {
        NodeError::Runtime(msg.into())
    }
}
